"""The job store: batch jobs and their work units in the service database (``app.db``).

``batch_jobs`` holds one row per job: its request, state, analysis, error and the lease of
the replica driving it (``owner``, ``heartbeat``). ``batch_units`` holds one row per work
unit: its size, state (``pending``, ``done``, ``error``), generation (bumped by
retry-failed) and, once finished, its counts and failures, copied from the unit's marker.

Every state change is a conditional UPDATE (``WHERE state IN (...)``, and ``owner = me``
for the driver's own changes), so replicas sharing a PostgreSQL database, or the CLI and
the service sharing an SQLite file, never both win a race. Database failures become
``UpstreamError`` (502) with the reason.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

from sqlalchemy import (
    Boolean,
    Column,
    DateTime,
    Engine,
    Float,
    ForeignKey,
    Integer,
    String,
    Table,
    Text,
    and_,
    case,
    delete,
    func,
    insert,
    or_,
    select,
    update,
)
from sqlalchemy.exc import SQLAlchemyError

from app.batch.states import Action, JobState, conflict, sources_of
from app.db import ensure_tables, metadata
from app.errors import NotFoundError, UpstreamError

__all__ = ["JobRecord", "JobStore", "Progress", "UnitRecord", "jobs_table", "units_table"]

T = TypeVar("T")

jobs_table = Table(
    "batch_jobs",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("kind", String(32), nullable=False),
    Column("state", String(16), nullable=False, index=True),
    Column("request", Text, nullable=False),
    Column("source", Text, nullable=False),
    Column("root", Text, nullable=False),
    Column("analysis", Text),
    Column("error", Text),
    Column("autostart", Boolean, nullable=False, default=False),
    Column("owner", String(200)),
    Column("heartbeat", Float),
    Column("run_started", Float),
    Column("run_base", Integer),
    Column("created_at", DateTime(timezone=True), nullable=False, index=True),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Column("started_at", DateTime(timezone=True)),
    Column("finished_at", DateTime(timezone=True)),
)

units_table = Table(
    "batch_units",
    metadata,
    Column("job_id", String(64), ForeignKey("batch_jobs.id", ondelete="CASCADE"), primary_key=True),
    Column("unit", Integer, primary_key=True),
    Column("features", Integer, nullable=False),
    Column("generation", Integer, nullable=False, default=0),
    Column("state", String(16), nullable=False, default="pending"),
    Column("done", Integer, nullable=False, default=0),
    Column("failed", Integer, nullable=False, default=0),
    Column("invalid", Integer, nullable=False, default=0),
    Column("failures", Text),
    Column("seconds", Float),
    Column("finished", Float),
)


def _utc(value: datetime | None) -> datetime | None:
    # SQLite hands back naive datetimes: they were written as UTC.
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value


def _loads(text: str | None) -> Any:
    return json.loads(text) if text else None


@dataclass
class JobRecord:
    """One job row."""

    id: str
    kind: str
    state: JobState
    request: dict[str, Any]
    source: dict[str, Any]
    root: str
    analysis: dict[str, Any] | None
    error: str | None
    autostart: bool
    owner: str | None
    heartbeat: float | None
    run_started: float | None
    run_base: int | None
    created_at: datetime
    updated_at: datetime
    started_at: datetime | None
    finished_at: datetime | None

    @classmethod
    def from_row(cls, row: Any) -> JobRecord:
        """Build from a ``batch_jobs`` row."""
        return cls(
            id=row.id,
            kind=row.kind,
            state=JobState(row.state),
            request=json.loads(row.request),
            source=json.loads(row.source),
            root=row.root,
            analysis=_loads(row.analysis),
            error=row.error,
            autostart=bool(row.autostart),
            owner=row.owner,
            heartbeat=row.heartbeat,
            run_started=row.run_started,
            run_base=row.run_base,
            created_at=_utc(row.created_at),  # type: ignore[arg-type]
            updated_at=_utc(row.updated_at),  # type: ignore[arg-type]
            started_at=_utc(row.started_at),
            finished_at=_utc(row.finished_at),
        )


@dataclass
class UnitRecord:
    """One work unit row."""

    unit: int
    features: int
    generation: int
    state: str
    failures: dict[str, Any] | None

    def retry_ids(self) -> tuple[int, ...] | None:
        """Feature ids a retry recomputes (None: the whole unit)."""
        if self.generation == 0 or not self.failures or "failed" not in self.failures:
            return None
        return tuple(int(f["id"]) for f in self.failures["failed"])


@dataclass
class Progress:
    """Counts of a job's units and features."""

    units: int = 0
    units_done: int = 0
    features: int = 0
    done: int = 0
    failed: int = 0
    invalid: int = 0

    @property
    def processed(self) -> int:
        """Features with a result (statistics or an error)."""
        return self.done + self.failed + self.invalid


