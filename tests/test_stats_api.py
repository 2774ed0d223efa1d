"""The Statistical API against independent references on the demo catalog.

References are computed here without the engine: NDVI rasters from the band COGs with
rasterio + numpy (harmonized as ``DN * scale + offset`` from the items' ``raster:bands``),
then exactextract, rasterstats and ``rasterio.features.geometry_mask`` + numpy.
"""

import copy
import json
import math
import pickle
from datetime import datetime
from pathlib import Path

import demo_reads as demo
import numpy as np
import pandas as pd
import pyogrio.raw
import pytest
import rasterio
import shapely
import shapely.geometry
from exactextract import exact_extract
from exactextract.feature import JSONFeatureSource
from fastapi.testclient import TestClient
from pyproj import Transformer
from rasterio.features import geometry_mask
from rasterstats import zonal_stats

from app.catalog.local import LocalCatalog
from app.main import create_app
from app.sentinel2 import DEFAULT_SCL_MASK
from app.settings import Settings
from app.stats import compute_many, compute_statistics

NODATA = -9999.0
UTM = "http://www.opengis.net/def/crs/EPSG/0/32633"
SEASON = {"from": "2023-04-01T00:00:00Z", "to": "2023-10-01T00:00:00Z"}
NDVI = {"ndvi": {"expression": "(nir-red)/(nir+red)"}}


# --------------------------------------------------------------------------- references


def _items(demo_dir: Path) -> list[dict]:
    items = [json.loads(p.read_text()) for p in sorted((demo_dir / "items").glob("*.json"))]
    return sorted(items, key=lambda item: item["properties"]["datetime"])


def _reflectance(demo_dir: Path, item: dict, key: str) -> tuple[np.ndarray, np.ndarray]:
    """(reflectance float32, DN) of a band: DN * scale + offset.

    The offset is the one in raster:bands, except on items flagged
    ``earthsearch:boa_offset_applied`` (their DN already lack ESA's +1000), as DESIGN.md says.
    """
    band = item["assets"][key]["raster:bands"][0]
    applied = item["properties"].get("earthsearch:boa_offset_applied") is True
    offset = 0.0 if applied else band["offset"]
    with rasterio.open(demo.href(demo_dir, item, key)) as src:
        dn = src.read(1)
    return dn.astype(np.float32) * np.float32(band["scale"]) + np.float32(offset), dn


def reference_ndvi(demo_dir: Path, item: dict, scl_clear: bool) -> np.ndarray:
    """NDVI of a scene as float32, NODATA where DN is 0 (or SCL masks, when asked)."""
    red, red_dn = _reflectance(demo_dir, item, "red")
    nir, nir_dn = _reflectance(demo_dir, item, "nir")
    with np.errstate(all="ignore"):
        ndvi = ((nir.astype(np.float64) - red) / (nir.astype(np.float64) + red)).astype(np.float32)
    invalid = (red_dn == 0) | (nir_dn == 0) | ~np.isfinite(ndvi)
    if scl_clear:
        invalid |= np.isin(demo.scl_on_10m(demo_dir, item, ndvi.shape), list(DEFAULT_SCL_MASK))
    return np.where(invalid, np.float32(NODATA), ndvi)


@pytest.fixture(scope="module")
def items(demo_dir):
    return _items(demo_dir)


@pytest.fixture(scope="module")
def profile(demo_dir, items):
    with rasterio.open(demo.href(demo_dir, items[0], "red")) as src:
        return {"transform": src.transform, "crs": src.crs, "shape": (src.height, src.width)}


@pytest.fixture(scope="module")
def ndvi_rasters(demo_dir, items, profile, tmp_path_factory):
    """Per date: (path of the NDVI GeoTIFF, array), with mask none and scl-clear."""
    folder = tmp_path_factory.mktemp("ndvi")
    out = {}
    for item in items:
        for scl_clear in (False, True):
            ndvi = reference_ndvi(demo_dir, item, scl_clear)
            path = folder / f"{item['id']}-{int(scl_clear)}.tif"
            rows, cols = profile["shape"]
            with rasterio.open(
                path,
                "w",
                driver="GTiff",
                width=cols,
                height=rows,
                count=1,
                dtype="float32",
                crs=profile["crs"],
                transform=profile["transform"],
                nodata=NODATA,
            ) as dst:
                dst.write(ndvi, 1)
            out[(item["id"], scl_clear)] = (path, ndvi)
    return out


@pytest.fixture(scope="module")
def fields_utm(demo_dir):
    meta, _, wkb, columns = pyogrio.raw.read(demo_dir / "fields.gpkg")
    identifiers = columns[list(meta["fields"]).index("identifier")]
    return list(identifiers), list(shapely.from_wkb(wkb))


def _features(geometries) -> list[dict]:
    return [
        {"type": "Feature", "properties": {"i": i}, "geometry": shapely.geometry.mapping(g)}
        for i, g in enumerate(geometries)
    ]


def _request(geometry=None, crs=UTM, **aggregation) -> dict:
    body = {
        "input": {"data": [{"type": "sentinel-2-l2a"}]},
        "aggregation": {
            "timeRange": SEASON,
            "aggregationInterval": {"of": "P1D"},
            "outputs": copy.deepcopy(NDVI),
            **copy.deepcopy(aggregation),
        },
    }
    if geometry is not None:
        body["input"]["bounds"] = {"geometry": geometry, "properties": {"crs": crs}}
    return body


def _stats_by_day(response: dict, output: str = "ndvi", band: str = "B0") -> dict[str, dict]:
    return {
        entry["interval"]["from"][:10]: entry["outputs"][output]["bands"][band]["stats"]
        for entry in response["data"]
    }


def _day(item: dict) -> str:
    return item["properties"]["datetime"][:10]


@pytest.fixture(scope="module")
def catalog(demo_dir):
    return LocalCatalog(demo_dir)


@pytest.fixture(scope="module")
def many(catalog, demo_settings, fields_utm):
    """compute_many over every field, per pixel rule, mask none, with percentiles."""
    _, geometries = fields_utm
    calculations = {"default": {"statistics": {"default": {"percentiles": {"k": [10, 50, 90]}}}}}
    out = {}
    for rule in ("exact", "center", "all_touched"):
        request = _request(mask="none", pixelRule=rule)
        request["calculations"] = calculations
        out[rule] = compute_many(_features(geometries), request, catalog, demo_settings, crs=UTM)
    return out


