"""Field parcels: a rotated grid of farm blocks cut into strips, and their vector files.

Blocks are bounded by farm tracks; each block is cut into long strips (the Prekmurje
pattern) separated by narrow hedges / paths, and over-large strips are cut across. Every
strip is then shrunk by a few random metres per corner, so parcels are slightly irregular
quadrilaterals that never touch.
"""

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyogrio.raw
import shapely
from pyproj import CRS, Transformer
from shapely.geometry import Polygon, mapping
from shapely.geometry.polygon import orient

from app.demo.grid import EPSG, DemoGrid
from app.demo.phenology import CROP_SHARES

MIN_AREA_HA = 0.5
MAX_AREA_HA = 10.0
_TRACK_HALF_WIDTH = 6.0  # metres from a track's axis to the nearest field edge


@dataclass(frozen=True)
class Field:
    """One field parcel and the parameters its NDVI is generated from.

    Attributes:
        identifier: ``field-0001`` style id, numbered north to south, west to east.
        crop: crop type (a key of ``CROP_SHARES``).
        polygon: the parcel in EPSG:32633.
        phenology_shift: days this field runs behind (positive) its crop's curve.
        vigour: how strongly it greens up relative to its crop's curve.
        soil: brightness of its bare soil (NDVI does not depend on it).

    """

    identifier: str
    crop: str
    polygon: Polygon
    phenology_shift: float
    vigour: float
    soil: float

    @property
    def area_ha(self) -> float:
        """Area in hectares (the UTM zone's scale error is below 0.1 % here)."""
        return self.polygon.area / 10_000

    def properties(self) -> dict[str, str | float]:
        """Return the attributes written to the vector files."""
        return {
            "identifier": self.identifier,
            "crop": self.crop,
            "area_ha": round(self.area_ha, 4),
            "phenology_shift": self.phenology_shift,
            "vigour": self.vigour,
        }


