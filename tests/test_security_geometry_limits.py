"""Issue 12 item 4: one vertex / feature bound on every geometry a request brings in.

Every entry point refuses a geometry one vertex over ``max_geometry_vertices`` with a 413
naming the setting, accepts one at the limit, and refuses before any parsing work: the
refusal beats the schema's 422 (so geojson-pydantic never parsed the body) and shapely's
``shape`` is never called.
"""

import json
import math
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import cql2
import morecantile
import pytest
import shapely
import shapely.geometry
from demo_reads import href, items
from fastapi.testclient import TestClient

from app.batch.units import validate_geometry
from app.catalog.local import LocalCatalog
from app.errors import BadRequestError, TooLargeError
from app.geometry_limits import check_geometry, check_wkt
from app.main import create_app
from app.mosaic.search import search_hash
from app.settings import Settings
from app.stats import compute_many

LIMIT = 50
FEATURES = 3
ITEMS = "/collections/sentinel-2-l2a/items"
NDVI = {"ndvi": {"expression": "(nir-red)/(nir+red)"}}


def _over(what: str, limit: int = LIMIT) -> str:
    return f"{what}: more than {limit} vertices, over the limit max_geometry_vertices={limit}"


def _ring(center: tuple[float, float], vertices: int, radius: float = 0.004) -> list:
    """A closed ring of exactly ``vertices`` positions (the last repeats the first)."""
    x, y = center
    points = [
        [
            x + radius * math.cos(2 * math.pi * i / (vertices - 1)),
            y + radius * math.sin(2 * math.pi * i / (vertices - 1)),
        ]
        for i in range(vertices - 1)
    ]
    return [*points, points[0]]


def _polygon(center: tuple[float, float], vertices: int) -> dict[str, Any]:
    return {"type": "Polygon", "coordinates": [_ring(center, vertices)]}


def _feature(geometry: dict[str, Any]) -> dict[str, Any]:
    return {"type": "Feature", "properties": {}, "geometry": geometry}


def _collection(*features: dict[str, Any]) -> dict[str, Any]:
    return {"type": "FeatureCollection", "features": list(features)}


@pytest.fixture(scope="module")
def item(demo_dir: Path) -> dict[str, Any]:
    return items(demo_dir)[0]


@pytest.fixture(scope="module")
def center(item: dict[str, Any]) -> tuple[float, float]:
    minx, miny, maxx, maxy = item["bbox"]
    return (minx + maxx) / 2, (miny + maxy) / 2


