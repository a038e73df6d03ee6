"""Work-order states and the one table of transitions between them.

Every state change the store makes is checked here (``check_transition``)
before it is written, and written with a WHERE on the state it was checked
from, so two processes cannot both move one order.

The table (DESIGN.md, "The database is the spine")::

    (new)         -> RECEIVED | SKIPPED | MALFORMED
    RECEIVED      -> CLAIMED
    CLAIMED       -> RESULT_READY
    CLAIMED       -> RECEIVED        only while a retry is left (attempts)
    RESULT_READY  -> SUBMITTED
    SUBMITTED     -> COMPLETED | FAILED | RESULT_READY
    RECEIVED, CLAIMED, RESULT_READY, SUBMITTED -> ORPHANED
    ORPHANED      -> RECEIVED        the result already made is kept
    any open state -> CANCELLED

A MALFORMED log has no order key to file it under, so the store keeps those
in their own table (``malformed_logs``) instead of as work-order rows.
"""

from __future__ import annotations

import enum

from enclave_bridge.errors import InvalidTransition


class State(enum.StrEnum):
    """Where a work order is in its life; the value is what the database holds."""

    RECEIVED = "RECEIVED"
    SKIPPED = "SKIPPED"
    MALFORMED = "MALFORMED"
    CLAIMED = "CLAIMED"
    RESULT_READY = "RESULT_READY"
    SUBMITTED = "SUBMITTED"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    ORPHANED = "ORPHANED"
    CANCELLED = "CANCELLED"


# A pool process may die holding an order once; the order is then retried
# once, and a second death is final (the pool must sign an error result).
MAX_ATTEMPTS = 2

# States a brand-new order may enter (the "(new)" row of the table).
INITIAL: frozenset[State] = frozenset({State.RECEIVED, State.SKIPPED, State.MALFORMED})

# Orders that still wait for something; the requester may cancel these.
OPEN: frozenset[State] = frozenset(
    {
        State.RECEIVED,
        State.CLAIMED,
        State.RESULT_READY,
        State.SUBMITTED,
        State.ORPHANED,
    }
)

# Nothing moves an order out of these.
FINAL: frozenset[State] = frozenset(
    {
        State.SKIPPED,
        State.MALFORMED,
        State.COMPLETED,
        State.FAILED,
        State.CANCELLED,
    }
)

_SETTLED = frozenset({State.COMPLETED, State.FAILED, State.CANCELLED})

TRANSITIONS: dict[State, frozenset[State]] = {
    State.RECEIVED: frozenset({State.CLAIMED, State.ORPHANED}) | _SETTLED,
    State.CLAIMED: frozenset({State.RESULT_READY, State.RECEIVED, State.ORPHANED})
    | _SETTLED,
    State.RESULT_READY: frozenset({State.SUBMITTED, State.ORPHANED}) | _SETTLED,
    State.SUBMITTED: frozenset({State.RESULT_READY, State.ORPHANED}) | _SETTLED,
    State.ORPHANED: frozenset({State.RECEIVED}) | _SETTLED,
    State.SKIPPED: frozenset(),
    State.MALFORMED: frozenset(),
    # Only a reorg deeper than the confirmation depth reopens a settled order:
    # its completion left the chain (RESULT_READY, the result is kept and
    # sent again), or its submit did (ORPHANED).
    State.COMPLETED: frozenset({State.RESULT_READY, State.ORPHANED}),
    State.FAILED: frozenset({State.RESULT_READY, State.ORPHANED}),
    State.CANCELLED: frozenset(),
}


def is_allowed(source: State | None, target: State, *, attempts: int = 0) -> bool:
    """Whether ``source -> target`` is in the table; ``None`` means a new order.

    ``attempts`` is how many times a pool process has claimed the order; it
    only matters for CLAIMED -> RECEIVED, which is allowed while a retry is
    left.
    """
    if source is None:
        return target in INITIAL
    if target not in TRANSITIONS[source]:
        return False
    if source is State.CLAIMED and target is State.RECEIVED:
        return attempts < MAX_ATTEMPTS

    return True


def check_transition(source: State | None, target: State, *, attempts: int = 0) -> None:
    """Raise ``InvalidTransition`` unless ``source -> target`` is allowed."""
    if is_allowed(source, target, attempts=attempts):
        return
    origin = "(new)" if source is None else source.value
    if source is State.CLAIMED and target is State.RECEIVED:
        raise InvalidTransition(
            f"work order was claimed {attempts} times and has no retry left; "
            "the pool must sign an error result for it (CLAIMED -> RESULT_READY)"
        )
    raise InvalidTransition(
        f"work order cannot move {origin} -> {target.value}: the state table "
        "does not allow it (another process may have moved it first)"
    )


def sources_of(target: State) -> frozenset[State]:
    """Every state from which the table allows a move to ``target``."""
    return frozenset(
        source for source, targets in TRANSITIONS.items() if target in targets
    )
