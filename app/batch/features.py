"""Input features: GeoPackage, GeoJSON or GeoParquet, from a path, a URL or uploaded bytes.

Whatever the source, the result is a ``FeatureTable``: an id per feature (the file's FID
when unique, else the row number), the optional ``identifier`` column, the geometries as
WKB in the file's own CRS (never reprojected here: the statistics engine reprojects onto
each scene's grid) and that CRS. A missing or empty geometry is kept (as ``None`` / an
empty WKB) so the job can report it for that feature instead of failing.

GeoPackage and GeoJSON are read with pyogrio (GDAL); GeoParquet with pyarrow (WKB
geometry column, CRS from the ``geo`` metadata, default OGC:CRS84).
"""

from __future__ import annotations

import io
import json
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pyogrio
import pyogrio.raw
from pyproj import CRS
from pyproj.exceptions import CRSError

from app.batch.storage import Storage
from app.errors import BadRequestError, TooLargeError

__all__ = ["FORMATS", "FeatureTable", "detect_format", "read_features"]

IDENTIFIER = "identifier"
DEFAULT_CRS = "EPSG:4326"

#: Format -> file extension used when an upload is kept.
FORMATS = {"gpkg": ".gpkg", "geojson": ".geojson", "parquet": ".parquet"}
_EXTENSIONS = {
    ".gpkg": "gpkg",
    ".geojson": "geojson",
    ".json": "geojson",
    ".parquet": "parquet",
    ".geoparquet": "parquet",
}


@dataclass
class FeatureTable:
    """The features of a job.

    Attributes:
        ids: Feature ids (int64, unique).
        identifiers: The ``identifier`` column as strings (``None`` where missing), or
            ``None`` when the file has no such column.
        wkb: Geometries as WKB (``None`` for a missing geometry), in ``crs``.
        crs: CRS of the geometries, as an ``EPSG:nnnn`` code when it has one, else WKT.

    """

    ids: np.ndarray
    identifiers: list[str | None] | None
    wkb: list[bytes | None]
    crs: str

    def __len__(self) -> int:
        return len(self.ids)

    def identifier(self, position: int) -> str | None:
        """The identifier of the feature at ``position``."""
        return None if self.identifiers is None else self.identifiers[position]


def detect_format(name: str | None, head: bytes = b"") -> str:
    """The format of a features file from its name, else from its first bytes.

    Raises:
        BadRequestError: Neither tells (not GeoPackage, GeoJSON or GeoParquet).

    """
    if name:
        suffix = Path(name.split("?", 1)[0]).suffix.lower()
        if suffix in _EXTENSIONS:
            return _EXTENSIONS[suffix]
    if head.startswith(b"SQLite format 3\x00"):
        return "gpkg"
    if head.startswith(b"PAR1"):
        return "parquet"
    if head.lstrip()[:1] == b"{":
        return "geojson"
    raise BadRequestError(
        "input.features: not a GeoPackage (.gpkg), GeoJSON (.geojson) or GeoParquet (.parquet)"
    )


def _crs_name(crs: Any) -> str:
    """A compact CRS name the engine's ``parse_crs`` reads back."""
    if crs is None or crs == "":
        return DEFAULT_CRS
    parsed = CRS.from_user_input(crs)
    authority = parsed.to_authority()
    if authority is not None:
        return f"{authority[0]}:{authority[1]}"
    return parsed.to_wkt()


def _ids(fids: Any, count: int) -> np.ndarray:
    """The file's FIDs when they are unique integers, else row numbers."""
    if fids is not None and len(fids) == count:
        try:
            ids = np.asarray(fids, dtype=np.int64)
        except (TypeError, ValueError):
            ids = None
        if ids is not None and len(np.unique(ids)) == count:
            return ids
    return np.arange(count, dtype=np.int64)


def _identifiers(values: Any) -> list[str | None]:
    return [None if v is None or (isinstance(v, float) and np.isnan(v)) else str(v) for v in values]


