"""The STAC collection of a processing job's results: one Item per tile, beside the tiles.

Written when a job ends (``write_collection``)::

    <root>/collection.json       the Collection: extent, item_assets, summaries
    <root>/items/<tileName>.json one Item per finished tile: geometry = the tile's
                                 footprint in EPSG:4326, one asset per output

Every href inside is relative when its target is under ``<root>`` (items link
``../collection.json``, assets ``../<tile>/<output>.tif``), so the folder can be moved or
served from anywhere; ``app.catalog.local.LocalCatalog`` reads such a folder as it is
(relative asset hrefs resolved against the item file's folder). Each file is written
atomically (``app.batch.storage.Storage``).
"""

from __future__ import annotations

import json
import posixpath
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np
import shapely
import shapely.geometry
from pyproj import CRS, Transformer

from app.batch.processing.spec import GridTile, OutputSpec
from app.batch.storage import Storage, join

__all__ = [
    "COG_MEDIA_TYPE",
    "ZARR_MEDIA_TYPE",
    "TileRecord",
    "write_collection",
    "write_zarr_collection",
]

#: The media type of a cloud-optimized GeoTIFF asset.
COG_MEDIA_TYPE = "image/tiff; application=geotiff; profile=cloud-optimized"
#: The media type of a Zarr group asset (as the STAC best practices name it).
ZARR_MEDIA_TYPE = "application/vnd+zarr"
DATACUBE_EXTENSION = "https://stac-extensions.github.io/datacube/v2.2.0/schema.json"
STAC_VERSION = "1.1.0"
PROJECTION_EXTENSION = "https://stac-extensions.github.io/projection/v2.0.0/schema.json"
RASTER_EXTENSION = "https://stac-extensions.github.io/raster/v1.1.0/schema.json"
# Points added along each tile edge before reprojecting it, so a UTM tile's footprint in
# EPSG:4326 follows its (slightly curved) edges.
_EDGE_POINTS = 16


@dataclass
class TileRecord:
    """One tile of a finished job, as its Item describes it.

    Attributes:
        tile: The tile.
        outputs: Output id -> the written file's URL (absolute; made relative in the Item
            when it lies under the collection's root).
        status: "done" (an Item is written) or "failed" (left out of the collection).
        start_datetime: Start of the time range the tile's outputs cover (None: the job's).
        end_datetime: End of that range (None: the job's).
        footprint: The tile's footprint as a GeoJSON geometry in EPSG:4326 (None:
            computed from the tile).
        error: Why a failed tile failed.
        bands: Output id -> band descriptions (dates of a stack), when known.

    """

    tile: GridTile
    outputs: dict[str, str] = field(default_factory=dict)
    status: str = "done"
    start_datetime: datetime | str | None = None
    end_datetime: datetime | str | None = None
    footprint: dict[str, Any] | None = None
    error: str | None = None
    bands: dict[str, list[str]] = field(default_factory=dict)


def write_collection(
    storage: Storage,
    root: str,
    collection_id: str,
    title: str | None,
    outputs: Sequence[OutputSpec],
    records: Sequence[TileRecord],
    time_range: tuple[datetime | str, datetime | str],
    *,
    description: str | None = None,
) -> str:
    """Write the collection and one Item per finished tile under ``root``.

    Items first, the collection last: a reader that finds ``collection.json`` finds
    every item it describes.

    Args:
        storage: Where ``root`` lives (a local folder or ``s3://``).
        root: The folder of the results (the job's output folder).
        collection_id: The collection's id (also each Item's ``collection``).
        title: The collection's title.
        outputs: The job's outputs (one asset each).
        records: The job's tiles; those not ``done`` get no Item.
        time_range: The job's (start, end) time range.
        description: The collection's description (default: from the title).

    Returns:
        The URL of ``collection.json``.

    """
    start, end = (_iso(value) for value in time_range)
    items: dict[str, bytes] = {}
    footprints = []
    crss: set[str] = set()
    resolutions: set[float] = set()
    for record in records:
        if record.status != "done" or not record.outputs:
            continue
        item = _item(root, collection_id, outputs, record, (start, end))
        items[join(root, "items", f"{record.tile.name}.json")] = _dump(item)
        footprints.append(shapely.geometry.shape(item["geometry"]))
        crss.add(record.tile.crs)
        resolutions.add(record.tile.resolution)
    collection = _collection(
        collection_id,
        title,
        description,
        outputs,
        footprints,
        (start, end),
        sorted(crss),
        sorted(resolutions),
    )
    storage.write_many(items)
    url = join(root, "collection.json")
    storage.write(url, _dump(collection))
    return url


