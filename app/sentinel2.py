"""What is special about Sentinel-2 L2A as Earth-Search v1 serves it.

Asset names (common names and the ESA band names), the DN -> reflectance rule, and the
Scene Classification Layer (SCL) used for cloud and validity masks.
"""

import re
from collections.abc import Iterable, Mapping
from typing import Any, Literal

import numpy as np
import pystac

from app.errors import BadRequestError

# ESA band name -> Earth-Search v1 asset key (its common name).
BAND_ALIASES: dict[str, str] = {
    "B01": "coastal",
    "B02": "blue",
    "B03": "green",
    "B04": "red",
    "B05": "rededge1",
    "B06": "rededge2",
    "B07": "rededge3",
    "B08": "nir",
    "B8A": "nir08",
    "B09": "nir09",
    "B11": "swir16",
    "B12": "swir22",
    "SCL": "scl",
    "AOT": "aot",
    "WVP": "wvp",
    "TCI": "visual",
}
COMMON_NAMES: dict[str, str] = {common: band for band, common in BAND_ALIASES.items()}

# The surface-reflectance assets, in wavelength order: DN * 0.0001 (+ the baseline
# offset) is reflectance.
REFLECTANCE_BANDS: tuple[str, ...] = (
    "coastal",
    "blue",
    "green",
    "red",
    "rededge1",
    "rededge2",
    "rededge3",
    "nir",
    "nir08",
    "nir09",
    "swir16",
    "swir22",
)
REFLECTANCE_ASSETS: frozenset[str] = frozenset(REFLECTANCE_BANDS)

REFLECTANCE_SCALE = 0.0001
# ESA's BOA_ADD_OFFSET (-1000 DN) expressed in reflectance, from processing baseline 04.00.
BOA_ADD_OFFSET = -0.1
BOA_OFFSET_BASELINE = (4, 0)

# The SCL asset (Earth-Search v1 key) and the named values of the ``mask`` parameter: with
# ``scl-clear`` the pixels of the configured SCL classes become nodata; ``none`` masks nothing
# (a band-math expression over assets is the third kind of mask).
SCL_ASSET = "scl"
MASK_SCL_CLEAR = "scl-clear"
MASK_NONE = "none"
MaskName = Literal["scl-clear", "none"]

# Classes that make a pixel unusable for statistics: nodata, saturated, cloud shadow,
# clouds (medium, high), cirrus and snow.
DEFAULT_SCL_MASK: frozenset[int] = frozenset({0, 1, 3, 8, 9, 10, 11})

# The SCL classes with ESA's standard legend colours (as in SNAP and the Sentinel Hub SCL
# script), as a rio-tiler colormap; no data is transparent so mosaics show what lies below.
SCL_COLORMAP: dict[int, tuple[int, int, int, int]] = {
    0: (0, 0, 0, 0),  # no data
    1: (255, 0, 0, 255),  # saturated or defective
    2: (47, 47, 47, 255),  # dark area pixels (cast and topographic shadows)
    3: (100, 50, 0, 255),  # cloud shadows
    4: (0, 160, 0, 255),  # vegetation
    5: (255, 230, 90, 255),  # not vegetated
    6: (0, 0, 255, 255),  # water
    7: (128, 128, 128, 255),  # unclassified
    8: (192, 192, 192, 255),  # cloud, medium probability
    9: (255, 255, 255, 255),  # cloud, high probability
    10: (100, 200, 255, 255),  # thin cirrus
    11: (255, 150, 255, 255),  # snow
}

_SHORT_BAND = re.compile(r"^B(\d)$")
_BASELINE = re.compile(r"(\d+)\.(\d+)")


def _band_key(name: str) -> str:
    """Upper-case a band name and pad single-digit names (``b4`` -> ``B04``)."""
    upper = name.upper()
    match = _SHORT_BAND.match(upper)
    return f"B0{match.group(1)}" if match else upper


def resolve_asset(name: str, available: Iterable[str]) -> str | None:
    """Find the asset key a band name or common name refers to.

    Args:
        name: What the user wrote: an asset key (``red``), an ESA band name in any case
            (``B04``, ``b8a``, ``B4``) or a common name when the catalog keys assets by
            band name (Earth-Search v0 style).
        available: The asset keys of the item.

    Returns:
        The asset key to read, or None when nothing matches.

    """
    keys = set(available)
    if name in keys:
        return name
    common = BAND_ALIASES.get(_band_key(name))
    if common is not None and common in keys:
        return common
    # Catalogs keyed by band name (B04 ...) still accept the common names.
    band = COMMON_NAMES.get(name.lower())
    if band is not None and band in keys:
        return band
    return None


