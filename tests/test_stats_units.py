"""Unit tests of the statistics engine's parts: intervals, coverage, summaries, plans."""

from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
import shapely
from affine import Affine
from rasterio.features import geometry_mask

from app.errors import BadRequestError
from app.settings import default_settings
from app.stats.coverage import compute_coverages
from app.stats.grid import PixelGrid
from app.stats.intervals import parse_duration, split_time_range
from app.stats.models import StatisticalRequest
from app.stats.plan import make_plan
from app.stats.summary import (
    HistogramSpec,
    basic_statistics,
    histogram,
    percentiles,
    weighted_quantiles,
)


def _t(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


# --- durations and intervals ---------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "months", "span"),
    [
        ("P1D", 0, timedelta(days=1)),
        ("P5D", 0, timedelta(days=5)),
        ("P1W", 0, timedelta(weeks=1)),
        ("P1M", 1, timedelta(0)),
        ("P1Y", 12, timedelta(0)),
        ("P1Y2M3D", 14, timedelta(days=3)),
        ("PT12H", 0, timedelta(hours=12)),
        ("P1DT1.5S", 0, timedelta(days=1, seconds=1.5)),
    ],
)
def test_parse_duration(text, months, span):
    duration = parse_duration(text)
    assert (duration.months, duration.span) == (months, span)


@pytest.mark.parametrize("text", ["", "P", "1D", "P1X", "PT", "P-1D", "P0D", "PT0S", "P1.5D"])
def test_parse_duration_refuses(text):
    with pytest.raises(BadRequestError, match="aggregationInterval.of"):
        parse_duration(text)


def test_month_steps_do_not_drift():
    intervals = split_time_range(_t("2023-01-31"), _t("2023-05-31"), parse_duration("P1M"))
    assert [start.date().isoformat() for start, _ in intervals] == [
        "2023-01-31",
        "2023-02-28",
        "2023-03-31",
        "2023-04-30",
    ]
    assert intervals[-1][1] == _t("2023-05-31")


@pytest.mark.parametrize(
    ("of", "behavior", "count", "last"),
    [
        # 2023-04-01 .. 2023-04-12: 11 days.
        ("P1D", "SKIP", 11, ("2023-04-11", "2023-04-12")),
        ("P5D", "SKIP", 2, ("2023-04-06", "2023-04-11")),
        ("P5D", "SHORTEN", 3, ("2023-04-11", "2023-04-12")),
        ("P5D", "EXTEND", 3, ("2023-04-11", "2023-04-16")),
    ],
)
def test_split_days(of, behavior, count, last):
    intervals = split_time_range(_t("2023-04-01"), _t("2023-04-12"), parse_duration(of), behavior)
    assert len(intervals) == count
    assert intervals[-1] == (_t(last[0]), _t(last[1]))
    for (_, end), (start, _) in zip(intervals, intervals[1:], strict=False):
        assert end == start


@pytest.mark.parametrize(
    ("behavior", "count", "last_end"),
    [("SKIP", 5, "2023-09-01"), ("SHORTEN", 6, "2023-09-15"), ("EXTEND", 6, "2023-10-01")],
)
def test_split_months(behavior, count, last_end):
    intervals = split_time_range(
        _t("2023-04-01"), _t("2023-09-15"), parse_duration("P1M"), behavior
    )
    assert len(intervals) == count
    assert intervals[-1][1] == _t(last_end)


def test_split_range_shorter_than_interval():
    p1m = parse_duration("P1M")
    assert split_time_range(_t("2023-04-01"), _t("2023-04-10"), p1m, "SKIP") == []
    assert split_time_range(_t("2023-04-01"), _t("2023-04-10"), p1m, "SHORTEN") == [
        (_t("2023-04-01"), _t("2023-04-10"))
    ]


def test_split_refuses_reversed_and_too_many():
    with pytest.raises(BadRequestError, match="'from' must be before 'to'"):
        split_time_range(_t("2023-05-01"), _t("2023-04-01"), parse_duration("P1D"))
    with pytest.raises(BadRequestError, match="stats_max_intervals=10"):
        split_time_range(
            _t("2023-01-01"), _t("2023-02-01"), parse_duration("P1D"), max_intervals=10
        )