@pytest.fixture(scope="module")
def api(demo_settings) -> TestClient:
    """The demo service, module-scoped: these tests only read."""
    app = create_app(demo_settings)
    with TestClient(app) as client:
        yield client


# ------------------------------------------------------------------- exact vs exactextract


def test_exact_matches_exactextract(many, ndvi_rasters, items, fields_utm, profile):
    _, geometries = fields_utm
    assert len(geometries) > 40
    features = _features(geometries)
    compared = 0
    for item in items:
        path, _ = ndvi_rasters[(item["id"], False)]
        expected = exact_extract(
            str(path),
            JSONFeatureSource(features, srs_wkt=profile["crs"].to_wkt()),
            ["mean", "min", "max", "stdev", "count"],
            output="geojson",
        )
        for response, reference in zip(many["exact"], expected, strict=True):
            ref = reference["properties"]
            got = _stats_by_day(response).get(_day(item))
            if not ref["count"]:
                # No valid pixel: the interval is omitted (outside the footprint) or NaN.
                assert got is None or got["mean"] == "NaN"
                continue
            assert got is not None
            for ours, theirs in (
                ("mean", "mean"),
                ("min", "min"),
                ("max", "max"),
                ("stDev", "stdev"),
            ):
                assert got[ours] == pytest.approx(ref[theirs], rel=1e-6, abs=1e-12), (
                    ours,
                    item["id"],
                )
            compared += 1
    assert compared > 200


def test_exact_scl_clear_matches_exactextract(
    catalog, demo_settings, ndvi_rasters, items, fields_utm, profile
):
    _, geometries = fields_utm
    features = _features(geometries)
    responses = compute_many(features, _request(), catalog, demo_settings, crs=UTM)
    cloudy = next(item for item in items if item["properties"]["eo:cloud_cover"] > 20)
    path, _ = ndvi_rasters[(cloudy["id"], True)]
    expected = exact_extract(
        str(path),
        JSONFeatureSource(features, srs_wkt=profile["crs"].to_wkt()),
        ["mean", "min", "max", "stdev", "count"],
        output="geojson",
    )
    masked = 0
    for response, reference in zip(responses, expected, strict=True):
        ref = reference["properties"]
        got = _stats_by_day(response)[_day(cloudy)]
        if not ref["count"]:
            assert got["mean"] == "NaN" and got["sampleCount"] == got["noDataCount"]
            masked += 1
            continue
        for ours, theirs in (("mean", "mean"), ("min", "min"), ("max", "max"), ("stDev", "stdev")):
            assert got[ours] == pytest.approx(ref[theirs], rel=1e-6, abs=1e-12)
    assert masked > 0


# --------------------------------------------------------- center and all_touched references


def test_center_matches_geometry_mask(many, ndvi_rasters, items, fields_utm, profile):
    _, geometries = fields_utm
    checked = 0
    for item in items:
        _, ndvi = ndvi_rasters[(item["id"], False)]
        for geometry, response in zip(geometries, many["center"], strict=True):
            inside = geometry_mask([geometry], profile["shape"], profile["transform"], invert=True)
            values = ndvi[inside]
            valid = values[values != NODATA].astype(np.float64)
            got = _stats_by_day(response).get(_day(item))
            if got is None:
                assert len(valid) == 0
                continue
            assert got["sampleCount"] == inside.sum()
            assert got["noDataCount"] == inside.sum() - len(valid)
            if len(valid) == 0:
                assert got["mean"] == got["min"] == got["stDev"] == "NaN"
                assert set(got["percentiles"].values()) == {"NaN"}
                continue
            assert got["mean"] == pytest.approx(valid.mean(), rel=1e-9)
            assert got["stDev"] == pytest.approx(valid.std(), rel=1e-9, abs=1e-12)
            assert (got["min"], got["max"]) == (valid.min(), valid.max())
            expected = np.percentile(valid, [10, 50, 90])
            assert [got["percentiles"][k] for k in ("10.0", "50.0", "90.0")] == pytest.approx(
                expected, rel=1e-12
            )
            checked += 1
    assert checked > 200


@pytest.mark.parametrize("method", ["linear", "lower", "higher", "nearest", "midpoint"])
def test_percentile_interpolation_matches_numpy(
    api, ndvi_rasters, items, fields_utm, profile, method
):
    """Sentinel Hub's ``percentiles.interpolation``: numpy.percentile's method of that name."""
    _, geometries = fields_utm
    ks = [0, 10, 25, 50, 70, 90, 100]
    checked = 0
    for geometry in geometries[:6]:
        body = _request(shapely.geometry.mapping(geometry), mask="none", pixelRule="center")
        body["calculations"] = {
            "ndvi": {"statistics": {"B0": {"percentiles": {"k": ks, "interpolation": method}}}}
        }
        response = api.post("/statistics", json=body)
        assert response.status_code == 200, response.text
        by_day = _stats_by_day(response.json())
        inside = geometry_mask([geometry], profile["shape"], profile["transform"], invert=True)
        for item in items:
            _, ndvi = ndvi_rasters[(item["id"], False)]
            values = ndvi[inside]
            valid = values[values != NODATA].astype(np.float64)
            got = by_day.get(_day(item))
            if got is None or len(valid) < 2:
                continue
            expected = np.percentile(valid, ks, method=method)
            assert [got["percentiles"][str(float(k))] for k in ks] == pytest.approx(
                expected, rel=1e-12
            )
            checked += 1
    assert checked > 10


@pytest.mark.parametrize(
    ("calculations", "field"),
    [
        (
            {
                "ndvi": {
                    "statistics": {"B0": {"percentiles": {"k": [50], "interpolation": "cubic"}}}
                }
            },
            "calculations.ndvi.statistics.B0.percentiles.interpolation",
        ),
        (
            {
                "default": {
                    "statistics": {
                        "default": {"percentiles": {"k": [50], "interpolation": "HIGHER"}}
                    }
                }
            },
            "calculations.default.statistics.default.percentiles.interpolation",
        ),
    ],
)
def test_unsupported_percentile_interpolation_is_400_naming_the_field(
    api, fields_utm, calculations, field
):
    body = _request(shapely.geometry.mapping(fields_utm[1][0]))
    body["calculations"] = calculations
    response = api.post("/statistics", json=body)
    assert response.status_code == 400, response.text
    detail = response.json()["detail"]
    assert detail.startswith(f"{field}: ")
    assert "linear, lower, higher, nearest, midpoint" in detail


