"""Evalscripts wherever band math is accepted: tiles, crops, points, searches, statistics,
batch statistics and batch processing give what the same request with an expression gives,
or what the script means computed here with rasterio + numpy."""

import io
import pickle
from pathlib import Path

import demo_reads as demo
import morecantile
import numpy as np
import pystac
import pytest
import rasterio
from affine import Affine
from PIL import Image
from rasterio.windows import from_bounds

from app.batch.processing.engine import process_tile
from app.batch.processing.models import BatchProcessRequest
from app.batch.processing.spec import GridTile
from app.cli import build_parser
from app.cli_batch import build_process_request, build_request
from app.errors import BadRequestError
from app.settings import Settings
from app.stats.models import StatisticalRequest
from app.stats.plan import make_plan

SCRIPTS = Path(__file__).parent / "evalscripts"
ITEMS = "/collections/sentinel-2-l2a/items"
NDVI = "(B08-B04)/(B08+B04)"
SEASON = {"from": "2023-04-01T00:00:00Z", "to": "2023-10-01T00:00:00Z"}


def _script(name: str) -> str:
    return (SCRIPTS / f"{name}.js").read_text()


def _npy(response) -> np.ndarray:
    assert response.status_code == 200, response.text
    return np.load(io.BytesIO(response.content))


def _item(demo_dir: Path, applied: bool = True) -> dict:
    return next(
        i
        for i in demo.items(demo_dir)
        if i["properties"]["earthsearch:boa_offset_applied"] is applied
    )


def _crop_bounds(item: dict, px: int = 40, size: tuple[int, int] = (96, 64)) -> tuple:
    t = item["assets"]["red"]["proj:transform"]
    minx = t[2] + px * t[0]
    maxy = t[5] + px * t[4]
    return (minx, maxy + size[1] * t[4], minx + size[0] * t[0], maxy)


def _reflectance(demo_dir: Path, item: dict, asset: str, bounds) -> np.ma.MaskedArray:
    scale, offset = demo.scale_offset(item, asset)
    with rasterio.open(demo.href(demo_dir, item, asset)) as src:
        dn = src.read(1, window=from_bounds(*bounds, transform=src.transform), masked=True)
    return dn.astype("float64") * scale + offset


def _lonlat_tile(item: dict, zoom: int = 14) -> morecantile.Tile:
    minx, miny, maxx, maxy = item["bbox"]
    return morecantile.tms.get("WebMercatorQuad").tile((minx + maxx) / 2, (miny + maxy) / 2, zoom)


# --------------------------------------------------------------------------- tiler


@pytest.mark.parametrize("applied", [True, False])
def test_ndvi_crop_equals_the_expression(client, demo_dir, applied):
    item = _item(demo_dir, applied)
    bounds = ",".join(map(str, _crop_bounds(item)))
    path = f"{ITEMS}/{item['id']}/bbox/{bounds}.npy"
    common = {"coord_crs": "epsg:32633", "dst_crs": "epsg:32633"}
    by_script = _npy(client.get(path, params={**common, "evalscript": _script("ndvi")}))
    by_expression = _npy(client.get(path, params={**common, "expression": NDVI}))
    assert by_script.shape == by_expression.shape == (2, 64, 96)
    np.testing.assert_array_equal(by_script[-1], by_expression[-1])
    valid = by_script[-1] > 0
    assert valid.any()
    np.testing.assert_allclose(by_script[0][valid], by_expression[0][valid], rtol=1e-6)


def test_ndvi_tile_and_point_equal_the_expression(client, demo_dir):
    item = _item(demo_dir)
    tile = _lonlat_tile(item)
    path = f"{ITEMS}/{item['id']}/tiles/WebMercatorQuad/{tile.z}/{tile.x}/{tile.y}.npy"
    by_script = _npy(client.get(path, params={"evalscript": _script("ndvi")}))
    by_expression = _npy(client.get(path, params={"expression": NDVI}))
    assert by_script.shape == (2, 256, 256)
    np.testing.assert_allclose(by_script, by_expression, rtol=1e-6)

    minx, miny, maxx, maxy = item["bbox"]
    point = f"{ITEMS}/{item['id']}/point/{(minx + maxx) / 2},{(miny + maxy) / 2}"
    script_point = client.get(point, params={"evalscript": _script("ndvi")})
    expression_point = client.get(point, params={"expression": NDVI})
    assert script_point.status_code == 200, script_point.text
    np.testing.assert_allclose(
        script_point.json()["values"], expression_point.json()["values"], rtol=1e-6
    )