# --- coverage --------------------------------------------------------------------------

GRID = PixelGrid.aligned("EPSG:32633", 10.0, 10.0, 500000.0, 5200000.0)


def _fractions(geometry: shapely.Geometry, grid: PixelGrid = GRID) -> dict[tuple[int, int], float]:
    (coverage,) = compute_coverages([geometry], grid, "exact")
    return {
        (int(r), int(c)): float(w)
        for r, c, w in zip(coverage.rows, coverage.cols, coverage.weights, strict=True)
    }


def _brute_force(
    geometry: shapely.Geometry, grid: PixelGrid = GRID
) -> dict[tuple[int, int], float]:
    """Intersection areas pixel by pixel with shapely: slow and obviously right."""
    row0, col0, rows, cols = grid.window(geometry.bounds)
    out = {}
    for r in range(row0 - 1, row0 + rows + 1):
        for c in range(col0 - 1, col0 + cols + 1):
            x = grid.x0 + c * grid.resx
            y = grid.y0 - r * grid.resy
            area = shapely.box(x, y - grid.resy, x + grid.resx, y).intersection(geometry).area
            if area > 1e-9:
                out[(r, c)] = area / (grid.resx * grid.resy)
    return out


@pytest.mark.parametrize(
    "geometry",
    [
        shapely.box(500003.0, 5199903.0, 500047.5, 5199990.0),
        shapely.Polygon([(500001.3, 5199901.7), (500088.8, 5199933.1), (500021.9, 5199987.4)]),
        # A hole, a second part, a concave ring and edges on pixel lines.
        shapely.box(500000.0, 5199800.0, 500100.0, 5199900.0).difference(
            shapely.box(500020.0, 5199820.0, 500055.5, 5199871.2)
        ),
        shapely.MultiPolygon(
            [
                shapely.box(500000.0, 5199950.0, 500015.0, 5199960.0),
                shapely.Polygon(
                    [
                        (500030.2, 5199930.0),
                        (500070.0, 5199990.9),
                        (500050.0, 5199950.0),
                        (500090.0, 5199931.0),
                    ]
                ),
            ]
        ),
        # Clockwise ring: orientation must not matter.
        shapely.Polygon([(500001.0, 5199999.0), (500001.0, 5199951.0), (500049.0, 5199975.0)]),
    ],
)
def test_exact_fractions_match_brute_force(geometry):
    fast, slow = _fractions(geometry), _brute_force(geometry)
    assert fast.keys() == slow.keys()
    for key, value in slow.items():
        assert fast[key] == pytest.approx(value, abs=1e-9)
    assert sum(fast.values()) * 100 == pytest.approx(geometry.area, rel=1e-10)


def test_exact_fractions_non_square_pixels():
    grid = PixelGrid.aligned("EPSG:32633", 20.0, 7.5, 0.0, 0.0)
    polygon = shapely.Polygon([(3.0, -2.0), (91.0, -13.0), (40.0, -77.7)])
    fast, slow = _fractions(polygon, grid), _brute_force(polygon, grid)
    assert fast.keys() == slow.keys()
    assert max(abs(fast[k] - slow[k]) for k in slow) < 1e-9


def test_exact_fractions_whole_pixel_square():
    # A 2 x 3 pixel rectangle exactly on pixel edges covers 6 full pixels, and no other.
    rectangle = shapely.box(500010.0, 5199970.0, 500040.0, 5199990.0)
    fractions = _fractions(rectangle)
    # Global grid rows/columns of the pixel whose corner is (500000, 5200000).
    row0, col0, _, _ = GRID.window((500000.0, 5199999.0, 500001.0, 5200000.0))
    assert sorted(fractions) == [(row0 + r, col0 + c) for r in (1, 2) for c in (1, 2, 3)]
    np.testing.assert_allclose(list(fractions.values()), 1.0, atol=1e-12)


