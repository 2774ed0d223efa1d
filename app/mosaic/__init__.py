"""Mosaics of registered STAC searches: the engine behind ``/searches`` (no FastAPI here).

- ``search``: normalize a STAC search, hash it into a stable id, validate metadata;
- ``store``: persist registered searches in the service database (``app.db``);
- ``index``: per-search in-memory footprint index (STRtree), refreshed after a TTL;
- ``reader``: pixel selection over items read in order, with item/time bounds;
- ``backend``: ``SearchBackend``, a search's mosaic as a rio-tiler ``BaseBackend`` (items
  from the index, read by that policy);
- ``service``: ``MosaicService``, what the routers call: registry, index cache, backends.
"""

from app.mosaic.backend import FeatureStatistics, PointSeries, SearchBackend
from app.mosaic.index import FootprintIndex, IndexCache
from app.mosaic.reader import PIXEL_SELECTIONS, MosaicRead, read_mosaic
from app.mosaic.search import (
    SearchRecord,
    normalize_metadata,
    normalize_search,
    query_pairs,
    search_hash,
    with_defaults,
)
from app.mosaic.service import (
    MosaicConfig,
    MosaicService,
    reader_options_from_settings,
)
from app.mosaic.store import SearchStore

__all__ = [
    "PIXEL_SELECTIONS",
    "FeatureStatistics",
    "FootprintIndex",
    "IndexCache",
    "MosaicConfig",
    "MosaicRead",
    "MosaicService",
    "PointSeries",
    "SearchBackend",
    "SearchRecord",
    "SearchStore",
    "normalize_metadata",
    "normalize_search",
    "query_pairs",
    "read_mosaic",
    "reader_options_from_settings",
    "search_hash",
    "with_defaults",
]
