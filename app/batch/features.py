"""Input features: GeoPackage, GeoJSON or GeoParquet, from a path, a URL or uploaded bytes.

Whatever the source, the result is a ``FeatureTable``: an id per feature (Sentinel Hub's
``id``: the GeoPackage FID, the GeoJSON Feature ``id`` or else its ``id`` property, the
GeoParquet integer ``id`` column; when these are not unique integers, the row number), the optional ``identifier`` column, the geometries as
WKB in the file's own CRS (never reprojected here: the statistics engine reprojects onto
each scene's grid) and that CRS. A missing or empty geometry is kept (as ``None`` / an
empty WKB) so the job can report it for that feature instead of failing.

None of them is read through GDAL: GDAL guesses a driver from the content and follows
what a file names (an OGR VRT over ``CSV:/etc/passwd``, ``/vsicurl/`` URLs, SQL functions
opening datasets), which made an uploaded "GeoJSON" a way to read the server's files and
fetch internal URLs. GeoJSON is parsed with ``json`` + shapely, GeoPackage with Python's
``sqlite3`` (``app.batch.gpkg``), GeoParquet with pyarrow (WKB geometry column, CRS from
the ``geo`` metadata, default OGC:CRS84). CRS texts are codes, WKT or PROJJSON without
grid or init files. An ``http(s)`` source is fetched once, without following redirects.
"""

from __future__ import annotations

import io
import json
import re
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import shapely
import shapely.geometry
from pyproj import CRS
from pyproj.exceptions import CRSError

from app.batch.gpkg import read_gpkg
from app.batch.storage import Storage
from app.crs_input import AUTHORITY_CODE, EPSG_4326, FILE_REFERENCES, WKT
from app.errors import BadRequestError, TooLargeError, UpstreamError, UpstreamTimeoutError

__all__ = ["FORMATS", "FeatureTable", "detect_format", "read_features"]

IDENTIFIER = "identifier"
DEFAULT_CRS = EPSG_4326

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
        columns: Other columns asked for (``read_features(columns=...)``) that the file
            has: name -> one value per feature (``None`` where missing).

    """

    ids: np.ndarray
    identifiers: list[str | None] | None
    wkb: list[bytes | None]
    crs: str
    columns: dict[str, list[Any]] = field(default_factory=dict)

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


# CRS text from a file may be AUTHORITY:CODE, WKT or PROJJSON, without what makes PROJ open
# files: grid names (+nadgrids, +geoidgrids, PARAMETERFILE) and +init files.


def _crs_name(crs: Any) -> str:
    """A compact CRS name the engine's ``parse_crs`` reads back.

    Raises:
        BadRequestError: Not an AUTHORITY:CODE, WKT or PROJJSON, or naming files.

    """
    if crs is None or crs == "":
        return DEFAULT_CRS
    text = json.dumps(crs) if isinstance(crs, dict) else crs
    if (
        not isinstance(text, str)
        or FILE_REFERENCES.search(text)
        or not (isinstance(crs, dict) or AUTHORITY_CODE.match(text) or WKT.match(text))
    ):
        raise BadRequestError(
            "input.features: the CRS must be an AUTHORITY:CODE, WKT or PROJJSON "
            "(without grid or init files)"
        )
    try:
        parsed = CRS.from_user_input(text)
    except CRSError:
        raise BadRequestError("input.features: the file's CRS is not one PROJ knows") from None
    authority = parsed.to_authority()
    if authority is not None:
        return f"{authority[0]}:{authority[1]}"
    return parsed.to_wkt()


def _ids(fids: Any, count: int) -> np.ndarray:
    """The file's FIDs when they are unique integers, else row numbers."""
    if fids is not None and len(fids) == count:
        try:
            ids = np.asarray(fids, dtype=np.int64)
        except (TypeError, ValueError, OverflowError):  # OverflowError: over int64
            ids = None
        if ids is not None and len(np.unique(ids)) == count:
            return ids
    return np.arange(count, dtype=np.int64)


def _integers(values: list[Any] | None) -> bool:
    return values is not None and all(
        isinstance(v, int) and not isinstance(v, bool) for v in values
    )


def _identifiers(values: Any) -> list[str | None]:
    return [None if v is None or (isinstance(v, float) and np.isnan(v)) else str(v) for v in values]


