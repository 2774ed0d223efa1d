"""GET /metrics: Prometheus text format, requests counted per route template and status."""

import json

import morecantile
from prometheus_client.parser import text_string_to_metric_families

TILE_ROUTE = "/collections/{collection_id}/items/{item_id}/tiles/{tileMatrixSetId}/{z}/{x}/{y}"


def scrape(client) -> dict[tuple[str, tuple], float]:
    r = client.get("/metrics")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/plain")
    assert "cache-control" not in r.headers
    samples = {}
    for family in text_string_to_metric_families(r.text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def count(samples, route: str, status: str, method: str = "GET") -> float:
    labels = (("method", method), ("route", route), ("status", status))
    return samples.get(("terratiler_requests_total", labels), 0.0)


def test_requests_are_counted_by_route_template_and_status(client, demo_dir):
    item = json.loads(next((demo_dir / "items").glob("*.json")).read_text())
    minx, miny, maxx, maxy = item["bbox"]
    tms = morecantile.tms.get("WebMercatorQuad")
    tiles = list(tms.tiles(minx, miny, maxx, maxy, [15]))[:3]
    base = f"/collections/sentinel-2-l2a/items/{item['id']}/tiles/WebMercatorQuad"

    before = scrape(client)
    for tile in tiles:
        r = client.get(f"{base}/{tile.z}/{tile.x}/{tile.y}", params={"preset": "true-color"})
        assert r.status_code == 200, r.text
    bad = client.get(f"{base}/15/{tiles[0].x}/{tiles[0].y}", params={"expression": "__import__"})
    assert bad.status_code == 400
    assert client.get("/no/such/path").status_code == 404
    after = scrape(client)

    # One series per route template, not per tile.
    assert count(after, TILE_ROUTE, "200") - count(before, TILE_ROUTE, "200") == len(tiles)
    assert count(after, TILE_ROUTE, "400") - count(before, TILE_ROUTE, "400") == 1
    assert count(after, "unmatched", "404") - count(before, "unmatched", "404") == 1
    assert count(after, "/metrics", "200") - count(before, "/metrics", "200") == 1
    assert not any(
        f"/{tiles[0].x}/" in labels_route for (_, labels) in after for _, labels_route in labels
    )

    # Latency histogram: one observation per tile request, in the route's series.
    key = (
        "terratiler_request_duration_seconds_count",
        (("method", "GET"), ("route", TILE_ROUTE)),
    )
    assert after[key] - before.get(key, 0.0) == len(tiles) + 1
    inf_bucket = (
        "terratiler_request_duration_seconds_bucket",
        (("le", "+Inf"), ("method", "GET"), ("route", TILE_ROUTE)),
    )
    assert after[inf_bucket] == after[key]
    # The dataset pool is visible: tiles leave their COGs open for reuse.
    assert after[("terratiler_open_datasets", ())] >= 1
