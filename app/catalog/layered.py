"""The service's catalog plus the result collections of batch processing jobs.

A processing job with ``createCollection`` writes a STAC collection beside its tiles
(``app.batch.processing.results``) and registers it here: one row of the
``result_collections`` table of the service database (``register_collection``). The
service's catalog is a ``LayeredCatalog``: its base catalog (the configured folder or STAC
API) and, above it, every registered collection read from its folder as
``app.catalog.local.LocalCatalog`` reads one (``collection.json`` + ``items/*.json``). So
``/collections/{id}/items/...``, tiles, ``/search``, ``/searches`` and ``/statistics``
serve the results right away, in every replica and Dask worker (they share the database).

Freshness: the registry is read (one small SELECT) when a request comes and the last
read is older than ``refresh_seconds`` (``result_collections_refresh_seconds``), so a
collection registered by another process or replica is served within that time; the
process that registers it calls ``LayeredCatalog.refresh`` to serve it at once. Reading
the registry on every request instead would cost a database round trip per tile. A
collection whose folder cannot be read is left out (logged) and tried again when its row
changes (registered again).
"""

from __future__ import annotations

import json
import logging
import posixpath
import re
import shutil
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pystac
from sqlalchemy import Column, DateTime, Engine, String, Table, Text, delete, insert, select, update
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from app.catalog.base import Catalog, SearchPage, SearchQuery
from app.catalog.local import LocalCatalog
from app.db import engine_from_url, ensure_tables, metadata
from app.errors import (
    BadRequestError,
    ConflictError,
    ForbiddenError,
    NotFoundError,
    UpstreamError,
)
from app.settings import Settings

__all__ = [
    "LayeredCatalog",
    "check_collection_id",
    "check_readable_output",
    "layered_catalog",
    "register_collection",
    "registered_collections",
    "result_collections_table",
    "unregister_collection",
]

logger = logging.getLogger(__name__)

result_collections_table = Table(
    "result_collections",
    metadata,
    Column("id", String(128), primary_key=True),
    # The results folder (holding collection.json and items/): a path or s3:// URL.
    Column("href", Text, nullable=False),
    Column("created", DateTime(timezone=True), nullable=False),
)

# Collection ids: path segments of the API (/collections/{id}), so URL-safe.
_COLLECTION_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
# Page tokens of a search over several layers: "L<layer>.<that layer's token>".
_TOKEN = re.compile(r"^L(\d+)\.(.*)$", re.DOTALL)


# ---------------------------------------------------------------------- the registry


@dataclass(frozen=True)
class RegisteredCollection:
    """One row of the registry."""

    id: str
    href: str
    created: datetime


def register_collection(engine: Engine, collection_id: str, href: str) -> None:
    """Register (or re-register: its files changed) the result collection at ``href``.

    Args:
        engine: The service database.
        collection_id: The collection's id (its ``collection.json`` must say the same).
        href: The results folder (holding ``collection.json``), a path or ``s3://`` URL.

    Raises:
        BadRequestError: The id is not a valid collection id (naming ``createCollection``).
        ConflictError: The id holds other results (another job's): never taken over, even
            when two jobs asked for one id and both passed ``check_collection_id``.
        UpstreamError: The database fails.

    """
    _check_id_format(collection_id)
    href = _folder(href)
    ensure_tables(engine, [result_collections_table])
    table = result_collections_table
    try:
        now = datetime.now(UTC)
        try:
            with engine.begin() as conn:
                # Only the same folder is re-registered (its files changed).
                updated = conn.execute(
                    update(table)
                    .where(table.c.id == collection_id, table.c.href == href)
                    .values(created=now)
                ).rowcount
                if not updated:
                    conn.execute(insert(table).values(id=collection_id, href=href, created=now))
            return
        except IntegrityError:
            pass  # the id is registered for another folder (maybe just now, elsewhere)
        holder = next((r.href for r in registered_collections(engine) if r.id == collection_id), "")
        if holder == href:
            return
        raise ConflictError(
            f"createCollection: '{collection_id}' already holds the results at {holder}; "
            "these results are not registered (choose another id)"
        )
    except SQLAlchemyError as error:
        raise UpstreamError(f"database: cannot register collection ({error})") from None


def unregister_collection(engine: Engine, collection_id: str) -> bool:
    """Forget a result collection (its files stay). Returns whether it was registered."""
    ensure_tables(engine, [result_collections_table])
    table = result_collections_table
    try:
        with engine.begin() as conn:
            removed = conn.execute(delete(table).where(table.c.id == collection_id)).rowcount
    except SQLAlchemyError as error:
        raise UpstreamError(f"database: cannot unregister collection ({error})") from None
    return bool(removed)