def _read_geojson(data: bytes, max_features: int, columns: Sequence[str] = ()) -> FeatureTable:
    """GeoJSON, parsed with ``json`` and shapely.

    GDAL never sees it, so nothing it names (a ``crs`` link, a ``$ref``, an OGR VRT or a
    connection string posing as GeoJSON) is followed.
    """
    try:
        document = json.loads(data)
    except (ValueError, RecursionError):
        # The decoder's message is only a position: no content of the file is echoed.
        raise BadRequestError("input.features: not GeoJSON (not valid JSON)") from None
    kind = document.get("type") if isinstance(document, dict) else None
    if kind == "FeatureCollection":
        features = document.get("features")
    elif kind == "Feature":
        features = [document]
    else:
        raise BadRequestError("input.features: not GeoJSON (not a FeatureCollection or Feature)")
    if not isinstance(features, list) or not all(isinstance(f, dict) for f in features):
        raise BadRequestError("input.features: GeoJSON 'features' must be a list of Features")
    if len(features) > max_features:
        raise TooLargeError(
            f"input.features: {len(features)} features, over the limit "
            f"batch_max_features={max_features}"
        )
    crs = _geojson_crs(document.get("crs"))
    properties = [
        f.get("properties") if isinstance(f.get("properties"), dict) else {} for f in features
    ]
    has_identifier = any(IDENTIFIER in p for p in properties)
    fids: list[Any] | None = [f.get("id") for f in features]
    if not _integers(fids):
        # GDAL's rule (integer ids for all, else row numbers), then an "id" property.
        fids = [p.get("id") for p in properties]
        fids = fids if _integers(fids) else None
    return FeatureTable(
        ids=_ids(fids, len(features)),
        identifiers=_identifiers(_scalar(p.get(IDENTIFIER)) for p in properties)
        if has_identifier
        else None,
        wkb=[_geojson_wkb(f.get("geometry")) for f in features],
        crs=crs,
        columns={
            name: [_scalar(p.get(name)) for p in properties]
            for name in dict.fromkeys(columns)
            if any(name in p for p in properties)
        },
    )


def _scalar(value: Any) -> Any:
    return json.dumps(value) if isinstance(value, (dict, list)) else value


def _geojson_wkb(geometry: Any) -> bytes | None:
    """A GeoJSON geometry as WKB; None (reported as a missing geometry) when it is not one."""
    if not isinstance(geometry, dict):
        return None
    try:
        return shapely.to_wkb(shapely.geometry.shape(geometry))
    except Exception:  # any malformed member: shapely raises many kinds  # noqa: BLE001
        return None


# Names a GeoJSON "crs" member may carry (the 2008 spec's named CRS): EPSG codes and CRS84.
_EPSG_NAME = re.compile(r"^(?:urn:ogc:def:crs:EPSG:[\d.]*:|EPSG:{1,2})(\d{1,6})$", re.IGNORECASE)
_CRS84_NAME = re.compile(r"^(?:urn:ogc:def:crs:OGC:(?:1\.3)?:CRS84|OGC:CRS84)$", re.IGNORECASE)


def _geojson_crs(member: Any) -> str:
    """The CRS of a GeoJSON document: RFC 7946 (none: WGS84) or a 2008 named EPSG CRS."""
    if member is None:
        return DEFAULT_CRS
    if not isinstance(member, dict) or member.get("type") != "name":
        # "link" CRSs are references to other documents: never followed.
        raise BadRequestError(
            "input.features: a GeoJSON 'crs' must be of type 'name' with an EPSG code "
            "(linked CRSs are not followed); or leave it out for WGS84"
        )
    name = (
        (member.get("properties") or {}).get("name")
        if isinstance(member.get("properties"), dict)
        else None
    )
    if isinstance(name, str) and _CRS84_NAME.match(name.strip()):
        return DEFAULT_CRS
    match = _EPSG_NAME.match(name.strip()) if isinstance(name, str) else None
    if match is None:
        raise BadRequestError(
            "input.features: the GeoJSON 'crs' name must be an EPSG code "
            "(urn:ogc:def:crs:EPSG::nnnn or EPSG:nnnn)"
        )
    return _crs_name(f"EPSG:{match.group(1)}")