def test_true_colour_png_is_the_scripts_rgba(client, demo_dir):
    """A 4-band AUTO output: RGB = clamp(round(255 * 2.5 * reflectance)), alpha = dataMask."""
    item = _item(demo_dir)
    bounds = _crop_bounds(item)
    r = client.get(
        f"{ITEMS}/{item['id']}/bbox/{','.join(map(str, bounds))}.png",
        params={
            "evalscript": _script("true_color_gain"),
            "coord_crs": "epsg:32633",
            "dst_crs": "epsg:32633",
        },
    )
    assert r.status_code == 200, r.text
    image = np.asarray(Image.open(io.BytesIO(r.content)))
    assert image.shape == (64, 96, 4)
    channels = [_reflectance(demo_dir, item, key, bounds) for key in ("red", "green", "blue")]
    nodata = np.ma.getmaskarray(channels[0])
    for band, reflectance in enumerate(channels):
        expected = np.clip(np.round(np.ma.getdata(reflectance) * 2.5 * 255), 0, 255)
        got = image[..., band]
        # PNG rounding of the same float: equal, or off by one at .5.
        assert np.abs(got[~nodata].astype(int) - expected[~nodata]).max() <= 1
    np.testing.assert_array_equal(image[..., 3] == 0, nodata)


def test_search_tiles_take_evalscripts(client, demo_dir):
    r = client.post(
        "/searches/register",
        json={"collections": ["sentinel-2-l2a"], "datetime": "2023-04-01T00:00:00Z/.."},
    )
    assert r.status_code == 200, r.text
    search = r.json()["id"]
    item = _item(demo_dir)
    tile = _lonlat_tile(item, zoom=13)
    path = f"/searches/{search}/tiles/WebMercatorQuad/{tile.z}/{tile.x}/{tile.y}.npy"
    by_script = _npy(client.get(path, params={"evalscript": _script("ndvi")}))
    by_expression = _npy(client.get(path, params={"expression": NDVI}))
    np.testing.assert_allclose(by_script, by_expression, rtol=1e-6)


def test_bad_evalscripts_are_400s_naming_the_problem(client, demo_dir):
    item = _item(demo_dir)
    point = f"{ITEMS}/{item['id']}/point/{item['bbox'][0] + 0.01},{item['bbox'][1] + 0.01}"
    r = client.get(point, params={"evalscript": _script("ndvi"), "expression": NDVI})
    assert r.status_code == 400 and "not both" in r.json()["detail"]
    r = client.get(point, params={"evalscript": 'function setup() { return {input: ["B04"]'})
    assert r.status_code == 400
    assert "line" in r.json()["detail"]
    r = client.get(point, params={"evalscript": _script("ndvi"), "harmonize": "false"})
    assert r.status_code == 400 and "units" in r.json()["detail"]


# --------------------------------------------------------------------------- statistics


def _statistical(aggregation: dict, geometry: dict) -> dict:
    """A Statistical API request as sentinelhub-py's SentinelHubStatistical sends it."""
    return {
        "input": {
            "bounds": {"geometry": geometry, "properties": {"crs": "EPSG:4326"}},
            "data": [{"type": "sentinel-2-l2a", "dataFilter": {}}],
        },
        "aggregation": {
            "timeRange": SEASON,
            "aggregationInterval": {"of": "P1D"},
            "resx": 0.0001,
            "resy": 0.0001,
            **aggregation,
        },
        "calculations": {"default": {"statistics": {"default": {"percentiles": {"k": [50]}}}}},
    }


def _field(demo_dir: Path) -> dict:
    import json

    fields = json.loads((demo_dir / "fields.geojson").read_text())
    return fields["features"][0]["geometry"]