def test_all_touched_matches_rasterstats(many, ndvi_rasters, items, fields_utm):
    _, geometries = fields_utm
    features = _features(geometries)
    checked = 0
    for item in items:
        path, _ = ndvi_rasters[(item["id"], False)]
        expected = zonal_stats(
            features,
            str(path),
            stats=["mean", "min", "max", "std", "count", "nodata"],
            all_touched=True,
            nodata=NODATA,
        )
        for response, ref in zip(many["all_touched"], expected, strict=True):
            got = _stats_by_day(response).get(_day(item))
            if got is None:
                assert not ref["count"]
                continue
            assert got["sampleCount"] == ref["count"] + ref["nodata"]
            assert got["noDataCount"] == ref["nodata"]
            if not ref["count"]:
                continue
            assert got["mean"] == pytest.approx(ref["mean"], rel=1e-6)
            assert got["stDev"] == pytest.approx(ref["std"], rel=1e-5, abs=1e-7)
            assert (got["min"], got["max"]) == pytest.approx((ref["min"], ref["max"]), rel=1e-7)
            checked += 1
    assert checked > 200


def test_pixel_rules_nest(many):
    # Pixels with their centre inside are touched; exact counts every touched pixel with
    # any area, which is all_touched minus pixels touched only along an edge or a corner.
    for center, exact, touched in zip(
        many["center"], many["exact"], many["all_touched"], strict=True
    ):
        for day, stats in _stats_by_day(exact).items():
            c = _stats_by_day(center)[day]["sampleCount"]
            t = _stats_by_day(touched)[day]["sampleCount"]
            assert c <= stats["sampleCount"] <= t


# ------------------------------------------------------------- percentiles, histograms


def test_exact_percentiles_match_exactextract(many, ndvi_rasters, items, fields_utm, profile):
    _, geometries = fields_utm
    item = items[0]
    path, _ = ndvi_rasters[(item["id"], False)]
    expected = exact_extract(
        str(path),
        JSONFeatureSource(_features(geometries), srs_wkt=profile["crs"].to_wkt()),
        ["quantile(q=0.1)", "median", "quantile(q=0.9)"],
        output="geojson",
    )
    for response, reference in zip(many["exact"], expected, strict=True):
        got = _stats_by_day(response)[_day(item)]["percentiles"]
        ref = reference["properties"]
        assert got["10.0"] == pytest.approx(ref["quantile_10"], rel=1e-5)
        assert got["50.0"] == pytest.approx(ref["median"], rel=1e-5)
        assert got["90.0"] == pytest.approx(ref["quantile_90"], rel=1e-5)


@pytest.mark.parametrize(
    "definition",
    [
        {"bins": [-1.0, 0.0, 0.25, 0.5, 0.75, 1.0]},
        {"bins": [0.3, 0.5, 0.6]},
        {"nBins": 7},
        {"nBins": 4, "lowEdge": 0.2, "highEdge": 0.8},
        {"binWidth": 0.05},
        {"binWidth": 0.1, "lowEdge": 0.25, "highEdge": 0.7},
    ],
)
def test_histogram_counts(
    catalog, demo_settings, fields_utm, ndvi_rasters, items, profile, definition
):
    _, geometries = fields_utm
    request = _request(mask="none", pixelRule="center")
    request["calculations"] = {"ndvi": {"histograms": {"B0": definition}}}
    responses = compute_many(_features(geometries[:10]), request, catalog, demo_settings, crs=UTM)
    item = items[3]
    _, ndvi = ndvi_rasters[(item["id"], False)]
    for geometry, response in zip(geometries[:10], responses, strict=True):
        entry = next(e for e in response["data"] if e["interval"]["from"][:10] == _day(item))
        band = entry["outputs"]["ndvi"]["bands"]["B0"]
        stats, hist = band["stats"], band["histogram"]
        counts = [b["count"] for b in hist["bins"]]
        valid_count = stats["sampleCount"] - stats["noDataCount"]
        assert sum(counts) == valid_count - hist["overflowCount"] - hist["underflowCount"]
        low = [b["lowEdge"] for b in hist["bins"]]
        high = [b["highEdge"] for b in hist["bins"]]
        assert low[1:] == high[:-1]
        if "bins" in definition:
            assert low + high[-1:] == definition["bins"]
        if "nBins" in definition:
            assert len(counts) == definition["nBins"]
        if "binWidth" in definition:
            widths = np.diff(low + high[-1:])
            assert np.allclose(widths[:-1], definition["binWidth"])
            assert widths[-1] <= definition["binWidth"] + 1e-12
        edges = low + high[-1:]
        if "lowEdge" not in definition and "bins" not in definition:
            assert (edges[0], edges[-1]) == (stats["min"], stats["max"])
        # The same counts from numpy on the reference values.
        values = ndvi[
            geometry_mask([geometry], profile["shape"], profile["transform"], invert=True)
        ]
        values = values[values != NODATA].astype(np.float64)
        inside = values[(values >= edges[0]) & (values <= edges[-1])]
        assert counts == np.histogram(inside, bins=edges)[0].tolist()
        assert hist["underflowCount"] == int((values < edges[0]).sum())
        assert hist["overflowCount"] == int((values > edges[-1]).sum())


# ------------------------------------------------------------------------------ intervals


def _days(response: dict) -> list[tuple[str, str]]:
    return [(e["interval"]["from"][:10], e["interval"]["to"][:10]) for e in response["data"]]