def _read_parquet(data: Any, max_features: int, columns: Sequence[str] = ()) -> FeatureTable:
    """GeoParquet, read with pyarrow from an open file.

    No file system is inferred from a name, and a column chunk stored in another file
    (Parquet's ``file_path``) is refused.
    """
    try:
        file = pq.ParquetFile(data)
        metadata = file.metadata
        # Any column chunk "stored" in another file (file_path): pyarrow would not read it,
        # but such a file is not one a client made for us.
        external = any(
            metadata.row_group(g).column(c).file_path
            for g in range(metadata.num_row_groups)
            for c in range(metadata.num_columns)
        )
    except (pa.ArrowException, OSError):
        raise BadRequestError("input.features: not a GeoParquet file") from None
    if external:
        raise BadRequestError(
            "input.features: the Parquet file references column chunks in other files"
        )
    if metadata.num_rows > max_features:
        raise TooLargeError(
            f"input.features: {metadata.num_rows} features, over the limit "
            f"batch_max_features={max_features}"
        )
    try:
        geo = json.loads((file.schema_arrow.metadata or {}).get(b"geo", b"{}") or b"{}")
    except (ValueError, RecursionError):
        raise BadRequestError("input.features: the GeoParquet 'geo' metadata is not JSON") from None
    geo = geo if isinstance(geo, dict) else {}
    column = geo.get("primary_column", "geometry")
    columns = geo.get("columns") if isinstance(geo.get("columns"), dict) else {}
    column_meta = columns.get(column) if isinstance(columns.get(column), dict) else {}
    encoding = column_meta.get("encoding", "WKB")
    if not isinstance(encoding, str) or encoding.upper() != "WKB":
        raise BadRequestError(
            "input.features: only the GeoParquet geometry encoding WKB is supported"
        )
    schema = file.schema_arrow
    if not isinstance(column, str) or column not in schema.names:
        raise BadRequestError("input.features: no geometry column in the Parquet file")
    kind = schema.field(column).type
    if not (pa.types.is_binary(kind) or pa.types.is_large_binary(kind)):
        # bytes(<an integer>) would allocate that many bytes: only binary columns are WKB.
        raise BadRequestError("input.features: the GeoParquet geometry column is not binary WKB")
    wanted = [column] + ([IDENTIFIER] if IDENTIFIER in schema.names else [])
    extra = [name for name in dict.fromkeys(columns) if name in schema.names and name not in wanted]
    # Sentinel Hub's integer "id" column names the features (else the row numbers).
    id_column = "id" in schema.names and pa.types.is_integer(schema.field("id").type)
    read = wanted + extra + (["id"] if id_column and "id" not in extra else [])
    try:
        table = file.read(columns=read)
    except (pa.ArrowException, OSError):
        raise BadRequestError("input.features: not a readable GeoParquet file") from None
    crs = column_meta.get("crs", "OGC:CRS84")
    fids = table["id"].to_pylist() if id_column else None
    return FeatureTable(
        ids=_ids(None if fids is None or None in fids else fids, table.num_rows),
        identifiers=_identifiers(table[IDENTIFIER].to_pylist()) if IDENTIFIER in wanted else None,
        wkb=[None if g is None else bytes(g) for g in table[column].to_pylist()],
        crs=_crs_name(crs) if crs is not None else "OGC:CRS84",
        columns={name: table[name].to_pylist() for name in extra},
    )


def _read_gpkg(
    source: str | bytes, layer: str | None, max_features: int, columns: Sequence[str] = ()
) -> FeatureTable:
    read = read_gpkg(source, layer, max_features, columns)
    return FeatureTable(
        ids=_ids(read.fids, len(read.fids)),
        identifiers=None if read.identifiers is None else _identifiers(read.identifiers),
        wkb=read.wkb,
        crs=_crs_name(read.crs),
        columns=read.columns,
    )


