"""The tiler's safe defaults over HTTP: allow-list, SSRF, VRT, expressions, limits."""

import json
import math
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from app.main import create_app
from app.settings import Settings

ITEMS = "/collections/sentinel-2-l2a/items"


def _item_id(demo_dir: Path) -> str:
    return sorted((demo_dir / "items").glob("*.json"))[0].stem


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:{port}/item.json",
        "http://localhost:{port}/item.json",
        "http://2130706433:{port}/item.json",
        "http://[::ffff:127.0.0.1]:{port}/item.json",
        "/vsicurl/http://127.0.0.1:{port}/item.json",
    ],
)
@pytest.mark.parametrize(
    "endpoint", ["/stac/info", "/cog/info", "/cog/tiles/WebMercatorQuad/1/1/1"]
)
def test_ssrf_is_refused_before_any_connection(client, listener, url, endpoint):
    port = listener.port
    r = client.get(endpoint, params={"url": url.format(port=port)})
    assert r.status_code == 403, r.text
    assert "url" in r.json()["detail"]
    listener.assert_no_connection()


@pytest.mark.parametrize(
    "url",
    [
        "http://169.254.169.254/latest/meta-data/",
        "file:///etc/passwd",
        "/etc/passwd",
        "/vsicurl/https://sentinel-cogs.s3.us-west-2.amazonaws.com/x.tif",
        "https://example.com/x.tif",
    ],
)
def test_sources_outside_the_allow_list_are_refused(client, url):
    r = client.get("/cog/info", params={"url": url})
    assert r.status_code == 403, r.text


def test_traversal_out_of_the_catalog_is_refused(client, demo_dir):
    r = client.get("/cog/info", params={"url": f"{demo_dir}/../../../etc/passwd"})
    assert r.status_code == 403


def test_crafted_vrt_is_refused(client, demo_dir):
    secret = demo_dir.parent / "secret.tif"
    secret.write_bytes(b"not for you")
    vrt = demo_dir / "cogs" / "evil.tif"
    vrt.write_text(
        '<VRTDataset rasterXSize="1" rasterYSize="1"><VRTRasterBand dataType="Byte" band="1">'
        f"<SimpleSource><SourceFilename>{secret}</SourceFilename></SimpleSource>"
        "</VRTRasterBand></VRTDataset>"
    )
    try:
        r = client.get("/cog/info", params={"url": str(vrt)})
        assert r.status_code == 403 and "VRT" in r.json()["detail"]
    finally:
        vrt.unlink()


def test_item_whose_asset_points_outside_is_refused(demo_dir, tmp_path, listener):
    """A catalog item is data too: its hrefs are checked before GDAL opens them."""
    folder = tmp_path / "catalog"
    (folder / "items").mkdir(parents=True)
    (folder / "collection.json").write_text((demo_dir / "collection.json").read_text())
    item = json.loads(next((demo_dir / "items").glob("*.json")).read_text())
    port = listener.port
    item["assets"]["red"]["href"] = f"http://127.0.0.1:{port}/B04.tif"
    (folder / "items" / f"{item['id']}.json").write_text(json.dumps(item))
    app = create_app(Settings(catalog=str(folder), data_dir=tmp_path / "data"))
    with TestClient(app) as client:
        r = client.get(f"{ITEMS}/{item['id']}/preview.png", params={"assets": "red"})
    assert r.status_code == 403, r.text
    listener.assert_no_connection()


@pytest.mark.parametrize(
    "expression",
    [
        "__import__('os').system('id')",
        "nir.__class__",
        "(nir-red",
        "system(nir)",
        "nir[0]",
        "lambda: 1",
        "'a' * 3",
        "nir; ",
        "x" * 5000,
    ],
)
def test_malicious_or_malformed_expressions_are_400(client, demo_dir, expression):
    r = client.get(f"{ITEMS}/{_item_id(demo_dir)}/preview.png", params={"expression": expression})
    assert r.status_code == 400, r.text
    assert r.json()["detail"].startswith("expression")


def test_unknown_asset_in_expression_is_400(client, demo_dir):
    r = client.get(f"{ITEMS}/{_item_id(demo_dir)}/preview.png", params={"expression": "B99+1"})
    assert r.status_code == 400 and "B99" in r.json()["detail"]


def test_cog_expression_is_validated(client, demo_dir):
    cog = next((demo_dir / "cogs").glob("*/B04.tif"))
    r = client.get("/cog/preview.png", params={"url": str(cog), "expression": "b1.real"})
    assert r.status_code == 400
    r = client.get("/cog/preview.png", params={"url": str(cog), "expression": "b2*1"})
    assert r.status_code == 400 and "b2" in r.json()["detail"]