def test_statistics_of_the_statistical_api_script_equal_the_expression(client, demo_dir):
    """Sentinel Hub's NDVI + dataMask script: its dataMask drops water (SCL 6) and 0/0."""
    geometry = _field(demo_dir)
    by_script = client.post(
        "/statistics",
        json=_statistical({"evalscript": _script("statistical_ndvi_datamask")}, geometry),
    )
    by_expression = client.post(
        "/statistics",
        json=_statistical(
            {"outputs": {"ndvi": {"expression": NDVI}}, "mask": "scl != 6"}, geometry
        ),
    )
    assert by_script.status_code == 200, by_script.text
    assert by_expression.status_code == 200, by_expression.text
    script_data, expression_data = by_script.json()["data"], by_expression.json()["data"]
    assert len(script_data) == len(expression_data) > 0
    means = [d["outputs"]["ndvi"]["bands"]["B0"]["stats"]["mean"] for d in expression_data]
    assert any(mean != "NaN" for mean in means)
    for ours, theirs in zip(script_data, expression_data, strict=True):
        assert ours["interval"] == theirs["interval"]
        assert set(ours["outputs"]) == {"ndvi"}  # dataMask is not an output
        a = ours["outputs"]["ndvi"]["bands"]["B0"]["stats"]
        b = theirs["outputs"]["ndvi"]["bands"]["B0"]["stats"]
        assert a["sampleCount"] == b["sampleCount"]
        assert a["noDataCount"] == b["noDataCount"]
        for key in ("mean", "stDev", "min", "max"):
            if b[key] == "NaN":
                assert a[key] == "NaN"
            else:
                assert a[key] == pytest.approx(b[key], rel=1e-6, abs=1e-9)


def test_statistics_refuse_outputs_and_evalscript_together(client, demo_dir):
    body = _statistical(
        {"evalscript": _script("ndvi"), "outputs": {"ndvi": {"expression": NDVI}}},
        _field(demo_dir),
    )
    r = client.post("/statistics", json=body)
    assert r.status_code == 400
    assert "aggregation.outputs" in r.json()["detail"]


def test_a_statistics_plan_with_an_evalscript_pickles(demo_dir):
    """Batch statistics send the plan to Dask workers."""
    request = StatisticalRequest.model_validate(
        _statistical({"evalscript": _script("multi_output")}, _field(demo_dir))
    )
    plan = make_plan(request, Settings())
    assert [output.name for output in plan.outputs] == ["default", "index", "math"]
    assert [len(output.bands) for output in plan.outputs] == [3, 2, 6]
    copy = pickle.loads(pickle.dumps(plan))
    arrays = {
        name: np.ma.MaskedArray(np.linspace(0.01, 0.5, 12, dtype=np.float32))
        for name in copy.outputs[1].expression.names
    }
    np.testing.assert_array_equal(
        copy.outputs[1].expression.evaluate(arrays), plan.outputs[1].expression.evaluate(arrays)
    )


# --------------------------------------------------------------------------- batch processing


def _process_body(demo_dir: Path, process_request: dict) -> dict:
    item = _item(demo_dir)
    return {
        "processRequest": {
            "input": {
                "bounds": {"bbox": item["bbox"], "properties": {"crs": "EPSG:4326"}},
                "data": [{"type": "sentinel-2-l2a", "dataFilter": {"timeRange": SEASON}}],
            },
            **process_request,
        },
        "input": {"type": "tiling-grid", "id": 1, "resolution": 10},
    }


def test_batch_processing_tile_with_an_evalscript_equals_the_expressions(demo_dir):
    """The multi-output script's `index` (2 bands) is the NDVI and NBR expressions' tile."""
    script = _process_body(demo_dir, {"evalscript": _script("multi_output"), "composite": "median"})
    expressions = _process_body(
        demo_dir,
        {
            "outputs": {
                "ndvi": {"expression": NDVI},
                "nbr": {"expression": "(B08-B11)/(B08+B11)"},
            },
            "composite": "median",
        },
    )
    script_recipe = BatchProcessRequest.model_validate(script).recipe()
    expression_recipe = BatchProcessRequest.model_validate(expressions).recipe()
    specs = {spec.id: spec for spec in script_recipe.outputs}
    assert set(specs) == {"default", "index", "math"}
    assert (specs["default"].data_type, specs["default"].bands) == ("uint8", 3)
    assert (specs["index"].data_type, specs["index"].bands) == ("float32", 2)

    items = [pystac.Item.from_file(str(p)) for p in sorted((demo_dir / "items").glob("*.json"))]
    transform = items[0].assets["red"].extra_fields["proj:transform"]
    tile = GridTile(
        grid="1",
        name="33-evalscript",
        crs="EPSG:32633",
        transform=Affine(10.0, 0.0, transform[2] + 400, 0.0, -10.0, transform[5] - 400),
        width=128,
        height=96,
        resolution=10.0,
    )
    settings = Settings(catalog=str(demo_dir))
    ours = process_tile(tile, items, script_recipe, settings)
    theirs = process_tile(tile, items, expression_recipe, settings)
    assert ours["index"].data.shape == (2, tile.height, tile.width)
    assert ours["index"].descriptions == ["index_B0", "index_B1"]
    np.testing.assert_allclose(ours["index"].data[0], theirs["ndvi"].data[0], rtol=1e-6)
    np.testing.assert_allclose(ours["index"].data[1], theirs["nbr"].data[0], rtol=1e-6)
    assert ours["default"].data.dtype == np.uint8