@dataclass(frozen=True)
class ParcelLayout:
    """The farm grid: its rotation, track positions and candidate parcels.

    Coordinates ``(u, v)`` are metres in the grid's rotated frame, centred on the working
    grid; ``x`` runs east and ``y`` south from the working grid's upper-left corner.
    """

    center: float
    angle: float
    u_tracks: np.ndarray
    v_tracks: np.ndarray
    candidates: list[Polygon]

    def to_uv(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Working-grid metres to the rotated frame."""
        c, s = math.cos(self.angle), math.sin(self.angle)
        dx, dy = x - self.center, y - self.center
        return dx * c + dy * s, -dx * s + dy * c

    def track_distance(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Distance in metres from each point to the nearest farm track."""
        u, v = self.to_uv(x, y)
        return np.minimum(_nearest(u, self.u_tracks), _nearest(v, self.v_tracks))


def _nearest(values: np.ndarray, sorted_positions: np.ndarray) -> np.ndarray:
    i = np.clip(np.searchsorted(sorted_positions, values), 1, len(sorted_positions) - 1)
    return np.minimum(
        np.abs(values - sorted_positions[i - 1]), np.abs(sorted_positions[i] - values)
    )


def _positions(rng: np.random.Generator, start: float, stop: float, lo: float, hi: float):
    out = [start]
    while out[-1] < stop:
        out.append(out[-1] + rng.uniform(lo, hi))
    return np.array(out)


def _cut(rng: np.random.Generator, lo: float, hi: float, width: tuple[float, float], gap: float):
    """Cut [lo, hi] into pieces of random width separated by ``gap``; the last takes the rest."""
    pieces = []
    start = lo
    while hi - start >= width[0]:
        end = start + rng.uniform(*width)
        if hi - end < width[0] + gap:
            end = hi
        pieces.append((start, min(end, hi)))
        start = end + gap
    return pieces


def layout_parcels(rng: np.random.Generator, grid: DemoGrid) -> ParcelLayout:
    """Lay the farm grid over the working grid and cut candidate parcels.

    Args:
        rng: random generator.
        grid: the demo grid (parcels are in its EPSG:32633 coordinates).

    Returns:
        The layout; candidates still overlap forest, village and river.

    """
    side = grid.padded * 10.0
    center = side / 2
    angle = rng.uniform(-0.2, 0.2)
    reach = side * 0.75
    # Smaller blocks on tiny demos, so that they still hold a few dozen parcels.
    scale = float(np.clip(side / 4000.0, 0.5, 1.0))
    u_tracks = _positions(rng, -reach, reach, 400.0 * scale, 800.0 * scale)
    v_tracks = _positions(rng, -reach, reach, 350.0 * scale, 700.0 * scale)
    layout = ParcelLayout(center, angle, u_tracks, v_tracks, [])

    c, s = math.cos(angle), math.sin(angle)
    quads: list[np.ndarray] = []
    inset = _TRACK_HALF_WIDTH
    for u0, u1 in zip(u_tracks[:-1], u_tracks[1:], strict=True):
        for v0, v1 in zip(v_tracks[:-1], v_tracks[1:], strict=True):
            across_u = rng.random() < 0.5
            block = ((u0 + inset, u1 - inset), (v0 + inset, v1 - inset))
            cut_axis, long_axis = (0, 1) if across_u else (1, 0)
            for a0, a1 in _cut(rng, *block[cut_axis], (60.0, 250.0), rng.uniform(4.0, 8.0)):
                l0, l1 = block[long_axis]
                area_ha = (a1 - a0) * (l1 - l0) / 10_000
                # Some strips are split across among heirs or tenants; none beyond 10 ha.
                split = min(int(rng.choice([1, 1, 1, 1, 2, 3])), int(area_ha / 0.7))
                parts = max(1, split, math.ceil(area_ha / (MAX_AREA_HA * 0.9)))
                step = (l1 - l0) / parts
                for k in range(parts):
                    b0, b1 = l0 + k * step, l0 + (k + 1) * step - (5.0 if k < parts - 1 else 0)
                    rect = [(a0, b0), (a1, b0), (a1, b1), (a0, b1)]
                    if not across_u:
                        rect = [(b, a) for a, b in rect]
                    quads.append(np.array(rect))
    if not quads:
        return layout
    corners = np.stack(quads)  # (n, 4, 2) in (u, v)
    # Pull each corner inward by up to 4 m on both axes: irregular, never overlapping.
    inward = np.sign(corners.mean(axis=1, keepdims=True) - corners)
    corners = corners + inward * rng.uniform(0.0, 4.0, corners.shape)
    u, v = corners[..., 0], corners[..., 1]
    x = center + u * c - v * s
    y = center + u * s + v * c
    easting = grid.left + x
    northing = grid.top - y
    rings = np.stack([easting, northing], axis=-1)
    layout.candidates.extend(shapely.polygons(rings).tolist())
    return layout


def make_fields(
    rng: np.random.Generator, polygons: list[Polygon], shares: dict[str, float] = CROP_SHARES
) -> tuple[list[Field], list[int]]:
    """Name the kept parcels north to south, west to east, and give each a crop.

    Args:
        rng: random generator.
        polygons: the kept parcels in EPSG:32633.
        shares: crop shares to draw from.

    Returns:
        The fields in identifier order, and for each the index of its polygon in
        ``polygons``.

    """
    centroids = [p.centroid for p in polygons]
    # Rows of ~300 m so that numbering reads like a map.
    order = sorted(
        range(len(polygons)),
        key=lambda i: (-math.floor(centroids[i].y / 300.0), centroids[i].x),
    )
    crops = list(shares)
    p = np.array(list(shares.values()))
    fields = []
    for n, i in enumerate(order, start=1):
        fields.append(
            Field(
                identifier=f"field-{n:04d}",
                crop=str(crops[rng.choice(len(crops), p=p / p.sum())]),
                polygon=polygons[i],
                # Rounded: the files carry exactly the values the rasters are made from.
                phenology_shift=round(float(rng.uniform(-6.0, 6.0)), 2),
                vigour=round(float(rng.uniform(0.92, 1.05)), 3),
                soil=round(float(rng.uniform(0.85, 1.15)), 3),
            )
        )
    return fields, order


def write_fields(fields: list[Field], folder: Path) -> None:
    """Write ``fields.geojson`` (EPSG:4326) and ``fields.gpkg`` (EPSG:32633, layer ``fields``).

    Args:
        fields: the field parcels.
        folder: the demo catalog folder.

    """
    to_lonlat = Transformer.from_crs(f"EPSG:{EPSG}", "EPSG:4326", always_xy=True)
    features = []
    for f in fields:
        ring = np.asarray(orient(f.polygon, sign=1.0).exterior.coords)
        lon, lat = to_lonlat.transform(ring[:, 0], ring[:, 1])
        coords = [[round(float(a), 7), round(float(b), 7)] for a, b in zip(lon, lat, strict=True)]
        geometry = mapping(Polygon(coords))
        features.append({"type": "Feature", "properties": f.properties(), "geometry": geometry})
    collection = {"type": "FeatureCollection", "name": "fields", "features": features}
    (folder / "fields.geojson").write_text(json.dumps(collection, separators=(",", ":")))

    gpkg = folder / "fields.gpkg"
    gpkg.unlink(missing_ok=True)
    names = ["identifier", "crop", "area_ha", "phenology_shift", "vigour"]
    columns = [
        np.array([f.properties()[name] for f in fields], dtype=object if i < 2 else np.float64)
        for i, name in enumerate(names)
    ]
    pyogrio.raw.write(
        str(gpkg),
        geometry=shapely.to_wkb([orient(f.polygon, sign=1.0) for f in fields]),
        field_data=columns,
        fields=names,
        layer="fields",
        driver="GPKG",
        geometry_type="Polygon",
        crs=CRS.from_epsg(EPSG).to_wkt(),
    )
