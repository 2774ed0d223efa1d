"""The service's database: one SQLAlchemy Core engine, from ``settings.database_url``.

The database holds what must survive a restart and be shared by the replicas of the
service: registered mosaic searches (``app.mosaic.store``) and, later, batch jobs. It is

- an SQLite file, ``sqlite:///<data_dir>/terratiler.db``, when ``database_url`` is unset
  (one machine; several worker processes share it through WAL journaling and a busy
  timeout);
- PostgreSQL when ``database_url`` names it: ``postgresql+psycopg://user:pass@host/db``
  (``postgresql://`` and ``postgres://`` are read as psycopg 3 URLs too), so that several
  replicas see the same rows.

Tables are SQLAlchemy Core ``Table`` objects on the shared ``metadata`` below; each engine
module (``app.mosaic.store``, the batch job store ...) declares its own tables on it and
calls ``create_tables(engine, [its tables])``, which is idempotent. No ORM: rows are
plain mappings, so the layer stays small and the same SQL runs on both dialects.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, MetaData, Table, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, SQLAlchemyError

from app.errors import BadRequestError, UpstreamError
from app.settings import Settings

__all__ = [
    "DEFAULT_DATABASE_NAME",
    "create_tables",
    "database_url",
    "engine_from_settings",
    "engine_from_url",
    "ensure_tables",
    "metadata",
]

#: The SQLite file in the data folder when no ``database_url`` is configured.
DEFAULT_DATABASE_NAME = "terratiler.db"

#: Every table of the service is declared on this metadata.
metadata = MetaData()

# SQLite: how long a writer waits for another process's lock before failing (ms).
SQLITE_BUSY_TIMEOUT_MS = 30_000

_create_lock = threading.Lock()

# Tables already created (or found) per engine, so stores check the schema once.
_created: weakref.WeakKeyDictionary[Engine, set[str]] = weakref.WeakKeyDictionary()


def database_url(settings: Settings) -> str:
    """The SQLAlchemy URL of the service's database.

    Args:
        settings: the service settings; ``database_url`` (optional) and ``data_dir``.

    Returns:
        ``settings.database_url`` with PostgreSQL URLs pointed at the psycopg 3 driver, or
        ``sqlite:///<data_dir>/terratiler.db`` (absolute path) when it is unset.

    """
    url = settings.database_url
    if not url:
        data_dir = Path(settings.data_dir).resolve()
        return f"sqlite:///{data_dir / DEFAULT_DATABASE_NAME}"
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


def engine_from_url(url: str, **kwargs: Any) -> Engine:
    """An engine for ``url`` (SQLite: folder created, WAL, busy timeout, foreign keys).

    Raises:
        BadRequestError: the URL does not parse or names an unknown dialect/driver.

    """
    try:
        parsed = make_url(url)
    except ArgumentError as error:
        raise BadRequestError(f"database_url: {error}") from None
    if parsed.get_backend_name() == "sqlite":
        database = parsed.database
        if database and database != ":memory:" and not database.startswith("file:"):
            Path(database).parent.mkdir(parents=True, exist_ok=True)
        kwargs.setdefault("connect_args", {}).setdefault("check_same_thread", False)
        engine = create_engine(parsed, **kwargs)
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    kwargs.setdefault("pool_pre_ping", True)
    try:
        return create_engine(parsed, **kwargs)
    except Exception as error:  # unknown dialect or missing driver
        raise BadRequestError(f"database_url: cannot use {parsed.drivername}: {error}") from None


def engine_from_settings(settings: Settings, **kwargs: Any) -> Engine:
    """The engine of ``database_url(settings)``; see ``engine_from_url``."""
    return engine_from_url(database_url(settings), **kwargs)


def create_tables(engine: Engine, tables: Sequence[Table] | None = None) -> None:
    """Create ``tables`` (default: every table on ``metadata``) when missing.

    Idempotent, and safe when several processes start at once: a table another process
    created meanwhile is not an error.
    """
    with _create_lock:
        try:
            metadata.create_all(engine, tables=list(tables) if tables is not None else None)
        except Exception:
            # Another process may have won the race between "exists?" and "CREATE":
            # checking again (then failing for real) is enough.
            metadata.create_all(engine, tables=list(tables) if tables is not None else None)


def ensure_tables(engine: Engine, tables: Sequence[Table]) -> None:
    """Create ``tables`` on first use of ``engine``; later calls cost a set lookup.

    Raises:
        UpstreamError: The database cannot be reached or refuses the schema (502).
    """
    names = {table.name for table in tables}
    if names <= _created.get(engine, set()):
        return
    try:
        create_tables(engine, tables)
    except SQLAlchemyError as error:
        raise UpstreamError(f"database: cannot create tables ({error})") from None
    with _create_lock:
        _created.setdefault(engine, set()).update(names)


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA foreign_keys = ON")
        cursor.execute("PRAGMA journal_mode = WAL")
        cursor.execute("PRAGMA synchronous = NORMAL")
    finally:
        cursor.close()