def _item_parts(item: pystac.Item | Mapping[str, Any]) -> tuple[str | None, dict, dict]:
    """Return (id, properties, assets-as-dicts) of a pystac Item or a raw item dict."""
    if isinstance(item, pystac.Item):
        assets = {key: asset.to_dict() for key, asset in item.assets.items()}
        return item.id, dict(item.properties), assets
    return item.get("id"), dict(item.get("properties") or {}), dict(item.get("assets") or {})


def _baseline(properties: Mapping[str, Any]) -> tuple[int, int] | None:
    value = properties.get("s2:processing_baseline", properties.get("sentinel:processing_baseline"))
    match = _BASELINE.search(str(value)) if value is not None else None
    return (int(match.group(1)), int(match.group(2))) if match else None


def _boa_offset_applied(properties: Mapping[str, Any]) -> bool:
    flag = properties.get(
        "earthsearch:boa_offset_applied", properties.get("sentinel:boa_offset_applied")
    )
    return flag is True


def is_reflectance_asset(asset_key: str, asset: Mapping[str, Any] | None = None) -> bool:
    """Whether an asset holds surface reflectance (so DN needs scale and BOA offset).

    The Sentinel-2 keys decide by name: Earth-Search gives ``scl``, ``aot`` and ``wvp``
    the ``reflectance`` role too, so roles only count for keys this module does not know.

    Args:
        asset_key: The asset key (common or ESA band name); ``-jp2`` twins count as
            their COG asset.
        asset: The asset dict, whose ``roles`` may say ``reflectance``.

    Returns:
        True for the 12 L2A reflectance bands.

    """
    key = asset_key.removesuffix("-jp2")
    common = BAND_ALIASES.get(_band_key(key), key)
    if common in REFLECTANCE_ASSETS:
        return True
    if common in COMMON_NAMES:
        return False
    return bool(asset) and "reflectance" in (asset.get("roles") or [])


def scale_offset(
    item: pystac.Item | Mapping[str, Any],
    asset_key: str,
    *,
    trust_boa_flag: bool = True,
) -> tuple[float, float]:
    """Return the (scale, offset) that turn an asset's DN into physical values.

    ``value = DN * scale + offset``. The rule:

    * Scale: ``raster:bands[0].scale`` of the asset when present; else 0.0001 for the
      reflectance bands and 1 for everything else (``scl``, ``visual``). ``aot`` and
      ``wvp`` carry ``scale: 0.001`` in Earth-Search items and get it from there.
    * Offset of non-reflectance assets: ``raster:bands[0].offset`` or 0.
    * Offset of reflectance assets, in this order:

      1. ``earthsearch:boa_offset_applied: true`` -> **0**. Element84 has already
         subtracted ESA's BOA_ADD_OFFSET (-1000 DN) inside these COGs, and the -0.1 its
         items still carry in ``raster:bands`` would subtract it a second time (every
         reflectance 0.1 too low, NDVI wrong, dark surfaces negative). Element84's own
         word: "boa_offset_applied is the truth" (Element84/earth-search#9); Earth-Search
         `sentinel-2-c1-l2a` COGs differ from these by exactly 1000 DN.
         ``trust_boa_flag=False`` turns this step off (raster:bands then win).
      2. ``raster:bands[0].offset`` when present (any other catalog: Planetary Computer,
         CDSE, the demo) is authoritative.
      3. No offset recorded: -0.1 when ``s2:processing_baseline`` >= 04.00 (the DN still
         carries ESA's +1000), else 0.

    Args:
        item: A pystac Item or a raw STAC item dict.
        asset_key: The asset key (an ESA band name is resolved first).
        trust_boa_flag: Let ``earthsearch:boa_offset_applied: true`` zero the offset.

    Returns:
        (scale, offset) as floats.

    Raises:
        BadRequestError: The item has no such asset.

    """
    item_id, properties, assets = _item_parts(item)
    key = resolve_asset(asset_key, assets)
    if key is None:
        raise BadRequestError(f"asset: item '{item_id}' has no asset '{asset_key}'")
    asset = assets[key]
    bands = asset.get("raster:bands") or [{}]
    band = bands[0] if isinstance(bands[0], Mapping) else {}
    recorded_scale = band.get("scale")
    recorded_offset = band.get("offset")

    if not is_reflectance_asset(key, asset):
        scale = 1.0 if recorded_scale is None else float(recorded_scale)
        return scale, 0.0 if recorded_offset is None else float(recorded_offset)

    scale = REFLECTANCE_SCALE if recorded_scale is None else float(recorded_scale)
    if trust_boa_flag and _boa_offset_applied(properties):
        return scale, 0.0
    if recorded_offset is not None:
        return scale, float(recorded_offset)
    baseline = _baseline(properties)
    if baseline is not None and baseline >= BOA_OFFSET_BASELINE:
        return scale, BOA_ADD_OFFSET
    return scale, 0.0


