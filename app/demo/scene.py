"""One date: reflectance, clouds, shadows, cirrus, swath edge, SCL and stored DNs.

Surface reflectance comes from the landscape; atmosphere and swath edge are laid over it;
the scene classification (SCL) and the stored digital numbers of every asset follow.

Everything is computed on the 10 m working grid; 20 m and 60 m bands are block means of
it, so the three resolutions agree. The SCL is conservative: a 20 m pixel is cloud,
cirrus or shadow as soon as one of its 10 m pixels is, so SCL-clear pixels are clean.
"""

import math
from dataclasses import dataclass, field
from datetime import timedelta

import numpy as np
import shapely
from rasterio.features import shapes
from shapely.geometry import Polygon, shape

from app.demo.grid import sun_position
from app.demo.landscape import FIELD, FOREST, Landscape
from app.demo.noise import block_max, block_mean, smooth_noise
from app.demo.phenology import crop_ndvi
from app.demo.schedule import SceneSpec
from app.demo.spectra import (
    BACKGROUND,
    BANDS,
    CANOPY,
    CIRRUS,
    CLOUD,
    FIXED,
    FIXED_WATER,
    NIR,
    RED,
    SHADOW_DARKENING,
    canopy_fraction,
)

#: Spatial resolution (m) of every raster asset.
RESOLUTION: dict[str, int] = {
    "coastal": 60,
    "blue": 10,
    "green": 10,
    "red": 10,
    "rededge1": 20,
    "rededge2": 20,
    "rededge3": 20,
    "nir": 10,
    "nir08": 20,
    "nir09": 60,
    "swir16": 20,
    "swir22": 20,
    "scl": 20,
    "aot": 20,
    "wvp": 20,
    "visual": 10,
}

# Scene classification values (Sen2Cor).
SCL_NODATA = 0
SCL_SATURATED = 1
SCL_DARK = 2
SCL_SHADOW = 3
SCL_VEGETATION = 4
SCL_NOT_VEGETATED = 5
SCL_WATER = 6
SCL_UNCLASSIFIED = 7
SCL_CLOUD_MEDIUM = 8
SCL_CLOUD_HIGH = 9
SCL_CIRRUS = 10
SCL_SNOW = 11
#: Classes counted by ``eo:cloud_cover``.
SCL_CLOUDS = (SCL_CLOUD_MEDIUM, SCL_CLOUD_HIGH, SCL_CIRRUS)

_SCL_PERCENTAGES = {
    "s2:saturated_defective_pixel_percentage": SCL_SATURATED,
    "s2:dark_features_percentage": SCL_DARK,
    "s2:cloud_shadow_percentage": SCL_SHADOW,
    "s2:vegetation_percentage": SCL_VEGETATION,
    "s2:not_vegetated_percentage": SCL_NOT_VEGETATED,
    "s2:water_percentage": SCL_WATER,
    "s2:unclassified_percentage": SCL_UNCLASSIFIED,
    "s2:medium_proba_clouds_percentage": SCL_CLOUD_MEDIUM,
    "s2:high_proba_clouds_percentage": SCL_CLOUD_HIGH,
    "s2:thin_cirrus_percentage": SCL_CIRRUS,
    "s2:snow_ice_percentage": SCL_SNOW,
}

# Cloud fraction range and feature size (pixels) of each sky.
_SKY = {"few": (0.02, 0.06, 25.0), "partly": (0.20, 0.40, 60.0), "mostly": (0.70, 0.85, 120.0)}


@dataclass
class Scene:
    """A rendered date, ready to be written.

    Attributes:
        spec: the date's plan.
        arrays: stored values of each raster asset at its native resolution (uint16, or
            uint8 for ``scl``; ``visual`` is (3, rows, cols) uint8).
        footprint: the valid-data footprint in the grid's CRS (EPSG:32633 for the demo).
        properties: SCL-derived item properties (``eo:cloud_cover``, ``s2:*_percentage``).
        sun_azimuth: degrees clockwise from north.
        sun_elevation: degrees.

    """

    spec: SceneSpec
    arrays: dict[str, np.ndarray] = field(default_factory=dict)
    footprint: Polygon | None = None
    properties: dict[str, float] = field(default_factory=dict)
    sun_azimuth: float = 0.0
    sun_elevation: float = 0.0


def _target_ndvi(land: Landscape, doy: int, rng: np.random.Generator) -> np.ndarray:
    """Intended NDVI of the vegetated part of every pixel on a day."""
    per_field = np.array(
        [crop_ndvi(f.crop, doy, f.phenology_shift, f.vigour) for f in land.fields] + [0.0],
        dtype=np.float32,
    )
    ndvi = np.where(
        land.cover == FOREST,
        np.float32(crop_ndvi("forest", doy)),
        np.float32(crop_ndvi("margin", doy)),
    )
    ndvi = np.where(land.cover == FIELD, per_field[land.field_index], ndvi)
    noise = rng.standard_normal(ndvi.shape, dtype=np.float32)
    return (ndvi + land.texture + 0.012 * noise).astype(np.float32)


