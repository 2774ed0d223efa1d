"""The batch job state machine: states, actions and which action is legal when.

::

    CREATED --analyse--> ANALYSING --> ANALYSIS_DONE --start--> PROCESSING --> DONE
       |                    ^  (start while CREATED/ANALYSING: processing     |-> PARTIAL
       +------start---------+   follows the analysis)                         |-> FAILED
                                                                              v
                              STOPPED <--stop-- PROCESSING; STOPPED --start--> PROCESSING
                              PARTIAL | FAILED --retry-failed--> PROCESSING

A transition is one conditional UPDATE in the job store (``state IN allowed``), so two
replicas or two clients racing on one job cannot both win.
"""

from __future__ import annotations

from enum import StrEnum

from app.errors import ConflictError

__all__ = ["ACTIONS", "FINAL", "RUNNING", "Action", "JobState", "conflict", "sources_of"]


class JobState(StrEnum):
    """Where a batch job is in its life."""

    CREATED = "CREATED"
    ANALYSING = "ANALYSING"
    ANALYSIS_DONE = "ANALYSIS_DONE"
    PROCESSING = "PROCESSING"
    DONE = "DONE"
    PARTIAL = "PARTIAL"
    FAILED = "FAILED"
    STOPPED = "STOPPED"


class Action(StrEnum):
    """What a client can ask of a job."""

    ANALYSE = "analyse"
    START = "start"
    STOP = "stop"
    RETRY_FAILED = "retry-failed"


#: States a job ends in (until retry-failed).
FINAL = frozenset({JobState.DONE, JobState.PARTIAL, JobState.FAILED})
#: States in which some replica is (or should be) working on the job.
RUNNING = frozenset({JobState.ANALYSING, JobState.PROCESSING})

#: Action -> states it is legal in.
ACTIONS: dict[Action, frozenset[JobState]] = {
    Action.ANALYSE: frozenset({JobState.CREATED}),
    Action.START: frozenset(
        {JobState.CREATED, JobState.ANALYSING, JobState.ANALYSIS_DONE, JobState.STOPPED}
    ),
    Action.STOP: frozenset({JobState.PROCESSING}),
    Action.RETRY_FAILED: frozenset({JobState.PARTIAL, JobState.FAILED}),
}


def sources_of(action: Action) -> frozenset[JobState]:
    """The states ``action`` is legal in."""
    return ACTIONS[action]


def conflict(job_id: str, action: Action | str, state: JobState | str) -> ConflictError:
    """The 409 for an action that is illegal in the job's current state."""
    allowed = ", ".join(sorted(ACTIONS[Action(action)])) if action in set(Action) else ""
    hint = f" (allowed in: {allowed})" if allowed else ""
    return ConflictError(f"cannot {action} job '{job_id}': its state is {state}{hint}")
