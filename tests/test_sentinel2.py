import copy
import json
from pathlib import Path

import numpy as np
import pystac
import pytest

from app import sentinel2
from app.errors import BadRequestError
from app.sentinel2 import (
    BAND_ALIASES,
    DEFAULT_SCL_MASK,
    SCL_COLORMAP,
    harmonize,
    resolve_asset,
    scale_offset,
    scl_invalid,
)

FIXTURES = Path(__file__).parent / "fixtures"
ITEM = json.loads((FIXTURES / "earth-search-v1-sentinel-2-l2a-item.json").read_text())
EARTH_SEARCH_KEYS = [key for key in ITEM["assets"] if not key.endswith("-jp2")]


def _item(properties: dict | None = None, red_band: dict | None = None) -> dict:
    """The fixture item with some properties and the red asset's raster:bands changed."""
    item = copy.deepcopy(ITEM)
    item["properties"].update(properties or {})
    if red_band is not None:
        item["assets"]["red"]["raster:bands"] = [red_band]
    return item


# --- asset names -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("red", "red"),
        ("scl", "scl"),
        ("visual", "visual"),
        ("B01", "coastal"),
        ("B02", "blue"),
        ("B03", "green"),
        ("B04", "red"),
        ("b04", "red"),
        ("B4", "red"),
        ("b8", "nir"),
        ("B05", "rededge1"),
        ("B06", "rededge2"),
        ("B07", "rededge3"),
        ("B08", "nir"),
        ("B8A", "nir08"),
        ("b8a", "nir08"),
        ("B09", "nir09"),
        ("B11", "swir16"),
        ("B12", "swir22"),
        ("SCL", "scl"),
        ("scl", "scl"),
        ("AOT", "aot"),
        ("WVP", "wvp"),
        ("TCI", "visual"),
        ("tci", "visual"),
        ("B10", None),  # cirrus is not in L2A
        ("B13", None),
        ("ndvi", None),
        ("", None),
    ],
)
def test_resolve_asset_on_earth_search_keys(name: str, expected: str | None) -> None:
    assert resolve_asset(name, EARTH_SEARCH_KEYS) == expected


def test_every_alias_points_at_an_earth_search_asset() -> None:
    assert set(BAND_ALIASES.values()) <= set(EARTH_SEARCH_KEYS)
    assert len(BAND_ALIASES) == 16


def test_resolve_asset_prefers_the_key_as_written() -> None:
    assert resolve_asset("B04", ["B04", "red"]) == "B04"


@pytest.mark.parametrize(
    ("name", "expected"), [("red", "B04"), ("NIR08", "B8A"), ("scl", "SCL"), ("B04", "B04")]
)
def test_resolve_asset_on_a_catalog_keyed_by_band_name(name: str, expected: str) -> None:
    assert resolve_asset(name, ["B02", "B03", "B04", "B08", "B8A", "SCL"]) == expected


def test_resolve_asset_when_the_alias_target_is_missing() -> None:
    assert resolve_asset("B04", ["blue", "green"]) is None


# --- scale / offset ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("asset", "expected"),
    [
        # boa_offset_applied: true -> Element84 already removed the +1000 DN: no offset.
        ("red", (0.0001, 0.0)),
        ("B04", (0.0001, 0.0)),
        ("blue", (0.0001, 0.0)),
        ("nir08", (0.0001, 0.0)),
        ("coastal", (0.0001, 0.0)),
        ("swir22", (0.0001, 0.0)),
        ("red-jp2", (0.0001, 0.0)),
        ("scl", (1.0, 0.0)),
        ("visual", (1.0, 0.0)),
        ("aot", (0.001, 0.0)),
        ("wvp", (0.001, 0.0)),
    ],
)
def test_scale_offset_of_the_recorded_item(asset: str, expected: tuple[float, float]) -> None:
    assert scale_offset(ITEM, asset) == pytest.approx(expected)


def test_scale_offset_accepts_a_pystac_item() -> None:
    item = pystac.Item.from_dict(copy.deepcopy(ITEM))
    assert scale_offset(item, "red") == pytest.approx((0.0001, 0.0))
    assert scale_offset(item, "scl") == (1.0, 0.0)


def test_scale_offset_can_follow_raster_bands_literally() -> None:
    assert scale_offset(ITEM, "red", trust_boa_flag=False) == pytest.approx((0.0001, -0.1))
    assert scale_offset(ITEM, "scl", trust_boa_flag=False) == (1.0, 0.0)


BOA = "earthsearch:boa_offset_applied"
PB = "s2:processing_baseline"