def _clouds(
    rng: np.random.Generator, spec: SceneSpec, n: int, azimuth: float, elevation: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Cloud opacity, shadow strength and cirrus thickness on the working grid."""
    zeros = np.zeros((n, n), dtype=np.float32)
    alpha, shade, cirrus = zeros, zeros, zeros
    if spec.sky in _SKY:
        lo, hi, scale = _SKY[spec.sky]
        fraction = rng.uniform(lo, hi)
        # Shadows fall away from the sun, at cloud height x tan(zenith).
        height = rng.uniform(1200.0, 2200.0)
        reach = height * math.tan(math.radians(90.0 - elevation)) / 10.0
        drow = round(reach * math.cos(math.radians(azimuth)))
        dcol = round(-reach * math.sin(math.radians(azimuth)))
        pr, pc = abs(drow), abs(dcol)
        big = smooth_noise(rng, (n + 2 * pr, n + 2 * pc), scale, octaves=4)
        own = big[pr : pr + n, pc : pc + n]
        caster = big[pr - drow : pr - drow + n, pc - dcol : pc - dcol + n]
        threshold = np.quantile(own, 1.0 - fraction)
        # Clouds have a hard edge: every cloudy pixel is at least 35 % opaque.
        alpha = np.where(own > threshold, np.clip(0.35 + (own - threshold) / 1.2, 0, 1), 0)
        # Only the thicker part of a cloud casts a shadow Sen2Cor would flag.
        core = threshold + 0.25
        shade = np.where(caster > core, np.clip(0.6 + (caster - core), 0, 1), 0)
        alpha, shade = alpha.astype(np.float32), shade.astype(np.float32)
    if spec.cirrus:
        # Cirrus comes in long streaks.
        streaks = smooth_noise(rng, (n, n), (15.0, 150.0), octaves=3)
        threshold = np.quantile(streaks, 1.0 - rng.uniform(0.08, 0.18))
        thickness = 0.025 + 0.06 * np.clip((streaks - threshold) / 1.5, 0, 1)
        cirrus = np.where(streaks > threshold, thickness, 0).astype(np.float32)
    return alpha, shade, cirrus


def _nodata_cells(spec: SceneSpec, land: Landscape) -> np.ndarray:
    """Which 60 m cells lie outside the swath (west of a diagonal edge)."""
    rows, cols = land.grid.shape(60)
    if not spec.nodata_edge:
        return np.zeros((rows, cols), dtype=bool)
    side = land.grid.size * 10.0
    x = (np.arange(cols) + 0.5)[None, :] * 60.0
    y = (np.arange(rows) + 0.5)[:, None] * 60.0
    x_top, x_bottom = 0.55 * side, 0.2 * side
    return x < x_top + (x_bottom - x_top) * y / side


def _footprint(nodata60: np.ndarray, land: Landscape) -> Polygon:
    """Return the valid footprint: union of valid 60 m cells, clipped to the 10 m extent."""
    extent = shapely.box(*land.grid.extent)
    if not nodata60.any():
        return extent
    valid = (~nodata60).astype(np.uint8)
    parts = [shape(g) for g, v in shapes(valid, mask=valid, transform=land.grid.transform(60))]
    footprint = shapely.union_all(parts).intersection(extent).simplify(0)
    if footprint.geom_type != "Polygon":
        footprint = max(footprint.geoms, key=lambda g: g.area)
    return footprint


def _scl(
    land: Landscape,
    red: np.ndarray,
    nir: np.ndarray,
    alpha: np.ndarray,
    shade: np.ndarray,
    cirrus: np.ndarray,
    nodata20: np.ndarray,
) -> np.ndarray:
    """Scene classification at 20 m from the 10 m reflectance and atmosphere."""
    red20, nir20 = block_mean(red, 2), block_mean(nir, 2)
    ndvi20 = (nir20 - red20) / np.maximum(nir20 + red20, 1e-6)
    water = land.fixed_fraction * (land.fixed_kind == FIXED_WATER)
    scl = np.where(ndvi20 > 0.4, SCL_VEGETATION, SCL_NOT_VEGETATED).astype(np.uint8)
    scl[block_mean(water, 2) >= 0.5] = SCL_WATER
    scl[block_max((shade > 0) & (alpha == 0), 2)] = SCL_SHADOW
    scl[block_max(cirrus > 0, 2)] = SCL_CIRRUS
    cloudy = block_max(alpha, 2)
    scl[cloudy > 0] = SCL_CLOUD_MEDIUM
    scl[cloudy >= 0.7] = SCL_CLOUD_HIGH
    scl[nodata20] = SCL_NODATA
    return scl


def scl_properties(scl: np.ndarray) -> dict[str, float]:
    """``eo:cloud_cover`` and the ``s2:*_percentage`` properties of an SCL array.

    Class percentages are of the valid (non-zero) pixels, the nodata percentage of all.

    Args:
        scl: the scene classification.

    Returns:
        The properties, rounded to 6 decimals like Earth-Search's.

    """
    counts = np.bincount(scl.ravel(), minlength=12).astype(np.float64)
    valid = max(counts[1:].sum(), 1.0)
    props = {"eo:cloud_cover": round(100 * counts[list(SCL_CLOUDS)].sum() / valid, 6)}
    props["s2:degraded_msi_data_percentage"] = 0.0
    props["s2:nodata_pixel_percentage"] = round(100 * counts[0] / scl.size, 6)
    for key, value in _SCL_PERCENTAGES.items():
        props[key] = round(100 * counts[value] / valid, 6)
    return props


def _encode(
    value: np.ndarray, nodata: np.ndarray, dn_offset: int, scale: float = 1e-4
) -> np.ndarray:
    """Encode DN = value / scale + offset, at least 1 where valid, 0 where not."""
    dn = np.rint(value / scale) + dn_offset
    dn = np.clip(dn, 1, 65_535).astype(np.uint16)
    dn[nodata] = 0
    return dn


def render_scene(land: Landscape, spec: SceneSpec, rng: np.random.Generator) -> Scene:
    """Render one date of the landscape into the stored values of every asset.

    Args:
        land: the landscape.
        spec: the date's plan.
        rng: random generator for this date.

    Returns:
        The scene with its arrays, footprint and SCL-derived properties.

    """
    grid = land.grid
    n = grid.padded
    size = grid.size
    rows20, _ = grid.shape(20)
    # Sun at the tile's sensing time (the granule is sensed a few minutes after the start).
    lon, lat = grid.center_lonlat
    azimuth, elevation = sun_position(spec.datetime + timedelta(minutes=3), lon, lat)
    scene = Scene(spec=spec, sun_azimuth=azimuth, sun_elevation=elevation)

    ndvi = _target_ndvi(land, spec.doy, rng)
    bright = land.brightness * np.float32(rng.uniform(0.92, 1.08))  # soil moisture of the day
    bg, cn = land.background_kind, land.canopy_kind
    f = canopy_fraction(
        ndvi,
        bright * BACKGROUND[bg, RED],
        bright * BACKGROUND[bg, NIR],
        CANOPY[cn, RED],
        CANOPY[cn, NIR],
    )
    b = land.fixed_fraction
    # Illumination (slope, BRDF) varies a little per pixel but equally in every band.
    light = 1.0 + 0.015 * rng.standard_normal((n, n), dtype=np.float32)
    alpha, shade, cirrus = _clouds(rng, spec, n, azimuth, elevation)
    cloud_gain = alpha * (0.85 + 0.25 * alpha)

    nodata60 = _nodata_cells(spec, land)
    nodata20 = np.repeat(np.repeat(nodata60, 3, axis=0), 3, axis=1)
    nodata10 = np.repeat(np.repeat(nodata20, 2, axis=0), 2, axis=1)

    observed: dict[str, np.ndarray] = {}
    for k, band in enumerate(BANDS):
        surface = b * FIXED[land.fixed_kind, k] + (1 - b) * (
            (1 - f) * bright * BACKGROUND[bg, k] + f * CANOPY[cn, k]
        )
        value = surface * light * (1 - SHADOW_DARKENING[k] * shade) + CIRRUS[k] * cirrus
        value = (1 - alpha) * value + cloud_gain * CLOUD[k]
        value = np.maximum(value, 1e-4).astype(np.float32)
        if band in ("blue", "green", "red", "nir"):
            observed[band] = value
        res = RESOLUTION[band]
        if res == 10:
            stored = _encode(value[:size, :size], nodata10[:size, :size], spec.dn_offset)
        elif res == 20:
            stored = _encode(
                block_mean(value, 2)[:rows20, :rows20], nodata20[:rows20, :rows20], spec.dn_offset
            )
        else:
            stored = _encode(block_mean(value, 6), nodata60, spec.dn_offset)
        scene.arrays[band] = stored

    scl = _scl(land, observed["red"], observed["nir"], alpha, shade, cirrus, nodata20)
    scl = scl[:rows20, :rows20]
    scene.arrays["scl"] = scl
    scene.properties = scl_properties(scl)
    scene.footprint = _footprint(nodata60, land)

    # Aerosol optical thickness (scale 0.001) and water vapour (scale 0.001 cm) at 20 m.
    half = n // 2
    season = math.sin(math.pi * (spec.doy - 80) / 200)
    aot = 0.09 + 0.06 * season + 0.015 * smooth_noise(rng, (half, half), 60, octaves=2)
    wvp = 1.1 + 1.6 * season + 0.12 * smooth_noise(rng, (half, half), 80, octaves=2)
    for key, value in (("aot", aot), ("wvp", wvp)):
        scene.arrays[key] = _encode(value[:rows20, :rows20], nodata20[:rows20, :rows20], 0, 1e-3)

    # True colour: reflectance 0-0.3 stretched to 1-255, 0 is nodata.
    rgb = np.stack([observed[name][:size, :size] for name in ("red", "green", "blue")])
    tci = np.clip(np.rint(rgb * (255 / 0.3)), 1, 255).astype(np.uint8)
    tci[:, nodata10[:size, :size]] = 0
    scene.arrays["visual"] = tci
    return scene