# Bytes read from an http(s) source at a time (the deadline is checked between reads).
_CHUNK = 1 << 16


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    """Redirects are answers, not instructions: the allow-list checked the URL asked for."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


def _timed_out(url: str, timeout: float) -> UpstreamTimeoutError:
    return UpstreamTimeoutError(
        f"input.features: '{url}' did not send the file within batch_features_timeout={timeout:g} s"
    )


def _fetch_http(url: str, max_bytes: int | None, timeout: float) -> bytes:
    """GET an allowed http(s) URL: no redirect, no proxy or .netrc, at most ``max_bytes``.

    ``timeout`` bounds the whole transfer, not each read: a server dripping a byte at a
    time cannot hold a thread longer.
    """
    deadline = time.monotonic() + timeout
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}), _NoRedirects())
    request = urllib.request.Request(url, headers={"User-Agent": "terratiler"})
    chunks: list[bytes] = []
    size = 0
    try:
        with opener.open(request, timeout=timeout) as response:
            while chunk := response.read1(_CHUNK):
                chunks.append(chunk)
                size += len(chunk)
                if max_bytes is not None and size > max_bytes:
                    raise TooLargeError(
                        f"input.features: over {max_bytes} bytes, the limit batch_max_upload_mb"
                    )
                if time.monotonic() > deadline:
                    raise _timed_out(url, timeout)
    except urllib.error.HTTPError as error:
        if 300 <= error.code < 400:
            raise UpstreamError(
                f"input.features: '{url}' answered with a redirect (HTTP {error.code}); "
                "redirects are not followed: give the final URL"
            ) from None
        if error.code == 404:
            raise BadRequestError(f"input.features: '{url}' does not exist") from None
        raise UpstreamError(f"input.features: '{url}' answered HTTP {error.code}") from None
    except TimeoutError:
        raise _timed_out(url, timeout) from None
    except (urllib.error.URLError, OSError) as error:
        if isinstance(getattr(error, "reason", None), TimeoutError):
            raise _timed_out(url, timeout) from None
        raise UpstreamError(f"input.features: cannot fetch '{url}'") from None
    return b"".join(chunks)


def _fetch(source: str, storage: Storage | None, max_bytes: int | None, timeout: float) -> bytes:
    if source.lower().startswith(("http://", "https://")):
        return _fetch_http(source, max_bytes, timeout)
    storage = storage or Storage.for_url(source)
    try:
        size = storage.fs.size(storage.path(source))
        if max_bytes is not None and size is not None and size > max_bytes:
            raise TooLargeError(f"input.features: {size} bytes, over the limit batch_max_upload_mb")
        return storage.read(source)
    except FileNotFoundError:
        raise BadRequestError(f"input.features: '{source}' does not exist") from None
    except OSError as error:
        raise BadRequestError(f"input.features: cannot read '{source}' ({error})") from None


def read_features(
    source: str | bytes,
    *,
    storage: Storage | None = None,
    layer: str | None = None,
    name: str | None = None,
    max_features: int = 1_000_000,
    max_bytes: int | None = None,
    max_geojson_bytes: int | None = None,
    timeout: float = 30.0,
    columns: Sequence[str] = (),
) -> FeatureTable:
    """Read a features file (GeoJSON, GeoPackage or GeoParquet; never through GDAL).

    Only three readers exist, each of them in Python (json + shapely, sqlite3, pyarrow):
    no driver is guessed from the content and no file can name another file or URL to read.

    Args:
        source: A checked local path or URL (``s3://``, ``http(s)://``), or the file's bytes.
        storage: The storage of an ``s3://`` source (fsspec, with its options).
        layer: Layer of a multi-layer GeoPackage (default: the first).
        name: The file's name, to tell its format (default: the source's).
        max_features: Refuse files with more features (``TooLargeError``).
        max_bytes: Refuse files larger than this.
        max_geojson_bytes: Refuse GeoJSON larger than this (parsed whole, ~15x its size).
        timeout: Seconds an ``http(s)`` source has to answer (``batch_features_timeout``).
        columns: Other columns (properties) to read when the file has them
            (``FeatureTable.columns``): batch processing's own tiles read ``width``,
            ``height``, ``resolution``.

    Returns:
        The features.

    Raises:
        BadRequestError: Unreadable, of an unknown format, or without a usable CRS.
        TooLargeError: Over ``max_features``, ``max_bytes`` or ``max_geojson_bytes``.
        UpstreamError: An http(s) source failed or redirected.

    """
    local = isinstance(source, str) and "://" not in source
    if isinstance(source, str) and not local:
        name, source = name or source, _fetch(source, storage, max_bytes, timeout)
    if local:
        path = Path(source)  # type: ignore[arg-type]
        if not path.is_file():
            raise BadRequestError(f"input.features: '{source}' does not exist")
        size = path.stat().st_size
        if max_bytes is not None and size > max_bytes:
            raise TooLargeError(f"input.features: {size} bytes, over the limit batch_max_upload_mb")
        with open(path, "rb") as file:
            head = file.read(16)
        kind = detect_format(name or str(source), head)
    else:
        kind = detect_format(name, bytes(source[:16]))  # type: ignore[index]
    if kind == "gpkg":
        return _read_gpkg(source, layer, max_features, columns)
    if kind == "parquet":
        if local:
            with open(source, "rb") as file:  # type: ignore[arg-type]
                return _read_parquet(file, max_features, columns)
        return _read_parquet(io.BytesIO(source), max_features, columns)  # type: ignore[arg-type]
    size = Path(source).stat().st_size if local else len(source)  # type: ignore[arg-type]
    if max_geojson_bytes is not None and size > max_geojson_bytes:
        raise TooLargeError(
            f"input.features: {size} bytes of GeoJSON, over the limit batch_max_geojson_mb="
            f"{max_geojson_bytes // (1024 * 1024)} (GeoJSON is parsed whole); send large "
            "feature sets as a GeoPackage or GeoParquet file"
        )
    if local:
        source = Path(source).read_bytes()  # type: ignore[arg-type]
    return _read_geojson(source, max_features, columns)  # type: ignore[arg-type]