def registered_collections(engine: Engine) -> list[RegisteredCollection]:
    """Every registered result collection, by id."""
    ensure_tables(engine, [result_collections_table])
    table = result_collections_table
    try:
        with engine.connect() as conn:
            rows = conn.execute(select(table).order_by(table.c.id)).all()
    except SQLAlchemyError as error:
        raise UpstreamError(f"database: cannot read result collections ({error})") from None
    return [RegisteredCollection(row.id, row.href, _utc(row.created)) for row in rows]


def check_collection_id(
    catalog: Catalog, collection_id: str, engine: Engine | None = None, href: str | None = None
) -> None:
    """Refuse a ``createCollection`` id that is invalid or taken, before any work.

    Args:
        catalog: The service's catalog (a ``LayeredCatalog``: its base is asked).
        collection_id: The id the job would register.
        engine: The service database: an id registered for another folder is taken too.
        href: The job's results folder (re-registering the same folder is fine).

    Raises:
        BadRequestError: Naming ``createCollection``: a malformed id, an id of the base
            catalog's collections, or one registered for other results.

    """
    _check_id_format(collection_id)
    base = catalog.base if isinstance(catalog, LayeredCatalog) else catalog
    try:
        base.get_collection(collection_id)
    except NotFoundError:
        pass
    else:
        raise BadRequestError(
            f"createCollection: '{collection_id}' is a collection of the service's catalog; "
            "choose another id"
        )
    if engine is None:
        return
    for row in registered_collections(engine):
        if row.id == collection_id and (href is None or row.href != _folder(href)):
            raise BadRequestError(
                f"createCollection: '{collection_id}' already holds the results at "
                f"{row.href}; choose another id"
            )


def check_readable_output(url: str, settings: Settings) -> None:
    """Refuse ``createCollection`` for outputs the service could not read back.

    The tiler reads only sources under ``settings.allowed_prefixes``: a collection of
    files outside it would list items whose every tile is a 403.

    Raises:
        BadRequestError: Naming ``createCollection`` and the allow-list.

    """
    from app.security import check_source

    probe = url.rstrip("/") + "/probe.tif"
    try:
        check_source(probe, settings.allowed_prefixes, allow_private=settings.allow_private_sources)
    except (ForbiddenError, ValueError):
        raise BadRequestError(
            f"createCollection: the service cannot read outputs at {url}: it reads sources "
            "under allowed_sources only (TERRATILER_ALLOWED_SOURCES); deliver the outputs "
            "there or leave createCollection out"
        ) from None


# ---------------------------------------------------------------------- the catalog


@dataclass
class _Layer:
    """One registered collection, loaded."""

    row: RegisteredCollection
    catalog: LocalCatalog
    temporary: Path | None = None  # a local copy of remote results, removed when replaced


