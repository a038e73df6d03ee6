"""The state table in connector.states, checked against an independent copy."""

from __future__ import annotations

import pytest

from connector.states import MAX_ATTEMPTS, State, check_transition, is_allowed
from enclave_bridge.errors import InvalidTransition

# Written out by hand from DESIGN.md's table, NOT derived from the code, so a
# wrong entry in connector.states shows up here. None is "(new)".
EXPECTED: set[tuple[str | None, str]] = {
    (None, "RECEIVED"),
    (None, "SKIPPED"),
    (None, "MALFORMED"),
    ("RECEIVED", "CLAIMED"),
    ("CLAIMED", "RESULT_READY"),
    ("CLAIMED", "RECEIVED"),
    ("RESULT_READY", "SUBMITTED"),
    ("SUBMITTED", "COMPLETED"),
    ("SUBMITTED", "FAILED"),
    ("SUBMITTED", "RESULT_READY"),
    ("RECEIVED", "ORPHANED"),
    ("CLAIMED", "ORPHANED"),
    ("RESULT_READY", "ORPHANED"),
    ("SUBMITTED", "ORPHANED"),
    ("ORPHANED", "RECEIVED"),
    ("RECEIVED", "CANCELLED"),
    ("CLAIMED", "CANCELLED"),
    ("RESULT_READY", "CANCELLED"),
    ("SUBMITTED", "CANCELLED"),
    ("ORPHANED", "CANCELLED"),
    # A completion confirmed on-chain closes the order whatever its local
    # state: sent by an earlier run, re-mined after a reorg, or by another
    # relayer. Otherwise such an order would sit open forever.
    ("RECEIVED", "COMPLETED"),
    ("CLAIMED", "COMPLETED"),
    ("RESULT_READY", "COMPLETED"),
    ("ORPHANED", "COMPLETED"),
    ("RECEIVED", "FAILED"),
    ("CLAIMED", "FAILED"),
    ("RESULT_READY", "FAILED"),
    ("ORPHANED", "FAILED"),
    # A reorg deeper than the confirmation depth reopens a settled order.
    ("COMPLETED", "RESULT_READY"),
    ("FAILED", "RESULT_READY"),
    ("COMPLETED", "ORPHANED"),
    ("FAILED", "ORPHANED"),
}
ALL_NAMES = [
    "RECEIVED",
    "SKIPPED",
    "MALFORMED",
    "CLAIMED",
    "RESULT_READY",
    "SUBMITTED",
    "COMPLETED",
    "FAILED",
    "ORPHANED",
    "CANCELLED",
]
PAIRS = [(s, t) for s in [None, *ALL_NAMES] for t in ALL_NAMES]


def test_state_names_are_the_designed_ten() -> None:
    """The enum holds exactly DESIGN.md's ten states, stored by name."""
    assert sorted(state.value for state in State) == sorted(ALL_NAMES)


@pytest.mark.parametrize(("source", "target"), PAIRS, ids=lambda v: str(v))
def test_every_pair_matches_the_design_table(source: str | None, target: str) -> None:
    """Each (from, to) pair is allowed exactly when the design table lists it."""
    origin = None if source is None else State(source)

    allowed = is_allowed(origin, State(target), attempts=1)

    assert allowed == ((source, target) in EXPECTED)
    if not allowed:
        with pytest.raises(InvalidTransition, match="cannot move"):
            check_transition(origin, State(target), attempts=1)


def test_claimed_order_is_retried_once_only() -> None:
    """CLAIMED -> RECEIVED is allowed after one claim and refused after two."""
    assert MAX_ATTEMPTS == 2
    check_transition(State.CLAIMED, State.RECEIVED, attempts=1)

    with pytest.raises(InvalidTransition, match="no retry left"):
        check_transition(State.CLAIMED, State.RECEIVED, attempts=2)
