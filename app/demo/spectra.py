"""Surface reflectance from a target NDVI: a linear soil / vegetation mixing model.

A pixel is a fraction ``b`` of a fixed surface (water, roofs, asphalt) and ``1 - b`` of a
vegetated surface, itself a mix of a background (soil, litter) scaled by a brightness and
of green canopy. The canopy fraction is solved exactly from the target NDVI, so the NDVI
of the vegetated part equals the target whatever the soil brightness.
"""

import numpy as np

from app.sentinel2 import REFLECTANCE_BANDS

#: Reflective bands in the order of the tables below (Earth-Search asset keys).
BANDS: tuple[str, ...] = REFLECTANCE_BANDS
RED = BANDS.index("red")
NIR = BANDS.index("nir")

# Background spectra, by index: 0 ploughed loam, 1 forest litter.
BACKGROUND = np.array(
    [
        [0.075, 0.085, 0.115, 0.160, 0.180, 0.195, 0.205, 0.216, 0.222, 0.226, 0.310, 0.260],
        [0.040, 0.045, 0.065, 0.085, 0.110, 0.150, 0.170, 0.190, 0.200, 0.200, 0.220, 0.150],
    ],
    dtype=np.float32,
)
# Green canopy spectra, by index: 0 crops and grass, 1 forest.
CANOPY = np.array(
    [
        [0.025, 0.030, 0.080, 0.024, 0.110, 0.320, 0.420, 0.470, 0.480, 0.465, 0.230, 0.110],
        [0.020, 0.025, 0.055, 0.020, 0.080, 0.240, 0.310, 0.345, 0.355, 0.340, 0.160, 0.070],
    ],
    dtype=np.float32,
)
# Fixed surfaces, by index: 0 none, 1 river water, 2 roofs and concrete, 3 asphalt / gravel.
FIXED = np.array(
    [
        [0.0] * 12,
        [0.065, 0.060, 0.065, 0.040, 0.030, 0.018, 0.015, 0.012, 0.011, 0.008, 0.005, 0.003],
        [0.090, 0.100, 0.120, 0.170, 0.200, 0.220, 0.230, 0.240, 0.245, 0.240, 0.280, 0.240],
        [0.070, 0.080, 0.090, 0.100, 0.110, 0.120, 0.125, 0.130, 0.132, 0.130, 0.160, 0.150],
    ],
    dtype=np.float32,
)
FIXED_WATER = 1
FIXED_BUILT = 2
FIXED_ROAD = 3

# Clouds are bright and nearly white, a little darker in the SWIR (ice and water absorb).
CLOUD = np.array(
    [0.56, 0.54, 0.52, 0.51, 0.52, 0.52, 0.52, 0.52, 0.52, 0.44, 0.38, 0.26], dtype=np.float32
)
# Thin cirrus adds a flat veil over the visible and NIR, much less in the SWIR.
CIRRUS = np.array([1.1, 1.05, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 0.9, 0.6, 0.4], dtype=np.float32)
# Shadows keep the blue sky light and lose most of the direct sun.
SHADOW_DARKENING = np.array(
    [0.40, 0.42, 0.50, 0.55, 0.58, 0.60, 0.60, 0.60, 0.60, 0.60, 0.62, 0.62], dtype=np.float32
)


def canopy_fraction(
    ndvi: np.ndarray,
    background_red: np.ndarray,
    background_nir: np.ndarray,
    canopy_red: np.ndarray,
    canopy_nir: np.ndarray,
) -> np.ndarray:
    """Solve the canopy fraction whose soil / canopy mix has exactly the given NDVI.

    With ``red = (1-f) Rs + f Rv`` and ``nir = (1-f) Ns + f Nv``, NDVI is a ratio of two
    linear functions of ``f``, so ``f`` solves a linear equation. Targets outside the
    endmembers' own NDVI range are clipped to pure soil or pure canopy.

    Returns:
        f in [0, 1], float32.

    """
    a = background_nir - background_red
    b = (canopy_nir - canopy_red) - a
    c = background_nir + background_red
    d = (canopy_nir + canopy_red) - c
    f = (ndvi * c - a) / (b - ndvi * d)
    return np.clip(f, 0.0, 1.0).astype(np.float32)