#: Where ``publish_scale_offset`` keeps a ``raster:bands`` value it replaced (null: none).
ORIGINAL_SCALE = "terratiler:original_scale"
ORIGINAL_OFFSET = "terratiler:original_offset"


def publish_scale_offset(item: dict[str, Any]) -> dict[str, Any]:
    """Make an item's ``raster:bands`` say the scale and offset the service applies.

    Generic clients (stackstac's ``rescale``, odc-stac users, QGIS) compute ``DN * scale +
    offset`` from ``raster:bands``. Earth-Search items with ``earthsearch:boa_offset_applied:
    true`` still record offset -0.1 there, so such a client's reflectance is 0.1 lower than
    the service's (``scale_offset`` gives 0 for them). For every single-band asset with
    ``raster:bands``, ``scale`` and ``offset`` become ``scale_offset``'s; a value replaced is
    kept in the band as ``terratiler:original_scale`` / ``terratiler:original_offset``
    (null when the catalog had none). Multi-band assets (``visual``) are left as they are.

    Args:
        item: A STAC item dict, changed in place.

    Returns:
        ``item``.

    """
    for key, asset in (item.get("assets") or {}).items():
        bands = asset.get("raster:bands") if isinstance(asset, Mapping) else None
        if not isinstance(bands, list) or len(bands) != 1 or not isinstance(bands[0], dict):
            continue
        band = bands[0]
        try:
            scale, offset = scale_offset(item, key)
        except (TypeError, ValueError, OverflowError):  # not a float: published as it is
            continue
        for name, original, value, default in (
            ("scale", ORIGINAL_SCALE, scale, 1.0),
            ("offset", ORIGINAL_OFFSET, offset, 0.0),
        ):
            recorded = band.get(name)
            if (default if recorded is None else recorded) != value:
                band[original] = recorded
                band[name] = value
    return item


def harmonize(
    dn: np.ndarray | np.ma.MaskedArray,
    scale: float,
    offset: float,
    *,
    nodata: float | None = None,
) -> np.ma.MaskedArray:
    """Turn DN into physical values (``DN * scale + offset``) as float32.

    Args:
        dn: Digital numbers; a masked array keeps its mask.
        scale: Multiplier (e.g. 0.0001).
        offset: Added after scaling (e.g. -0.1).
        nodata: DN that marks missing pixels (Sentinel-2: 0), masked in the result.

    Returns:
        A float32 masked array; masked where the input was masked or equal to nodata.

    """
    data = np.ma.getdata(dn)
    mask = np.ma.getmaskarray(dn).copy()
    if nodata is not None:
        mask |= data == nodata
    values = data.astype(np.float32) * np.float32(scale) + np.float32(offset)
    return np.ma.MaskedArray(values, mask=mask)


def scl_invalid(scl: np.ndarray, classes: Iterable[int] = DEFAULT_SCL_MASK) -> np.ndarray:
    """Which pixels an SCL layer marks as unusable.

    Args:
        scl: SCL class values (any shape); masked pixels count as invalid.
        classes: The SCL classes to mask (default: nodata, saturated, cloud shadow,
            clouds, cirrus, snow).

    Returns:
        A boolean array of the same shape, True where the pixel must be masked.

    """
    invalid = np.isin(np.ma.getdata(scl), np.fromiter(classes, dtype=np.int64))
    return invalid | np.ma.getmaskarray(scl)