@pytest.mark.parametrize(
    ("properties", "red_band", "expected"),
    [
        # Baseline >= 04.00 and the offset not applied: raster:bands' -0.1 counts.
        ({BOA: False}, {"nodata": 0, "scale": 0.0001, "offset": -0.1}, (0.0001, -0.1)),
        # ... and with no offset recorded, the baseline says -0.1.
        ({BOA: False}, {"nodata": 0}, (0.0001, -0.1)),
        ({BOA: None}, {"nodata": 0}, (0.0001, -0.1)),
        ({PB: "04.00", BOA: False}, {}, (0.0001, -0.1)),
        # Old baselines never had the offset.
        ({PB: "03.01", BOA: False}, {}, (0.0001, 0.0)),
        ({PB: "02.14"}, {"nodata": 0}, (0.0001, 0.0)),
        # Other catalogs: raster:bands is authoritative.
        ({BOA: None, PB: None}, {"scale": 0.0002, "offset": -0.05}, (0.0002, -0.05)),
        ({PB: None, BOA: None}, {}, (0.0001, 0.0)),
        # Applied flag with nothing recorded.
        ({BOA: True}, {}, (0.0001, 0.0)),
        # Earth-Search v0 spelled the properties sentinel:*.
        ({BOA: None, PB: None, "sentinel:processing_baseline": "04.00"}, {}, (0.0001, -0.1)),
        (
            {BOA: None, PB: None, "sentinel:processing_baseline": "04.00",
             "sentinel:boa_offset_applied": True},
            {"offset": -0.1},
            (0.0001, 0.0),
        ),
    ],
)  # fmt: skip
def test_scale_offset_rule(properties: dict, red_band: dict, expected: tuple) -> None:
    item = _item(properties, red_band)
    item["properties"] = {k: v for k, v in item["properties"].items() if v is not None}
    assert scale_offset(item, "red") == pytest.approx(expected)


def test_scale_offset_of_an_unknown_asset() -> None:
    with pytest.raises(
        BadRequestError, match="asset: item 'S2A_13TDE_20231008_0_L2A' has no asset 'B10'"
    ):
        scale_offset(ITEM, "B10")


# --- publish_scale_offset ------------------------------------------------------------


def test_published_raster_bands_say_what_the_service_applies() -> None:
    """Earth-Search's item (flag true, -0.1 recorded): served with offset 0, -0.1 kept."""
    served = sentinel2.publish_scale_offset(copy.deepcopy(ITEM))
    for key, asset in served["assets"].items():
        bands = asset.get("raster:bands") or []
        original = ITEM["assets"][key].get("raster:bands") or []
        if len(bands) != 1:
            assert bands == original, key  # multi-band (visual) and band-less: untouched
            continue
        (band,) = bands
        # A generic client's DN * scale + offset is the service's value.
        assert (band.get("scale", 1.0), band.get("offset", 0.0)) == pytest.approx(
            scale_offset(ITEM, key)
        ), key
        recorded = original[0].get("offset")
        if recorded is not None and recorded != band["offset"]:
            assert band["terratiler:original_offset"] == recorded, key
        else:
            assert "terratiler:original_offset" not in band, key
    assert served["assets"]["red"]["raster:bands"][0]["offset"] == 0
    assert served["assets"]["red"]["raster:bands"][0]["terratiler:original_offset"] == -0.1
    assert served["assets"]["scl"]["raster:bands"] == ITEM["assets"]["scl"]["raster:bands"]
    # What is published is read back as the same (scale, offset): stable.
    assert sentinel2.publish_scale_offset(copy.deepcopy(served)) == served


@pytest.mark.parametrize(
    ("properties", "red_band", "published"),
    [
        # Not applied, recorded: unchanged.
        ({BOA: False}, {"scale": 0.0001, "offset": -0.1}, {"scale": 0.0001, "offset": -0.1}),
        # Nothing recorded, baseline 05.09: the service's default scale and -0.1, null originals.
        (
            {BOA: False, PB: "05.09"},
            {"nodata": 0},
            {"nodata": 0, "scale": 0.0001, "offset": -0.1,
             "terratiler:original_scale": None, "terratiler:original_offset": None},
        ),
        # A non-numeric offset is served as it is (the tiler refuses it on its own).
        ({BOA: False}, {"offset": "x"}, {"offset": "x"}),
    ],
)  # fmt: skip
def test_published_raster_bands_rule(properties: dict, red_band: dict, published: dict) -> None:
    served = sentinel2.publish_scale_offset(_item(properties, red_band))
    assert served["assets"]["red"]["raster:bands"] == [published]


# --- harmonize ---------------------------------------------------------------------


