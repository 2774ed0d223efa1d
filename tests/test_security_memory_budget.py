"""Issue 12 item 3: memory bounded by work, one memory budget per request (app.budget).

Every read endpoint (tiles, crops, previews, features, points, statistics, mosaics) counts
the assets (repeats too), bands and expression outputs it would read and the bytes it
would hold, from the request and the item's metadata, and answers 413 naming the limit
before reading a pixel: the reads are counted at rio-tiler's pixel-reading functions.
"""

import json
from collections.abc import Iterator
from pathlib import Path

import morecantile
import pystac
import pytest
import rio_tiler.reader
from fastapi.testclient import TestClient

from app.budget import MemoryBudget
from app.errors import TerratilerError
from app.main import create_app
from app.readers import S2STACReader, stac
from app.sentinel2 import REFLECTANCE_BANDS
from app.settings import Settings

ITEMS = "/collections/sentinel-2-l2a/items"
SIDE = 4096  # the crop side allowed by max_output_pixels = 4096 * 4096
PIXELS = SIDE * SIDE
GIB = 2**30
# The Sentinel-2 bands of a demo item: uint16 with scale/offset (harmonized as float32).
BANDS = list(REFLECTANCE_BANDS)


class ReadReached(TerratilerError):
    """Raised where a request that passed every check would start reading."""

    status_code = 418


@pytest.fixture
def pixel_reads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The calls of rio-tiler's pixel-reading functions made during a test."""
    calls: list[str] = []
    for name in ("read", "part", "point"):
        original = getattr(rio_tiler.reader, name)

        def counting(*args, _name=name, _original=original, **kwargs):
            calls.append(_name)
            return _original(*args, **kwargs)

        monkeypatch.setattr(rio_tiler.reader, name, counting)
    return calls


@pytest.fixture
def no_reading(monkeypatch: pytest.MonkeyPatch) -> None:
    """Item reads stop with a 418 where they would start (after every check passed)."""

    def refuse(*args, **kwargs):
        raise ReadReached("the read was reached")

    monkeypatch.setattr(stac, "_read_assets", refuse)


@pytest.fixture(scope="module")
def item(demo_dir: Path) -> dict:
    path = sorted((demo_dir / "items").glob("*.json"))[0]
    return json.loads(path.read_text())


@pytest.fixture(scope="module")
def cog(demo_dir: Path, item: dict) -> str:
    return str(demo_dir / "cogs" / item["id"] / "B04.tif")


@pytest.fixture(scope="module")
def visual(demo_dir: Path, item: dict) -> str:
    """The item's true-colour COG: three uint8 bands."""
    return str(demo_dir / "cogs" / item["id"] / "TCI.tif")


@pytest.fixture(scope="module")
def tile(item: dict) -> str:
    """``{z}/{x}/{y}`` of a zoom-14 tile over the item."""
    minx, miny, maxx, maxy = item["bbox"]
    t = morecantile.tms.get("WebMercatorQuad").tile((minx + maxx) / 2, (miny + maxy) / 2, 14)
    return f"{t.z}/{t.x}/{t.y}"


@pytest.fixture(scope="module")
def bbox(item: dict) -> str:
    return ",".join(str(v) for v in item["bbox"])


@pytest.fixture(scope="module")
def search_id(client: TestClient, item: dict) -> str:
    """A registered search of every demo item."""
    r = client.post(
        "/searches/register",
        json={"collections": ["sentinel-2-l2a"], "bbox": item["bbox"]},
    )
    assert r.status_code == 200, r.text
    return r.json()["id"]


def _over_budget(total: int, detail: str, what: str = "request") -> str:
    """The 413 message of ``MemoryBudget.check_bytes`` at the default budget."""
    return (
        f"{what}: needs about {total} bytes ({total / 2**20:.0f} MiB: {detail}), over the "
        f"limit max_request_bytes={2 * GIB} (2048 MiB); ask for fewer bands or outputs, or "
        "a smaller area or size"
    )


def test_the_defaults():
    settings = Settings()
    assert settings.max_request_bytes == 2 * GIB
    assert settings.max_assets_per_request == 32
    assert settings.max_bands_per_request == 32
    assert settings.max_expression_outputs == 16


# ------------------------------------------------------------------ the reproductions