def test_center_and_all_touched_match_rasterio():
    polygon = shapely.Polygon(
        [(500001.3, 5199901.7), (500188.8, 5199933.1), (500121.9, 5199987.4), (500040.0, 5199960.0)]
    )
    transform = Affine(10.0, 0.0, 500000.0, 0.0, -10.0, 5200000.0)
    for rule, touched in (("center", False), ("all_touched", True)):
        expected = geometry_mask([polygon], (20, 30), transform, all_touched=touched, invert=True)
        (coverage,) = compute_coverages([polygon], GRID, rule)
        # Global grid rows/columns -> positions in the 20 x 30 raster at (500000, 5200000).
        row0, col0, _, _ = GRID.window((500000.0, 5199999.0, 500001.0, 5200000.0))
        got = np.zeros((20, 30), dtype=bool)
        got[coverage.rows - row0, coverage.cols - col0] = True
        np.testing.assert_array_equal(got, expected)
        assert set(coverage.weights) == {1.0}


# --- summaries ------------------------------------------------------------------------


def test_basic_statistics_groups():
    values = np.array([1.0, 2.0, 4.0, 9.0, 5.0, 7.0], dtype=np.float32)
    valid = np.array([True, True, True, False, False, False])
    weights = np.array([1.0, 0.5, 0.25, 1.0, 1.0, 1.0])
    owner = np.array([0, 0, 0, 1, 1, 2])
    valid[5] = True
    basics = basic_statistics(values, valid, weights, owner, 3)
    mean = (1 + 1 + 1) / 1.75
    assert basics.mean[0] == pytest.approx(mean)
    assert basics.stdev[0] == pytest.approx(
        np.sqrt((1 * (1 - mean) ** 2 + 0.5 * (2 - mean) ** 2 + 0.25 * (4 - mean) ** 2) / 1.75)
    )
    assert (basics.minimum[0], basics.maximum[0]) == (1.0, 4.0)
    assert list(basics.sample_count) == [3, 2, 1]
    assert list(basics.nodata_count) == [0, 2, 0]
    assert np.isnan([basics.mean[1], basics.minimum[1], basics.stdev[1]]).all()
    assert (basics.mean[2], basics.stdev[2], basics.minimum[2]) == (7.0, 0.0, 7.0)


def test_weighted_quantiles_equal_weights_is_type_7():
    values = np.array([3.0, 1.0, 4.0, 1.5, 9.0, 2.6])
    qs = [0.0, 0.1, 0.25, 0.5, 0.9, 1.0]
    np.testing.assert_allclose(
        weighted_quantiles(values, np.ones(6) * 0.3, qs), np.quantile(values, qs)
    )


@pytest.mark.parametrize("method", ["linear", "lower", "higher", "nearest", "midpoint"])
def test_percentile_methods_match_numpy(method):
    rng = np.random.default_rng(3)
    ks = [0, 1, 10, 12.5, 25, 30, 50, 62.5, 70, 75, 90, 99, 100]
    for n in (2, 3, 5, 6, 9, 40):
        values = rng.permutation(rng.normal(size=n))  # distinct values
        expected = np.percentile(values, ks, method=method)
        np.testing.assert_allclose(percentiles(values, None, ks, method), expected, rtol=1e-12)
        # Equal weights: the weighted definition gives numpy's answer for every method.
        for weight in (1.0, 0.3):
            got = percentiles(values, np.full(n, weight), ks, method)
            np.testing.assert_allclose(got, expected, rtol=1e-12, err_msg=f"{n=} {weight=}")


def test_weighted_percentile_methods_by_hand():
    # Distinct values 1, 2, 3 with weights 1, 2, 1: s = [0, 4, 8] (see the test below).
    values = np.array([2.0, 1.0, 3.0, 2.0])
    weights = np.ones(4)
    ks = [25, 50, 62.5, 75]  # targets 2, 4, 5, 6 on s: halfway, on 2, a quarter, halfway
    assert list(percentiles(values, weights, ks, "lower")) == [1.0, 2.0, 2.0, 2.0]
    assert list(percentiles(values, weights, ks, "higher")) == [2.0, 2.0, 3.0, 3.0]
    assert list(percentiles(values, weights, ks, "midpoint")) == [1.5, 2.0, 2.5, 2.5]
    # nearest: 2 and 6 are ties between indexes 0|1 and 1|2 (to the even one).
    assert list(percentiles(values, weights, ks, "nearest")) == [1.0, 2.0, 2.0, 3.0]