def test_oversize_requests_name_the_limit(client, demo_dir):
    item = _item_id(demo_dir)
    r = client.get(
        f"{ITEMS}/{item}/bbox/16.0,46.6,16.2,46.7/6000x6000.npy", params={"assets": "red"}
    )
    assert r.status_code == 413 and "max_output_pixels" in r.json()["detail"]
    r = client.get(f"{ITEMS}/{item}/preview.png", params={"assets": "red", "max_size": 10000})
    assert r.status_code == 413 and "max_output_pixels" in r.json()["detail"]
    r = client.get(
        f"{ITEMS}/{item}/tiles/WebMercatorQuad/13/4462/2906.png",
        params={"assets": "red", "tilesize": 4096},
    )
    assert r.status_code == 413 and "max_tile_size" in r.json()["detail"]
    cog = next((demo_dir / "cogs").glob("*/B04.tif"))
    r = client.get("/cog/preview.png", params={"url": str(cog), "max_size": 10000})
    assert r.status_code == 413 and "max_output_pixels" in r.json()["detail"]


def _square(lon: float, lat: float, half: float) -> dict:
    ring = [
        [lon - half, lat - half],
        [lon + half, lat - half],
        [lon + half, lat + half],
        [lon - half, lat + half],
        [lon - half, lat - half],
    ]
    return {
        "type": "Feature",
        "properties": {},
        "geometry": {"type": "Polygon", "coordinates": [ring]},
    }


def test_features_and_statistics_without_a_size_are_bounded(client, demo_dir):
    """A feature read without a size is at native resolution over the feature's bounds.

    One degree square at 10 m is ~90 M pixels (the limit is 16.8 M): refused before reading,
    whatever part of it the item covers; a field-sized polygon is read.
    """
    item = json.loads(next((demo_dir / "items").glob("*.json")).read_text())
    lon, lat = (item["bbox"][0] + item["bbox"][2]) / 2, (item["bbox"][1] + item["bbox"][3]) / 2
    huge, field = _square(lon, lat, 0.5), _square(lon, lat, 0.002)
    cog = next((demo_dir / "cogs").glob("*/B04.tif"))
    for path, params in [
        (f"{ITEMS}/{item['id']}/feature.npy", {"assets": "red"}),
        (f"{ITEMS}/{item['id']}/statistics", {"expression": "(nir-red)/(nir+red)"}),
        ("/cog/feature.npy", {"url": str(cog)}),
        ("/cog/statistics", {"url": str(cog)}),
    ]:
        r = client.post(path, params=params, json=huge)
        assert r.status_code == 413, (path, r.status_code, r.text)
        assert "max_output_pixels" in r.json()["detail"]
        r = client.post(path, params=params, json=field)
        assert r.status_code == 200, (path, r.text)


def test_asset_statistics_size_is_bounded(client, demo_dir):
    item = _item_id(demo_dir)
    r = client.get(f"{ITEMS}/{item}/asset_statistics", params={"assets": "red", "max_size": 10000})
    assert r.status_code == 413 and "max_output_pixels" in r.json()["detail"]
    r = client.get(
        f"{ITEMS}/{item}/asset_statistics", params={"assets": "red", "width": 5000, "height": 5000}
    )
    assert r.status_code == 413 and "max_output_pixels" in r.json()["detail"]
    r = client.get(f"{ITEMS}/{item}/asset_statistics", params={"assets": "red"})
    assert r.status_code == 200 and set(r.json()) == {"red"}


def test_bad_mask_is_rejected(client, demo_dir):
    r = client.get(
        f"{ITEMS}/{_item_id(demo_dir)}/preview.png", params={"assets": "red", "mask": "clouds"}
    )
    assert r.status_code == 422


def test_sources_open_as_geotiff_only(tmp_path):
    """A VRT that got past the allow-list (e.g. served remotely) still does not open."""
    import rasterio
    from rasterio.errors import RasterioIOError

    from app.readers import GTiffReader

    target = tmp_path / "target.tif"
    with rasterio.open(
        target, "w", driver="GTiff", width=2, height=2, count=1, dtype="uint8"
    ) as dst:
        dst.write(np.ones((1, 2, 2), dtype="uint8"))
    vrt = tmp_path / "disguised.tif"
    vrt.write_text(
        '<VRTDataset rasterXSize="2" rasterYSize="2"><VRTRasterBand dataType="Byte" band="1">'
        f"<SimpleSource><SourceFilename>{target}</SourceFilename></SimpleSource>"
        "</VRTRasterBand></VRTDataset>"
    )
    with rasterio.open(vrt) as src:  # GDAL on its own would follow it...
        assert src.driver == "VRT"
    with pytest.raises(RasterioIOError):  # ...the service's reader does not.
        GTiffReader(str(vrt))
    with GTiffReader(str(target)) as src:
        assert src.dataset.driver == "GTiff"