def test_the_read_counter_sees_reads(client, item, tile, cog, pixel_reads):
    """The counter the refusals rely on counts the reads of an accepted request."""
    r = client.get(f"{ITEMS}/{item['id']}/tiles/WebMercatorQuad/{tile}.png?assets=red")
    assert r.status_code == 200, r.text
    item_reads = len(pixel_reads)
    assert item_reads > 0
    r = client.get(f"/cog/tiles/WebMercatorQuad/{tile}.png", params={"url": cog})
    assert r.status_code == 200, r.text
    assert len(pixel_reads) > item_reads


def test_200_expression_outputs_on_a_1024px_cog_tile(client, tile, cog, pixel_reads):
    expression = ";".join(["b1"] * 200)
    r = client.get(
        f"/cog/tiles/WebMercatorQuad/{tile}.png",
        params={"url": cog, "expression": expression, "tilesize": 1024},
    )
    assert r.status_code == 413, r.text
    assert r.json()["detail"] == (
        "expression: 200 outputs is over the limit max_expression_outputs=16"
    )
    assert pixel_reads == []


def test_an_asset_repeated_200_times_on_an_item_tile(client, item, tile, pixel_reads):
    query = "&".join(["assets=red"] * 200)
    r = client.get(f"{ITEMS}/{item['id']}/tiles/WebMercatorQuad/{tile}.png?{query}")
    assert r.status_code == 413, r.text
    assert r.json()["detail"] == (
        "assets: 200 assets (repeats counted) is over the limit max_assets_per_request=32"
    )
    assert pixel_reads == []


def test_a_4096px_crop_of_many_harmonized_bands(client, item, bbox, pixel_reads):
    query = "&".join(f"assets={band}" for band in BANDS)
    r = client.get(f"{ITEMS}/{item['id']}/bbox/{bbox}/{SIDE}x{SIDE}.npy?{query}&harmonize=true")
    assert r.status_code == 413, r.text
    # Per band: uint16 + mask (3 bytes), a float32 reflectance + mask (5), the stacked
    # result (5): 13 bytes a pixel, 156 for 12 bands.
    assert r.json()["detail"] == _over_budget(
        PIXELS * 156, f"{PIXELS} pixels x 156 bytes per pixel (12 bands read, 12 output bands)"
    )
    assert pixel_reads == []


def test_repeats_count_in_the_budget(client, item, bbox, pixel_reads):
    """24 raw uint16 bands, the 12 bands twice: 3 bytes read + 3 stacked each, 144 a pixel."""
    query = "&".join(f"assets={band}" for band in BANDS * 2)
    r = client.get(f"{ITEMS}/{item['id']}/bbox/{bbox}/{SIDE}x{SIDE}.tif?{query}")
    assert r.status_code == 413, r.text
    assert r.json()["detail"] == _over_budget(
        PIXELS * 144, f"{PIXELS} pixels x 144 bytes per pixel (24 bands read, 24 output bands)"
    )
    assert pixel_reads == []


# ------------------------------------------------------------------ every read endpoint


@pytest.mark.parametrize(
    ("path", "params", "detail"),
    [
        (
            "tiles/WebMercatorQuad/{tile}.png",
            {"bidx": [1] * 40},
            "request: reads 40 bands (repeats and mask bands counted), over the limit "
            "max_bands_per_request=32",
        ),
        (
            "bbox/{bbox}/256x256.npy",
            {"expression": ";".join(["b1"] * 17)},
            "expression: 17 outputs is over the limit max_expression_outputs=16",
        ),
        (
            "preview.png",
            {"expression": ";".join(["b1*2"] * 17)},
            "expression: 17 outputs is over the limit max_expression_outputs=16",
        ),
        (
            "point/{lon},{lat}",
            {"expression": ";".join(["b1"] * 17)},
            "expression: 17 outputs is over the limit max_expression_outputs=16",
        ),
        (
            "point/{lon},{lat}",
            {"bidx": [1] * 33},
            "request: reads 33 bands (repeats and mask bands counted), over the limit "
            "max_bands_per_request=32",
        ),
        (
            "statistics",
            {"bidx": [1] * 33},
            "request: reads 33 bands (repeats and mask bands counted), over the limit "
            "max_bands_per_request=32",
        ),
        (
            "tiles/WebMercatorQuad/{tile}.png",
            {"buffer": 100_000},
            "output of 40102465536 pixels is over the limit max_output_pixels=16777216; "
            "ask for a smaller area or size",
        ),
    ],
)
def test_cog_endpoints_are_bounded(
    client, item, cog, tile, bbox, pixel_reads, path, params, detail
):
    minx, miny, maxx, maxy = item["bbox"]
    url = path.format(tile=tile, bbox=bbox, lon=(minx + maxx) / 2, lat=(miny + maxy) / 2)
    r = client.get(f"/cog/{url}", params={"url": cog, **params})
    assert r.status_code == 413, r.text
    assert r.json()["detail"] == detail
    assert pixel_reads == []