@pytest.mark.parametrize(
    ("of", "time_range", "behavior", "expected"),
    [
        (
            "P1D",
            ("2023-04-01", "2023-06-11T12:00:00Z"),
            "SKIP",
            [("2023-04-02", "2023-04-03"), ("2023-05-07", "2023-05-08")],
        ),
        (
            "P1D",
            ("2023-04-01", "2023-06-11T12:00:00Z"),
            "SHORTEN",
            [
                ("2023-04-02", "2023-04-03"),
                ("2023-05-07", "2023-05-08"),
                ("2023-06-11", "2023-06-11"),
            ],
        ),
        # 2023-04-01 + 7 x 5 days = 2023-05-06; the range ends on 2023-05-09, in the 8th.
        ("P5D", ("2023-04-01", "2023-05-09"), "SKIP", [("2023-04-01", "2023-04-06")]),
        (
            "P5D",
            ("2023-04-01", "2023-05-09"),
            "SHORTEN",
            [("2023-04-01", "2023-04-06"), ("2023-05-06", "2023-05-09")],
        ),
        (
            "P5D",
            ("2023-04-01", "2023-05-09"),
            "EXTEND",
            [("2023-04-01", "2023-04-06"), ("2023-05-06", "2023-05-11")],
        ),
        (
            "P1M",
            ("2023-04-01", "2023-09-15"),
            "SKIP",
            [
                ("2023-04-01", "2023-05-01"),
                ("2023-05-01", "2023-06-01"),
                ("2023-06-01", "2023-07-01"),
                ("2023-07-01", "2023-08-01"),
                ("2023-08-01", "2023-09-01"),
            ],
        ),
        (
            "P1M",
            ("2023-04-01", "2023-09-15"),
            "SHORTEN",
            [
                ("2023-04-01", "2023-05-01"),
                ("2023-05-01", "2023-06-01"),
                ("2023-06-01", "2023-07-01"),
                ("2023-07-01", "2023-08-01"),
                ("2023-08-01", "2023-09-01"),
            ],
        ),
        (
            "P1M",
            ("2023-04-01", "2023-09-15"),
            "EXTEND",
            [
                ("2023-04-01", "2023-05-01"),
                ("2023-05-01", "2023-06-01"),
                ("2023-06-01", "2023-07-01"),
                ("2023-07-01", "2023-08-01"),
                ("2023-08-01", "2023-09-01"),
                ("2023-09-01", "2023-10-01"),
            ],
        ),
    ],
)
def test_intervals(api, fields_utm, of, time_range, behavior, expected):
    _, geometries = fields_utm
    # A field that every scene covers (east of the swath edge of 2023-06-11).
    geometry = shapely.geometry.mapping(max(geometries, key=lambda g: g.centroid.x))
    body = _request(geometry, aggregationInterval={"of": of, "lastIntervalBehavior": behavior})
    body["aggregation"]["timeRange"] = {"from": time_range[0], "to": time_range[1]}
    response = api.post("/statistics", json=body)
    assert response.status_code == 200, response.text
    assert _days(response.json()) == expected
    assert response.json()["status"] == "OK"


def test_interval_stats_equal_the_scene_inside(api, fields_utm):
    # One month holding one scene gives that scene's numbers.
    _, geometries = fields_utm
    geometry = shapely.geometry.mapping(geometries[20])
    daily = api.post("/statistics", json=_request(geometry)).json()
    monthly = api.post(
        "/statistics", json=_request(geometry, aggregationInterval={"of": "P1M"})
    ).json()
    assert _stats_by_day(daily)["2023-07-16"] == _stats_by_day(monthly)["2023-07-01"]


# --------------------------------------------------------------------------------- mosaic


def _mosaic_reference(demo_dir, items, order) -> np.ndarray:
    mosaic = None
    for item in order(items):
        ndvi = reference_ndvi(demo_dir, item, scl_clear=True)
        mosaic = ndvi if mosaic is None else np.where(mosaic == NODATA, ndvi, mosaic)
    return mosaic


@pytest.mark.parametrize(
    ("mosaicking", "order"),
    [
        ("mostRecent", lambda items: items[::-1]),
        ("leastRecent", lambda items: items),
        (
            "leastCC",
            lambda items: sorted(items[::-1], key=lambda i: i["properties"]["eo:cloud_cover"]),
        ),
    ],
)
def test_mosaicking_order(
    catalog, demo_settings, demo_dir, items, fields_utm, profile, mosaicking, order
):
    _, geometries = fields_utm
    request = _request(pixelRule="center", aggregationInterval={"of": "P6M"})
    request["input"]["data"][0]["dataFilter"] = {"mosaickingOrder": mosaicking}
    responses = compute_many(_features(geometries), request, catalog, demo_settings, crs=UTM)
    mosaic = _mosaic_reference(demo_dir, items, order)
    for geometry, response in zip(geometries, responses, strict=True):
        (entry,) = response["data"]
        assert entry["interval"] == {"from": "2023-04-01T00:00:00Z", "to": "2023-10-01T00:00:00Z"}
        stats = entry["outputs"]["ndvi"]["bands"]["B0"]["stats"]
        values = mosaic[
            geometry_mask([geometry], profile["shape"], profile["transform"], invert=True)
        ]
        valid = values[values != NODATA].astype(np.float64)
        assert stats["noDataCount"] == stats["sampleCount"] - len(valid)
        assert stats["mean"] == pytest.approx(valid.mean(), rel=1e-9)


def test_max_cloud_coverage_filters_scenes(api, fields_utm, items):
    _, geometries = fields_utm
    body = _request(shapely.geometry.mapping(max(geometries, key=lambda g: g.centroid.x)))
    body["input"]["data"][0]["dataFilter"] = {"maxCloudCoverage": 10}
    days = [day for day, _ in _days(api.post("/statistics", json=body).json())]
    assert days == [_day(i) for i in items if i["properties"]["eo:cloud_cover"] <= 10]
    assert len(days) < len(items)


# ------------------------------------------------------------------------------- CRS, mask


def test_wgs84_and_utm_give_the_same_numbers(api, fields_utm):
    _, geometries = fields_utm
    to_wgs84 = Transformer.from_crs("EPSG:32633", "EPSG:4326", always_xy=True)
    for geometry in geometries[:8]:
        lonlat = shapely.transform(
            geometry, lambda xy: np.column_stack(to_wgs84.transform(xy[:, 0], xy[:, 1]))
        )
        body = _request(shapely.geometry.mapping(geometry), crs=UTM)
        body["calculations"] = {
            "default": {"statistics": {"default": {"percentiles": {"k": [50]}}}}
        }
        utm = api.post("/statistics", json=body).json()
        body["input"]["bounds"] = {"geometry": shapely.geometry.mapping(lonlat)}  # default CRS84
        wgs = api.post("/statistics", json=body).json()
        urn = dict(body["input"]["bounds"], properties={"crs": "urn:ogc:def:crs:EPSG::4326"})
        body["input"]["bounds"] = urn
        assert api.post("/statistics", json=body).json() == wgs
        assert _days(utm) == _days(wgs)
        for day, a in _stats_by_day(utm).items():
            b = _stats_by_day(wgs)[day]
            assert (a["sampleCount"], a["noDataCount"]) == (b["sampleCount"], b["noDataCount"])
            for key in ("mean", "stDev", "min", "max"):
                if a[key] == "NaN":
                    assert b[key] == "NaN"
                else:
                    assert a[key] == pytest.approx(b[key], rel=1e-6)