class LayeredCatalog:
    """The base catalog plus every registered result collection (``Catalog`` protocol).

    Collection ids of the results shadow the base's (registration refuses such ids:
    ``check_collection_id``). ``search`` and ``search_page`` over several layers give the
    base's matches first, then each result collection's (each in its own order; a
    ``sortby`` orders within a layer); pages do not span layers (a page may be shorter
    than ``limit``). A search naming only collections of one layer is that layer's own.
    """

    def __init__(
        self,
        base: Catalog,
        engine: Engine,
        *,
        refresh_seconds: float = 5.0,
        storage_options: Mapping[str, Any] | None = None,
    ) -> None:
        """Layer the registry of ``engine`` over ``base``.

        Args:
            base: The service's own catalog.
            engine: The service database (the ``result_collections`` table).
            refresh_seconds: At most how often the registry is read.
            storage_options: fsspec options for results on ``s3://``.

        """
        self.base = base
        self.engine = engine
        self.refresh_seconds = refresh_seconds
        self.storage_options = dict(storage_options or {})
        self._layers: dict[str, _Layer] = {}
        self._checked = float("-inf")
        self._lock = threading.Lock()

    @property
    def conformance(self) -> Any:
        """The base's conformance classes (a STAC API base declares its own)."""
        return getattr(self.base, "conformance", None)

    # ------------------------------------------------------------------ protocol

    def search(self, query: SearchQuery, max_items: int | None = None) -> Iterator[pystac.Item]:
        """Matches of every concerned layer: the base's, then each result collection's."""
        layers = self._concerned(query)
        if len(layers) == 1:
            catalog, narrowed = layers[0]
            return catalog.search(narrowed, max_items)
        # Searches run now (a bad query raises here), items are built as consumed.
        started = [catalog.search(narrowed, max_items) for catalog, narrowed in layers]
        return _chain(started, max_items)

    def search_page(self, query: SearchQuery) -> SearchPage:
        """One page of one layer; the token says which layer and where in it."""
        layers = self._concerned(query)
        if len(layers) == 1:
            catalog, narrowed = layers[0]
            return catalog.search_page(narrowed)
        position, token = 0, query.token
        match = _TOKEN.match(query.token or "")
        if match:
            position, token = int(match.group(1)), match.group(2) or None
            if position >= len(layers):
                raise BadRequestError("token: not a token of this search")
        catalog, narrowed = layers[position]
        page = catalog.search_page(replace(narrowed, token=token))
        if page.next_token is not None:
            next_token: str | None = f"L{position}.{page.next_token}"
        else:
            next_token = f"L{position + 1}." if position + 1 < len(layers) else None
        matched = page.number_matched
        for other, (other_catalog, other_query) in enumerate(layers):
            if other == position or matched is None:
                continue
            # Counting another layer is cheap only for result collections (in memory).
            if isinstance(other_catalog, LocalCatalog):
                counted = other_catalog.search_page(replace(other_query, token=None, limit=1))
                matched = (
                    None if counted.number_matched is None else matched + counted.number_matched
                )
            else:
                matched = None
        return SearchPage(items=page.items, next_token=next_token, number_matched=matched)

    def get_item(self, collection_id: str, item_id: str) -> pystac.Item:
        """One item, from its result collection or else the base."""
        layer = self._layer(collection_id)
        if layer is not None:
            return layer.catalog.get_item(collection_id, item_id)
        return self.base.get_item(collection_id, item_id)

    def collections(self) -> list[pystac.Collection]:
        """The base's collections, then the result collections by id."""
        layers = self._current()
        collections = self.base.collections()
        shadowed = {collection.id for collection in collections} & set(layers)
        collections = [c for c in collections if c.id not in shadowed]
        return collections + [layers[key].catalog.get_collection(key) for key in sorted(layers)]

    def get_collection(self, collection_id: str) -> pystac.Collection:
        """One collection, a result collection or else the base's."""
        layer = self._layer(collection_id)
        if layer is not None:
            return layer.catalog.get_collection(collection_id)
        return self.base.get_collection(collection_id)

    def data_folder(self, collection_id: str) -> Path | None:
        """The local folder a collection's files are served from (``app.catalog.files``).

        A result collection's results folder when it is local (results on ``s3://`` are
        read from a temporary copy of their STAC files: their assets are URLs already),
        else the base's answer when it has one.
        """
        layer = self._layer(collection_id)
        if layer is not None:
            return None if layer.temporary is not None else layer.catalog.data_folder(collection_id)
        method = getattr(self.base, "data_folder", None)
        return method(collection_id) if method is not None else None

    def publishes(self, collection_id: str, path: str) -> bool:
        """Whether ``path`` is an asset file of the collection (``LocalCatalog.publishes``)."""
        layer = self._layer(collection_id)
        if layer is not None:
            return layer.temporary is None and layer.catalog.publishes(collection_id, path)
        method = getattr(self.base, "publishes", None)
        return bool(method(collection_id, path)) if method is not None else False

    # ------------------------------------------------------------------ layers

    def refresh(self) -> None:
        """Read the registry now (e.g. right after registering a collection)."""
        self._reload(force=True)

    def _concerned(self, query: SearchQuery) -> list[tuple[Catalog, SearchQuery]]:
        """(catalog, query narrowed to it) of each layer the query may match."""
        layers = self._current()
        if query.collections:
            results = [name for name in query.collections if name in layers]
            rest = [name for name in query.collections if name not in layers]
            concerned: list[tuple[Catalog, SearchQuery]] = []
            if rest or not results:
                concerned.append((self.base, replace(query, collections=rest or None)))
            concerned += [
                (layers[name].catalog, replace(query, collections=[name]))
                for name in sorted(set(results))
            ]
            return concerned
        return [(self.base, query)] + [
            (layers[name].catalog, replace(query, collections=[name])) for name in sorted(layers)
        ]

    def _layer(self, collection_id: str) -> _Layer | None:
        return self._current().get(collection_id)

    def _current(self) -> dict[str, _Layer]:
        if time.monotonic() - self._checked >= self.refresh_seconds:
            self._reload()
        return dict(self._layers)

    def _reload(self, force: bool = False) -> None:
        with self._lock:
            if not force and time.monotonic() - self._checked < self.refresh_seconds:
                return
            try:
                rows = registered_collections(self.engine)
            except UpstreamError as error:
                # The base catalog keeps working without the database; results come back
                # with it.
                logger.warning("result collections: cannot read the registry (%s)", error)
                self._checked = time.monotonic()
                return
            self._checked = time.monotonic()
            wanted = {row.id: row for row in rows}
            layers: dict[str, _Layer] = {}
            for key, row in wanted.items():
                current = self._layers.get(key)
                if current is not None and current.row == row:
                    layers[key] = current
                    continue
                loaded = self._load(row)
                if loaded is not None:
                    layers[key] = loaded
            for key, layer in self._layers.items():
                if layers.get(key) is not layer and layer.temporary is not None:
                    shutil.rmtree(layer.temporary, ignore_errors=True)
            self._layers = layers

    def _load(self, row: RegisteredCollection) -> _Layer | None:
        temporary = None
        try:
            if "://" in row.href:
                temporary = _copy_remote(row.href, self.storage_options)
                catalog = LocalCatalog(temporary)
            else:
                catalog = LocalCatalog(row.href)
            catalog.get_collection(row.id)
        except (OSError, ValueError, NotFoundError) as error:
            if temporary is not None:
                shutil.rmtree(temporary, ignore_errors=True)
            logger.warning("result collection '%s' at %s left out: %s", row.id, row.href, error)
            return None
        return _Layer(row=row, catalog=catalog, temporary=temporary)