def test_cog_feature_is_bounded(client, item, visual, pixel_reads):
    feature = {"type": "Feature", "properties": {}, "geometry": item["geometry"]}
    expression = ";".join(["b1", "b2", "b3"] * 5 + ["b1"])
    r = client.post(
        "/cog/feature.npy",
        params={"url": visual, "expression": expression, "width": SIDE, "height": SIDE},
        json=feature,
    )
    assert r.status_code == 413, r.text
    # 3 uint8 bands read (6) + 3 float64 inputs (27) + 16 float32 outputs (80) + work (16).
    assert r.json()["detail"] == _over_budget(
        PIXELS * 129, f"{PIXELS} pixels x 129 bytes per pixel (3 bands read, 16 output bands)"
    )
    assert pixel_reads == []


HARMONIZED_12 = "&".join(f"assets={band}" for band in BANDS) + "&harmonize=true"


@pytest.mark.parametrize(
    ("method", "path", "query", "body"),
    [
        ("get", "preview.npy", f"{HARMONIZED_12}&max_size={SIDE}", None),
        ("get", "statistics", f"{HARMONIZED_12}&max_size={SIDE}", None),
        ("post", "feature.npy", f"{HARMONIZED_12}&width={SIDE}&height={SIDE}", "feature"),
        ("post", "statistics", f"{HARMONIZED_12}&width={SIDE}&height={SIDE}", "feature"),
    ],
)
def test_item_endpoints_are_bounded(client, item, pixel_reads, method, path, query, body):
    feature = {"type": "Feature", "properties": {}, "geometry": item["geometry"]}
    url = f"{ITEMS}/{item['id']}/{path}?{query}"
    r = client.get(url) if method == "get" else client.post(url, json=feature)
    assert r.status_code == 413, r.text
    assert r.json()["detail"] == _over_budget(
        PIXELS * 156, f"{PIXELS} pixels x 156 bytes per pixel (12 bands read, 12 output bands)"
    )
    assert pixel_reads == []


@pytest.mark.parametrize(
    ("path", "query", "detail"),
    [
        (
            "asset_statistics",
            "&".join(["assets=red"] * 33),
            "assets: 33 assets (repeats counted) is over the limit max_assets_per_request=32",
        ),
        (
            "asset_statistics",
            "&".join(f"assets={band}" for band in BANDS * 2) + f"&max_size={SIDE}",
            _over_budget(
                PIXELS * 144,
                f"{PIXELS} pixels x 144 bytes per pixel (24 bands read, 24 output bands)",
            ),
        ),
        (
            "point/{lon},{lat}",
            "&".join(["assets=B04"] * 33),
            "assets: 33 assets (repeats counted) is over the limit max_assets_per_request=32",
        ),
        (
            "point/{lon},{lat}",
            "expression=" + ";".join(["nir-red"] * 17).replace("-", "%2D"),
            "expression: 17 outputs is over the limit max_expression_outputs=16",
        ),
        (
            "tiles/WebMercatorQuad/{tile}.png",
            "assets=red&buffer=2000",
            "output of 18113536 pixels is over the limit max_output_pixels=16777216; "
            "ask for a smaller area or size",
        ),
    ],
)
def test_item_points_statistics_and_tiles_are_bounded(
    client, item, tile, pixel_reads, path, query, detail
):
    minx, miny, maxx, maxy = item["bbox"]
    url = path.format(tile=tile, lon=(minx + maxx) / 2, lat=(miny + maxy) / 2)
    r = client.get(f"{ITEMS}/{item['id']}/{url}?{query}")
    assert r.status_code == 413, r.text
    assert r.json()["detail"] == detail
    assert pixel_reads == []


# ------------------------------------------------------------------ legitimate requests


