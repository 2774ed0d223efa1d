"""GeoPackage features read with Python's ``sqlite3``: never GDAL, never another file.

A GeoPackage is an SQLite database, and through GDAL it is a door to other files: GDAL
guesses the driver from the content (an OGR VRT, a CSV of ``/etc/passwd``), registers SQL
functions that open datasets by name, resolves ``VirtualOGR`` tables, honours
``/vsi...`` paths. Reading it here instead makes what a file can reach a matter of
construction:

- the database is opened read-only and ``immutable`` (no journal / WAL file next to it is
  looked at), or deserialized from the uploaded bytes into memory;
- ``ATTACH`` is impossible (the attached-databases limit is 0), no extension can load
  (Python never enables ``load_extension``), and ``trusted_schema`` is off, so a view or
  trigger in the file runs no function with side effects; Python registers no GDAL or
  SpatiaLite SQL function at all;
- only a plain table listed in ``gpkg_contents`` as ``features`` is read: a view or a
  virtual table (``CREATE VIRTUAL TABLE ... USING VirtualOGR('/etc/passwd')``) is refused;
- only the table's integer primary key, its geometry column and an ``identifier`` column
  are selected, and every identifier is quoted.

Geometries are GeoPackage binary blobs: the ``GP`` header (with an optional envelope) is
stripped, leaving standard WKB. A blob that is not one (or uses the GeoPackage extended
geometry types) becomes a missing geometry, reported for that feature by the job.
"""

from __future__ import annotations

import sqlite3
import urllib.parse
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from app.errors import BadRequestError, TooLargeError

__all__ = ["GpkgLayer", "read_gpkg"]

# Envelope indicator (bits 1-3 of the flags byte) -> envelope bytes.
_ENVELOPE_BYTES = {0: 0, 1: 32, 2: 48, 3: 48, 4: 64}
_EXTENDED_TYPE = 0b0010_0000
_FEATURES_TABLES = ("gpkg_contents", "gpkg_geometry_columns", "gpkg_spatial_ref_sys")


@dataclass
class GpkgLayer:
    """What ``read_gpkg`` read from one layer (geometries as standard WKB)."""

    fids: list[int]
    wkb: list[bytes | None]
    identifiers: list[Any] | None
    crs: str | None
    #: Other columns asked for (``read_gpkg(columns=...)``) that the layer has.
    columns: dict[str, list[Any]] = field(default_factory=dict)


def _quote(name: str) -> str:
    """An SQL identifier, quoted (names come from the file: never trust them)."""
    return '"' + name.replace('"', '""') + '"'


def _connect(source: str | bytes) -> sqlite3.Connection:
    if isinstance(source, str):
        uri = f"file:{urllib.parse.quote(source)}?mode=ro&immutable=1"
        connection = sqlite3.connect(uri, uri=True, check_same_thread=False)
    else:
        connection = sqlite3.connect(":memory:", check_same_thread=False)
        connection.deserialize(bytes(source))
    # Nothing the file says may make SQLite open another database or run a function
    # with side effects from its schema (views, triggers, generated columns).
    connection.setlimit(sqlite3.SQLITE_LIMIT_ATTACHED, 0)
    connection.execute("PRAGMA trusted_schema = OFF")
    connection.execute("PRAGMA query_only = ON")
    # SQLite's advice for databases from untrusted sources ("Defense Against The Dark
    # Arts"): check cell sizes while reading, and no memory-mapped I/O of the file.
    connection.execute("PRAGMA cell_size_check = ON")
    connection.execute("PRAGMA mmap_size = 0")
    return connection


def _wkb(blob: Any) -> bytes | None:
    """The standard WKB inside a GeoPackage geometry blob (None when it is not one)."""
    if not isinstance(blob, bytes) or len(blob) < 8 or blob[:2] != b"GP":
        return None
    flags = blob[3]
    envelope = _ENVELOPE_BYTES.get((flags >> 1) & 0b111)
    if envelope is None or flags & _EXTENDED_TYPE or len(blob) < 8 + envelope + 5:
        return None
    return blob[8 + envelope :]


def _crs(connection: sqlite3.Connection, srs_id: Any) -> str | None:
    row = connection.execute(
        "SELECT organization, organization_coordsys_id, definition "
        "FROM gpkg_spatial_ref_sys WHERE srs_id = ?",
        (srs_id,),
    ).fetchone()
    if row is None or srs_id in (0, -1):
        return None  # undefined: the caller's default
    organization, code, definition = row
    if isinstance(organization, str) and organization.upper() == "EPSG" and isinstance(code, int):
        return f"EPSG:{code}"
    if isinstance(definition, str) and definition.strip() not in ("", "undefined"):
        return definition
    raise BadRequestError("input.features: the GeoPackage layer's CRS has no definition")