@pytest.fixture(scope="module")
def limited(demo_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    """The service with small geometry bounds, so at-the-limit requests stay cheap."""
    settings = Settings(
        catalog=str(demo_dir),
        data_dir=tmp_path_factory.mktemp("geometry-limits"),
        max_geometry_vertices=LIMIT,
        max_geometry_features=FEATURES,
    )
    with TestClient(create_app(settings)) as client:
        yield client


@pytest.fixture
def shapes(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts calls of shapely's GeoJSON parser (every module calls it through the module)."""
    calls: list[int] = []
    parse = shapely.geometry.shape

    def counted(value: Any) -> Any:
        calls.append(1)
        return parse(value)

    monkeypatch.setattr(shapely.geometry, "shape", counted)
    return calls


def _assert_refused(response: Any, message: str) -> None:
    assert response.status_code == 413, response.text
    assert response.json() == {"detail": message}


# ----------------------------------------------------------------------- the one check


@pytest.mark.parametrize(
    "value, vertices",
    [
        ({"type": "Point", "coordinates": [1.0, 2.0]}, 1),
        ({"type": "LineString", "coordinates": [[0, 0], [1, 1], [2, 0]]}, 3),
        ({"type": "Polygon", "coordinates": [_ring((0, 0), 5), _ring((0, 0), 4, 0.001)]}, 9),
        ({"type": "MultiPolygon", "coordinates": [[_ring((0, 0), 5)], [_ring((5, 5), 7)]]}, 12),
        (
            {
                "type": "GeometryCollection",
                "geometries": [
                    {"type": "Point", "coordinates": [0, 0]},
                    {"type": "GeometryCollection", "geometries": [_polygon((0, 0), 6)]},
                ],
            },
            7,
        ),
        ({**_feature(_polygon((0, 0), 5)), "bbox": [0, 0, 1, 1]}, 5),
        (_collection(_feature(_polygon((0, 0), 5)), _feature(_polygon((1, 1), 4))), 9),
        # A CQL2 filter's geometry literal counts too.
        ({"op": "s_intersects", "args": [{"property": "geometry"}, _polygon((0, 0), 8)]}, 8),
        # Tuples, as shapely's mapping writes them.
        (shapely.geometry.mapping(shapely.box(0, 0, 1, 1)), 5),
        # Empty parts cost shapely as much as vertices: each counts as one.
        (
            {
                "type": "GeometryCollection",
                "geometries": [{"type": "Point", "coordinates": []}] * 3
                + [{"type": "MultiPolygon", "coordinates": [[[]], []]}],
            },
            5,
        ),
        (None, 0),
        ("POLYGON((0 0, 1 0, 1 1, 0 0))", 0),
    ],
)
def test_check_geometry_counts_the_vertices_of_every_shape(value, vertices):
    assert check_geometry(value, "x", max_vertices=None) == vertices
    assert check_geometry(value, "x", max_vertices=vertices) == vertices
    if vertices:
        with pytest.raises(TooLargeError) as raised:
            check_geometry(value, "x", max_vertices=vertices - 1)
        assert raised.value.message == _over("x", vertices - 1)
        assert raised.value.status_code == 413


def test_check_geometry_refuses_too_many_features():
    collection = _collection(*[_feature({"type": "Point", "coordinates": [0, 0]})] * 4)
    assert check_geometry(collection, "body", max_vertices=10, max_features=4) == 4
    with pytest.raises(TooLargeError) as raised:
        check_geometry(collection, "body", max_vertices=10, max_features=3)
    assert raised.value.message == "body: 4 features, over the limit max_geometry_features=3"


@pytest.mark.parametrize(
    "text, vertices",
    [
        ("S_INTERSECTS(geometry, POLYGON((0 0, 1 0, 1 1, 0 0)))", 4),
        ("S_INTERSECTS(geometry, POINT(-1.5 .2)) AND eo:cloud_cover BETWEEN 1 AND 2", 1),
        ("S_WITHIN(geometry, MULTIPOLYGON(((0 0 1,1 0 1,1 1 1,0 0 1)),((5 5,6 5,6 6,5 5))))", 8),
        ("S_INTERSECTS(geometry, POINT(1e-06 2E+05))", 1),
    ],
)
def test_check_wkt_counts_the_positions_of_cql2_text(text, vertices):
    check_wkt(text, "filter", vertices)
    with pytest.raises(TooLargeError) as raised:
        check_wkt(text, "filter", vertices - 1)
    assert raised.value.message == _over("filter", vertices - 1)


class _Watched(list):
    """A list that counts the elements anything iterates over."""

    seen = 0

    def __iter__(self):
        for value in super().__iter__():
            _Watched.seen += 1
            yield value


def test_refusing_looks_at_no_more_than_the_limit():
    # A million-vertex ring costs as much to refuse as the limit, not as the ring.
    _Watched.seen = 0
    ring = _Watched([float(i), 0.0] for i in range(1_000_000))
    with pytest.raises(TooLargeError):
        check_geometry({"type": "LineString", "coordinates": ring}, "x", max_vertices=LIMIT)
    assert _Watched.seen == LIMIT + 1


def test_stats_max_vertices_still_sets_the_bound(monkeypatch):
    assert Settings().max_geometry_vertices == 100_000
    assert Settings(stats_max_vertices=5).max_geometry_vertices == 5
    assert Settings(stats_max_vertices=5, max_geometry_vertices=7).max_geometry_vertices == 7
    monkeypatch.setenv("TERRATILER_STATS_MAX_VERTICES", "9")
    assert Settings().max_geometry_vertices == 9
    monkeypatch.setenv("TERRATILER_MAX_GEOMETRY_VERTICES", "11")
    assert Settings().max_geometry_vertices == 11


# ---------------------------------------------------------------- Statistical API


def _stats_request(item: dict[str, Any], geometry: Any) -> dict[str, Any]:
    day = datetime.fromisoformat(item["properties"]["datetime"][:10])
    return {
        "input": {"bounds": {"geometry": geometry}, "data": [{"type": "sentinel-2-l2a"}]},
        "aggregation": {
            "timeRange": {
                "from": f"{day:%Y-%m-%d}T00:00:00Z",
                "to": f"{day + timedelta(days=1):%Y-%m-%d}T00:00:00Z",
            },
            "aggregationInterval": {"of": "P1D"},
            "outputs": NDVI,
            "mask": "none",
        },
    }


def test_statistical_api_geometry_over_the_limit_is_413_before_parsing(
    limited, item, center, shapes
):
    body = _stats_request(item, _polygon(center, LIMIT + 1))
    _assert_refused(limited.post("/statistics", json=body), _over("input.bounds.geometry"))
    # Refused before the schema is checked: without the check this body is a 422.
    del body["aggregation"]
    _assert_refused(limited.post("/statistics", json=body), _over("input.bounds.geometry"))
    assert shapes == []


def test_statistical_api_geometry_at_the_limit_is_computed(limited, item, center):
    response = limited.post("/statistics", json=_stats_request(item, _polygon(center, LIMIT)))
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "OK"
    assert len(response.json()["data"]) == 1


def test_engine_refuses_each_feature_over_the_limit(demo_dir, item, center):
    settings = Settings(catalog=str(demo_dir), max_geometry_vertices=LIMIT)
    request = _stats_request(item, None)
    del request["input"]["bounds"]
    over, at = _feature(_polygon(center, LIMIT + 1)), _feature(_polygon(center, LIMIT))
    results = compute_many([over, at], request, LocalCatalog(demo_dir), settings)
    assert results[0] == {
        "data": [],
        "status": "FAILED",
        "error": {"type": "BAD_REQUEST", "message": _over("features[0].geometry")},
    }
    assert results[1]["status"] == "OK"


def test_batch_features_are_bounded_one_by_one():
    square = shapely.Polygon(_ring((10.0, 45.0), LIMIT))
    over = shapely.Polygon(_ring((10.0, 45.0), LIMIT + 1))
    assert validate_geometry(shapely.to_wkb(square), 7, LIMIT).equals(square)
    refused = validate_geometry(shapely.to_wkb(over), 7, LIMIT)
    assert isinstance(refused, BadRequestError)
    assert (
        refused.message
        == f"feature 7: {LIMIT + 1} vertices, over the limit max_geometry_vertices={LIMIT}"
    )


# --------------------------------------------------------------------- the tiler


def _tiler_routes(demo_dir: Path, item: dict[str, Any]) -> list[tuple[str, dict[str, str]]]:
    cog = str(href(demo_dir, item, "red"))
    stac = str(demo_dir / "items" / f"{item['id']}.json")
    return [
        ("/cog/statistics", {"url": cog}),
        ("/cog/feature.tif", {"url": cog}),
        ("/stac/statistics", {"url": stac, "assets": "red"}),
        ("/stac/feature/64x64.png", {"url": stac, "assets": "red"}),
        (f"{ITEMS}/{item['id']}/statistics", {"assets": "red"}),
        (f"{ITEMS}/{item['id']}/feature", {"assets": "red", "format": "tif"}),
    ]


@pytest.mark.parametrize("route", range(6))
def test_tiler_feature_bodies_are_bounded(limited, demo_dir, item, center, shapes, route):
    path, params = _tiler_routes(demo_dir, item)[route]
    over = _feature(_polygon(center, LIMIT + 1))
    _assert_refused(limited.post(path, params=params, json=over), _over("body"))
    # Open rings of 3 positions fail geojson-pydantic (a 422) once the check lets them by.
    unparsable = _feature({"type": "Polygon", "coordinates": [_ring(center, 4)[:3]] * 17})
    _assert_refused(limited.post(path, params=params, json=unparsable), _over("body"))
    assert shapes == []
    at = limited.post(path, params=params, json=_feature(_polygon(center, LIMIT)))
    assert at.status_code == 200, at.text


@pytest.mark.parametrize("route", [0, 2, 4])
def test_tiler_feature_collections_are_bounded(limited, demo_dir, item, center, route):
    path, params = _tiler_routes(demo_dir, item)[route]
    small = _feature(_polygon(center, 10))
    _assert_refused(
        limited.post(path, params=params, json=_collection(*[small] * (FEATURES + 1))),
        "body: 4 features, over the limit max_geometry_features=3",
    )
    # The features' vertices count together: 3 x 20 > 50.
    twenty = _feature(_polygon(center, 20))
    _assert_refused(
        limited.post(path, params=params, json=_collection(*[twenty] * FEATURES)), _over("body")
    )
    at = limited.post(path, params=params, json=_collection(*[small] * FEATURES))
    assert at.status_code == 200, at.text
    assert len(at.json()["features"]) == FEATURES


# ------------------------------------------------------------------- STAC search


def _wkt(ring: list) -> str:
    return "POLYGON((" + ", ".join(f"{x} {y}" for x, y in ring) + "))"


def test_catalog_search_intersects_is_bounded(limited, item, center, shapes):
    over, at = _polygon(center, LIMIT + 1), _polygon(center, LIMIT)
    get = limited.get("/catalog/search", params={"intersects": json.dumps(over)})
    _assert_refused(get, _over("intersects"))
    _assert_refused(limited.post("/catalog/search", json={"intersects": over}), _over("intersects"))
    assert shapes == []
    for response in (
        limited.get("/catalog/search", params={"intersects": json.dumps(at)}),
        limited.post("/catalog/search", json={"intersects": at}),
    ):
        assert response.status_code == 200, response.text
        assert item["id"] in {feature["id"] for feature in response.json()["features"]}


def _s_intersects(geometry: dict[str, Any]) -> dict[str, Any]:
    return {"op": "s_intersects", "args": [{"property": "geometry"}, geometry]}


@pytest.fixture
def cql2_parses(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts the filters the cql2 parser is given."""
    calls: list[int] = []
    parse = cql2.Expr

    def counted(value: Any) -> Any:
        calls.append(1)
        return parse(value)

    monkeypatch.setattr(cql2, "Expr", counted)
    return calls


def test_catalog_search_filter_geometries_are_bounded(limited, item, center, cql2_parses):
    over, at = _polygon(center, LIMIT + 1), _polygon(center, LIMIT)
    _assert_refused(
        limited.post("/catalog/search", json={"filter": _s_intersects(over)}), _over("filter")
    )
    text = f"S_INTERSECTS(geometry, {_wkt(over['coordinates'][0])})"
    _assert_refused(limited.get("/catalog/search", params={"filter": text}), _over("filter"))
    assert cql2_parses == []
    for response in (
        limited.post("/catalog/search", json={"filter": _s_intersects(at)}),
        limited.get(
            "/catalog/search",
            params={"filter": f"S_INTERSECTS(geometry, {_wkt(at['coordinates'][0])})"},
        ),
    ):
        assert response.status_code == 200, response.text
        assert item["id"] in {feature["id"] for feature in response.json()["features"]}


# -------------------------------------------------------------- registered searches


def test_registered_search_geometries_are_bounded(limited, center, shapes):
    over, at = _polygon(center, LIMIT + 1), _polygon(center, LIMIT)
    _assert_refused(
        limited.post("/searches/register", json={"intersects": over}), _over("intersects")
    )
    _assert_refused(
        limited.post("/searches/register", json={"filter": _s_intersects(over)}), _over("filter")
    )
    assert shapes == []
    response = limited.post("/searches/register", json={"intersects": at})
    assert response.status_code == 200, response.text
    stored = limited.get(f"/searches/{response.json()['id']}").json()
    assert len(stored["search"]["intersects"]["coordinates"][0]) == LIMIT


def test_searches_stored_over_the_limit_are_refused_not_parsed(limited, center, shapes):
    # Stored before the bound existed (or under a higher one): refused when first used.
    search = {"collections": ["sentinel-2-l2a"], "intersects": _polygon(center, LIMIT + 1)}
    search_id = search_hash(search)
    limited.app.state.services.mosaics.store.save(search_id, search, {})
    tile = morecantile.tms.get("WebMercatorQuad").tile(*center, 14)
    response = limited.get(
        f"/searches/{search_id}/tiles/WebMercatorQuad/14/{tile.x}/{tile.y}.png",
        params={"preset": "ndvi"},
    )
    _assert_refused(
        response,
        f"search '{search_id}': {_over('intersects')}; register it again within the limits",
    )
    assert shapes == []


def test_mosaic_statistics_bodies_are_bounded(limited, center, shapes):
    search = limited.post("/searches/register", json={"collections": ["sentinel-2-l2a"]})
    path = f"/searches/{search.json()['id']}/statistics"
    params = {"expression": "(nir-red)/(nir+red)", "mask": "none"}
    over = _feature(_polygon(center, LIMIT + 1))
    _assert_refused(limited.post(path, params=params, json=over), _over("body"))
    small = _feature(_polygon(center, 10))
    _assert_refused(
        limited.post(path, params=params, json=_collection(*[small] * (FEATURES + 1))),
        "body: 4 features, over the limit max_geometry_features=3",
    )
    assert shapes == []
    at = limited.post(path, params=params, json=_feature(_polygon(center, LIMIT)))
    assert at.status_code == 200, at.text
    assert at.json()["properties"]["statistics"]


def _search_of_bytes(size: int, tag: str) -> dict[str, Any]:
    """A search whose stored (canonical) form is exactly ``size`` bytes."""
    search = {"collections": ["sentinel-2-l2a"], "ids": [tag]}
    stored = len(json.dumps(search, sort_keys=True, separators=(",", ":")))
    return {"collections": ["sentinel-2-l2a"], "ids": [tag + "x" * (size - stored)]}


@pytest.fixture(scope="module")
def listing(demo_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    """The service with an empty search registry and 1000-byte searches at most."""
    settings = Settings(
        catalog=str(demo_dir),
        data_dir=tmp_path_factory.mktemp("search-listing"),
        max_search_bytes=1000,
    )
    with TestClient(create_app(settings)) as client:
        yield client


def test_registered_search_size_is_bounded(listing):
    _assert_refused(
        listing.post("/searches/register", json=_search_of_bytes(1001, "big")),
        "search: 1001 bytes as stored, over the limit max_search_bytes=1000; "
        "use fewer ids or a simpler geometry",
    )
    response = listing.post("/searches/register", json=_search_of_bytes(1000, "fits"))
    assert response.status_code == 200, response.text


def test_search_listing_pages_hold_at_most_max_search_bytes(listing):
    ids = [
        listing.post("/searches/register", json=_search_of_bytes(400, tag)).json()["id"]
        for tag in ("a", "b", "c")
    ]
    total = listing.get("/searches", params={"limit": 1}).json()["numberMatched"]
    seen: list[str] = []
    offset = 0
    while offset < total:
        page = listing.get("/searches", params={"limit": 10, "offset": offset}).json()
        sizes = [
            len(json.dumps(s["search"], sort_keys=True, separators=(",", ":")))
            for s in page["searches"]
        ]
        assert page["numberReturned"] == len(page["searches"]) >= 1
        assert len(sizes) == 1 or sum(sizes) <= 1000
        seen += [s["id"] for s in page["searches"]]
        offset += page["numberReturned"]
        nexts = [link["href"] for link in page["links"] if link["rel"] == "next"]
        assert nexts == (
            [f"http://testserver/searches?limit=10&offset={offset}"] if offset < total else []
        )
    # Three 400-byte searches: two fit in a page, the third starts the next one.
    assert len(seen) == total and set(ids) <= set(seen)
    first = listing.get("/searches", params={"limit": 10}).json()
    assert first["numberReturned"] == 2


# --------------------------------------------------------------- the default bound


def test_default_bound_refuses_a_huge_geometry_before_parsing(client, item, center, shapes):
    huge = _polygon(center, 100_001)
    _assert_refused(
        client.post("/statistics", json=_stats_request(item, huge)),
        _over("input.bounds.geometry", 100_000),
    )
    _assert_refused(
        client.post("/searches/register", json={"intersects": huge}),
        _over("intersects", 100_000),
    )
    assert shapes == []