def test_true_colour_math_at_4096px_is_within_the_default_budget(demo_dir, item):
    """The figure the default is chosen by: red;green;blue with the SCL mask, 4096x4096."""
    path = sorted((demo_dir / "items").glob("*.json"))[0]
    reader = S2STACReader(
        pystac.Item.from_file(str(path)), budget=MemoryBudget.from_settings(Settings())
    )
    cost = reader.request_cost(PIXELS, expression="red;green;blue", mask="scl-clear")
    # 3 uint16 bands + SCL uint8 with masks (11), 3 reflectances (15), 3 float64
    # inputs (27), 3 float32 outputs (15), one output's work (16): 84 bytes a pixel.
    assert (cost.bands, cost.outputs, cost.bytes_per_pixel) == (4, 3, 84)
    assert cost.total == 1_409_286_144 < Settings().max_request_bytes


def test_harmonized_repeats_count_in_the_result(demo_dir):
    path = sorted((demo_dir / "items").glob("*.json"))[0]
    reader = S2STACReader(pystac.Item.from_file(str(path)))
    cost = reader.request_cost(100, assets=["red", "red"], harmonize=True)
    # Read twice (2 x 3), one reflectance (5), a float32 result of two bands (2 x 5).
    assert (cost.bands, cost.outputs, cost.bytes_per_pixel, cost.total) == (2, 2, 21, 2100)


@pytest.mark.parametrize(
    "params",
    [
        {"expression": "red;green;blue", "mask": "scl-clear"},
        {"assets": ["red", "green", "blue"]},
        {"assets": ["red", "green", "blue"], "harmonize": True},
        {"expression": "(nir-red)/(nir+red)", "mask": "scl-clear"},
    ],
)
def test_true_colour_and_ndvi_crops_at_4096px_reach_the_read(
    client, item, bbox, no_reading, params
):
    r = client.get(f"{ITEMS}/{item['id']}/bbox/{bbox}/{SIDE}x{SIDE}.npy", params=params)
    assert r.status_code == 418, r.text
    assert r.json()["detail"] == "the read was reached"


def test_legitimate_tiles_still_work(client, item, tile, cog):
    r = client.get(
        f"{ITEMS}/{item['id']}/tiles/WebMercatorQuad/{tile}.png",
        params={"expression": "red;green;blue", "mask": "scl-clear", "tilesize": 1024},
    )
    assert r.status_code == 200, r.text
    r = client.get(
        f"/cog/tiles/WebMercatorQuad/{tile}.npy",
        params={"url": cog, "expression": ";".join(["b1"] * 16), "tilesize": 512},
    )
    assert r.status_code == 200, r.text
    r = client.get(f"{ITEMS}/{item['id']}/asset_statistics", params={"assets": BANDS})
    assert r.status_code == 200, r.text
    assert sorted(r.json()) == sorted(BANDS)


# ------------------------------------------------------------------ mosaics


def test_a_mosaic_median_keeps_every_item(client, search_id, bbox, pixel_reads):
    """Median keeps a stack of every item (and its stacked copy): 6 items, 12 layers."""
    r = client.get(
        f"/searches/{search_id}/bbox/{bbox}/{SIDE}x{SIDE}.npy",
        params={"expression": "red;green;blue", "pixel_selection": "median"},
    )
    assert r.status_code == 413, r.text
    # One read in flight: 3 uint16 (9), 3 reflectances (15), 3 float64 inputs (27),
    # 3 float32 outputs (15), work (16) = 82 bytes a pixel; 12 layers of 15 bytes kept.
    per_item = f"{PIXELS} pixels x 82 bytes per pixel (3 bands read, 3 output bands)"
    assert r.json()["detail"] == _over_budget(
        PIXELS * (82 + 12 * 15),
        f"mosaic of 6 items by median: 1 item read in flight of {per_item}, and 12 layers "
        "of 15 bytes per pixel kept by the pixel selection",
        what="bbox " + ",".join(f"{float(v):g}" for v in bbox.split(",")),
    )
    assert pixel_reads == []