def test_batch_processing_evalscript_errors_name_the_field(demo_dir):
    body = _process_body(
        demo_dir,
        {"evalscript": _script("ndvi"), "outputs": {"other": {"dataType": "uint8"}}},
    )
    with pytest.raises(BadRequestError) as error:
        BatchProcessRequest.model_validate(body).recipe()
    assert "processRequest.outputs.other" in str(error.value)


# --------------------------------------------------------------------------- CLI


def test_cli_sends_an_evalscript_file(tmp_path):
    script = tmp_path / "ndvi.js"
    script.write_text(_script("ndvi"))
    parser = build_parser()
    stats = parser.parse_args(
        [
            "batch",
            "stats",
            "fields.gpkg",
            "--time",
            "2023-04-01/2023-10-01",
            "--evalscript",
            str(script),
        ]
    )
    body = build_request(stats)
    assert body["aggregation"]["evalscript"] == _script("ndvi")
    assert "outputs" not in body["aggregation"]
    process = parser.parse_args(
        [
            "batch",
            "process",
            "16.3,46.5,16.4,46.6",
            "--grid",
            "1",
            "--resolution",
            "10",
            "--time",
            "2023-06-01/2023-08-31",
            "--evalscript",
            str(script),
        ]
    )
    assert build_process_request(process)["processRequest"]["evalscript"] == _script("ndvi")
    neither = parser.parse_args(
        ["batch", "stats", "fields.gpkg", "--time", "2023-04-01/2023-10-01"]
    )
    with pytest.raises(SystemExit):
        build_request(neither)
    both = parser.parse_args(
        [
            "batch",
            "stats",
            "fields.gpkg",
            "--time",
            "2023-04-01/2023-10-01",
            "-e",
            "ndvi",
            "--evalscript",
            str(script),
        ]
    )
    with pytest.raises(SystemExit):
        build_request(both)


def test_feature_statistics_take_an_evalscript(client, demo_dir):
    """The item's POST .../statistics (a GeoJSON feature): the script's NDVI = the expression's."""
    item = _item(demo_dir)
    geometry = {"type": "Feature", "properties": {}, "geometry": _field(demo_dir)}
    path = f"{ITEMS}/{item['id']}/statistics"
    by_script = client.post(path, params={"evalscript": _script("ndvi")}, json=geometry)
    by_expression = client.post(path, params={"expression": NDVI}, json=geometry)
    assert by_script.status_code == 200, by_script.text
    (ours,) = by_script.json()["properties"]["statistics"].values()
    (theirs,) = by_expression.json()["properties"]["statistics"].values()
    assert ours["count"] == theirs["count"] > 0
    for key in ("mean", "std", "min", "max", "median"):
        assert ours[key] == pytest.approx(theirs[key], rel=1e-6)


def test_units_dn_is_reflectance_times_10000(client, demo_dir):
    """Sentinel Hub's DN of L2A bands, for either processing baseline; SCL stays a class."""
    script = """//VERSION=3
function setup() {
  return { input: [{ bands: ["B04", "SCL"], units: "DN" }],
           output: { bands: 2, sampleType: "FLOAT32" } };
}
function evaluatePixel(s) { return [s.B04, s.SCL]; }
"""
    for applied in (True, False):
        item = _item(demo_dir, applied)
        minx, miny, maxx, maxy = item["bbox"]
        point = f"{ITEMS}/{item['id']}/point/{(minx + maxx) / 2},{(miny + maxy) / 2}"
        by_script = client.get(point, params={"evalscript": script})
        reflectance = client.get(point, params={"expression": "B04;SCL"})
        assert by_script.status_code == 200, by_script.text
        (dn, scl), (red, klass) = by_script.json()["values"], reflectance.json()["values"]
        assert dn == pytest.approx(red * 10000, rel=1e-6)
        assert scl == klass and scl == int(scl)
