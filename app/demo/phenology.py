"""NDVI over the year for the demo's crops and land covers.

Crops follow a double-logistic curve (green-up, senescence / harvest); grassland is
mown three times a year, each cut dropping NDVI sharply before it grows back. A field's
own curve is its crop's curve shifted by a few days and scaled by its vigour; both are
attributes of the field parcels, so tests can recompute the NDVI the rasters carry.
"""

from datetime import date, datetime

import numpy as np

#: Crops and their share of the field parcels (Prekmurje: maize first, then wheat).
CROP_SHARES: dict[str, float] = {
    "maize": 0.32,
    "winter_wheat": 0.24,
    "soybean": 0.14,
    "sunflower": 0.12,
    "grassland": 0.18,
}
CROPS: tuple[str, ...] = tuple(CROP_SHARES)

# (base, peak, start of season, green-up width, end of season, senescence width): days.
_DOUBLE_LOGISTIC: dict[str, tuple[float, float, float, float, float, float]] = {
    # Sown in autumn: already green in April, peaks in May, ripens in June, harvested July.
    "winter_wheat": (0.21, 0.85, 88.0, 9.0, 178.0, 6.0),
    # Sown late April, emerges mid-May, closes its canopy in July, dries in September.
    "maize": (0.21, 0.86, 165.0, 8.0, 252.0, 8.0),
    "sunflower": (0.21, 0.82, 150.0, 8.0, 212.0, 6.0),
    "soybean": (0.21, 0.86, 172.0, 7.0, 250.0, 6.0),
    # Field margins, hedges, gardens: green all season, a little drier in high summer.
    "margin": (0.40, 0.74, 100.0, 10.0, 320.0, 15.0),
    # Mixed deciduous forest: leaves out in late April.
    "forest": (0.48, 0.85, 115.0, 6.0, 295.0, 8.0),
}
_MOWING_DAYS = (140.0, 188.0, 238.0)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def day_of_year(when: date | datetime | float | int) -> float:
    """Return a date's day of the year (1 = January 1st); numbers pass through."""
    if isinstance(when, date | datetime):
        return float(when.timetuple().tm_yday)
    return float(when)


def crop_ndvi(
    crop: str,
    doy: float | np.ndarray,
    shift: float = 0.0,
    vigour: float = 1.0,
) -> float | np.ndarray:
    """Return the NDVI a crop or land cover shows on a day of the year.

    Args:
        crop: one of ``CROPS``, or ``"margin"`` / ``"forest"`` for the background.
        doy: day(s) of the year.
        shift: days the field runs late (positive) or early (negative).
        vigour: scales the rise of NDVI above the bare-soil base.

    Returns:
        NDVI, a float for a scalar ``doy``, an array otherwise.

    """
    t = np.asarray(doy, dtype=np.float64) - shift
    if crop == "grassland":
        base, ndvi = 0.30, 0.40 + 0.38 * _sigmoid((t - 95.0) / 10.0)
        for mow in _MOWING_DAYS:
            # A cut removes most of the leaves at once; regrowth takes a few weeks.
            after = np.clip(t - mow, 0.0, None)
            ndvi = ndvi - np.where(t >= mow, 0.36 * np.exp(-after / 13.0), 0.0)
    elif crop in _DOUBLE_LOGISTIC:
        base, peak, sos, k1, eos, k2 = _DOUBLE_LOGISTIC[crop]
        ndvi = base + (peak - base) * (_sigmoid((t - sos) / k1) - _sigmoid((t - eos) / k2))
        if crop == "winter_wheat":
            # Weeds and volunteer cereals green the stubble again in late summer.
            ndvi = ndvi + 0.10 * _sigmoid((t - 240.0) / 10.0)
    else:
        raise ValueError(f"unknown crop {crop!r}; expected one of {CROPS}")
    ndvi = base + (ndvi - base) * vigour
    return float(ndvi) if np.ndim(ndvi) == 0 else ndvi


def field_ndvi(properties: dict, when: date | datetime | float | int) -> float:
    """Return the NDVI a demo field parcel is generated with on a date.

    Args:
        properties: the field's attributes as written to ``fields.geojson``
            (``crop``, ``phenology_shift``, ``vigour``).
        when: a date, datetime or day of the year.

    Returns:
        The field's mean NDVI before pixel noise, clouds and quantisation.

    """
    return float(
        crop_ndvi(
            properties["crop"],
            day_of_year(when),
            shift=float(properties.get("phenology_shift", 0.0)),
            vigour=float(properties.get("vigour", 1.0)),
        )
    )