def write_zarr_collection(
    storage: Storage,
    root: str,
    collection_id: str,
    title: str | None,
    layout: Any,
    zarr_href: str,
    tiles: Sequence[GridTile],
    time_range: tuple[datetime | str, datetime | str],
) -> str:
    """Write ``<root>/collection.json`` for a Zarr output: one asset, the job's group.

    The collection has no Items (the group is one dataset, chunked by tile); its asset
    ``zarr`` (``application/vnd+zarr``, roles ``data``) points at the group, and, when
    the group has one CRS, ``cube:dimensions`` / ``cube:variables`` (datacube extension)
    describe its arrays. With several CRSs each is a subgroup (``EPSG_32633``, ...),
    listed in the asset's ``terratiler:groups``.

    Args:
        storage: Where ``root`` lives.
        root: The job's folder.
        collection_id: The collection's id.
        title: Its title.
        layout: The group's ``zarr_store.ZarrLayout``.
        zarr_href: The group's URL.
        tiles: The tiles written (the spatial extent).
        time_range: The job's (start, end).

    Returns:
        The URL of ``collection.json``.

    """
    start, end = (_iso(value) for value in time_range)
    footprints = [_footprint(tile) for tile in tiles]
    grids = layout.grids
    collection = _collection(
        collection_id,
        title,
        None,
        layout.outputs,
        footprints,
        (start, end),
        sorted(grid.crs for grid in grids),
        sorted({grid.xres for grid in grids}),
    )
    collection.pop("item_assets")
    collection["stac_extensions"] = [PROJECTION_EXTENSION, DATACUBE_EXTENSION]
    asset: dict[str, Any] = {
        "href": _relative(zarr_href, root, root),
        "type": ZARR_MEDIA_TYPE,
        "title": "Zarr group of the job's outputs",
        "roles": ["data"],
    }
    if len(grids) == 1:
        collection.update(_cube(grids[0], layout))
    else:
        asset["terratiler:groups"] = {grid.group: grid.crs for grid in grids}
    collection["assets"] = {"zarr": asset}
    url = join(root, "collection.json")
    storage.write(url, _dump(collection))
    return url


def _cube(grid: Any, layout: Any) -> dict[str, Any]:
    """``cube:dimensions`` and ``cube:variables`` of a one-CRS Zarr group."""
    epsg = CRS.from_user_input(grid.crs).to_epsg()
    reference = epsg if epsg is not None else CRS.from_user_input(grid.crs).to_wkt()
    dimensions: dict[str, Any] = {
        "x": {
            "type": "spatial",
            "axis": "x",
            "extent": [grid.x0, grid.x0 + grid.width * grid.xres],
            "step": grid.xres,
            "reference_system": reference,
        },
        "y": {
            "type": "spatial",
            "axis": "y",
            "extent": [grid.y0 - grid.height * grid.yres, grid.y0],
            "step": -grid.yres,
            "reference_system": reference,
        },
    }
    if layout.dates:
        dimensions["time"] = {"type": "temporal", "values": list(layout.dates)}
    if any(output.composite != "stack" for output in layout.outputs):
        dimensions["band"] = {"type": "bands", "values": [1]}
    variables = {
        output.id: {
            "type": "data",
            "dimensions": ["time" if output.composite == "stack" else "band", "y", "x"],
            "data_type": output.data_type,
            "description": f"{output.composite} of {output.expression or 'an evalscript'}",
            **(
                {"nodata": _number(output.nodata)}
                if output.nodata is not None
                else ({"nodata": "nan"} if output.data_type == "float32" else {})
            ),
        }
        for output in layout.outputs
    }
    return {"cube:dimensions": dimensions, "cube:variables": variables}


# ---------------------------------------------------------------------- documents


