"""The user's own tiles (``input.type = "geopackage"``, Sentinel Hub's BatchV2 input).

Each polygon of the file is one tile, in the file's CRS: its bounds, cut into pixels by
``width`` and ``height`` (pixel size = bounds / pixels, per axis) or by ``resolution``
(square pixels from the upper-left corner; the last column and row may reach past the
bounds by less than a pixel). ``id`` (the column, else the file's FID) and ``identifier``
name the tile: its name is the identifier made safe for paths, else the id.

The file is read by ``app.batch.features.read_features`` (GeoPackage through sqlite3,
GeoJSON, GeoParquet; never GDAL) with the batch size limits; the source is checked
against the allow-list by the service when the job is created.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from typing import Any

import shapely
from affine import Affine

from app.batch.config import BatchConfig
from app.batch.features import FeatureTable, read_features
from app.batch.naming import file_stem
from app.batch.processing.spec import GridTile
from app.batch.storage import Storage
from app.errors import BadRequestError, TooLargeError
from app.settings import Settings

__all__ = [
    "CUSTOM_GRID",
    "distinct_places",
    "features_source",
    "read_own_tiles",
    "tile_name",
    "tiles_from_table",
]

#: ``GridTile.grid`` of the user's own tiles.
CUSTOM_GRID = "custom"
COLUMNS = ("id", "width", "height", "resolution")
FIELD = "input.features"
#: Names of the job folder's own entries: a tile named so would mix its files with them
#: (``_batch`` is removed when the job is deleted; ``collection.json`` is a file).
RESERVED = frozenset({"_batch", "items", "collection.json", "output.zarr"})


def features_source(features: str | dict[str, Any]) -> tuple[str, str | None]:
    """``(href, layer)`` of ``input.features``: a path/URL, ``{href, layer}`` or ``{s3: {url}}``.

    Raises:
        BadRequestError: None of these shapes.

    """
    if isinstance(features, str) and features.strip():
        return features.strip(), None
    if isinstance(features, dict):
        href = features.get("href") or features.get("url") or features.get("path")
        s3 = features.get("s3")
        if href is None and isinstance(s3, dict):
            href = s3.get("url")
        layer = features.get("layer")
        if isinstance(href, str) and href.strip() and (layer is None or isinstance(layer, str)):
            return href.strip(), layer
    raise BadRequestError(
        f'{FIELD}: give a path or URL of a GeoPackage, or {{"href": ..., "layer": ...}}'
    )


def tile_name(identifier: str | None, feature_id: int) -> str:
    """A tile's file-safe name: the identifier ('/', spaces ... -> '_'), else the id."""
    return file_stem(identifier) or str(feature_id)


def _number(value: Any, column: str, where: str, whole: bool) -> float | None:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise BadRequestError(f"{FIELD}: {where}: '{column}' is not a number") from None
    if not math.isfinite(number) or number <= 0 or (whole and number != int(number)):
        kind = "a positive whole number" if whole else "a positive number"
        raise BadRequestError(f"{FIELD}: {where}: '{column}' must be {kind}")
    return number


def _feature_id(table: FeatureTable, position: int, where: str) -> int:
    ids = table.columns.get("id")
    value = ids[position] if ids is not None else None
    if value is None:
        return int(table.ids[position])
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise BadRequestError(f"{FIELD}: {where}: 'id' is not an integer") from None
    if number != value and str(number) != str(value).strip():
        raise BadRequestError(f"{FIELD}: {where}: 'id' is not an integer")
    return number


def _crs(table: FeatureTable) -> str:
    crs = table.crs
    if crs.upper() == "OGC:CRS84":
        return "EPSG:4326"
    if not re.fullmatch(r"EPSG:\d{4,6}", crs, flags=re.IGNORECASE):
        raise BadRequestError(
            f"{FIELD}: own tiles need a CRS with an EPSG code (the file's CRS has none)"
        )
    return crs.upper()