def test_a_big_mosaic_read_is_read_one_item_at_a_time(client, search_id, bbox, monkeypatch):
    """4096x4096 true colour by first: one read in flight fits the budget, four do not."""
    windows: list[int] = []

    def read_mosaic(*args, max_window, **kwargs):
        windows.append(max_window)
        raise ReadReached("the read was reached")

    monkeypatch.setattr("app.mosaic.backend.read_mosaic", read_mosaic)
    r = client.get(
        f"/searches/{search_id}/bbox/{bbox}/{SIDE}x{SIDE}.npy",
        params={"expression": "red;green;blue"},
    )
    assert r.status_code == 418, r.text
    r = client.get(
        f"/searches/{search_id}/bbox/{bbox}/512x512.npy", params={"expression": "red;green;blue"}
    )
    assert r.status_code == 418, r.text
    assert windows == [1, 4]


def test_mosaic_tiles_and_points_are_bounded(client, search_id, item, tile, pixel_reads):
    query = "&".join(["assets=red"] * 33)
    r = client.get(f"/searches/{search_id}/tiles/WebMercatorQuad/{tile}.png?{query}")
    assert r.status_code == 413, r.text
    assert r.json()["detail"] == (
        "assets: 33 assets (repeats counted) is over the limit max_assets_per_request=32"
    )
    minx, miny, maxx, maxy = item["bbox"]
    r = client.get(
        f"/searches/{search_id}/point/{(minx + maxx) / 2},{(miny + maxy) / 2}",
        params={"expression": ";".join(["red"] * 17)},
    )
    assert r.status_code == 413, r.text
    assert r.json()["detail"] == (
        "expression: 17 outputs is over the limit max_expression_outputs=16"
    )
    assert pixel_reads == []
    r = client.get(
        f"/searches/{search_id}/tiles/WebMercatorQuad/{tile}.png",
        params={"expression": "red;green;blue", "pixel_selection": "median"},
    )
    assert r.status_code == 200, r.text


@pytest.fixture(scope="module")
def small_budget(demo_settings: Settings) -> Iterator[TestClient]:
    """A service whose budget is 1 MiB: what a 256 px tile of a few bands fits in."""
    settings = demo_settings.model_copy(update={"max_request_bytes": 2**20})
    with TestClient(create_app(settings)) as test_client:
        yield test_client


def test_the_budget_is_a_setting(small_budget, item, tile, pixel_reads):
    # 256x256 x (uint16 + mask) x 2 (read, stacked) = 393216 bytes: within 1 MiB.
    url = f"{ITEMS}/{item['id']}/tiles/WebMercatorQuad/{tile}.png"
    assert small_budget.get(url, params={"assets": "red"}).status_code == 200
    reads = len(pixel_reads)
    r = small_budget.get(url, params={"assets": "red", "harmonize": True})
    # harmonized: 3 read + 5 reflectance + 5 stacked = 13 bytes x 65536 = 851968 bytes.
    assert r.status_code == 200, r.text
    r = small_budget.get(url, params={"assets": ["red", "green"], "harmonize": True})
    assert r.status_code == 413, r.text
    assert r.json()["detail"] == (
        "request: needs about 1703936 bytes (2 MiB: 65536 pixels x 26 bytes per pixel "
        "(2 bands read, 2 output bands)), over the limit max_request_bytes=1048576 (1 MiB); "
        "ask for fewer bands or outputs, or a smaller area or size"
    )
    assert len(pixel_reads) > reads  # the accepted ones read


# ------------------------------------------------------------------ the Statistical API

UTM = "http://www.opengis.net/def/crs/EPSG/0/32633"
# The demo scenes' 10 m grid: 256 x 256 pixels from (582840, 5168160), EPSG:32633.
SCENE_BOX = [582840, 5168160 - 2560, 582840 + 2560, 5168160]


def _stats_request(outputs: dict, resolution: float, mask: str = "scl-clear") -> dict:
    return {
        "input": {
            "bounds": {"bbox": SCENE_BOX, "properties": {"crs": UTM}},
            "data": [{"type": "sentinel-2-l2a"}],
        },
        "aggregation": {
            "timeRange": {"from": "2023-04-01T00:00:00Z", "to": "2023-10-01T00:00:00Z"},
            "aggregationInterval": {"of": "P30D"},
            "resx": resolution,
            "resy": resolution,
            "outputs": outputs,
            "mask": mask,
        },
    }