def test_an_allow_listed_private_address_is_still_refused(demo_settings, listener):
    """Even when an operator allow-lists a loopback URL, the private-address rule refuses
    it (unless ``allow_private_sources``): the listening socket receives nothing."""
    port = listener.port
    prefix = f"http://127.0.0.1:{port}/"
    settings = demo_settings.model_copy(update={"allowed_sources": [prefix]})
    with TestClient(create_app(settings)) as client:
        for endpoint in ["/cog/info", "/stac/info"]:
            r = client.get(endpoint, params={"url": prefix + "item.json"})
            assert r.status_code == 403, r.text
            assert "private" in r.json()["detail"] or "loopback" in r.json()["detail"]
    listener.assert_no_connection()


# Inputs a property-based sweep of the OpenAPI (schemathesis, not_a_server_error) found
# reaching GDAL, PROJ, numpy or titiler's algorithms as 500s; each must be a 4xx that says
# which parameter is wrong.
def _bad_requests(item_id: str, cog: str, item_json: str) -> list[tuple[str, str, dict, object]]:
    item = f"{ITEMS}/{item_id}"
    null_geometry = {"type": "Feature", "geometry": None, "properties": {}}
    point = {
        "type": "Feature",
        "properties": {},
        "geometry": {"type": "Point", "coordinates": [16, 46]},
    }
    # NaN vertex (json.dumps writes it as NaN): shapely's bounds skip it, GDAL does not.
    nan_vertex = {
        "type": "Feature",
        "properties": {},
        "geometry": {
            "type": "Polygon",
            "coordinates": [[[16.09, 46.64], [math.nan, 46.64], [16.095, 46.645], [16.09, 46.64]]],
        },
    }
    return [
        # zero-area and inverted bboxes: "Cannot invert geotransform" in GDAL
        ("GET", f"{item}/bbox/0,0,0,0.png", {"assets": "red"}, "bbox"),
        ("GET", "/cog/bbox/16.1,46.7,16.0,46.6.png", {"url": cog}, "bbox"),
        # non-positive sizes (max_size=0 would mean "full resolution" to rio-tiler)
        ("GET", f"{item}/preview.png", {"assets": "red", "max_size": 0}, "max_size"),
        ("GET", "/stac/preview/-5x10.png", {"url": item_json, "assets": "red"}, "width"),
        (
            "GET",
            f"{item}/tiles/WebMercatorQuad/13/4462/2906.png",
            {"assets": "red", "tilesize": 0},
            "tilesize",
        ),
        # a point that is nowhere: PROJ "Invalid latitude"
        ("GET", "/cog/point/0.0,1.85e189", {"url": cog}, "point"),
        ("GET", f"{item}/point/16.1,95", {"assets": "red"}, "point"),
        # nodata the data type cannot hold: numpy "Cannot convert fill_value nan to uint16"
        ("GET", "/cog/preview.png", {"url": cog, "nodata": "nan"}, "nodata"),
        ("GET", f"{item}/preview.png", {"assets": "red", "nodata": "-1"}, "nodata"),
        ("GET", f"{item}/asset_statistics", {"assets": "red", "nodata": "nan"}, "nodata"),
        ("GET", f"{item}/statistics", {"assets": "red", "nodata": "-3.2e16"}, "nodata"),
        ("GET", "/cog/statistics", {"url": cog, "nodata": "nan"}, "nodata"),
        # the SCL is read on its own when the bands resample: at the bands' size
        (
            "GET",
            f"{item}/preview.png",
            {"assets": "red", "mask": "scl-clear", "resampling": "bilinear", "nodata": "nan"},
            "nodata",
        ),
        # band indexes the COG does not have
        ("GET", "/cog/preview.png", {"url": cog, "bidx": 7}, "bidx"),
        # titiler algorithms with parameters that are not an object, or wrong
        (
            "GET",
            f"{item}/preview.png",
            {"assets": "red", "algorithm": "max", "algorithm_params": "null"},
            "algorithm_params",
        ),
        (
            "GET",
            f"{item}/preview.png",
            {"assets": "red", "algorithm": "hillshade", "algorithm_params": '{"azimuth": "east"}'},
            "algorithm_params",
        ),
        (
            "GET",
            f"{item}/preview.png",
            {"assets": "red", "algorithm": "max", "algorithm_params": "{"},
            "algorithm_params",
        ),
        # zoom levels a tile matrix set does not have, or absurd
        (
            "GET",
            f"{item}/tiles/WGS1984Quad/16138/3240749141/24697804.png",
            {"assets": "red"},
            "out of range",
        ),
        # (titiler builds a tile matrix for every level up to maxzoom: seconds of CPU)
        (
            "GET",
            "/stac/tiles/WGS1984Quad",
            {"url": item_json, "maxzoom": 25804260118586612},
            "maxzoom",
        ),
        ("GET", f"{item}/tiles/CDB1GlobalGrid", {"minzoom": -13668140}, "minzoom"),
        ("GET", f"{item}/WebMercatorQuad/tilejson.json", {"maxzoom": 1000}, "maxzoom"),
        ("GET", f"{item}/tiles/CDB1GlobalGrid", {"maxzoom": 22}, "TileMatrix not found"),
        # a bbox that is nowhere on Earth: inf in the scene's CRS
        ("GET", "/cog/bbox/-7.3e19,2.8e16,-1.6e16,4.2e16.png", {"url": cog}, "bbox"),
        # histograms numpy refuses, or too many bins
        ("GET", "/cog/statistics", {"url": cog, "histogram_bins": "0"}, "histogram_bins"),
        (
            "GET",
            f"{item}/statistics",
            {"assets": "red", "histogram_bins": "10000000"},
            "max_histogram_bins",
        ),
        ("GET", "/cog/statistics", {"url": cog, "histogram_bins": "5,3,9"}, "histogram_bins"),
        ("GET", "/cog/statistics", {"url": cog, "histogram_range": "10,1"}, "histogram_range"),
        # one side given, the other derived: 118152 x 118152 px (26 GiB)
        ("GET", "/cog/preview.png", {"url": cog, "width": 118152}, "max_output_pixels"),
        (
            "GET",
            f"{item}/bbox/16.0,46.6,16.2,46.7.png",
            {"assets": "red", "height": 9000},
            "max_output_pixels",
        ),
        # CRS values rasterio fails on other than by ValueError (a TypeError: was a 500)
        (
            "GET",
            f"{item}/bbox/16.09,46.64,16.1,46.65.npy",
            {"assets": "red", "coord_crs": "[[-133]]"},
            "coord_crs",
        ),
        ("GET", "/cog/preview.png", {"url": cog, "dst_crs": "[[1]]"}, "dst_crs"),
        ("GET", "/stac/info.geojson", {"url": item_json, "assets": "red", "crs": "[[1]]"}, "crs"),
        # percentiles are 0..100
        ("GET", "/cog/statistics", {"url": cog, "p": [50, 322856]}, "percentiles"),
        # a row the level does not have
        ("GET", "/cog/tiles/GNOSISGlobalGrid/3/1/72", {"url": cog}, "not in GNOSISGlobalGrid"),
        # band math that names nothing to read (a constant has no grid)
        ("GET", f"{item}/point/16.1,46.65", {"expression": "4"}, "names no band"),
        ("GET", "/cog/preview.png", {"url": cog, "expression": "2*3"}, "names no band"),
        # features without a polygon
        ("POST", f"{item}/feature.png", {"assets": "red"}, null_geometry),
        ("POST", "/cog/feature.png", {"url": cog}, point),
        ("POST", f"{item}/statistics", {"assets": "red"}, null_geometry),
        ("POST", f"{item}/statistics", {"assets": "red"}, nan_vertex),
        ("POST", f"{item}/feature.png", {"assets": "red"}, nan_vertex),
        ("POST", "/cog/feature.npy", {"url": cog}, nan_vertex),
    ]


def test_bad_input_is_a_4xx_naming_what_is_wrong(client, demo_dir):
    item = json.loads(next((demo_dir / "items").glob("*.json")).read_text())
    cog = str(next((demo_dir / "cogs").glob("*/B04.tif")))
    item_json = str(next((demo_dir / "items").glob("*.json")))
    for method, path, params, expected in _bad_requests(item["id"], cog, item_json):
        if method == "POST":
            body = json.dumps(expected)
            r = client.post(
                path, params=params, content=body, headers={"content-type": "application/json"}
            )
            expected = "feature"
        else:
            r = client.get(path, params=params)
        assert 400 <= r.status_code < 500, (path, params, r.status_code, r.text)
        assert expected in r.text, (path, params, r.text)  # 422s list the field
