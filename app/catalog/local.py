"""LocalCatalog: STAC items from a folder, held in memory with a spatial index.

No server, no database: the folder is read once, when the catalog is built, into an
in-memory index, and every search is answered from it.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import logging
import math
import os
import re
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from pathlib import Path
from typing import Any

import cql2
import numpy as np
import pystac
import shapely
import shapely.geometry
from shapely.strtree import STRtree

from app.catalog.base import SearchPage, SearchQuery
from app.catalog.query import parse_rfc3339, search_to_body
from app.errors import BadRequestError, NotFoundError

__all__ = ["LocalCatalog"]

logger = logging.getLogger(__name__)

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)
# Strings that look like a date or a date-time compare (and sort) as instants, so that
# "...55.276Z" comes after "...55Z" although "." < "Z".
_DATE_LIKE = re.compile(r"^\d{4}-\d{2}-\d{2}(?:$|[Tt ]\d{2}:\d{2})")
_URL_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]*:")
# How many searches' ordered match lists each index keeps, so paging through a large
# filtered search costs one evaluation, not one per page.
_CACHED_SEARCHES = 64
# Bytes of a .geojson file looked at to tell STAC items from other features (the demo's
# fields.geojson) before parsing all of it.
_SNIFF_BYTES = 1 << 20


def _to_us(value: datetime | str) -> int:
    """Microseconds since the epoch: exact, unlike float seconds."""
    if isinstance(value, str):
        value = parse_rfc3339(value)
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return (value - _EPOCH) // _MICROSECOND


@lru_cache(maxsize=65536)
def _timestamp_us(text: str) -> int | None:
    """Return the instant a date-like string names, or None when it names none."""
    if not _DATE_LIKE.match(text):
        return None
    try:
        return _to_us(parse_rfc3339(text))
    except ValueError:
        return None


@dataclass(slots=True)
class _Record:
    """What the index keeps of one item: enough to filter and sort, plus its JSON text."""

    id: str
    collection: str | None
    properties: dict[str, Any]
    geometry: dict[str, Any] | None
    bbox: list[float] | None
    text: str  # the item's JSON as read; parsed again for every Item handed out
    base: str  # folder the item's relative asset hrefs are relative to
    sort_us: int  # datetime (or start_datetime) for the default order
    start_us: int  # start_datetime and end_datetime, else datetime for both
    end_us: int


@dataclass(slots=True)
class _CollectionRecord:
    id: str
    text: str
    base: str


@dataclass
class _Index:
    """An immutable snapshot of the folder."""

    records: list[_Record]
    collections: dict[str, _CollectionRecord]
    by_key: dict[tuple[str | None, str], int]
    by_id: dict[str, list[int]]
    collection_codes: np.ndarray
    code_of_collection: dict[str | None, int]
    start_us: np.ndarray
    end_us: np.ndarray
    tree: STRtree
    cache: OrderedDict[str, np.ndarray] = field(default_factory=OrderedDict)
    lock: threading.Lock = field(default_factory=threading.Lock)
    # Per collection, the digests of its asset files (``_asset_digests``), built when first
    # asked for (by ``/catalog/data``): sorted uint64, 8 bytes an asset.
    assets: dict[str, np.ndarray] = field(default_factory=dict)

    def cached(self, key: str) -> np.ndarray | None:
        with self.lock:
            hit = self.cache.get(key)
            if hit is not None:
                self.cache.move_to_end(key)
            return hit

    def remember(self, key: str, positions: np.ndarray) -> None:
        with self.lock:
            self.cache[key] = positions
            while len(self.cache) > _CACHED_SEARCHES:
                self.cache.popitem(last=False)


class LocalCatalog:
    """STAC items from a folder, searched in memory.

    What it reads from ``path`` (sorted by file name within each step):

    1. Collections: ``collection*.json`` in the folder, ``collections/*.json`` and
       ``collections/*/collection.json``.
    2. Items: ``items/*.json`` (one Item, or a FeatureCollection of Items, per file), then
       ``*.ndjson`` (one Item per line) and ``*.geojson`` (a FeatureCollection of Items)
       in the folder and in ``items/``. Features without ``stac_version`` are not STAC
       items and are skipped, so the demo's ``fields.geojson`` is left alone.

    An item without a ``collection`` is given the folder's collection when there is
    exactly one. The first of two items with the same collection and id wins (logged).
    Malformed JSON, a non-Feature in ``items/``, an item without any time, or an
    unparseable datetime or geometry raises ``ValueError`` naming the file: a broken
    catalog fails at start, not later.

    Items handed out are new ``pystac.Item`` objects each time (parsed from the stored
    JSON text, without migration), so callers may change them freely. Relative asset
    hrefs are made absolute against the item file's folder ("../cogs/x/B04.tif" in
    ``items/x.json`` becomes ``<path>/cogs/x/B04.tif``); links are left as they are.

    Search semantics:

    - ``bbox`` and ``intersects`` match items whose geometry intersects (touching counts),
      through an STRtree over the footprints; items without geometry never match them.
    - ``datetime``: an item with ``start_datetime`` and ``end_datetime`` matches when its
      range overlaps the search's; otherwise its ``datetime`` must fall inside (ends
      included).
    - ``query`` (eq, neq, lt, lte, gt, gte, in, startsWith, endsWith, contains) and
      ``filter`` (CQL2, evaluated by the ``cql2`` library): a missing property or values
      of different types make the condition unknown, and unknown never matches.
      Date-like strings compare as instants. In ``query`` a string operand against a
      numeric (boolean) property is read as the number (``true``/``false``) it spells, as
      pystac-client's ``["eo:cloud_cover<10"]`` form sends strings; ``in`` on an array
      property (``instruments``) matches when one of its elements is listed.
    - Order: ``sortby`` fields in turn (numbers numerically, date-times chronologically,
      missing values last whatever the direction), ties and no ``sortby`` by the default
      order: ``datetime`` (else ``start_datetime``) newest first, then id, then collection.
    - Pages: ``limit`` items from the offset the opaque ``token`` carries; a token is
      tied to its search's parameters (not to ``limit``), another search's token is
      refused.
    """

    def __init__(self, path: str | Path) -> None:
        """Read the folder at ``path``; ``FileNotFoundError`` if it does not exist."""
        self._root = Path(path).resolve()
        if not self._root.is_dir():
            raise FileNotFoundError(f"catalog folder '{path}' does not exist")
        self._index = _load(self._root)

    @property
    def path(self) -> Path:
        """The catalog folder (absolute)."""
        return self._root

    def __len__(self) -> int:
        return len(self._index.records)

    def data_folder(self, collection_id: str) -> Path | None:
        """The folder ``/catalog/data/{collection_id}/...`` serves files from (``app.catalog.files``).

        The catalog folder for a collection this folder holds (as a collection file or as
        the collection of its items), else None.
        """
        index = self._index
        if collection_id in index.collections or collection_id in index.code_of_collection:
            return self._root
        return None

    def publishes(self, collection_id: str, path: str) -> bool:
        """Whether ``path`` is the file of an asset of the collection or of one of its items.

        What ``/catalog/data`` serves (``app.catalog.files``): the files ``/catalog`` lists,
        nothing else the folder holds (item JSON, hidden files, a data folder inside it).

        Args:
            collection_id: The collection.
            path: An absolute, normalized local path.

        """
        index = self._index
        with index.lock:
            digests = index.assets.get(collection_id)
        if digests is None:
            digests = _asset_digests(index, collection_id)
            with index.lock:
                index.assets[collection_id] = digests
        digest = np.uint64(_path_digest(path))
        position = int(np.searchsorted(digests, digest))
        return position < len(digests) and digests[position] == digest

    # ------------------------------------------------------------------ protocol

    def search(self, query: SearchQuery, max_items: int | None = None) -> Iterator[pystac.Item]:
        """All items matching ``query`` in order (its limit and token ignored).

        The search runs when this is called, so a bad query raises here; items are built
        as the iterator is consumed.
        """
        index = self._index
        positions = self._matching(index, query)
        if max_items is not None:
            positions = positions[: max(max_items, 0)]
        return (_to_item(index.records[position]) for position in positions)

    def search_page(self, query: SearchQuery) -> SearchPage:
        """One page: ``query.limit`` items from the offset in ``query.token``."""
        if query.limit < 1:
            raise BadRequestError("limit: must be at least 1")
        digest = _digest(query)
        offset = _decode_token(query.token, digest) if query.token else 0
        index = self._index
        positions = self._matching(index, query)
        end = offset + query.limit
        return SearchPage(
            items=[_to_item(index.records[position]) for position in positions[offset:end]],
            next_token=_encode_token(end, digest) if end < len(positions) else None,
            number_matched=len(positions),
        )

    def get_item(self, collection_id: str, item_id: str) -> pystac.Item:
        """One item; ``NotFoundError`` naming the unknown collection or item."""
        index = self._index
        position = index.by_key.get((collection_id, item_id))
        if position is None:
            if (
                collection_id not in index.collections
                and collection_id not in index.code_of_collection
            ):
                raise NotFoundError(f"collection '{collection_id}' not found")
            raise NotFoundError(f"item '{item_id}' not found in collection '{collection_id}'")
        return _to_item(index.records[position])

    def collections(self) -> list[pystac.Collection]:
        """Return the collections read from the folder, in id order."""
        index = self._index
        return [_to_collection(index.collections[key]) for key in sorted(index.collections)]

    def get_collection(self, collection_id: str) -> pystac.Collection:
        """One collection; ``NotFoundError`` when the folder has no such collection file."""
        record = self._index.collections.get(collection_id)
        if record is None:
            raise NotFoundError(f"collection '{collection_id}' not found")
        return _to_collection(record)

    # ------------------------------------------------------------------ matching

    def _matching(self, index: _Index, query: SearchQuery) -> np.ndarray:
        """Positions (in the index) of the items ``query`` matches, in result order."""
        key = _canonical(query)
        cached = index.cached(key)
        if cached is not None:
            return cached
        positions = _evaluate(index, query)
        index.remember(key, positions)
        return positions


# ---------------------------------------------------------------------- evaluation


def _evaluate(index: _Index, query: SearchQuery) -> np.ndarray:
    # Built before any item is looked at, so a bad filter fails even when nothing matches.
    predicate = _cql2_predicate(query.filter) if query.filter is not None else None
    geometries = _search_geometries(query)
    count = len(index.records)
    mask = np.ones(count, dtype=bool)
    if query.ids:
        wanted = np.zeros(count, dtype=bool)
        for item_id in query.ids:
            wanted[index.by_id.get(item_id, [])] = True
        mask &= wanted
    if query.collections:
        known = index.code_of_collection
        codes = [known[name] for name in query.collections if name in known]
        mask &= np.isin(index.collection_codes, codes)
    if query.datetime is not None:
        start, end = query.datetime
        if start is not None:
            mask &= index.end_us >= _to_us(start)
        if end is not None:
            mask &= index.start_us <= _to_us(end)
    for geometry in geometries:
        if not mask.any():
            break
        hits = np.zeros(count, dtype=bool)
        hits[index.tree.query(geometry, predicate="intersects")] = True
        mask &= hits
    positions: list[int] | np.ndarray = np.flatnonzero(mask)
    records = index.records
    if query.query and len(positions):
        conditions = query.query
        positions = [p for p in positions if _query_matches(records[p], conditions)]
    if predicate is not None and len(positions):
        positions = [p for p in positions if predicate(records[p])]
    if query.sortby and len(positions):
        positions = _sorted(records, list(positions), query)
    return np.asarray(positions, dtype=np.int64)


def _search_geometries(query: SearchQuery) -> list[shapely.Geometry]:
    geometries = []
    if query.bbox is not None:
        bbox = tuple(query.bbox)
        # A SearchQuery built by hand may still carry a 3D bbox (minx, miny, minz, maxx, ...).
        corners = (bbox[0], bbox[1], bbox[3], bbox[4]) if len(bbox) == 6 else bbox[:4]
        geometries.append(shapely.box(*corners))
    if query.intersects is not None:
        try:
            geometries.append(shapely.geometry.shape(query.intersects))
        except Exception as error:  # shapely raises several types for bad GeoJSON
            raise BadRequestError(f"intersects: invalid geometry ({error})") from None
    return geometries


def _value(record: _Record, name: str) -> Any:
    """Look a property up by name (``properties.`` prefix optional, dotted paths nest)."""
    name = name.removeprefix("properties.")
    if name == "id":
        return record.id
    if name == "collection":
        return record.collection
    properties = record.properties
    if name in properties:
        return properties[name]
    node: Any = properties
    for part in name.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def _operand_like(value: Any, other: Any) -> Any:
    """``other`` read as a number (or boolean) when the property ``value`` is one.

    pystac-client's string form of ``query`` (``["eo:cloud_cover<10"]``) sends every
    operand as a string (``{"lt": "10"}``): against a numeric property a numeric string is
    compared as the number it spells, ``"true"``/``"false"`` against a boolean one.
    """
    if not isinstance(other, str):
        return other
    if isinstance(value, bool):
        return {"true": True, "false": False}.get(other.strip().lower(), other)
    if isinstance(value, int | float):
        try:
            number = float(other)
        except ValueError:
            return other
        return number if math.isfinite(number) else other
    return other


def _comparable(value: Any, other: Any) -> tuple[Any, Any] | None:
    """Both values in one comparable form, or None when their types do not compare."""
    other = _operand_like(value, other)
    if isinstance(value, bool) or isinstance(other, bool):
        return (value, other) if isinstance(value, bool) and isinstance(other, bool) else None
    if isinstance(value, int | float) and isinstance(other, int | float):
        return value, other
    if isinstance(value, str) and isinstance(other, str):
        left, right = _timestamp_us(value), _timestamp_us(other)
        if left is not None and right is not None:
            return left, right
        return value, other
    return None


def _equal(value: Any, other: Any) -> bool:
    pair = _comparable(value, other)
    return pair is not None and pair[0] == pair[1]


def _ordered(test: Callable[[Any, Any], bool]) -> Callable[[Any, Any], bool]:
    def compare(value: Any, other: Any) -> bool:
        pair = _comparable(value, other)
        return pair is not None and test(*pair)

    return compare


def _contains(value: Any, other: Any) -> bool:
    if isinstance(value, str):
        return isinstance(other, str) and other in value
    if isinstance(value, list):
        return any(_equal(element, other) for element in value)
    return False


def _in(value: Any, others: list[Any]) -> bool:
    # An array property (``instruments``) matches when one of its elements is listed.
    if isinstance(value, list):
        return any(_equal(element, other) for element in value for other in others)
    return any(_equal(value, other) for other in others)


_QUERY_TESTS: dict[str, Callable[[Any, Any], bool]] = {
    "eq": _equal,
    "neq": lambda value, other: not _equal(value, other),
    "lt": _ordered(lambda a, b: a < b),
    "lte": _ordered(lambda a, b: a <= b),
    "gt": _ordered(lambda a, b: a > b),
    "gte": _ordered(lambda a, b: a >= b),
    "in": _in,
    "startsWith": lambda value, other: isinstance(value, str) and value.startswith(other),
    "endsWith": lambda value, other: isinstance(value, str) and value.endswith(other),
    "contains": _contains,
}


def _query_matches(record: _Record, conditions: Mapping[str, Mapping[str, Any]]) -> bool:
    for name, operations in conditions.items():
        value = _value(record, name)
        if value is None:
            return False
        for operation, operand in operations.items():
            test = _QUERY_TESTS.get(operation)
            if test is None:
                raise BadRequestError(f"query: unknown operator '{operation}' for '{name}'")
            if not test(value, operand):
                return False
    return True


def _referenced_properties(node: Any, found: set[str]) -> set[str]:
    if isinstance(node, Mapping):
        name = node.get("property")
        if isinstance(name, str):
            found.add(name)
        for child in node.values():
            _referenced_properties(child, found)
    elif isinstance(node, list):
        for child in node:
            _referenced_properties(child, found)
    return found


def _cql2_predicate(cql2_json: dict[str, Any]) -> Callable[[_Record], bool]:
    """Build a test of one record against a CQL2 filter, evaluated by the cql2 library.

    cql2 converts the whole dict it is given into its own types on every call, so it is
    handed a small view with only the properties the filter names (4x faster than the
    item without assets; the test suite checks both give the same answers).
    """
    try:
        expr = cql2.Expr(cql2_json)
    except Exception as error:  # cql2 raises a bare Exception
        raise BadRequestError(f"filter: not valid cql2-json ({error})") from None
    referenced = _referenced_properties(cql2_json, set())
    wanted: set[str] = set()
    for name in referenced:
        name = name.removeprefix("properties.")
        wanted.update((name, name.split(".")[0]))
    with_geometry = "geometry" in referenced
    with_bbox = "bbox" in referenced

    def matches(record: _Record) -> bool:
        properties = record.properties
        view: dict[str, Any] = {
            "type": "Feature",
            "id": record.id,
            "collection": record.collection,
            "properties": {name: properties[name] for name in wanted if name in properties},
        }
        if with_geometry:
            view["geometry"] = record.geometry
        if with_bbox:
            view["bbox"] = record.bbox
        try:
            return bool(expr.matches(view))
        except Exception:
            # cql2 cannot reduce a comparison with a missing property or mismatched types
            # to a boolean: like SQL's NULL, unknown never matches.
            return False

    return matches


def _sort_key(value: Any) -> tuple[int, Any] | None:
    """Rank then value, so mixed types still sort; None for a missing value."""
    if value is None:
        return None
    if isinstance(value, bool):
        return 0, value
    if isinstance(value, int | float):
        return None if value != value else (1, value)  # NaN sorts as missing
    if isinstance(value, str):
        instant = _timestamp_us(value)
        return (2, instant) if instant is not None else (3, value)
    return 4, json.dumps(value, sort_keys=True)


def _sorted(records: list[_Record], positions: list[int], query: SearchQuery) -> list[int]:
    # Stable sorts from the least to the most significant field; the positions start in
    # the default order, which so breaks every tie.
    for sort_field in reversed(query.sortby):
        keyed: list[tuple[tuple[int, Any], int]] = []
        missing: list[int] = []
        for position in positions:
            key = _sort_key(_value(records[position], sort_field.field))
            if key is None:
                missing.append(position)
            else:
                keyed.append((key, position))
        keyed.sort(key=lambda pair: pair[0], reverse=sort_field.direction == "desc")
        positions = [position for _, position in keyed] + missing
    return positions


# ---------------------------------------------------------------------- tokens


def _canonical(query: SearchQuery) -> str:
    """Write the search's parameters, page size and token aside, as canonical JSON."""
    body = search_to_body(query)
    body.pop("limit", None)
    body.pop("token", None)
    return json.dumps(body, sort_keys=True, separators=(",", ":"), default=str)


def _digest(query: SearchQuery) -> str:
    return hashlib.sha256(_canonical(query).encode()).hexdigest()[:16]


def _encode_token(offset: int, digest: str) -> str:
    return base64.urlsafe_b64encode(f"{offset}:{digest}".encode()).rstrip(b"=").decode()


def _decode_token(token: str, digest: str) -> int:
    try:
        text = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode("ascii")
        offset_text, token_digest = text.split(":")
        offset = int(offset_text)
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise BadRequestError("token: not a page token of this catalog") from None
    if offset < 0:
        raise BadRequestError("token: not a page token of this catalog")
    if token_digest != digest:
        raise BadRequestError(
            "token: it belongs to a different search; keep the other parameters as they "
            "were when the token was issued"
        )
    return offset


# ---------------------------------------------------------------------- items out


def _absolute_hrefs(assets: Any, base: str) -> None:
    if not isinstance(assets, dict):
        return
    for asset in assets.values():
        href = asset.get("href") if isinstance(asset, dict) else None
        if isinstance(href, str) and href and not _URL_SCHEME.match(href):
            if not os.path.isabs(href):
                asset["href"] = os.path.normpath(os.path.join(base, href))


def _path_digest(path: str) -> int:
    """64 bits of BLAKE2b of a path: what ``publishes`` keeps of each asset file."""
    data = path.encode("utf-8", "surrogatepass")
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "little")


def _asset_digests(index: _Index, collection_id: str) -> np.ndarray:
    """The sorted digests of the local files the collection's (and its items') assets name.

    One pass over the collection's item JSON (about 0.1 ms an item), made once per index.
    """
    documents: list[tuple[str, str]] = [
        (record.text, record.base) for record in index.records if record.collection == collection_id
    ]
    collection = index.collections.get(collection_id)
    if collection is not None:
        documents.append((collection.text, collection.base))
    digests = set()
    for text, base in documents:
        assets = json.loads(text).get("assets")
        _absolute_hrefs(assets, base)
        for asset in assets.values() if isinstance(assets, dict) else ():
            href = asset.get("href") if isinstance(asset, dict) else None
            if isinstance(href, str) and os.path.isabs(href):
                digests.add(_path_digest(os.path.normpath(href)))
    return np.array(sorted(digests), dtype=np.uint64)


def _to_item(record: _Record) -> pystac.Item:
    # json.loads of the stored text then from_dict(preserve_dict=False) costs ~0.45 ms for
    # an Earth-Search item; from_dict on a cached dict (which deep-copies) ~1 ms, and ~1.7
    # ms with migration. Migration is off anyway: items are served as they were written.
    data = json.loads(record.text)
    if record.collection is not None and not data.get("collection"):
        data["collection"] = record.collection
    _absolute_hrefs(data.get("assets"), record.base)
    return pystac.Item.from_dict(data, migrate=False, preserve_dict=False)


def _to_collection(record: _CollectionRecord) -> pystac.Collection:
    data = json.loads(record.text)
    _absolute_hrefs(data.get("assets"), record.base)
    return pystac.Collection.from_dict(data, migrate=False, preserve_dict=False)


# ---------------------------------------------------------------------- loading


def _read_json(path: Path) -> tuple[Any, str]:
    text = path.read_text(encoding="utf-8")
    try:
        return json.loads(text), text
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}: not valid JSON ({error})") from None


def _collection_files(root: Path) -> list[Path]:
    files = sorted(root.glob("collection*.json"))
    folder = root / "collections"
    if folder.is_dir():
        files += sorted(folder.glob("*.json")) + sorted(folder.glob("*/collection.json"))
    return files