@pytest.fixture
def scene_reads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Scenes the Statistical API reads during a test."""
    from app.stats.reading import SceneReader

    calls: list[str] = []
    original = SceneReader.read

    def counting(self, scene, *args, **kwargs):
        calls.append(scene.id)
        return original(self, scene, *args, **kwargs)

    monkeypatch.setattr(SceneReader, "read", counting)
    return calls


def test_statistics_output_bands_are_capped(client, scene_reads):
    body = _stats_request({"many": {"expression": ";".join(["red"] * 17)}}, 10)
    r = client.post("/statistics", json=body)
    assert r.status_code == 413, r.text
    assert r.json()["detail"] == (
        "aggregation.outputs.many.expression: 17 ';'-separated bands, over the limit "
        "max_expression_outputs=16"
    )
    assert scene_reads == []


def test_statistics_memory_is_bounded(client, scene_reads):
    """16 bands over the 12 reflectance bands on 1 m cells: ~6.5 M cells x 344 bytes."""
    bands = (BANDS + BANDS)[:16]
    body = _stats_request({"all": {"expression": ";".join(bands)}}, 1, mask="none")
    r = client.post("/statistics", json=body)
    assert r.status_code == 413, r.text
    detail = r.json()["detail"]
    # 16 bands kept (80) + 12 reflectances (60) + 12 float64 inputs (108) + 16 float32
    # bands (80) + work (16) = 344 bytes a cell.
    prefix, rest = detail.split(" pixels x 344 bytes per pixel (its outputs' bands and assets)")
    count = int(prefix.removeprefix("input.bounds: the geometry's "))
    assert 2560 * 2560 <= count <= 2562 * 2562
    assert rest == (
        f" need about {count * 344} bytes, over the limit max_request_bytes={2 * GIB}; use a "
        "smaller area, larger resx/resy or fewer outputs"
    )
    assert scene_reads == []


def test_ndvi_statistics_at_the_pixel_limit_are_within_the_budget(demo_settings):
    from app.stats.engine import bytes_per_cell
    from app.stats.models import StatisticalRequest
    from app.stats.plan import make_plan

    body = _stats_request({"ndvi": {"expression": "(nir-red)/(nir+red)"}}, 10)
    plan = make_plan(StatisticalRequest.model_validate(body), demo_settings)
    # 1 band kept (5) + nir, red, scl (15) + 2 float64 inputs (18) + 1 band (5) + work (16).
    assert bytes_per_cell(plan) == 59
    assert demo_settings.stats_max_pixels * 59 < demo_settings.max_request_bytes


def test_statistics_within_the_budget_still_work(client, scene_reads):
    body = _stats_request({"ndvi": {"expression": "(nir-red)/(nir+red)"}}, 10)
    r = client.post("/statistics", json=body)
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "OK"
    assert scene_reads


@pytest.mark.parametrize("prefix", ["cog", "item"])
def test_padding_is_dropped_where_it_would_warp_the_data_at_full_resolution(
    client, item, cog, tile, paddings, prefix
):
    # A padded zoom-0 tile was a WarpedVRT window of the whole world at the band's own
    # resolution (no overviews): 25-67 s of GDAL for one request. Near the data's
    # resolution (zoom 14) the padding is kept; at zoom 0 the tile is read without it.
    base = (
        f"/cog/tiles/WebMercatorQuad/{{}}.npy?url={cog}&padding=2"
        if prefix == "cog"
        else f"{ITEMS}/{item['id']}/tiles/WebMercatorQuad/{{}}.npy?assets=red&padding=2"
    )
    near = client.get(base.format(tile))
    assert near.status_code == 200, near.text
    assert paddings == [2]
    paddings.clear()
    far = client.get(base.format("0/0/0"))
    assert far.status_code == 200, far.text
    assert paddings == [0]
    unpadded = client.get(base.format("0/0/0").replace("&padding=2", ""))
    assert unpadded.content == far.content


def test_request_threads_bounds_the_requests_computed_at_once(demo_settings):
    # Memory under load settles near caches + concurrent requests x their working set
    # (bench/soak.py): request_threads is anyio's worker-thread limit, set at start-up.
    from anyio import to_thread

    app = create_app(demo_settings.model_copy(update={"request_threads": 3}))

    @app.get("/_threads")
    async def threads() -> int:
        return to_thread.current_default_thread_limiter().total_tokens

    with TestClient(app) as test_client:
        assert test_client.get("/_threads").json() == 3
