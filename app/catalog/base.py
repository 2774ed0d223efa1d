"""The Catalog protocol and the search model every backend shares."""

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import pystac


@dataclass(frozen=True)
class SortField:
    """One sortby entry: a property path (``properties.`` prefix optional) and a direction."""

    field: str
    direction: str = "asc"  # "asc" | "desc"


@dataclass
class SearchQuery:
    """A validated STAC item search, independent of how it arrived (GET, POST, CLI).

    Attributes:
        ids: item ids to match.
        collections: collection ids to match.
        bbox: (minx, miny, maxx, maxy) in EPSG:4326 (a 6-number bbox is reduced to 2D).
        intersects: a GeoJSON geometry in EPSG:4326.
        datetime: (start, end) as timezone-aware datetimes; None for an open end. An
            instant is (t, t).
        query: the STAC ``query`` extension object, ``{prop: {op: value}}``.
        filter: a CQL2 filter as cql2-json (dict); text filters are converted on parsing.
        sortby: sort fields in priority order.
        limit: page size.
        token: opaque next-page token from a previous page.
    """

    ids: list[str] | None = None
    collections: list[str] | None = None
    bbox: tuple[float, float, float, float] | None = None
    intersects: dict[str, Any] | None = None
    datetime: tuple[Any, Any] | None = None
    query: dict[str, dict[str, Any]] | None = None
    filter: dict[str, Any] | None = None
    sortby: list[SortField] = field(default_factory=list)
    limit: int = 10
    token: str | None = None

    @classmethod
    def scenes(
        cls,
        collection: str,
        time_range: tuple[Any, Any] | None,
        max_cloud_coverage: float | None = None,
        *,
        bbox: tuple[float, float, float, float] | None = None,
        intersects: dict[str, Any] | None = None,
    ) -> "SearchQuery":
        """The scenes of one collection over an area and a time range, at most so cloudy.

        Args:
            collection: The collection id.
            time_range: (start, end), or None for any time.
            max_cloud_coverage: Largest ``eo:cloud_cover`` (percent); None: no filter.
            bbox: The area as a bbox in EPSG:4326.
            intersects: The area as a GeoJSON geometry in EPSG:4326.

        """
        cloud = None
        if max_cloud_coverage is not None:
            cloud = {"eo:cloud_cover": {"lte": max_cloud_coverage}}
        return cls(
            collections=[collection],
            bbox=bbox,
            intersects=intersects,
            datetime=time_range,
            query=cloud,
        )


@dataclass
class SearchPage:
    """One page of search results."""

    items: list[pystac.Item]
    next_token: str | None = None
    number_matched: int | None = None


@runtime_checkable
class Catalog(Protocol):
    """Where items come from. Backends raise ``app.errors`` exceptions, never HTTP ones."""

    def search(self, query: SearchQuery, max_items: int | None = None) -> Iterator[pystac.Item]:
        """All items matching ``query`` (ignoring its limit/token), up to ``max_items``."""
        ...

    def search_page(self, query: SearchQuery) -> SearchPage:
        """One page of ``query.limit`` items starting at ``query.token``."""
        ...

    def get_item(self, collection_id: str, item_id: str) -> pystac.Item:
        """One item; ``NotFoundError`` when the collection or the item is unknown."""
        ...

    def collections(self) -> list[pystac.Collection]:
        """The collections this catalog holds."""
        ...

    def get_collection(self, collection_id: str) -> pystac.Collection:
        """One collection; ``NotFoundError`` when unknown."""
        ...