def _item(
    root: str,
    collection_id: str,
    outputs: Sequence[OutputSpec],
    record: TileRecord,
    time_range: tuple[str, str],
) -> dict[str, Any]:
    tile = record.tile
    geometry = record.footprint or shapely.geometry.mapping(_footprint(tile))
    bounds = shapely.geometry.shape(geometry).bounds
    start = _iso(record.start_datetime) if record.start_datetime else time_range[0]
    end = _iso(record.end_datetime) if record.end_datetime else time_range[1]
    epsg = CRS.from_user_input(tile.crs).to_epsg()
    t = tile.transform
    assets = {}
    folder = join(root, "items")
    for output in outputs:
        href = record.outputs.get(output.id)
        if href is None:
            continue
        descriptions = record.bands.get(output.id) or [output.id]
        asset: dict[str, Any] = {
            "href": _relative(href, root, folder),
            "type": COG_MEDIA_TYPE,
            "title": output.id,
            "roles": ["data"],
            "proj:code": tile.crs,
            "proj:shape": [tile.height, tile.width],
            "proj:transform": [t.a, t.b, t.c, t.d, t.e, t.f],
            "raster:bands": [_band(output, description) for description in descriptions],
        }
        if epsg is not None:
            asset["proj:epsg"] = epsg
        assets[output.id] = asset
    return {
        "type": "Feature",
        "stac_version": STAC_VERSION,
        "stac_extensions": [PROJECTION_EXTENSION, RASTER_EXTENSION],
        "id": tile.name,
        "collection": collection_id,
        "geometry": geometry,
        "bbox": list(bounds),
        "properties": {
            "datetime": None,
            "start_datetime": start,
            "end_datetime": end,
            "proj:code": tile.crs,
            "terratiler:grid": tile.grid,
            "terratiler:resolution": tile.resolution,
        },
        "links": [
            {"rel": "collection", "href": "../collection.json", "type": "application/json"},
            {"rel": "parent", "href": "../collection.json", "type": "application/json"},
            {"rel": "root", "href": "../collection.json", "type": "application/json"},
        ],
        "assets": assets,
    }


def _band(output: OutputSpec, description: str) -> dict[str, Any]:
    # scale 1 / offset 0 said explicitly: an output named like a Sentinel-2 band ("red")
    # would otherwise be read as reflectance DN and scaled by 0.0001 (app.sentinel2).
    band: dict[str, Any] = {"data_type": output.data_type, "scale": 1.0, "offset": 0.0}
    if output.nodata is not None:
        band["nodata"] = _number(output.nodata)
    elif output.data_type == "float32":
        band["nodata"] = "nan"
    if description != output.id:
        band["name"] = description
    return band


def _collection(
    collection_id: str,
    title: str | None,
    description: str | None,
    outputs: Sequence[OutputSpec],
    footprints: list[shapely.Geometry],
    time_range: tuple[str, str],
    crss: list[str],
    resolutions: list[float],
) -> dict[str, Any]:
    if footprints:
        bbox = list(shapely.union_all(footprints).bounds)
    else:
        bbox = [-180.0, -90.0, 180.0, 90.0]
    summaries: dict[str, Any] = {"proj:code": crss}
    if resolutions:
        summaries["terratiler:resolution"] = resolutions
    return {
        "type": "Collection",
        "stac_version": STAC_VERSION,
        "stac_extensions": [PROJECTION_EXTENSION, RASTER_EXTENSION],
        "id": collection_id,
        "title": title or collection_id,
        "description": description or f"Batch processing results: {title or collection_id}",
        "license": "other",
        "extent": {
            "spatial": {"bbox": [bbox]},
            "temporal": {"interval": [[time_range[0], time_range[1]]]},
        },
        "summaries": summaries,
        "item_assets": {
            output.id: {
                "type": COG_MEDIA_TYPE,
                "title": output.id,
                "roles": ["data"],
                "raster:bands": [_band(output, output.id)],
            }
            for output in outputs
        },
        "links": [{"rel": "root", "href": "./collection.json", "type": "application/json"}],
    }


# ---------------------------------------------------------------------- helpers


def _footprint(tile: GridTile) -> shapely.Geometry:
    """The tile's outline in EPSG:4326 (edges densified before reprojecting)."""
    minx, miny, maxx, maxy = tile.bounds
    if CRS.from_user_input(tile.crs).equals(CRS.from_epsg(4326)):
        return shapely.box(minx, miny, maxx, maxy)
    box = shapely.segmentize(
        shapely.box(minx, miny, maxx, maxy), max((maxx - minx), (maxy - miny)) / _EDGE_POINTS
    )
    transformer = Transformer.from_crs(tile.crs, "EPSG:4326", always_xy=True)
    coords = np.asarray(box.exterior.coords)
    lon, lat = transformer.transform(coords[:, 0], coords[:, 1])
    # 1e-9 degree is 0.1 mm: more digits only make the documents bigger.
    return shapely.Polygon(np.round(np.column_stack([lon, lat]), 9))


def _relative(href: str, root: str, folder: str) -> str:
    """``href`` relative to ``folder`` when it lies under ``root``, else as it is."""
    if not href.startswith(root.rstrip("/") + "/"):
        return href
    return posixpath.relpath(href, folder)


def _iso(value: datetime | str | None) -> str | None:
    """RFC 3339 in UTC ("2023-06-01" is its midnight UTC)."""
    if value is None:
        return None
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _number(value: float) -> float | int:
    return int(value) if float(value).is_integer() else float(value)


def _dump(document: Mapping[str, Any]) -> bytes:
    return json.dumps(document, indent=1, allow_nan=False).encode()
