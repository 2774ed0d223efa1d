"""The static landscape: land cover, field parcels and per-pixel surface parameters.

Everything here is on the 10 m working grid (the demo grid padded to whole 60 m pixels)
and does not change between dates; ``scene.py`` turns it into reflectance per date.
"""

import math
from dataclasses import dataclass

import numpy as np
import shapely
from rasterio.features import rasterize

from app.demo.fields import MAX_AREA_HA, MIN_AREA_HA, Field, layout_parcels, make_fields
from app.demo.grid import DemoGrid
from app.demo.noise import smooth_noise
from app.demo.spectra import FIXED_BUILT, FIXED_ROAD, FIXED_WATER

# Land cover classes of the working grid.
MARGIN = 0  # grass margins, hedges, meadows that are not parcels
FIELD = 1
FOREST = 2
VILLAGE = 3
WATER = 4
ROAD = 5


@dataclass
class Landscape:
    """Per-pixel surface description of the working grid (all arrays ``padded`` square).

    Attributes:
        grid: the demo grid.
        fields: the field parcels.
        cover: land cover class (``MARGIN`` ... ``ROAD``), uint8.
        field_index: index into ``fields``, -1 off parcels, int32.
        fixed_kind: fixed-surface spectrum index (``spectra.FIXED``), uint8.
        fixed_fraction: share of the pixel that is fixed surface, float32.
        background_kind: background spectrum index (``spectra.BACKGROUND``), uint8.
        canopy_kind: canopy spectrum index (``spectra.CANOPY``), uint8.
        brightness: background brightness factor, float32.
        texture: static NDVI texture (soil patches, crop density), float32.

    """

    grid: DemoGrid
    fields: list[Field]
    cover: np.ndarray
    field_index: np.ndarray
    fixed_kind: np.ndarray
    fixed_fraction: np.ndarray
    background_kind: np.ndarray
    canopy_kind: np.ndarray
    brightness: np.ndarray
    texture: np.ndarray


def _river(rng: np.random.Generator, x: np.ndarray, y: np.ndarray, side: float):
    """Distance (m) to a meandering west-east river in the south, like the Mura."""
    y0 = side * rng.uniform(0.76, 0.84)
    amp = min(300.0, 0.06 * side)
    k1, k2 = 2 * math.pi / rng.uniform(2500, 5000), 2 * math.pi / rng.uniform(800, 1500)
    p1, p2 = rng.uniform(0, 2 * math.pi, 2)
    yc = y0 + amp * np.sin(k1 * x + p1) + 0.35 * amp * np.sin(k2 * x + p2)
    slope = amp * k1 * np.cos(k1 * x + p1) + 0.35 * amp * k2 * np.cos(k2 * x + p2)
    return np.abs(y - yc) / np.sqrt(1 + slope**2), y0


