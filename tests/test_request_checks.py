"""The checks of read requests: what passes, and what is refused with which message."""

import math

import pytest
from rasterio.crs import CRS

from app.errors import BadRequestError, NotFoundError, TooLargeError
from app.request_checks import (
    check_bbox,
    check_histogram,
    check_indexes,
    check_nodata,
    check_output_pixels,
    check_percentiles,
    check_point,
    check_tile,
    check_tile_size,
    shape_bounds,
)

UTM = CRS.from_epsg(32633)
WGS84 = CRS.from_epsg(4326)


def test_sizes():
    check_output_pixels(256, 256, None, 1000 * 1000)
    check_output_pixels(None, None, 1000, 1000 * 1000)
    check_output_pixels(None, None, None, 10)  # native size: checked by the caller
    with pytest.raises(TooLargeError, match="max_output_pixels=100"):
        check_output_pixels(11, 10, None, 100)
    for width, height, max_size, name in [
        (0, 5, None, "width"),
        (5, -1, None, "height"),
        (None, None, 0, "max_size"),
    ]:
        with pytest.raises(BadRequestError, match=name):
            check_output_pixels(width, height, max_size, None)
    check_tile_size(512, 1024)
    with pytest.raises(TooLargeError, match="max_tile_size=256"):
        check_tile_size(512, 256)
    with pytest.raises(BadRequestError, match="tilesize"):
        check_tile_size(0, 256)


def test_bboxes_and_points():
    assert check_bbox([16, 46, 16.1, 46.1], WGS84) == (16.0, 46.0, 16.1, 46.1)
    assert check_bbox([585000, 5165000, 586000, 5166000], UTM)[0] == 585000.0
    for bbox in [(0, 0, 0, 0), (2, 0, 1, 1), (0, 0, math.inf, 1), (0, math.nan, 1, 1), (0, 0, 1)]:
        with pytest.raises(BadRequestError, match="bbox"):
            check_bbox(bbox, WGS84)
    with pytest.raises(BadRequestError, match="not a place on Earth"):
        check_bbox((0, 0, 1, 91), WGS84)
    check_bbox((0, 0, 1, 91), UTM)  # metres: any finite numbers
    check_point(16.1, 46.6, WGS84)
    check_point(585000, 5165000, UTM)
    for lon, lat in [(0, 95), (181, 0), (math.nan, 0)]:
        with pytest.raises(BadRequestError, match="point"):
            check_point(lon, lat, WGS84)


def test_feature_shapes():
    ring = [[16, 46], [16.1, 46], [16.1, 46.1], [16, 46.1], [16, 46]]
    polygon = {"type": "Polygon", "coordinates": [ring]}
    assert shape_bounds(polygon, WGS84) == (16, 46, 16.1, 46.1)
    assert shape_bounds({"type": "Feature", "geometry": polygon}, None) == (16, 46, 16.1, 46.1)
    multi = {"type": "MultiPolygon", "coordinates": [[ring]]}
    assert shape_bounds(multi, WGS84) == (16, 46, 16.1, 46.1)
    for shape, match in [
        ({"type": "Feature", "geometry": None}, "Polygon or MultiPolygon"),
        ({"type": "Feature"}, "Polygon or MultiPolygon"),
        ({"type": "Point", "coordinates": [16, 46]}, "not Point"),
        ({"type": "Polygon", "coordinates": [[[16, 46], [16, 46], [16, 46]]]}, "minx < maxx"),
        ({"type": "Polygon", "coordinates": "x"}, "invalid coordinates"),
        ({"type": "Polygon", "coordinates": [[["a", "b"]]]}, "invalid coordinates"),
        ({"type": "Polygon", "coordinates": []}, "finite numbers"),
        ({"type": "Polygon", "coordinates": [[[0, 0], [1, 0], [1, 100], [0, 0]]]}, "on Earth"),
    ]:
        with pytest.raises(BadRequestError, match=match):
            shape_bounds(shape, WGS84)


def test_nodata_must_fit_the_data_type():
    for value, dtype in [
        (0, "uint16"),
        (65535, "uint16"),
        (-32768, "int16"),
        (math.nan, "float32"),
        (-9999.5, "float64"),
        (None, "uint8"),
    ]:
        check_nodata(value, dtype)
    for value, dtype in [
        (math.nan, "uint16"),
        (-1, "uint16"),
        (65536, "uint16"),
        (1.5, "uint8"),
        (math.inf, "int32"),
    ]:
        with pytest.raises(BadRequestError, match=f"not a {dtype} value"):
            check_nodata(value, dtype)


def test_band_indexes():
    check_indexes(None, 1)
    check_indexes([1, 3], 3)
    check_indexes(2, 3)
    for indexes in [0, [1, 4], -1]:
        with pytest.raises(BadRequestError, match="bidx"):
            check_indexes(indexes, 3)


def test_histograms():
    check_histogram(10, None, 100)
    check_histogram([0.0, 100.0, 200.0], [0.0, 1000.0], 100)
    check_histogram(None, [5.0, 5.0], 100)
    for bins, value_range, match in [
        (0, None, "histogram_bins"),
        (101, None, "max_histogram_bins"),
        ([float(i) for i in range(103)], None, "max_histogram_bins=100"),
        ([5.0, 3.0], None, "increasing"),
        ([0.0, math.inf], None, "finite"),
        (10, [10.0, 1.0], "histogram_range"),
        (10, [0.0, math.nan], "histogram_range"),
    ]:
        with pytest.raises(BadRequestError, match=match):
            check_histogram(bins, value_range, 100)


def test_one_side_is_completed_by_the_aspect():
    limit = 1000 * 1000
    check_output_pixels(1000, None, None, limit)  # square by default: at the limit
    with pytest.raises(TooLargeError, match="2000000 pixels"):
        check_output_pixels(1000, None, None, limit, lambda: 2.0)  # twice as tall
    with pytest.raises(TooLargeError, match="2000000 pixels"):
        check_output_pixels(None, 1000, None, limit, lambda: 0.5)  # twice as wide
    check_output_pixels(None, 1000, None, limit, lambda: 2.0)
    asked = []
    check_output_pixels(10, 10, None, limit, lambda: asked.append(1) or 1.0)
    assert not asked  # both sides given: the aspect is not computed


def test_tiles_and_percentiles():
    import morecantile

    check_tile(morecantile.tms.get("WebMercatorQuad"), 1, 1, 1)
    gnosis = morecantile.tms.get("GNOSISGlobalGrid")
    with pytest.raises(NotFoundError, match="not in GNOSISGlobalGrid"):
        check_tile(gnosis, 1, 72, 3)
    check_percentiles([0, 2, 50, 98, 100])
    check_percentiles(None)
    for value in [-1, 100.5, math.nan]:
        with pytest.raises(BadRequestError, match="percentiles"):
            check_percentiles([50, value])