def test_bbox_equals_its_polygon(api, fields_utm):
    _, geometries = fields_utm
    box = shapely.box(*geometries[3].bounds)
    by_polygon = api.post("/statistics", json=_request(shapely.geometry.mapping(box))).json()
    body = _request()
    body["input"]["bounds"] = {"bbox": list(box.bounds), "properties": {"crs": UTM}}
    assert api.post("/statistics", json=body).json() == by_polygon


def test_scl_clouds_are_nodata_with_scl_clear_only(api, demo_dir, items, fields_utm, profile):
    _, geometries = fields_utm
    cloudy = next(item for item in items if item["properties"]["eo:cloud_cover"] > 20)
    with rasterio.open(demo.href(demo_dir, cloudy, "scl")) as src:
        scl = src.read(1)
    scl10 = np.repeat(np.repeat(scl, 2, axis=0), 2, axis=1)
    partly = []
    for geometry in geometries:
        inside = geometry_mask([geometry], profile["shape"], profile["transform"], invert=True)
        clouds = np.isin(scl10[inside], list(DEFAULT_SCL_MASK)).sum()
        if 0 < clouds < inside.sum():
            partly.append((geometry, inside.sum(), clouds))
    assert partly
    for geometry, count, clouds in partly[:5]:
        mapping = shapely.geometry.mapping(geometry)
        clear = api.post("/statistics", json=_request(mapping, pixelRule="center")).json()
        none = api.post(
            "/statistics", json=_request(mapping, pixelRule="center", mask="none")
        ).json()
        got_clear = _stats_by_day(clear)[_day(cloudy)]
        got_none = _stats_by_day(none)[_day(cloudy)]
        assert got_clear["sampleCount"] == got_none["sampleCount"] == count
        assert got_clear["noDataCount"] == clouds
        assert got_none["noDataCount"] == 0


def test_mask_expression(api, fields_utm, demo_dir, items, profile):
    _, geometries = fields_utm
    geometry = geometries[10]
    body = _request(shapely.geometry.mapping(geometry), pixelRule="center", mask="B08 > 0.3")
    stats = _stats_by_day(api.post("/statistics", json=body).json())
    item = items[3]
    nir, _ = _reflectance(demo_dir, item, "nir")
    inside = geometry_mask([geometry], profile["shape"], profile["transform"], invert=True)
    assert stats[_day(item)]["noDataCount"] == int((nir[inside] <= 0.3).sum())


