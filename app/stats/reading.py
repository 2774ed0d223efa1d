"""Reading scenes: the pixels of a set of grid cells, from only the assets needed.

A scene's asset is read with one rasterio window read covering the cells asked for (one
window per asset and scene for a whole chunk of geometries), at the asset's native
resolution, and each cell takes the value of the asset pixel containing its centre: nearest
neighbour, so the 20 m SCL (and 20 m bands) land on the 10 m grid pixel for pixel, and a
resx/resy grid samples every asset the same way. Overviews are never used. Values are
harmonized to reflectance with ``sentinel2.scale_offset`` (DN * scale + offset); nodata
pixels and cells outside the raster are masked.

Every asset href is checked against the allow-list (``security.check_source``) before GDAL
sees it, and opened with the GeoTIFF driver only, by the process's dataset pool
(``app.datasets``), the one cache of open datasets that the tile readers use too.
"""

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np
import pystac
import rasterio
import shapely
import shapely.geometry
from affine import Affine
from rasterio.errors import RasterioError
from rasterio.windows import Window

from app import sentinel2
from app.datasets import dataset_pool
from app.errors import TerratilerError
from app.redirects import resolve_redirects
from app.security import check_source, redact_source
from app.stac_fields import asset_crs, asset_transform, item_datetime
from app.stats.grid import PixelGrid


class SceneReadError(Exception):
    """A scene could not be read; its interval is reported with an EXECUTION_ERROR."""


@dataclass(frozen=True)
class Scene:
    """A catalog item as the engine uses it.

    Attributes:
        item: The STAC item.
        when: Its acquisition time (``datetime``, else ``start_datetime``).
        cloud: ``eo:cloud_cover`` (percent), if given.
        footprint: Its geometry in EPSG:4326, if given.

    """

    item: pystac.Item
    when: datetime
    cloud: float | None
    footprint: shapely.Geometry | None

    @property
    def id(self) -> str:
        """The item id."""
        return self.item.id

    @classmethod
    def from_item(cls, item: pystac.Item | dict[str, Any]) -> "Scene":
        """Wrap a pystac Item (or a STAC item dict)."""
        if not isinstance(item, pystac.Item):
            item = pystac.Item.from_dict(dict(item), preserve_dict=True, migrate=False)
        when = item_datetime(item)
        if when is None:
            raise ValueError(f"item '{item.id}': no datetime, nor an RFC 3339 start_datetime")
        cloud = item.properties.get("eo:cloud_cover")
        footprint = shapely.geometry.shape(item.geometry) if item.geometry else None
        return cls(item, when, None if cloud is None else float(cloud), footprint)


class SceneReader:
    """Reads assets of scenes onto grid cells, inside the allow-list.

    Each read borrows its dataset from the process's pool (``app.datasets.dataset_pool``)
    and gives it back: GDAL keeps decoded blocks per open dataset, so the chunks of
    geometries of a run, and the next requests and batch tasks, that share a COG block
    decode it once. Holds no dataset between reads; the georeference of the assets it
    looked at is kept.

    Args:
        allowed: Allowed source prefixes (``settings.allowed_prefixes``).
        allow_private: Let URLs reach private addresses (``settings.allow_private_sources``).

    """

    def __init__(self, allowed: list[str], allow_private: bool = False):
        self.allowed = allowed
        self.allow_private = allow_private
        self._grids: dict[tuple[str, str], tuple[str, Affine]] = {}

    @contextmanager
    def _dataset(
        self, item: pystac.Item, key: str, source: str
    ) -> Iterator[rasterio.DatasetReader]:
        """The pool's dataset of ``source``; GDAL's failures as a ``SceneReadError``."""
        try:
            with dataset_pool().open(source) as dataset:
                yield dataset
        except (RasterioError, OSError) as error:
            raise SceneReadError(self._read_failed(item, key, source, error)) from None

    @contextmanager
    def open_asset(
        self, item: pystac.Item, key: str
    ) -> Iterator[tuple[str, rasterio.DatasetReader]]:
        """Lend the pool's dataset of an item's asset, allow-list checked first.

        For readers of whole windows (the batch-processing tile engine): the asset is
        resolved, checked and opened as ``read`` does, and GDAL's failures inside the
        block become a ``SceneReadError`` naming the item and asset.

        Args:
            item: The STAC item.
            key: An asset key, ESA band or common name.

        Yields:
            (the item's asset key, the open dataset).

        Raises:
            SceneReadError: Missing asset, refused by the allow-list, or unreadable.

        """
        item_key, source = self._source(item, key)
        with self._dataset(item, item_key, source) as dataset:
            yield item_key, dataset

    def _source(self, item: pystac.Item, key: str) -> tuple[str, str]:
        """(item asset key, checked source path or URL) of an asset key."""
        item_key = sentinel2.resolve_asset(key, item.assets)
        if item_key is None:
            raise SceneReadError(f"item '{item.id}' has no asset '{key}'")
        href = item.assets[item_key].get_absolute_href() or item.assets[item_key].href
        try:
            checked = check_source(href, self.allowed, allow_private=self.allow_private)
            return item_key, resolve_redirects(
                checked, self.allowed, allow_private=self.allow_private
            )
        except TerratilerError as error:
            raise SceneReadError(f"item '{item.id}' asset '{item_key}': {error.message}") from None

    def _read_failed(self, item: pystac.Item, key: str, source: str, error: Exception) -> str:
        # GDAL names the file: shown relative to its allowed folder, not as a server path.
        reason = redact_source(str(error), source, self.allowed)
        return f"item '{item.id}' asset '{key}': read failed: {reason}"

    def asset_georeference(self, item: pystac.Item, key: str) -> tuple[str, Affine]:
        """(CRS, transform) of an asset: from its STAC metadata, else from the file."""
        cached = self._grids.get((item.id, key))
        if cached is not None:
            return cached
        item_key = sentinel2.resolve_asset(key, item.assets)
        if item_key is None:
            raise SceneReadError(f"item '{item.id}' has no asset '{key}'")
        crs, transform = asset_crs(item, item_key), asset_transform(item, item_key)
        if crs is None or transform is None:
            _, source = self._source(item, key)
            with self._dataset(item, item_key, source) as dataset:
                crs = crs or dataset.crs.to_string()
                transform = transform or dataset.transform
        self._grids[(item.id, key)] = (crs, transform)
        return crs, transform

    def grid(
        self, scene: Scene, keys: tuple[str, ...], resolution: tuple[float, float] | None
    ) -> PixelGrid:
        """The computation grid of a scene.

        Args:
            scene: The scene.
            keys: The assets the outputs use; the finest of them sets the native grid.
            resolution: (resx, resy) in the scene CRS's units, or None for native.

        Returns:
            The finest asset's pixel grid, or one of ``resolution`` aligned to its corner.

        """
        georeferences = [self.asset_georeference(scene.item, key) for key in keys]
        crs, finest = min(georeferences, key=lambda pair: abs(pair[1].a))
        resx, resy = resolution or (abs(finest.a), abs(finest.e))
        return PixelGrid.aligned(crs, resx, resy, finest.c, finest.f)

    def read(
        self,
        scene: Scene,
        keys: tuple[str, ...],
        cells: "Cells",
        subset: np.ndarray | None = None,
    ) -> dict[str, np.ma.MaskedArray]:
        """Read assets of a scene at grid cells, harmonized.

        Args:
            scene: The scene.
            keys: Asset keys to read (as the plan names them).
            cells: The grid cells.
            subset: Positions in ``cells`` to return (default: all).

        Returns:
            One 1-D masked array per key (float32 reflectance for scaled assets, the raw
            values otherwise), masked at nodata and outside the raster.

        Raises:
            SceneReadError: An asset is missing, refused by the allow-list, or unreadable.

        """
        out = {}
        for key in keys:
            item_key, source = self._source(scene.item, key)
            with self._dataset(scene.item, item_key, source) as dataset:
                lookup = cells.lookup(dataset.transform, dataset.height, dataset.width)
                values = lookup.sample(dataset, subset)
            scale, offset = sentinel2.scale_offset(scene.item, item_key)
            if (scale, offset) != (1.0, 0.0):
                values = sentinel2.harmonize(values, scale, offset)
            out[key] = values
        return out