def _read_collections(root: Path) -> dict[str, _CollectionRecord]:
    collections: dict[str, _CollectionRecord] = {}
    for path in _collection_files(root):
        data, text = _read_json(path)
        if not isinstance(data, dict) or data.get("type") != "Collection":
            raise ValueError(f"{path}: not a STAC Collection")
        collection_id = data.get("id")
        if not isinstance(collection_id, str) or not collection_id:
            raise ValueError(f"{path}: collection without an id")
        if collection_id in collections:
            logger.warning("%s: collection '%s' already read, ignored", path, collection_id)
            continue
        record = _CollectionRecord(id=collection_id, text=text, base=str(path.parent))
        try:
            _to_collection(record)
        except Exception as error:
            raise ValueError(f"{path}: not a readable STAC Collection ({error})") from None
        collections[collection_id] = record
    return collections


def _is_stac_item(data: Any) -> bool:
    return isinstance(data, dict) and data.get("type") == "Feature" and "stac_version" in data


def _item_documents(root: Path) -> Iterator[tuple[Path, dict[str, Any], str]]:
    """Every (file, item dict, item JSON text) in the folder, in reading order."""
    items = root / "items"
    for path in sorted(items.glob("*.json")) if items.is_dir() else []:
        data, text = _read_json(path)
        if isinstance(data, dict) and data.get("type") == "Feature":
            yield path, data, text
        elif isinstance(data, dict) and data.get("type") == "FeatureCollection":
            for feature in data.get("features") or []:
                yield path, feature, json.dumps(feature, separators=(",", ":"))
        else:
            raise ValueError(f"{path}: neither a STAC Item nor a FeatureCollection of Items")
    for folder in (root, items):
        for path in sorted(folder.glob("*.ndjson")) if folder.is_dir() else []:
            with path.open(encoding="utf-8") as lines:
                for number, line in enumerate(lines, start=1):
                    if not line.strip():
                        continue
                    try:
                        data = json.loads(line)
                    except json.JSONDecodeError as error:
                        raise ValueError(f"{path}:{number}: not valid JSON ({error})") from None
                    if not _is_stac_item(data):
                        raise ValueError(f"{path}:{number}: not a STAC Item")
                    yield path, data, line.strip()
        for path in sorted(folder.glob("*.geojson")) if folder.is_dir() else []:
            with path.open("rb") as head:
                if b'"stac_version"' not in head.read(_SNIFF_BYTES):
                    logger.debug("%s: no STAC items, skipped", path)
                    continue
            data, text = _read_json(path)
            features = data.get("features") if isinstance(data, dict) else None
            if isinstance(data, dict) and data.get("type") == "Feature":
                features = [data]
            for feature in features or []:
                if _is_stac_item(feature):
                    yield path, feature, json.dumps(feature, separators=(",", ":"))


