"""Where registered searches persist: the ``mosaic_searches`` table of the service database.

One row per search id: the canonical search body, the metadata of its latest
registration, when it was first and last registered. SQLite and PostgreSQL alike (see
``app.db``); JSON is stored as canonical text so both dialects hold the same bytes.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Column, DateTime, Engine, String, Table, Text, func, insert, select, update
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from app.db import ensure_tables, metadata
from app.errors import NotFoundError, UpstreamError
from app.mosaic.search import SearchRecord, canonical_json

__all__ = ["SearchStore", "searches_table"]

searches_table = Table(
    "mosaic_searches",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("search", Text, nullable=False),
    Column("metadata", Text, nullable=False, default="{}"),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False, index=True),
)


def _utc(value: datetime | None) -> datetime | None:
    # SQLite hands back naive datetimes: they were written as UTC.
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value


def _record(row: Any) -> SearchRecord:
    return SearchRecord(
        id=row.id,
        search=json.loads(row.search),
        metadata=json.loads(row.metadata or "{}"),
        created_at=_utc(row.created_at),
        updated_at=_utc(row.updated_at),
    )


class SearchStore:
    """Registered searches in a database (the table is created on first use).

    Database failures become ``UpstreamError`` (502) with the reason, never a bare 500.
    """

    def __init__(self, engine: Engine):
        self.engine = engine

    def _ensure(self) -> None:
        ensure_tables(self.engine, [searches_table])

    def save(self, search_id: str, search: dict[str, Any], meta: dict[str, Any]) -> SearchRecord:
        """Insert the search, or update the metadata of an existing one; return the row."""
        self._ensure()
        now = datetime.now(UTC)
        search_text, meta_text = canonical_json(search), canonical_json(meta)
        try:
            for attempt in range(3):
                try:
                    with self.engine.begin() as conn:
                        updated = conn.execute(
                            update(searches_table)
                            .where(searches_table.c.id == search_id)
                            .values(metadata=meta_text, updated_at=now)
                        ).rowcount
                        if not updated:
                            conn.execute(
                                insert(searches_table).values(
                                    id=search_id,
                                    search=search_text,
                                    metadata=meta_text,
                                    created_at=now,
                                    updated_at=now,
                                )
                            )
                    break
                except IntegrityError:
                    # Another replica inserted the same id meanwhile: update it instead.
                    if attempt == 2:
                        raise
        except SQLAlchemyError as error:
            raise UpstreamError(f"database: cannot save search ({error})") from None
        return self.get(search_id)

    def get(self, search_id: str) -> SearchRecord:
        """One search; ``NotFoundError`` when no search has that id."""
        self._ensure()
        try:
            with self.engine.connect() as conn:
                row = conn.execute(
                    select(searches_table).where(searches_table.c.id == search_id)
                ).first()
        except SQLAlchemyError as error:
            raise UpstreamError(f"database: cannot read search ({error})") from None
        if row is None:
            raise NotFoundError(f"search '{search_id}' not found; register it first")
        return _record(row)

    def list(self, limit: int = 10, offset: int = 0) -> tuple[list[SearchRecord], int]:
        """A page of searches, most recently registered first, and how many there are."""
        self._ensure()
        try:
            with self.engine.connect() as conn:
                total = conn.execute(select(func.count()).select_from(searches_table)).scalar()
                rows = conn.execute(
                    select(searches_table)
                    .order_by(searches_table.c.updated_at.desc(), searches_table.c.id)
                    .limit(limit)
                    .offset(offset)
                ).all()
        except SQLAlchemyError as error:
            raise UpstreamError(f"database: cannot list searches ({error})") from None
        return [_record(row) for row in rows], int(total or 0)