def test_harmonize_numbers_and_nodata() -> None:
    dn = np.array([[0, 1000, 1500], [11000, 32767, 1]], dtype=np.uint16)
    out = harmonize(dn, 0.0001, -0.1, nodata=0)
    assert out.dtype == np.float32
    assert out.mask.tolist() == [[True, False, False], [False, False, False]]
    np.testing.assert_allclose(
        out.compressed(), [0.0, 0.05, 1.0, 3.1767, -0.0999], rtol=0, atol=1e-6
    )


def test_harmonize_keeps_an_existing_mask() -> None:
    dn = np.ma.MaskedArray(np.array([500, 600, 700], dtype=np.uint16), mask=[False, True, False])
    out = harmonize(dn, 0.0001, 0.0)
    assert out.mask.tolist() == [False, True, False]
    np.testing.assert_allclose(out.compressed(), [0.05, 0.07], atol=1e-7)
    assert dn.mask.tolist() == [False, True, False]  # the input is untouched


def test_ndvi_needs_harmonized_reflectance() -> None:
    # True reflectance: red 0.05, nir 0.30 -> NDVI 0.714. With ESA's +1000 DN (baseline
    # >= 04.00, offset not applied) math on raw DN gives 0.333.
    red_dn, nir_dn = np.array([1500], np.uint16), np.array([4000], np.uint16)
    item = _item({"earthsearch:boa_offset_applied": False})
    red = harmonize(red_dn, *scale_offset(item, "red"), nodata=0)
    nir = harmonize(nir_dn, *scale_offset(item, "nir"), nodata=0)
    assert float(((nir - red) / (nir + red))[0]) == pytest.approx(0.25 / 0.35, abs=1e-5)
    raw = (nir_dn.astype(float) - red_dn) / (nir_dn.astype(float) + red_dn)
    assert float(raw[0]) == pytest.approx(2500 / 5500)


# --- SCL ---------------------------------------------------------------------------


def test_default_scl_mask() -> None:
    assert DEFAULT_SCL_MASK == {0, 1, 3, 8, 9, 10, 11}


def test_scl_invalid_default_classes() -> None:
    scl = np.arange(12, dtype=np.uint8).reshape(3, 4)
    expected = np.isin(scl, [0, 1, 3, 8, 9, 10, 11])
    result = scl_invalid(scl)
    assert result.dtype == bool
    assert result.shape == (3, 4)
    np.testing.assert_array_equal(result, expected)
    assert int(result.sum()) == 7


def test_scl_invalid_custom_classes_and_masked_input() -> None:
    scl = np.ma.MaskedArray(np.array([4, 5, 6, 9, 4], np.uint8), mask=[0, 0, 0, 0, 1])
    assert scl_invalid(scl, [6]).tolist() == [False, False, True, False, True]
    assert scl_invalid(scl, set()).tolist() == [False, False, False, False, True]


def test_scl_colormap_is_a_rio_tiler_colormap_of_every_class() -> None:
    assert set(SCL_COLORMAP) == set(range(12))  # every SCL class
    for value, rgba in SCL_COLORMAP.items():
        assert len(rgba) == 4 and all(0 <= channel <= 255 for channel in rgba), value
    assert SCL_COLORMAP[0][3] == 0  # no data is transparent
    assert SCL_COLORMAP[4] == (0, 160, 0, 255)  # vegetation green
    assert SCL_COLORMAP[6] == (0, 0, 255, 255)  # water blue
    assert SCL_COLORMAP[9] == (255, 255, 255, 255)  # high-probability cloud white


def test_scl_colormap_renders_with_rio_tiler() -> None:
    from rio_tiler.colormap import apply_cmap

    data, alpha = apply_cmap(np.array([[[0, 4, 6, 9]]], dtype=np.uint8), SCL_COLORMAP)
    assert data[:, 0, 1].tolist() == [0, 160, 0]
    assert alpha[0].tolist() == [0, 255, 255, 255]


def test_reflectance_assets() -> None:
    assert sentinel2.is_reflectance_asset("nir08")
    assert sentinel2.is_reflectance_asset("swir16-jp2")
    assert not sentinel2.is_reflectance_asset("scl")
    assert not sentinel2.is_reflectance_asset("aot")
    assert sentinel2.is_reflectance_asset("B04")
    assert not sentinel2.is_reflectance_asset("scl", {"roles": ["data", "reflectance"]})
    assert sentinel2.is_reflectance_asset("b1_sr", {"roles": ["data", "reflectance"]})
    assert not sentinel2.is_reflectance_asset("b1_sr", {"roles": ["data"]})