@dataclass(frozen=True)
class _Lookup:
    """Where grid cells fall in one raster: the window to read and each cell's pixel in it."""

    window: Window | None
    flat: np.ndarray  # index into the window's raveled pixels (0 outside the raster)
    inside: np.ndarray

    def sample(
        self, dataset: rasterio.DatasetReader, subset: np.ndarray | None
    ) -> np.ma.MaskedArray:
        """Band 1 at the cells (or a subset of them), nodata and outside masked."""
        flat, inside = self.flat, self.inside
        if subset is not None:
            flat, inside = flat[subset], inside[subset]
        if self.window is None:
            values = np.zeros(len(flat), dtype=dataset.dtypes[0])
        else:
            values = np.take(dataset.read(1, window=self.window).ravel(), flat)
        mask = ~inside
        if dataset.nodata is not None:
            mask |= values == dataset.nodata
        return np.ma.MaskedArray(values, mask=mask)


class Cells:
    """Cells of a computation grid to read, with their raster lookups cached.

    Scenes of one tile share their assets' georeference, so where each cell falls (nearest
    neighbour: the pixel holding its centre) is computed once per resolution, not per scene.

    Args:
        grid: The computation grid.
        rows: Global rows of the cells.
        cols: Global columns of the cells (same length).

    """

    def __init__(self, grid: PixelGrid, rows: np.ndarray, cols: np.ndarray):
        self.grid = grid
        self.rows = rows
        self.cols = cols
        self._lookups: dict[tuple, _Lookup] = {}

    def __len__(self) -> int:
        return len(self.rows)

    def lookup(self, transform: Affine, height: int, width: int) -> _Lookup:
        """The cells' pixels in a raster of this georeference and size."""
        key = (tuple(transform)[:6], height, width)
        found = self._lookups.get(key)
        if found is None:
            found = self._lookups[key] = self._locate(transform, height, width)
        return found

    def _locate(self, transform: Affine, height: int, width: int) -> _Lookup:
        grid = self.grid
        x = grid.x0 + (self.cols + 0.5) * grid.resx
        y = grid.y0 - (self.rows + 0.5) * grid.resy
        col = np.floor((x - transform.c) / transform.a).astype(np.int64)
        row = np.floor((y - transform.f) / transform.e).astype(np.int64)
        inside = (row >= 0) & (row < height) & (col >= 0) & (col < width)
        if not inside.any():
            return _Lookup(None, np.zeros(len(x), dtype=np.int64), inside)
        r0, c0 = int(row[inside].min()), int(col[inside].min())
        w = int(col[inside].max()) - c0 + 1
        h = int(row[inside].max()) - r0 + 1
        flat = np.where(inside, (row - r0) * w + (col - c0), 0)
        return _Lookup(Window(c0, r0, w, h), flat, inside)