def _layer(connection: sqlite3.Connection, layer: str | None) -> tuple[str, str, Any]:
    """The table, geometry column and srs_id of the wanted (else the first) features layer."""
    rows = connection.execute(
        "SELECT c.table_name, g.column_name, g.srs_id FROM gpkg_contents AS c "
        "JOIN gpkg_geometry_columns AS g ON g.table_name = c.table_name "
        "WHERE c.data_type = 'features' ORDER BY c.rowid"
    ).fetchall()
    if layer is not None:
        rows = [row for row in rows if row[0] == layer]
        if not rows:
            raise BadRequestError(f"input.features: the GeoPackage has no features layer '{layer}'")
    if not rows:
        raise BadRequestError("input.features: the GeoPackage has no features layer")
    table, column, srs_id = rows[0]
    if not isinstance(table, str) or not isinstance(column, str):
        raise BadRequestError("input.features: not a valid GeoPackage (gpkg_contents)")
    kind = connection.execute(
        "SELECT type, sql FROM sqlite_master WHERE name = ?", (table,)
    ).fetchone()
    if kind is None or kind[0] != "table":
        raise BadRequestError(
            "input.features: the GeoPackage layer is not a table (views are not read)"
        )
    if "VIRTUAL" in str(kind[1] or "").upper().split("(")[0]:
        raise BadRequestError(
            "input.features: the GeoPackage layer is a virtual table (not read: it could "
            "reference other files)"
        )
    return table, column, srs_id


def read_gpkg(
    source: str | bytes, layer: str | None, max_features: int, columns: Sequence[str] = ()
) -> GpkgLayer:
    """Read one features layer of a GeoPackage without GDAL.

    Args:
        source: A local path (already checked) or the file's bytes.
        layer: The layer (table) name; default the first features layer.
        max_features: Refuse layers with more rows.
        columns: Other columns to read when the layer has them (e.g. ``width``).

    Returns:
        FIDs, WKB geometries, the ``identifier`` column's values (None without one), CRS.

    Raises:
        BadRequestError: Not a GeoPackage, no such layer, a view or virtual table.
        TooLargeError: Over ``max_features`` (``batch_max_features``).

    """
    try:
        connection = _connect(source)
    except sqlite3.Error:
        raise BadRequestError("input.features: not a GeoPackage (not an SQLite database)") from None
    try:
        names = {
            row[0]
            for row in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
        }
        if not set(_FEATURES_TABLES) <= names:
            raise BadRequestError(
                "input.features: not a GeoPackage (no gpkg_contents / gpkg_geometry_columns)"
            )
        table, column, srs_id = _layer(connection, layer)
        info = connection.execute(
            "SELECT name, type, pk FROM pragma_table_info(?)", (table,)
        ).fetchall()
        keys = [name for name, kind, pk in info if pk == 1 and str(kind).upper() == "INTEGER"]
        names = {name for name, _, _ in info}
        if column not in names:
            raise BadRequestError("input.features: the GeoPackage layer lacks its geometry column")
        count = connection.execute(f"SELECT count(*) FROM {_quote(table)}").fetchone()[0]
        if count > max_features:
            raise TooLargeError(
                f"input.features: {count} features, over the limit "
                f"batch_max_features={max_features}"
            )
        key = _quote(keys[0]) if keys else "rowid"
        extra = [name for name in dict.fromkeys(columns) if name in names]
        selected = [key, _quote(column)] + (['"identifier"'] if "identifier" in names else [])
        selected += [_quote(name) for name in extra]
        rows = connection.execute(
            f"SELECT {', '.join(selected)} FROM {_quote(table)} ORDER BY {key}"
        ).fetchall()
        first_extra = len(selected) - len(extra)
        return GpkgLayer(
            fids=[row[0] for row in rows],
            wkb=[_wkb(row[1]) for row in rows],
            identifiers=[row[2] for row in rows] if "identifier" in names else None,
            crs=_crs(connection, srs_id),
            columns={name: [row[first_extra + k] for row in rows] for k, name in enumerate(extra)},
        )
    except sqlite3.Error:
        # The message could quote the file's own SQL (a view's text): say only what failed.
        raise BadRequestError("input.features: not a valid GeoPackage (SQLite error)") from None
    finally:
        connection.close()