def _read_ogr(source: str | bytes, layer: str | None, max_features: int) -> FeatureTable:
    try:
        with warnings.catch_warnings():
            # GDAL warns that an uploaded GeoPackage (a /vsimem/ file) lacks ".gpkg".
            warnings.simplefilter("ignore", RuntimeWarning)
            info = pyogrio.read_info(source, layer=layer)
    except Exception as error:  # pyogrio raises DataSourceError, DataLayerError ...
        raise BadRequestError(f"input.features: cannot read ({error})") from None
    count = int(info.get("features") or 0)
    if count > max_features:
        raise TooLargeError(
            f"input.features: {count} features, over the limit batch_max_features={max_features}"
        )
    columns = [IDENTIFIER] if IDENTIFIER in list(info["fields"]) else []
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            meta, fids, geometries, values = pyogrio.raw.read(
                source, layer=layer, columns=columns, return_fids=True
            )
    except Exception as error:
        raise BadRequestError(f"input.features: cannot read ({error})") from None
    count = len(geometries)
    return FeatureTable(
        ids=_ids(fids, count),
        identifiers=_identifiers(values[0]) if columns else None,
        wkb=[None if g is None else bytes(g) for g in geometries],
        crs=_crs_name(meta.get("crs")),
    )


def _read_parquet(data: Any, max_features: int) -> FeatureTable:
    try:
        file = pq.ParquetFile(data)
    except (pa.ArrowException, OSError) as error:
        raise BadRequestError(f"input.features: not a GeoParquet file ({error})") from None
    if file.metadata.num_rows > max_features:
        raise TooLargeError(
            f"input.features: {file.metadata.num_rows} features, over the limit "
            f"batch_max_features={max_features}"
        )
    geo = json.loads((file.schema_arrow.metadata or {}).get(b"geo", b"{}") or b"{}")
    column = geo.get("primary_column", "geometry")
    column_meta = geo.get("columns", {}).get(column, {})
    if column_meta.get("encoding", "WKB").upper() != "WKB":
        raise BadRequestError(
            f"input.features: GeoParquet geometry encoding {column_meta['encoding']} is not "
            "supported; write WKB"
        )
    names = file.schema_arrow.names
    if column not in names:
        raise BadRequestError(f"input.features: no geometry column '{column}' in the Parquet file")
    wanted = [column] + ([IDENTIFIER] if IDENTIFIER in names else [])
    table = file.read(columns=wanted)
    crs = column_meta.get("crs", "OGC:CRS84")
    if isinstance(crs, dict):
        crs = json.dumps(crs)
    return FeatureTable(
        ids=np.arange(table.num_rows, dtype=np.int64),
        identifiers=_identifiers(table[IDENTIFIER].to_pylist()) if IDENTIFIER in wanted else None,
        wkb=[None if g is None else bytes(g) for g in table[column].to_pylist()],
        crs=_crs_name(crs) if crs is not None else "OGC:CRS84",
    )


def read_features(
    source: str | bytes,
    *,
    storage: Storage | None = None,
    layer: str | None = None,
    name: str | None = None,
    max_features: int = 1_000_000,
    max_bytes: int | None = None,
) -> FeatureTable:
    """Read a features file.

    Args:
        source: A checked local path or URL (``s3://``, ``http(s)://``), or the file's bytes.
        storage: The storage of a URL source (fsspec, with its options).
        layer: Layer of a multi-layer GeoPackage (default: the first).
        name: The file's name, to tell its format (default: the source's).
        max_features: Refuse files with more features (``TooLargeError``).
        max_bytes: Refuse remote files larger than this.

    Returns:
        The features.

    Raises:
        BadRequestError: Unreadable, of an unknown format, or without a usable CRS.
        TooLargeError: Over ``max_features`` or ``max_bytes``.

    """
    local = isinstance(source, str) and "://" not in source
    if isinstance(source, str) and not local:
        storage = storage or Storage.for_url(source)
        try:
            size = storage.fs.size(storage.path(source))
            if max_bytes is not None and size is not None and size > max_bytes:
                raise TooLargeError(
                    f"input.features: {size} bytes, over the limit batch_max_upload_mb"
                )
            data = storage.read(source)
        except FileNotFoundError:
            raise BadRequestError(f"input.features: '{source}' does not exist") from None
        except OSError as error:
            raise BadRequestError(f"input.features: cannot read '{source}' ({error})") from None
        name, source = name or source, data
    if local:
        if not Path(source).is_file():  # type: ignore[arg-type]
            raise BadRequestError(f"input.features: '{source}' does not exist")
        with open(source, "rb") as file:  # type: ignore[arg-type]
            head = file.read(16)
        kind = detect_format(name or str(source), head)
    else:
        kind = detect_format(name, bytes(source[:16]))  # type: ignore[index]
    try:
        if kind == "parquet":
            data = source if local else io.BytesIO(source)  # type: ignore[arg-type]
            return _read_parquet(data, max_features)
        return _read_ogr(source, layer, max_features)
    except (CRSError, ValueError) as error:  # an unknown CRS
        raise BadRequestError(f"input.features: {error}") from None