def test_weighted_quantiles_definition():
    # exactextract's definition by hand: distinct values 1, 2, 3 with weights 1, 2, 1 (the
    # two 2s merge): s = [0, 1*2 + 2*1, 2*1 + 2*3] = [0, 4, 8]; W (n - 1) = 8.
    values = np.array([2.0, 1.0, 3.0, 2.0])
    weights = np.array([1.0, 1.0, 1.0, 1.0])
    got = weighted_quantiles(values, weights, [0.25, 0.5, 0.75, 0.125])
    np.testing.assert_allclose(got, [1 + (2 - 0) * 1 / 4, 2.0, 2 + (6 - 4) / 4, 1.25])


def test_percentiles_unweighted_is_numpy():
    values = np.array([0.2, 0.2, 0.5, 0.1, 0.9], dtype=np.float32)
    np.testing.assert_allclose(
        percentiles(values, None, [10, 50, 95]),
        np.percentile(values.astype(np.float64), [10, 50, 95]),
    )
    assert np.isnan(percentiles(np.empty(0), None, [50])).all()


def test_histogram_forms():
    values = np.array([-0.5, 0.0, 0.1, 0.25, 0.5, 0.99, 1.0, 1.5])
    explicit = histogram(values, HistogramSpec(bins=(0.0, 0.5, 1.0)), -0.5, 1.5)
    assert [b["count"] for b in explicit["bins"]] == [3, 3]
    assert (explicit["underflowCount"], explicit["overflowCount"]) == (1, 1)

    n_bins = histogram(values, HistogramSpec(n_bins=4), -0.5, 1.5)
    assert [b["lowEdge"] for b in n_bins["bins"]] == [-0.5, 0.0, 0.5, 1.0]
    assert [b["count"] for b in n_bins["bins"]] == [1, 3, 2, 2]
    assert sum(b["count"] for b in n_bins["bins"]) == len(values)

    width = histogram(values, HistogramSpec(bin_width=0.4, low_edge=0.0, high_edge=1.0), -0.5, 1.5)
    edges = [(b["lowEdge"], b["highEdge"]) for b in width["bins"]]
    assert edges == [(0.0, 0.4), (0.4, 0.8), (0.8, 1.0)]
    assert [b["count"] for b in width["bins"]] == [3, 1, 2]
    assert (width["underflowCount"], width["overflowCount"]) == (1, 1)

    assert histogram(np.empty(0), HistogramSpec(n_bins=3), np.nan, np.nan)["bins"] == []


# --- plans ------------------------------------------------------------------------------


def _request(**aggregation) -> StatisticalRequest:
    body = {
        "input": {
            "bounds": {"bbox": [16.09, 46.64, 16.10, 46.65]},
            "data": [{"type": "sentinel-2-l2a"}],
        },
        "aggregation": {
            "timeRange": {"from": "2023-04-01T00:00:00Z", "to": "2023-05-01T00:00:00Z"},
            "aggregationInterval": {"of": "P1D"},
            "outputs": {"ndvi": {"expression": "(B08-B04)/(B08+B04)"}},
            **aggregation,
        },
    }
    return StatisticalRequest.model_validate(body)


def test_plan_resolves_band_names_and_defaults():
    plan = make_plan(_request(), default_settings())
    assert plan.outputs[0].expression.names == ("nir", "red")
    assert plan.assets == ("nir", "red", "scl")
    assert plan.outputs[0].bands[0].name == "B0"
    assert len(plan.intervals) == 30
    assert plan.mosaicking_order == "mostRecent"


def test_plan_default_calculations_apply_per_band():
    request = _request(outputs={"rgb": {"expression": "red;green;blue", "bands": ["R", "G", "B"]}})
    request.calculations = StatisticalRequest.model_validate(
        {
            **request.model_dump(by_alias=True),
            "calculations": {
                "default": {
                    "statistics": {"default": {"percentiles": {"k": [50]}}},
                    "histograms": {"G": {"nBins": 3}},
                }
            },
        }
    ).calculations
    bands = make_plan(request, default_settings()).outputs[0].bands
    assert [b.percentiles for b in bands] == [(50.0,)] * 3
    assert [b.histogram is not None for b in bands] == [False, True, False]