def test_resolution_20m(api, fields_utm, ndvi_rasters, items, profile):
    _, geometries = fields_utm
    geometry = geometries[12]
    body = _request(
        shapely.geometry.mapping(geometry), pixelRule="center", resx=20, resy=20, mask="none"
    )
    stats = _stats_by_day(api.post("/statistics", json=body).json())
    transform = profile["transform"] @ profile["transform"].scale(2)
    rows, cols = (s // 2 for s in profile["shape"])
    inside = geometry_mask([geometry], (rows, cols), transform, invert=True)
    item = items[0]
    _, ndvi = ndvi_rasters[(item["id"], False)]
    # Nearest neighbour: each 20 m cell takes the 10 m pixel holding its centre (a corner
    # shared by four; the one below-right, by the half-open pixel rule).
    values = ndvi[1::2, 1::2][inside].astype(np.float64)
    got = stats[_day(item)]
    assert got["sampleCount"] == inside.sum()
    assert got["mean"] == pytest.approx(values.mean(), rel=1e-9)


def test_multiple_outputs_and_band_names(api, fields_utm):
    _, geometries = fields_utm
    body = _request(
        shapely.geometry.mapping(geometries[5]),
        outputs={
            "ndvi": {"expression": "(B08-B04)/(B08+B04)"},
            "rgb": {"expression": "B04;B03;B02", "bands": ["R", "G", "B"]},
        },
    )
    body["calculations"] = {
        "rgb": {
            "histograms": {"G": {"nBins": 3}},
            "statistics": {"default": {"percentiles": {"k": [50]}}},
        },
    }
    response = api.post("/statistics", json=body)
    assert response.status_code == 200, response.text
    entry = response.json()["data"][0]
    assert set(entry["outputs"]) == {"ndvi", "rgb"}
    bands = entry["outputs"]["rgb"]["bands"]
    assert set(bands) == {"R", "G", "B"}
    assert "histogram" in bands["G"] and "histogram" not in bands["R"]
    assert all("percentiles" in b["stats"] for b in bands.values())
    assert "percentiles" not in entry["outputs"]["ndvi"]["bands"]["B0"]["stats"]


# -------------------------------------------------------------- Sentinel Hub compatibility


def stats_to_df(stats_data: dict) -> pd.DataFrame:
    """Sentinel Hub's documented converter (sentinelhub-py's Statistical API example),
    with their ``parse_time`` replaced by the standard library."""
    df_data = []
    for single_data in stats_data["data"]:
        df_entry = {}
        is_valid_entry = True
        df_entry["interval_from"] = datetime.fromisoformat(single_data["interval"]["from"]).date()
        df_entry["interval_to"] = datetime.fromisoformat(single_data["interval"]["to"]).date()
        for output_name, output_data in single_data["outputs"].items():
            for band_name, band_values in output_data["bands"].items():
                band_stats = band_values["stats"]
                if band_stats["sampleCount"] == band_stats["noDataCount"]:
                    is_valid_entry = False
                    break
                for stat_name, value in band_stats.items():
                    col_name = f"{output_name}_{band_name}_{stat_name}"
                    if stat_name == "percentiles":
                        for perc, perc_val in value.items():
                            perc_col_name = f"{col_name}_{perc}"
                            df_entry[perc_col_name] = perc_val
                    else:
                        df_entry[col_name] = value
        if is_valid_entry:
            df_data.append(df_entry)
    return pd.DataFrame(df_data)


def _strict_json(text: str) -> dict:
    def refuse(token: str):
        raise ValueError(f"non-standard JSON token {token}")

    return json.loads(text, parse_constant=refuse)


def test_sentinel_hub_converter_works_unchanged(api, catalog, demo_settings, fields_utm, items):
    _, geometries = fields_utm
    cloudiest = max(items, key=lambda i: i["properties"]["eo:cloud_cover"])
    # A field fully under cloud on the cloudiest date: an all-masked interval ("NaN").
    responses = compute_many(_features(geometries), _request(), catalog, demo_settings, crs=UTM)
    field = next(
        g
        for g, r in zip(geometries, responses, strict=True)
        if _stats_by_day(r).get(_day(cloudiest), {}).get("mean") == "NaN"
    )
    body = _request(shapely.geometry.mapping(field))
    body["calculations"] = {
        "ndvi": {
            "statistics": {"default": {"percentiles": {"k": [25, 50, 75]}}},
            "histograms": {"default": {"nBins": 10, "lowEdge": -1, "highEdge": 1}},
        }
    }
    response = api.post("/statistics", json=body)
    assert response.status_code == 200
    data = _strict_json(response.text)
    masked = _stats_by_day(data)[_day(cloudiest)]
    assert masked["sampleCount"] == masked["noDataCount"] > 0
    assert [masked[k] for k in ("min", "max", "mean", "stDev")] == ["NaN"] * 4
    assert set(masked["percentiles"].values()) == {"NaN"}

    frame = stats_to_df(data)
    assert len(frame) == len(data["data"]) - 1
    assert {
        "interval_from",
        "interval_to",
        "ndvi_B0_min",
        "ndvi_B0_max",
        "ndvi_B0_mean",
        "ndvi_B0_stDev",
        "ndvi_B0_sampleCount",
        "ndvi_B0_noDataCount",
        "ndvi_B0_percentiles_25.0",
        "ndvi_B0_percentiles_50.0",
        "ndvi_B0_percentiles_75.0",
    } <= set(frame.columns)
    assert frame["ndvi_B0_mean"].dtype == np.float64
    first = _stats_by_day(data)[str(frame["interval_from"][0])]
    assert frame["ndvi_B0_mean"][0] == first["mean"]
    assert frame["ndvi_B0_percentiles_50.0"][0] == first["percentiles"]["50.0"]
    assert (frame["ndvi_B0_percentiles_25.0"] <= frame["ndvi_B0_percentiles_75.0"]).all()


def test_response_shape(api, fields_utm):
    _, geometries = fields_utm
    response = api.post("/statistics", json=_request(shapely.geometry.mapping(geometries[0])))
    assert response.status_code == 200
    data = response.json()
    assert data["status"] == "OK"
    entry = data["data"][0]
    assert set(entry) == {"interval", "outputs"}
    assert entry["interval"]["from"].endswith("T00:00:00Z")
    stats = entry["outputs"]["ndvi"]["bands"]["B0"]["stats"]
    assert set(stats) == {"min", "max", "mean", "stDev", "sampleCount", "noDataCount"}
    assert isinstance(stats["sampleCount"], int)
    assert "/statistics" in api.get("/openapi.json").json()["paths"]


# ------------------------------------------------------------------------ many geometries


def test_compute_many_equals_single_requests(catalog, demo_settings, fields_utm, many):
    _, geometries = fields_utm
    for position in (0, 7, 33):
        request = _request(shapely.geometry.mapping(geometries[position]), mask="none")
        request["calculations"] = {
            "default": {"statistics": {"default": {"percentiles": {"k": [10, 50, 90]}}}}
        }
        assert compute_statistics(request, catalog, demo_settings) == many["exact"][position]


def test_compute_many_reads_each_asset_once_per_scene(
    catalog, demo_settings, fields_utm, monkeypatch
):
    import app.datasets as datasets

    opened = []
    real_open = datasets.rasterio.open

    def counting_open(path, *args, **kwargs):
        opened.append(str(path))
        return real_open(path, *args, **kwargs)

    # Scenes are opened by the process's dataset pool: emptied, so that this run opens all.
    datasets.dataset_pool().clear()
    monkeypatch.setattr(datasets.rasterio, "open", counting_open)
    _, geometries = fields_utm
    responses = compute_many(_features(geometries), _request(), catalog, demo_settings, crs=UTM)
    assert len(responses) == len(geometries)
    # One chunk: 6 scenes x (red, nir, scl), each opened and read once.
    assert len(opened) == len(set(opened)) == 18


def test_compute_many_is_plain_data(demo_dir, demo_settings, fields_utm):
    identifiers, geometries = fields_utm
    items = _items(demo_dir)
    for item in items:  # hrefs made absolute, as a batch job would ship them
        for asset in item["assets"].values():
            asset["href"] = str((demo_dir / "items" / asset["href"]).resolve())
    features = _features(geometries[:5]) + [{"type": "Feature", "geometry": None}]
    features.append({"type": "Feature", "geometry": {"type": "Point", "coordinates": [0, 0]}})
    args = pickle.loads(pickle.dumps((features, _request(), items)))
    responses = compute_many(*args, demo_settings, crs=UTM, chunk_size=2)
    assert pickle.loads(pickle.dumps(responses)) == responses
    assert json.loads(json.dumps(responses)) == responses
    assert [r["status"] for r in responses] == ["OK"] * 5 + ["FAILED"] * 2
    assert responses[6]["error"]["type"] == "BAD_REQUEST"
    assert "no area" in responses[6]["error"]["message"]
    by_catalog = compute_many(
        _features(geometries[:5]), _request(), LocalCatalog(demo_dir), demo_settings, crs=UTM
    )
    assert by_catalog == responses[:5]


def test_compute_many_keeps_geometries_it_cannot_place_per_feature(demo_dir, demo_settings):
    """Coordinates out of range or off the scene's UTM zone fail their feature, not all."""
    catalog = LocalCatalog(demo_dir)
    field = shapely.box(16.12, 46.62, 16.121, 46.621)  # inside the demo scenes, in lon/lat
    features = _features(
        [
            field,
            shapely.box(-100, -80, 100, 80),  # covers the scenes, reaches 90 degrees off
            shapely.Polygon([(200, 0), (0, 100), (1, 1)]),  # not lon/lat
            shapely.Polygon([(np.inf, 0), (0, 1), (1, 1)]),
        ]
    )
    responses = compute_many(features, _request(), catalog, demo_settings, crs="EPSG:4326")
    assert [r["status"] for r in responses] == ["OK", "FAILED", "FAILED", "FAILED"]
    assert (
        responses[0]
        == compute_many(features[:1], _request(), catalog, demo_settings, crs="EPSG:4326")[0]
    )
    assert {r["error"]["type"] for r in responses[1:]} == {"BAD_REQUEST"}
    messages = [r["error"]["message"] for r in responses[1:]]
    assert "cannot be drawn on the scene's EPSG:32633 grid" in messages[0]
    assert "features[2].geometry: coordinates outside the range of EPSG:4326" in messages[1]
    assert "features[3].geometry: coordinates must be finite numbers" in messages[2]
    # In UTM, coordinates with no longitude and latitude.
    far = compute_many(
        _features([shapely.box(1e9, 1e9, 2e9, 2e9)]), _request(), catalog, demo_settings, crs=UTM
    )
    assert far[0]["status"] == "FAILED"
    assert "reaches outside the area" in far[0]["error"]["message"]


# ------------------------------------------------------------------------ failing intervals


def test_unreadable_scene_gives_a_partial_response(demo_dir, demo_settings, fields_utm, tmp_path):
    _, geometries = fields_utm
    items = _items(demo_dir)
    broken = tmp_path / "B04.tif"
    broken.write_bytes(b"II*\x00 this is not a tiff")
    for item in items:
        for asset in item["assets"].values():
            asset["href"] = str((demo_dir / "items" / asset["href"]).resolve())
    items[1]["assets"]["red"]["href"] = str(broken)
    items[3]["assets"]["nir"]["href"] = "/etc/passwd"
    settings = Settings(
        catalog=str(demo_dir), data_dir=tmp_path, allowed_sources=[str(demo_dir), str(tmp_path)]
    )
    request = _request(shapely.geometry.mapping(max(geometries, key=lambda g: g.centroid.x)))
    response = compute_statistics(request, items, settings)
    assert response["status"] == "PARTIAL"
    errors = [e for e in response["data"] if "error" in e]
    assert [e["interval"]["from"][:10] for e in errors] == [_day(items[1]), _day(items[3])]
    assert all(e["error"]["type"] == "EXECUTION_ERROR" for e in errors)
    assert "allowed sources" in errors[1]["error"]["message"]
    assert sum("outputs" in e for e in response["data"]) == len(items) - 2


def test_every_interval_failing_is_failed(demo_dir, demo_settings, fields_utm, tmp_path):
    items = _items(demo_dir)
    for item in items:
        for asset in item["assets"].values():
            asset["href"] = str((demo_dir / "items" / asset["href"]).resolve())
        item["assets"]["red"]["href"] = str(tmp_path / "missing.tif")
    settings = Settings(
        catalog=str(demo_dir), data_dir=tmp_path, allowed_sources=[str(demo_dir), str(tmp_path)]
    )
    request = _request(shapely.geometry.mapping(fields_utm[1][-1]))
    response = compute_statistics(request, items, settings)
    assert response["status"] == "FAILED"
    assert response["data"] and all(
        e["error"]["type"] == "EXECUTION_ERROR" for e in response["data"]
    )


def test_geometry_between_pixel_centres(api, profile):
    # A 2 m square around a pixel corner: no pixel centre inside, four pixels touched.
    transform = profile["transform"]
    x, y = transform * (100, 100)
    square = shapely.geometry.mapping(shapely.box(x - 1, y - 1, x + 1, y + 1))
    center = api.post("/statistics", json=_request(square, pixelRule="center")).json()
    exact = api.post("/statistics", json=_request(square, pixelRule="exact")).json()
    for stats in _stats_by_day(center).values():
        assert (stats["sampleCount"], stats["noDataCount"]) == (0, 0)
        assert stats["mean"] == "NaN"
    for stats in _stats_by_day(exact).values():
        assert stats["sampleCount"] == 4


# ---------------------------------------------------------------------------- bad requests

FLAT = {
    "type": "Polygon",
    "coordinates": [[[16.1, 46.65], [16.2, 46.65], [16.3, 46.65], [16.1, 46.65]]],
}
PARIS = shapely.geometry.mapping(shapely.box(2.0, 48.0, 2.01, 48.01))
# Covers the demo scenes, but reaches 90 degrees of longitude from their UTM zone's
# meridian, where transverse Mercator has no coordinates.
HALF_WORLD = shapely.geometry.mapping(shapely.box(-100, -80, 100, 80))


def _lonlat(geometry: dict):
    """Replace the request's bounds with a geometry in WGS84 (the default CRS)."""
    return lambda body: body["input"].update(bounds={"geometry": geometry})


@pytest.mark.parametrize(
    ("change", "status", "message"),
    [
        (
            lambda b: b["aggregation"]["outputs"].update(x={"expression": "foo + 1"}),
            400,
            "unknown band 'foo'",
        ),
        (
            lambda b: b.update(calculations={"ndvi": {"histograms": {"B1": {"nBins": 3}}}}),
            400,
            "unknown band 'B1'",
        ),
        (lambda b: b.update(calculations={"evi": {"statistics": {}}}), 400, "unknown output 'evi'"),
        (_lonlat(FLAT), 400, "empty"),
        (_lonlat({"type": "Point", "coordinates": [16.1, 46.65]}), 400, "no area"),
        (_lonlat(PARIS), 400, "outside every scene"),
        (
            _lonlat({"type": "Polygon", "coordinates": [[[200, 0], [0, 100], [1, 1], [200, 0]]]}),
            400,
            "input.bounds.geometry: coordinates outside the range of",
        ),
        (
            _lonlat(
                {"type": "Polygon", "coordinates": [[[1e300, 0], [0, 1e300], [1, 1], [1e300, 0]]]}
            ),
            400,
            "latitude -90 to 90",
        ),
        (_lonlat(HALF_WORLD), 400, "cannot be drawn on the scene's EPSG:32633 grid"),
        (
            lambda b: b["input"].update(bounds={"bbox": [16.1, 46.6, math.inf, 46.7]}),
            400,
            "input.bounds.bbox: coordinates must be finite numbers",
        ),
        (
            lambda b: b["input"].update(bounds={"bbox": [16.1, 46.6, math.nan, 46.7]}),
            400,
            "input.bounds.bbox: coordinates must be finite numbers",
        ),
        (
            lambda b: b["input"].update(
                bounds={"bbox": [1e9, 1e9, 2e9, 2e9], "properties": {"crs": UTM}}
            ),
            400,
            "reaches outside the area",
        ),
        (
            lambda b: b["input"].update(
                bounds={"bbox": [1e17, 1e17, 2e17, 2e17], "properties": {"crs": UTM}}
            ),
            400,
            "reaches outside the area",
        ),
        (
            lambda b: b["aggregation"].update(timeRange={"from": "2023-09-01", "to": "2023-04-01"}),
            400,
            "'from' must be before 'to'",
        ),
        (
            lambda b: b["aggregation"].update(timeRange={"from": "2023-13-01", "to": "2023-14-01"}),
            400,
            "timeRange.from",
        ),
        (
            lambda b: b["aggregation"].update(aggregationInterval={"of": "P1X"}),
            400,
            "not an ISO 8601 duration",
        ),
        (
            lambda b: b["aggregation"].update(aggregationInterval={"of": "1D"}),
            400,
            "not an ISO 8601 duration",
        ),
        (
            lambda b: b["input"]["data"][0].update(type="landsat-c2-l2"),
            400,
            "unknown collection 'landsat-c2-l2'",
        ),
        (
            lambda b: b["aggregation"].update(evalscript="//VERSION=3"),
            400,
            "give outputs or an evalscript",
        ),
        (lambda b: b["aggregation"].update(mask="clouds"), 400, "unknown band 'clouds'"),
        (
            lambda b: b["input"]["bounds"]["properties"].update(crs="EPSG:999999"),
            400,
            "unknown CRS",
        ),
        (lambda b: b["aggregation"].update(resx=20), 400, "resx/resy"),
        (lambda b: b["input"].pop("bounds"), 400, "input.bounds"),
        (
            lambda b: b["aggregation"].update(timeRange={"from": "2020-01-01", "to": "2023-01-01"}),
            400,
            "stats_max_intervals=400",
        ),
        (
            lambda b: b["aggregation"].update(
                outputs={f"o{i}": {"expression": "red"} for i in range(11)}
            ),
            400,
            "stats_max_outputs=10",
        ),
        (lambda b: b["aggregation"].update(resx=math.nan, resy=10), 422, "finite number"),
        (lambda b: b["aggregation"].update(resx=math.inf, resy=10), 422, "finite number"),
        # Below what a float tells apart from 0 once in metres, at this longitude.
        (
            lambda b: (
                b["input"].update(bounds={"bbox": [16.09, 46.64, 16.095, 46.645]})
                or b["aggregation"].update(resx=1e-300, resy=1e-300)
            ),
            400,
            "is no pixel size in EPSG:32633",
        ),
        (
            lambda b: b.update(calculations={"ndvi": {"histograms": {"B0": {"nBins": 1001}}}}),
            400,
            "calculations.ndvi.histograms.B0: 1001 bins, over the limit max_histogram_bins=1000",
        ),
        (
            lambda b: b.update(
                calculations={"default": {"histograms": {"default": {"bins": list(range(1002))}}}}
            ),
            400,
            "1001 bins, over the limit max_histogram_bins=1000",
        ),
        (
            lambda b: b.update(
                calculations={
                    "ndvi": {
                        "histograms": {"B0": {"binWidth": 1e-300, "lowEdge": -1, "highEdge": 1}}
                    }
                }
            ),
            400,
            "2e+300 bins of 1e-300 over [-1, 1], over the limit max_histogram_bins=1000",
        ),
        # Edges from the data: checked once it is read (NDVI spans more than 0.1 here).
        (
            lambda b: b.update(calculations={"ndvi": {"histograms": {"B0": {"binWidth": 1e-4}}}}),
            400,
            "over the limit max_histogram_bins=1000",
        ),
        (
            lambda b: b.update(
                calculations={"ndvi": {"histograms": {"B0": {"bins": [0, math.nan, 1]}}}}
            ),
            422,
            "finite number",
        ),
        (
            lambda b: b.update(
                calculations={
                    "ndvi": {
                        "histograms": {"B0": {"nBins": 4, "lowEdge": -math.inf, "highEdge": 1}}
                    }
                }
            ),
            422,
            "finite number",
        ),
        (lambda b: b["aggregation"].update(pixelRule="majority"), 422, "pixelRule"),
        (lambda b: b["input"].pop("data"), 422, "data"),
        (lambda b: b["input"]["data"][0].pop("type"), 422, "collection id"),
        (
            lambda b: b.update(
                calculations={"ndvi": {"histograms": {"B0": {"nBins": 3, "bins": [0, 1]}}}}
            ),
            422,
            "exactly one",
        ),
    ],
)
def test_bad_requests(api, fields_utm, change, status, message):
    body = _request(shapely.geometry.mapping(fields_utm[1][0]))
    change(body)
    # json.dumps writes inf and nan as Infinity / NaN, as Python clients send them.
    response = api.post(
        "/statistics", content=json.dumps(body), headers={"content-type": "application/json"}
    )
    assert response.status_code == status, response.text
    assert message in response.text
    _strict_json(response.text)  # a NaN echoed in a 422 is a string, not a bare token


class _Limited(Settings):
    stats_max_pixels: int = 50
    stats_max_vertices: int = 5
    stats_max_scenes: int = 3


def test_limits_name_the_setting(demo_dir, catalog, fields_utm, tmp_path):
    settings = _Limited(catalog=str(demo_dir), data_dir=tmp_path)
    geometry = shapely.geometry.mapping(fields_utm[1][0].buffer(5))
    with pytest.raises(Exception, match="max_geometry_vertices=5"):
        compute_statistics(_request(geometry), catalog, settings)
    small = shapely.geometry.mapping(shapely.box(*fields_utm[1][0].bounds))
    with pytest.raises(Exception, match="stats_max_scenes=3"):
        compute_statistics(_request(small), catalog, settings)
    one_month = _request(small)
    one_month["aggregation"]["timeRange"] = {"from": "2023-04-01", "to": "2023-05-01"}
    with pytest.raises(Exception, match="stats_max_pixels=50") as raised:
        compute_statistics(one_month, catalog, settings)
    assert raised.value.status_code == 400
    app = create_app(settings)
    with TestClient(app) as client:
        response = client.post("/statistics", json=one_month)
    assert response.status_code == 400
    assert "stats_max_pixels=50" in response.json()["detail"]


def test_no_scene_in_range_is_empty_not_an_error(api, fields_utm):
    body = _request(shapely.geometry.mapping(fields_utm[1][0]))
    body["aggregation"]["timeRange"] = {"from": "2022-01-01", "to": "2022-02-01"}
    response = api.post("/statistics", json=body)
    assert response.status_code == 200
    assert response.json() == {"data": [], "status": "OK"}


def test_nan_is_never_a_bare_token(api, fields_utm):
    # Every response body parses as strict JSON (no NaN / Infinity tokens).
    for geometry in fields_utm[1][:5]:
        body = _request(shapely.geometry.mapping(geometry))
        _strict_json(api.post("/statistics", json=body).text)
    assert math.isnan(float("NaN"))