def tiles_from_table(table: FeatureTable, settings: Settings) -> list[GridTile]:
    """The tiles of a features table, every one checked.

    Raises:
        BadRequestError: No feature, a missing or non-polygon geometry, neither
            ``width``/``height`` nor ``resolution``, duplicate ids or names (naming the
            feature).
        TooLargeError: Over ``batch_max_tiles``, a tile over ``batch_max_tile_pixels``.

    """
    count = len(table)
    if count == 0:
        raise BadRequestError(f"{FIELD}: the file has no features (a tile is a polygon)")
    if count > settings.batch_max_tiles:
        raise TooLargeError(
            f"{FIELD}: {count} tiles, over the limit batch_max_tiles={settings.batch_max_tiles}"
        )
    crs = _crs(table)
    tiles: list[GridTile] = []
    seen_ids: dict[int, int] = {}
    seen_names: dict[str, int] = {}
    for position in range(count):
        where = f"feature {position}"
        feature_id = _feature_id(table, position, where)
        where = f"feature id={feature_id}"
        if feature_id in seen_ids:
            raise BadRequestError(f"{FIELD}: {where}: duplicate id (ids name the tiles)")
        seen_ids[feature_id] = position
        data = table.wkb[position]
        geometry = shapely.from_wkb(data, on_invalid="ignore") if data else None
        if geometry is None or geometry.is_empty:
            raise BadRequestError(f"{FIELD}: {where}: no geometry (a tile is a polygon)")
        if geometry.geom_type not in ("Polygon", "MultiPolygon") or geometry.area <= 0:
            raise BadRequestError(
                f"{FIELD}: {where}: a {geometry.geom_type}, not a polygon (a tile is a polygon)"
            )
        minx, miny, maxx, maxy = (float(v) for v in geometry.bounds)
        if not all(math.isfinite(v) for v in (minx, miny, maxx, maxy)):
            raise BadRequestError(f"{FIELD}: {where}: non-finite coordinates")
        columns = {
            name: table.columns[name][position] for name in COLUMNS[1:] if name in table.columns
        }
        width = _number(columns.get("width"), "width", where, whole=True)
        height = _number(columns.get("height"), "height", where, whole=True)
        resolution = _number(columns.get("resolution"), "resolution", where, whole=False)
        if width is not None and height is not None:
            columns_, rows = int(width), int(height)
            xres, yres = (maxx - minx) / columns_, (maxy - miny) / rows
        elif resolution is not None:
            xres = yres = resolution
            columns_ = max(1, math.ceil((maxx - minx) / resolution - 1e-9))
            rows = max(1, math.ceil((maxy - miny) / resolution - 1e-9))
        else:
            raise BadRequestError(
                f"{FIELD}: {where}: give 'width' and 'height' (pixels) or 'resolution'"
            )
        pixels = columns_ * rows
        if pixels > settings.batch_max_tile_pixels:
            raise TooLargeError(
                f"{FIELD}: {where}: {columns_} x {rows} = {pixels} pixels, over the limit "
                f"batch_max_tile_pixels={settings.batch_max_tile_pixels}"
            )
        name = tile_name(table.identifier(position), feature_id)
        if name in seen_names:
            raise BadRequestError(
                f"{FIELD}: {where}: its tile name '{name}' is another feature's too "
                "(identifiers, made safe for paths, name the files)"
            )
        if name in RESERVED:
            raise BadRequestError(
                f"{FIELD}: {where}: the tile name '{name}' is reserved in the job's folder "
                f"({', '.join(sorted(RESERVED))}): give another identifier"
            )
        seen_names[name] = position
        tiles.append(
            GridTile(
                grid=CUSTOM_GRID,
                name=name,
                crs=crs,
                transform=Affine(xres, 0.0, minx, 0.0, -yres, maxy),
                width=columns_,
                height=rows,
                resolution=float(xres),
            )
        )
    return tiles


def read_own_tiles(
    href: str, layer: str | None, settings: Settings, storage_options: dict[str, Any] | None = None
) -> list[GridTile]:
    """Read and check the tiles of a checked path or URL (``batch_max_*`` size limits).

    Raises:
        BadRequestError: Unreadable, or a bad tile (see ``tiles_from_table``).
        TooLargeError: Over a size limit.

    """
    config = BatchConfig.from_settings(settings)
    remote = "://" in href
    table = read_features(
        href,
        storage=Storage.for_url(href, storage_options or config.storage_options)
        if remote
        else None,
        layer=layer,
        name=href,
        max_features=config.batch_max_features,
        max_bytes=config.batch_max_upload_mb * 1024 * 1024,
        max_geojson_bytes=config.batch_max_geojson_mb * 1024 * 1024,
        timeout=config.batch_features_timeout,
        columns=COLUMNS,
    )
    return tiles_from_table(table, settings)


def distinct_places(tiles: Sequence[GridTile]) -> bool:
    """Whether no two tiles share a place (same CRS and upper-left corner)."""
    corners = {(t.crs, round(t.transform.c, 6), round(t.transform.f, 6)) for t in tiles}
    return len(corners) == len(tiles)
