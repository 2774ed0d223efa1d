"""The synthetic Sentinel-2 L2A demo catalog: Earth-Search-shaped items over fake farmland.

``generate_demo(path)`` writes, offline and deterministically for a seed::

    PATH/collection.json             the sentinel-2-l2a collection (with item_assets)
    PATH/items/<item_id>.json        one STAC item per date, asset hrefs relative
    PATH/cogs/<item_id>/B04.tif ...  COGs named as on Earth-Search, and thumbnail.jpg
    PATH/fields.geojson              field parcels, EPSG:4326
    PATH/fields.gpkg                 the same parcels, EPSG:32633 (layer ``fields``)

With ``cross_zone=True`` (``terratiler demo PATH --cross-zone``) the catalog also holds a
small pair of scenes straddling the 18 E UTM zone boundary, on the dates of the first two
demo scenes: one in EPSG:32633 just west of 18 E, one in EPSG:32634 just east of it
(``CROSS_ZONE_SIZE`` 10 m pixels square each), so that an area across the boundary has
data in both zones' CRSs. Without it the output is unchanged.

What each date is like (sky, processing baseline, swath edge) depends only on the number
of scenes: see ``plan_scenes``. Every reflectance asset records ``raster:bands`` offset
-0.1, as Earth-Search v1 does; items with ``earthsearch:boa_offset_applied: true`` store
``reflectance * 10000`` (the flag, not raster:bands, says their offset is 0), the others
(scenes 1, 4, 7 ...) still carry ESA's +1000 (offset -0.1). A field's NDVI on a date is ``field_ndvi(properties, date)`` plus
pixel noise; clouds, cirrus and shadows are flagged in the SCL wherever they touch.
"""

import json
import shutil
from pathlib import Path

import numpy as np

from app.demo.cog import write_cog, write_thumbnail
from app.demo.fields import write_fields
from app.demo.grid import CENTER_LAT, CENTER_LON, EPSG, DemoGrid, demo_grid
from app.demo.landscape import build_landscape
from app.demo.phenology import CROPS, crop_ndvi, field_ndvi
from app.demo.scene import RESOLUTION, SCL_CLOUDS, Scene, render_scene, scl_properties
from app.demo.schedule import SceneSpec, plan_scenes
from app.demo.stac import ASSET_FILES, build_collection, build_item

__all__ = [
    "CENTER_LAT",
    "CENTER_LON",
    "CROPS",
    "CROSS_ZONE_SCENES",
    "EPSG",
    "SCL_CLOUDS",
    "DemoGrid",
    "SceneSpec",
    "crop_ndvi",
    "demo_grid",
    "field_ndvi",
    "generate_demo",
    "plan_scenes",
    "scl_properties",
]

MIN_SIZE = 64
#: Side in 10 m pixels of each cross-zone scene (small: they only need to be there).
CROSS_ZONE_SIZE = 128
#: Where the cross-zone scenes lie: (lon, lat, EPSG) of each centre, the demo's latitude,
#: about 1 km west and east of the 18 E boundary between UTM zones 33 and 34.
CROSS_ZONE_SCENES = ((17.985, CENTER_LAT, 32633), (18.015, CENTER_LAT, 32634))


def _clear_previous(path: Path) -> None:
    """Remove what an earlier run wrote, and nothing else."""
    for folder in ("items", "cogs"):
        shutil.rmtree(path / folder, ignore_errors=True)
    for name in ("collection.json", "fields.geojson", "fields.gpkg"):
        (path / name).unlink(missing_ok=True)


def _write_scene_files(folder: Path, scene: Scene, grid: DemoGrid) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for key, data in scene.arrays.items():
        resampling = "nearest" if key == "scl" else "average"
        transform = grid.transform(RESOLUTION[key])
        write_cog(folder / ASSET_FILES[key], data, transform, 0, resampling, epsg=grid.epsg)
    write_thumbnail(folder / ASSET_FILES["thumbnail"], scene.arrays["visual"])


def _write_item(path: Path, scene: Scene, grid: DemoGrid) -> dict:
    item = build_item(scene, grid)
    _write_scene_files(path / "cogs" / item["id"], scene, grid)
    (path / "items" / f"{item['id']}.json").write_text(json.dumps(item, indent=2))
    return item


def _cross_zone_items(path: Path, specs: list[SceneSpec], seed: int) -> list[dict]:
    """The scenes straddling 18 E: each zone's own landscape, the first two dates."""
    items = []
    for k, (lon, lat, epsg) in enumerate(CROSS_ZONE_SCENES):
        grid = demo_grid(CROSS_ZONE_SIZE, lon, lat, epsg)
        land = build_landscape(grid, np.random.default_rng([seed, 2, k]))
        for spec in specs[:2]:
            scene = render_scene(land, spec, np.random.default_rng([seed, 3, k, spec.index]))
            items.append(_write_item(path, scene, grid))
    return items


def generate_demo(
    path: Path, scenes: int = 12, size: int = 1024, seed: int = 0, cross_zone: bool = False
) -> Path:
    """Write the synthetic Sentinel-2 L2A demo catalog into ``path``.

    Re-running over an existing folder replaces what an earlier run wrote (items, COGs,
    collection and field files) and leaves anything else alone.

    Args:
        path: the catalog folder (created if missing).
        scenes: number of dates, spread over April-September 2023.
        size: width and height of the 10 m grid in pixels (1024 is about 10 x 10 km).
        seed: random seed; the same seed writes byte-identical rasters.
        cross_zone: also write the pair of scenes across the 18 E zone boundary (on the
            first two dates: four items).

    Returns:
        The catalog folder.

    Raises:
        ValueError: ``scenes`` < 1 or ``size`` < 64.

    """
    if scenes < 1:
        raise ValueError("scenes must be at least 1")
    if size < MIN_SIZE:
        raise ValueError(f"size must be at least {MIN_SIZE} pixels")
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    _clear_previous(path)

    grid = demo_grid(size)
    land = build_landscape(grid, np.random.default_rng([seed, 0]))
    write_fields(land.fields, path)

    items_dir = path / "items"
    items_dir.mkdir()
    items = []
    specs = plan_scenes(scenes)
    for spec in specs:
        scene = render_scene(land, spec, np.random.default_rng([seed, 1, spec.index]))
        items.append(_write_item(path, scene, grid))
    if cross_zone:
        items.extend(_cross_zone_items(path, specs, seed))
        items.sort(key=lambda item: item["properties"]["datetime"])

    collection = build_collection(grid, items)
    (path / "collection.json").write_text(json.dumps(collection, indent=2))
    return path