def layered_catalog(
    open_base: Any,
    database_url: str,
    refresh_seconds: float,
    storage_options: Mapping[str, Any] | None = None,
) -> LayeredCatalog:
    """Build a ``LayeredCatalog`` from picklable parts (a Dask worker builds its own).

    Args:
        open_base: Builds the base catalog (a picklable callable of no arguments).
        database_url: The service database's SQLAlchemy URL.
        refresh_seconds: At most how often the registry is read.
        storage_options: fsspec options for results on ``s3://``.

    """
    return LayeredCatalog(
        open_base(),
        engine_from_url(database_url),
        refresh_seconds=refresh_seconds,
        storage_options=storage_options,
    )


# ---------------------------------------------------------------------- helpers


def _check_id_format(collection_id: str) -> None:
    if not isinstance(collection_id, str) or not _COLLECTION_ID.match(collection_id):
        raise BadRequestError(
            f"createCollection: {collection_id!r} is not a collection id (letters, digits, "
            "'.', '_' and '-', at most 128 characters, starting with a letter or digit)"
        )


def _folder(href: str) -> str:
    href = href.rstrip("/")
    return href.removesuffix("/collection.json")


def _utc(value: datetime) -> datetime:
    # SQLite hands back naive datetimes: they were written as UTC.
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value


def _chain(iterators: list[Iterator[pystac.Item]], max_items: int | None) -> Iterator[pystac.Item]:
    count = 0
    for iterator in iterators:
        for item in iterator:
            if max_items is not None and count >= max_items:
                return
            count += 1
            yield item


def _copy_remote(href: str, storage_options: Mapping[str, Any]) -> Path:
    """A local copy of remote results' STAC files, asset hrefs made absolute.

    ``LocalCatalog`` reads folders; the COGs stay where they are (read by URL).
    """
    from app.batch.storage import Storage, join

    storage = Storage.for_url(href, storage_options)
    folder = Path(tempfile.mkdtemp(prefix="terratiler-results-"))
    try:
        (folder / "collection.json").write_bytes(storage.read(join(href, "collection.json")))
        (folder / "items").mkdir()
        items_url = join(href, "items")
        for name in sorted(storage.names(items_url)):
            if not name.endswith(".json"):
                continue
            item = json.loads(storage.read(join(items_url, name)))
            for asset in (item.get("assets") or {}).values():
                target = asset.get("href", "")
                if target and "://" not in target and not target.startswith("/"):
                    asset["href"] = _absolute(items_url, target)
            (folder / "items" / name).write_text(json.dumps(item))
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    return folder


def _absolute(base_url: str, relative: str) -> str:
    scheme, rest = base_url.split("://", 1)
    return f"{scheme}://{posixpath.normpath(posixpath.join(rest, relative))}"