def build_landscape(grid: DemoGrid, rng: np.random.Generator) -> Landscape:
    """Build the landscape: river with riparian forest, a village, woods, tracks, parcels.

    Args:
        grid: the demo grid.
        rng: random generator (consumed deterministically).

    Returns:
        The landscape on the padded 10 m working grid.

    """
    n = grid.padded
    side = n * 10.0
    x = ((np.arange(n, dtype=np.float32) + 0.5) * 10.0)[None, :]
    y = ((np.arange(n, dtype=np.float32) + 0.5) * 10.0)[:, None]
    # Features keep their real size in metres but shrink a little on tiny demos.
    shrink = float(np.clip(side / 6000.0, 0.35, 1.0))

    cover = np.full((n, n), MARGIN, dtype=np.uint8)
    fixed_kind = np.zeros((n, n), dtype=np.uint8)
    fixed_fraction = np.zeros((n, n), dtype=np.float32)

    # River, 50 m wide, in a band of floodplain forest of varying width.
    river_dist, river_y = _river(rng, x, y, side)
    riparian = 25.0 + (40.0 + 130.0 * (0.5 + 0.5 * np.tanh(smooth_noise(rng, (n, n), 40)))) * shrink
    cover[river_dist < riparian] = FOREST
    water = river_dist < 25.0
    cover[water] = WATER
    fixed_kind[water] = FIXED_WATER
    fixed_fraction[water] = 1.0

    # Woods: the highest 10 % of a smooth field, away from the river's forest.
    woods = smooth_noise(rng, (n, n), max(20.0, 80.0 * shrink))
    cover[(woods > np.quantile(woods, 0.9)) & (cover == MARGIN)] = FOREST

    # A village north of the river, with an irregular edge.
    radius = float(np.clip(0.1 * side, 150.0, 600.0))
    vx = side * rng.uniform(0.35, 0.65)
    vy = min(side * rng.uniform(0.25, 0.45), river_y - 2 * radius)
    edge = 0.25 * smooth_noise(rng, (n, n), 15)
    village = np.hypot(x - vx, y - vy) / radius + edge < 1.0
    village &= cover != WATER
    cover[village] = VILLAGE
    fixed_kind[village] = FIXED_BUILT
    built = 0.55 + 0.18 * smooth_noise(rng, (n, n), 3, octaves=2)
    fixed_fraction[village] = np.clip(built[village], 0.15, 0.9)

    # The main road crosses the village; a bridge over the river is not needed.
    heading = rng.uniform(0, math.pi)
    road = np.abs((x - vx) * math.sin(heading) - (y - vy) * math.cos(heading)) < 6.0
    road &= cover != WATER
    cover[road] = ROAD
    fixed_kind[road] = FIXED_ROAD
    fixed_fraction[road] = 0.75

    # Parcels: keep candidates entirely inside the demo extent and on open farmland.
    layout = layout_parcels(rng, grid)
    minx, miny, maxx, maxy = grid.extent
    inside = shapely.box(minx + 10, miny + 10, maxx - 10, maxy - 10)
    candidates = [p for p in layout.candidates if inside.contains(p)]
    ids = rasterize(
        ((p, i + 1) for i, p in enumerate(candidates)),
        out_shape=(n, n),
        transform=grid.transform(10),
        fill=0,
        dtype="int32",
    )
    if not candidates:
        ids[:] = 0
    total = np.bincount(ids.ravel(), minlength=len(candidates) + 1)
    blocked = np.bincount(ids[cover != MARGIN], minlength=len(candidates) + 1)
    kept = [
        i
        for i, p in enumerate(candidates)
        if blocked[i + 1] == 0
        and total[i + 1] >= 40
        and MIN_AREA_HA <= p.area / 10_000 <= MAX_AREA_HA
    ]
    fields, order = make_fields(rng, [candidates[i] for i in kept])
    lut = np.full(len(candidates) + 1, -1, dtype=np.int32)
    for k, j in enumerate(order):
        lut[kept[j] + 1] = k
    field_index = lut[ids]
    cover[field_index >= 0] = FIELD

    # Farm tracks along the block edges: gravel with grassy verges.
    tracks = (layout.track_distance(x, y) < 5.0) & (cover == MARGIN)
    cover[tracks] = ROAD
    fixed_kind[tracks] = FIXED_ROAD
    fixed_fraction[tracks] = 0.45

    brightness = (1.0 + 0.05 * smooth_noise(rng, (n, n), 8, octaves=2)).astype(np.float32)
    soil = np.array([f.soil for f in fields] + [1.0], dtype=np.float32)
    brightness = np.where(field_index >= 0, soil[field_index], brightness).astype(np.float32)

    texture = 0.02 * smooth_noise(rng, (n, n), 5, octaves=2)
    # Margins, gardens and woods are patchier than a sown field.
    texture[cover != FIELD] *= 2.5

    forest = cover == FOREST
    return Landscape(
        grid=grid,
        fields=fields,
        cover=cover,
        field_index=field_index,
        fixed_kind=fixed_kind,
        fixed_fraction=fixed_fraction,
        background_kind=forest.astype(np.uint8),
        canopy_kind=forest.astype(np.uint8),
        brightness=brightness,
        texture=texture.astype(np.float32),
    )