def _instant(path: Path, item_id: str, name: str, value: Any) -> int | None:
    if value is None:
        return None
    try:
        if not isinstance(value, str):
            raise ValueError(f"{value!r} is not a string")
        return _to_us(parse_rfc3339(value))
    except ValueError as error:
        raise ValueError(f"{path}: item '{item_id}': bad {name} ({error})") from None


def _record(
    path: Path, data: Any, text: str, default_collection: str | None
) -> tuple[_Record, shapely.Geometry | None]:
    if not isinstance(data, dict) or data.get("type") != "Feature":
        raise ValueError(f"{path}: not a STAC Item")
    item_id = data.get("id")
    if not isinstance(item_id, str) or not item_id:
        raise ValueError(f"{path}: item without an id")
    properties = data.get("properties")
    if not isinstance(properties, dict):
        raise ValueError(f"{path}: item '{item_id}' has no properties object")
    moment = _instant(path, item_id, "datetime", properties.get("datetime"))
    first = _instant(path, item_id, "start_datetime", properties.get("start_datetime"))
    last = _instant(path, item_id, "end_datetime", properties.get("end_datetime"))
    if first is not None and last is not None:
        start, end = first, last
    elif moment is not None:
        start = end = moment
    else:
        # pystac (and the STAC spec) refuse such an item: better said now than per request.
        raise ValueError(
            f"{path}: item '{item_id}' has neither datetime nor start_datetime/end_datetime"
        )
    geometry = data.get("geometry")
    footprint = None
    if geometry is not None:
        try:
            footprint = shapely.geometry.shape(geometry)
        except Exception as error:  # shapely raises several types for bad GeoJSON
            raise ValueError(f"{path}: item '{item_id}': bad geometry ({error})") from None
    record = _Record(
        id=item_id,
        collection=data.get("collection") or default_collection,
        properties=properties,
        geometry=geometry,
        bbox=data.get("bbox"),
        text=text,
        base=str(path.parent),
        sort_us=moment if moment is not None else start,
        start_us=start,
        end_us=end,
    )
    return record, footprint