class JobStore:
    """Batch jobs and units in a database (tables created on first use)."""

    def __init__(self, engine: Engine):
        self.engine = engine

    # ------------------------------------------------------------------------ plumbing

    def _ensure(self) -> None:
        ensure_tables(self.engine, [jobs_table, units_table])

    def _run(self, what: str, work: Callable[[Any], T]) -> T:
        self._ensure()
        try:
            with self.engine.begin() as conn:
                return work(conn)
        except SQLAlchemyError as error:
            raise UpstreamError(f"database: cannot {what} ({error})") from None

    # --------------------------------------------------------------------------- jobs

    def create(
        self,
        job_id: str,
        kind: str,
        request: dict[str, Any],
        source: dict[str, Any],
        root: str,
    ) -> JobRecord:
        """Insert a job in state CREATED."""
        now = datetime.now(UTC)
        values = {
            "id": job_id,
            "kind": kind,
            "state": JobState.CREATED.value,
            "request": json.dumps(request),
            "source": json.dumps(source),
            "root": root,
            "autostart": False,
            "created_at": now,
            "updated_at": now,
        }
        self._run("create job", lambda conn: conn.execute(insert(jobs_table).values(**values)))
        return self.get(job_id)

    def get(self, job_id: str) -> JobRecord:
        """One job; ``NotFoundError`` when unknown."""
        row = self._run(
            "read job",
            lambda conn: conn.execute(select(jobs_table).where(jobs_table.c.id == job_id)).first(),
        )
        if row is None:
            raise NotFoundError(f"batch job '{job_id}' not found")
        return JobRecord.from_row(row)

    def list(
        self, kind: str, limit: int = 100, offset: int = 0, state: str | None = None
    ) -> tuple[list[JobRecord], int]:
        """A page of jobs, newest first, and how many there are."""
        where = [jobs_table.c.kind == kind]
        if state:
            where.append(jobs_table.c.state == state)

        def work(conn: Any) -> tuple[list[Any], int]:
            total = conn.execute(select(func.count()).select_from(jobs_table).where(*where))
            rows = conn.execute(
                select(jobs_table)
                .where(*where)
                .order_by(jobs_table.c.created_at.desc(), jobs_table.c.id)
                .limit(limit)
                .offset(offset)
            ).all()
            return rows, int(total.scalar() or 0)

        rows, total = self._run("list jobs", work)
        return [JobRecord.from_row(row) for row in rows], total

    def act(self, job_id: str, action: Action, to: JobState, **values: Any) -> JobRecord:
        """Apply a client action: move to ``to`` if the job is in a state that allows it.

        Raises:
            NotFoundError: Unknown job.
            ConflictError: The action is illegal in the current state (409, naming it).

        """
        if not self.set_state(job_id, to, expect=sources_of(action), **values):
            raise conflict(job_id, action, self.get(job_id).state)
        return self.get(job_id)

    def set_state(
        self,
        job_id: str,
        to: JobState,
        *,
        expect: Iterable[JobState],
        held_by: str | None = None,
        **values: Any,
    ) -> bool:
        """Move a job to ``to`` if its state is in ``expect`` (and, given, its lease holder).

        Args:
            job_id: The job.
            to: The new state.
            expect: States the job may be in.
            held_by: Only if this owner holds the job's lease.
            **values: Other columns to set (``owner``, ``error``, ``analysis`` ...).

        Returns:
            Whether the job moved.

        """
        where = [jobs_table.c.id == job_id, jobs_table.c.state.in_([s.value for s in expect])]
        if held_by is not None:
            where.append(jobs_table.c.owner == held_by)
        values = {"state": to.value, "updated_at": datetime.now(UTC), **values}
        for key in ("analysis",):
            if key in values and not isinstance(values[key], str | None):
                values[key] = json.dumps(values[key])
        count = self._run(
            "update job",
            lambda conn: conn.execute(update(jobs_table).where(*where).values(**values)).rowcount,
        )
        return bool(count)

    def update(self, job_id: str, **values: Any) -> None:
        """Set columns of a job whatever its state (autostart ...)."""
        values["updated_at"] = datetime.now(UTC)
        self._run(
            "update job",
            lambda conn: conn.execute(
                update(jobs_table).where(jobs_table.c.id == job_id).values(**values)
            ),
        )

    def delete(self, job_id: str, states: Iterable[JobState]) -> bool:
        """Delete a job and its units if its state is in ``states``; whether it was."""
        where = [jobs_table.c.id == job_id, jobs_table.c.state.in_([s.value for s in states])]

        def work(conn: Any) -> int:
            count = conn.execute(delete(jobs_table).where(*where)).rowcount
            if count:
                # Not by ON DELETE CASCADE: SQLite enforces foreign keys only when asked to.
                conn.execute(delete(units_table).where(units_table.c.job_id == job_id))
            return count

        return bool(self._run("delete job", work))

    # ------------------------------------------------------------------------- leases

    def claim(
        self,
        job_id: str,
        owner: str,
        states: Iterable[JobState],
        stale_before: float,
        dead_owners: Sequence[str] = (),
    ) -> bool:
        """Take the lease of a job nobody holds, whose holder is silent or known dead."""
        free = [jobs_table.c.owner.is_(None), jobs_table.c.heartbeat < stale_before]
        if dead_owners:
            free.append(jobs_table.c.owner.in_(list(dead_owners)))
        where = and_(
            jobs_table.c.id == job_id,
            jobs_table.c.state.in_([s.value for s in states]),
            or_(*free, jobs_table.c.owner == owner),
        )
        count = self._run(
            "claim job",
            lambda conn: (
                conn.execute(
                    update(jobs_table).where(where).values(owner=owner, heartbeat=time.time())
                ).rowcount
            ),
        )
        return bool(count)

    def renew(self, job_id: str, owner: str, states: Iterable[JobState]) -> bool:
        """Renew our lease; False when the job left ``states`` or another replica took it."""
        count = self._run(
            "renew lease",
            lambda conn: (
                conn.execute(
                    update(jobs_table)
                    .where(
                        jobs_table.c.id == job_id,
                        jobs_table.c.owner == owner,
                        jobs_table.c.state.in_([s.value for s in states]),
                    )
                    .values(heartbeat=time.time())
                ).rowcount
            ),
        )
        return bool(count)

    def release(self, job_id: str, owner: str) -> None:
        """Give the lease up (graceful shutdown: another replica may take the job at once)."""
        self._run(
            "release lease",
            lambda conn: conn.execute(
                update(jobs_table)
                .where(jobs_table.c.id == job_id, jobs_table.c.owner == owner)
                .values(owner=None, heartbeat=None)
            ),
        )

    def running(self, states: Iterable[JobState]) -> list[JobRecord]:
        """Jobs in ``states`` (candidates for resuming)."""
        rows = self._run(
            "list running jobs",
            lambda conn: conn.execute(
                select(jobs_table).where(jobs_table.c.state.in_([s.value for s in states]))
            ).all(),
        )
        return [JobRecord.from_row(row) for row in rows]

    # -------------------------------------------------------------------------- units

    def save_units(self, job_id: str, sizes: Sequence[int]) -> None:
        """Replace the job's units with fresh pending ones of these sizes."""

        def work(conn: Any) -> None:
            conn.execute(delete(units_table).where(units_table.c.job_id == job_id))
            if sizes:
                conn.execute(
                    insert(units_table),
                    [
                        {
                            "job_id": job_id,
                            "unit": unit,
                            "features": size,
                            "generation": 0,
                            "state": "pending",
                            "done": 0,
                            "failed": 0,
                            "invalid": 0,
                        }
                        for unit, size in enumerate(sizes)
                    ],
                )

        self._run("save units", work)

    def units(self, job_id: str, pending_only: bool = False) -> list[UnitRecord]:
        """The job's units in order (only those not finished, if asked)."""
        where = [units_table.c.job_id == job_id]
        if pending_only:
            where.append(units_table.c.state == "pending")
        rows = self._run(
            "read units",
            lambda conn: conn.execute(
                select(
                    units_table.c.unit,
                    units_table.c.features,
                    units_table.c.generation,
                    units_table.c.state,
                    units_table.c.failures,
                )
                .where(*where)
                .order_by(units_table.c.unit)
            ).all(),
        )
        return [
            UnitRecord(r.unit, r.features, r.generation, r.state, _loads(r.failures)) for r in rows
        ]

    def record_unit(self, job_id: str, marker: dict[str, Any]) -> bool:
        """Record a finished unit from its marker (once: a duplicate is ignored)."""
        failures = {"failed": marker.get("failed", []), "invalid": marker.get("invalid", [])}
        count = self._run(
            "record unit",
            lambda conn: (
                conn.execute(
                    update(units_table)
                    .where(
                        units_table.c.job_id == job_id,
                        units_table.c.unit == int(marker["unit"]),
                        units_table.c.generation == int(marker["generation"]),
                        units_table.c.state == "pending",
                    )
                    .values(
                        state="done",
                        done=int(marker["done"]),
                        failed=len(failures["failed"]),
                        invalid=len(failures["invalid"]),
                        failures=json.dumps(failures),
                        seconds=marker.get("seconds"),
                        finished=time.time(),
                    )
                ).rowcount
            ),
        )
        return bool(count)

    def record_unit_error(self, job_id: str, unit: int, generation: int, message: str) -> None:
        """Record a unit whose task kept failing: all its features failed, none written."""
        self._run(
            "record unit",
            lambda conn: conn.execute(
                update(units_table)
                .where(
                    units_table.c.job_id == job_id,
                    units_table.c.unit == unit,
                    units_table.c.generation == generation,
                    units_table.c.state == "pending",
                )
                .values(
                    state="error",
                    done=0,
                    failed=units_table.c.features,
                    invalid=0,
                    failures=json.dumps({"error": message, "unit": unit}),
                    finished=time.time(),
                )
            ),
        )

    def retry_units(self, job_id: str) -> int:
        """Make units with failed features (or a failed task) pending again, next generation.

        Features that cannot be processed (invalid geometries) are not retried.
        """
        where = and_(
            units_table.c.job_id == job_id,
            or_(units_table.c.state == "error", units_table.c.failed > 0),
        )
        return int(
            self._run(
                "retry units",
                lambda conn: (
                    conn.execute(
                        update(units_table)
                        .where(where)
                        .values(state="pending", generation=units_table.c.generation + 1)
                    ).rowcount
                ),
            )
        )

    def progress(self, job_id: str) -> Progress:
        """Counts of units and features (failed/invalid as last recorded)."""
        finished = units_table.c.state != "pending"

        def total(column: Any) -> Any:
            return func.coalesce(func.sum(case((finished, column), else_=0)), 0)

        row = self._run(
            "read progress",
            lambda conn: conn.execute(
                select(
                    func.count(),
                    func.coalesce(func.sum(case((finished, 1), else_=0)), 0),
                    func.coalesce(func.sum(units_table.c.features), 0),
                    # Done features stay done while a retry recomputes their unit's others.
                    func.coalesce(func.sum(units_table.c.done), 0),
                    total(units_table.c.failed),
                    total(units_table.c.invalid),
                ).where(units_table.c.job_id == job_id)
            ).one(),
        )
        return Progress(*(int(v or 0) for v in row))

    def failures(self, job_id: str, limit: int = 1000) -> dict[str, list[dict[str, Any]]]:
        """Failed and invalid features (up to ``limit`` of each), and errored units."""
        rows = self._run(
            "read failures",
            lambda conn: conn.execute(
                select(units_table.c.failures)
                .where(
                    units_table.c.job_id == job_id,
                    or_(units_table.c.failed > 0, units_table.c.invalid > 0),
                )
                .order_by(units_table.c.unit)
            ).all(),
        )
        found: dict[str, list[dict[str, Any]]] = {"failed": [], "invalid": [], "units": []}
        for row in rows:
            entry = _loads(row.failures) or {}
            if "error" in entry:
                found["units"].append(entry)
            for kind in ("failed", "invalid"):
                found[kind].extend(entry.get(kind, [])[: limit - len(found[kind])])
        return found
