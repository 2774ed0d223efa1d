"""Work units: the job's features, validated, grouped in chunks of spatially close ones.

The chunks are the statistics engine's own (``app.stats.chunking.spatial_chunks``): features
binned into cells of a few kilometres by their centroid in lon/lat, cells taken row by row
and each cut in Z-order (a space-filling curve) into pieces of at most the unit size. A
unit then is one chunk of the engine's many-geometry call, so each COG window is read once
per unit and neighbouring units follow each other. The ordered features are staged as a
GeoParquet file with one row group per unit: a Dask worker reads exactly its unit's rows,
wherever the file is (local or ``s3://``).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import shapely
from pyproj import CRS

from app.batch.features import FeatureTable
from app.batch.storage import Storage
from app.crs_input import EPSG_4326
from app.errors import BadRequestError
from app.stats.chunking import spatial_chunks
from app.stats.geometry import non_finite, polygonal, reproject

__all__ = [
    "UnitFeatures",
    "UnitPlan",
    "plan_units",
    "read_unit",
    "stage_features",
    "validate_geometry",
]


def validate_geometry(
    wkb: bytes | None, feature_id: int, max_vertices: int | None, crs: str | None = None
) -> shapely.Geometry | BadRequestError:
    """A feature's geometry (in ``crs``) as the statistics engine takes it, or why not."""
    name = f"feature {feature_id}"
    if wkb is None:
        return BadRequestError(f"{name}: no geometry")
    try:
        geometry = shapely.from_wkb(wkb)
    except shapely.errors.GEOSException as error:
        return BadRequestError(f"{name}: invalid geometry ({error})")
    if geometry is None or geometry.is_empty:
        return BadRequestError(f"{name}: the geometry is empty")
    try:
        return polygonal(geometry, name, max_vertices, crs)
    except BadRequestError as error:
        return error


@dataclass
class UnitPlan:
    """How a job's features are cut into units.

    Attributes:
        order: Positions in the ``FeatureTable``, in processing order.
        starts: Start of each unit in ``order`` (plus the end, ``len(order)``).
        invalid: Position -> why the feature cannot be processed.
        bbox: Extent of the valid features in EPSG:4326, or None when none is valid.

    """

    order: np.ndarray
    starts: list[int]
    invalid: dict[int, str]
    bbox: tuple[float, float, float, float] | None

    @property
    def count(self) -> int:
        """The number of units."""
        return len(self.starts) - 1

    def sizes(self) -> list[int]:
        """Features per unit."""
        return [b - a for a, b in zip(self.starts[:-1], self.starts[1:], strict=True)]

    @property
    def unit_size(self) -> int:
        """The largest unit."""
        return max(self.sizes(), default=0)


def plan_units(
    features: FeatureTable, max_unit: int, min_units: int, max_vertices: int | None
) -> UnitPlan:
    """Validate the features and cut them into units of spatially close ones.

    Args:
        features: The job's features.
        max_unit: Most features in a unit.
        min_units: Fewest units a job with enough features gets (parallelism).
        max_vertices: The engine's vertex limit per geometry.

    Returns:
        The plan: valid features chunk by chunk, then the invalid ones.

    """
    invalid: dict[int, str] = {}
    valid: list[int] = []
    geometries: list[shapely.Geometry] = []
    for position, wkb in enumerate(features.wkb):
        checked = validate_geometry(wkb, int(features.ids[position]), max_vertices, features.crs)
        if isinstance(checked, BadRequestError):
            invalid[position] = checked.message
        else:
            valid.append(position)
            geometries.append(checked)
    lonlat = np.array(reproject(geometries, features.crs, EPSG_4326), dtype=object)
    outside = non_finite(lonlat)
    for position in np.asarray(valid, dtype=np.int64)[outside].tolist():
        invalid[position] = (
            f"feature {int(features.ids[position])}: the geometry reaches outside the area "
            f"{features.crs} covers (its coordinates have no longitude and latitude)"
        )
    valid = [p for p, bad in zip(valid, outside, strict=True) if not bad]
    lonlat = lonlat[~outside]
    size = max(1, min(max_unit, math.ceil(len(valid) / max(min_units, 1)) or max_unit))
    units: list[np.ndarray] = []
    bbox = None
    if valid:
        # Centroids in lon/lat, as the engine computes them: a unit is one engine chunk.
        centres = shapely.get_coordinates(shapely.centroid(lonlat))
        positions = np.array(valid, dtype=np.int64)
        units = [positions[chunk] for chunk in spatial_chunks(centres, size)]
        bbox = tuple(float(v) for v in shapely.total_bounds(lonlat))
    rejected = np.array(sorted(invalid), dtype=np.int64)
    units += [rejected[i : i + size] for i in range(0, len(rejected), size)]
    order = np.concatenate(units) if units else np.zeros(0, dtype=np.int64)
    starts = [0, *np.cumsum([len(unit) for unit in units]).tolist()]
    return UnitPlan(order=order, starts=starts, invalid=invalid, bbox=bbox)  # type: ignore[arg-type]


def _geo_metadata(crs: str) -> bytes:
    parsed = CRS.from_user_input(crs)
    geo = {
        "version": "1.0.0",
        "primary_column": "geometry",
        "columns": {
            "geometry": {"encoding": "WKB", "geometry_types": [], "crs": parsed.to_json_dict()}
        },
    }
    return json.dumps(geo).encode()


SCHEMA = pa.schema([("id", pa.int64()), ("identifier", pa.string()), ("geometry", pa.binary())])


def stage_features(storage: Storage, url: str, features: FeatureTable, plan: UnitPlan) -> None:
    """Write the job's features in unit order as GeoParquet, one row group per unit."""
    schema = SCHEMA.with_metadata(
        {b"geo": _geo_metadata(features.crs), b"terratiler:crs": features.crs.encode()}
    )
    with storage.open_atomic(url) as file, pq.ParquetWriter(file, schema) as writer:
        for a, b in zip(plan.starts[:-1], plan.starts[1:], strict=True):
            positions = plan.order[a:b]
            table = pa.table(
                {
                    "id": pa.array(features.ids[positions], pa.int64()),
                    "identifier": pa.array(
                        [features.identifier(int(p)) for p in positions], pa.string()
                    ),
                    "geometry": pa.array([features.wkb[int(p)] for p in positions], pa.binary()),
                },
                schema=schema,
            )
            writer.write_table(table, row_group_size=max(len(table), 1))


@dataclass
class UnitFeatures:
    """The features of one unit, as a worker reads them."""

    ids: list[int]
    identifiers: list[str | None]
    wkb: list[bytes | None]
    crs: str


def read_unit(storage: Storage, url: str, unit: int) -> UnitFeatures:
    """Read one unit's features from the staged file."""
    with storage.open(url) as file:
        parquet = pq.ParquetFile(file)
        crs = (parquet.schema_arrow.metadata or {}).get(b"terratiler:crs", EPSG_4326.encode())
        table = parquet.read_row_group(unit)
    return UnitFeatures(
        ids=[int(v) for v in table["id"].to_pylist()],
        identifiers=table["identifier"].to_pylist(),
        wkb=table["geometry"].to_pylist(),
        crs=crs.decode(),
    )