def _load(root: Path) -> _Index:
    collections = _read_collections(root)
    default_collection = next(iter(collections)) if len(collections) == 1 else None
    loaded: list[tuple[_Record, shapely.Geometry | None]] = []
    seen: dict[tuple[str | None, str], Path] = {}
    for path, data, text in _item_documents(root):
        record, footprint = _record(path, data, text, default_collection)
        key = (record.collection, record.id)
        if key in seen:
            logger.warning(
                "%s: item '%s' of collection '%s' already read from %s, ignored",
                path,
                record.id,
                record.collection,
                seen[key],
            )
            continue
        seen[key] = path
        loaded.append((record, footprint))

    # The default order (newest first, then id, collection) is the index order, so a
    # search without sortby needs no sorting and every sort breaks ties the same way.
    loaded.sort(
        key=lambda pair: (
            -pair[0].sort_us,
            pair[0].id,
            pair[0].collection or "",
        )
    )
    records = [record for record, _ in loaded]
    by_id: dict[str, list[int]] = {}
    code_of_collection: dict[str | None, int] = {}
    for position, record in enumerate(records):
        by_id.setdefault(record.id, []).append(position)
        code_of_collection.setdefault(record.collection, len(code_of_collection))
    return _Index(
        records=records,
        collections=collections,
        by_key={(r.collection, r.id): position for position, r in enumerate(records)},
        by_id=by_id,
        collection_codes=np.array(
            [code_of_collection[r.collection] for r in records], dtype=np.int32
        ),
        code_of_collection=code_of_collection,
        start_us=np.array([r.start_us for r in records], dtype=np.int64),
        end_us=np.array([r.end_us for r in records], dtype=np.int64),
        tree=STRtree([footprint for _, footprint in loaded]),
    )
