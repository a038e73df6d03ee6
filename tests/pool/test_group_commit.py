"""A pool process's group commit when another process got there first.

Run in this process on the real store: two orders are held, then the store
changes under them (as another pool process would change it), then the
held answers are committed and sent.
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from enclave_bridge import _pool_worker as wire
from enclave_bridge.attestation import SimulatedAttester
from enclave_bridge.eea import EeaError
from enclave_bridge.identity import SealedIdentity
from enclave_bridge.pool import DEFAULT_REGISTRY
from enclave_bridge.workload_state import SqliteWorkloadStateStore, StoredResult
from tests.pool.conftest import PASSPHRASE, OrderMaker


@dataclass
class Held:
    session: wire._Session
    # The parent's end of the result pipe.
    results: int

    def sent(self, count: int) -> list[tuple[Any, ...]]:
        """The DONE frames the session wrote, decoded."""
        data = os.read(self.results, 1 << 20)
        frames = []
        while data:
            size = int.from_bytes(data[:4], "big")
            frames.append(wire.decode_done(data[4 : 4 + size]))
            data = data[4 + size :]
        assert len(frames) == count
        return frames

    def hold(self, job_id: int, order_key: str, request: bytes) -> StoredResult:
        """Run an order as the session does and keep its answer; its staged result."""
        order = self.session.server.begin(order_key, request, None)
        self.session.run(job_id, order, None)
        staged = self.session.held[-1].staged
        assert staged is not None
        return staged[0]


@pytest.fixture
def held(tmp_path: Path, sealed_worker: SealedIdentity) -> Iterator[Held]:
    state = tmp_path / "state.db"
    SqliteWorkloadStateStore(state).close()
    server = wire.Server(
        {
            "identities": [sealed_worker.blob],
            "passphrase": PASSPHRASE,
            "registry": DEFAULT_REGISTRY,
            "state_path": str(state),
            "attester": SimulatedAttester(),
        }
    )
    marker = os.memfd_create("test-marker")
    os.ftruncate(marker, wire.MARKER.size)
    results_r, results_w = os.pipe()
    # No commands are read here: the session only runs, holds and flushes.
    commands = io.BytesIO()
    yield Held(
        wire._Session(server, commands, -1, results_w, wire.Marker(marker)), results_r
    )
    server.store.close()
    os.close(results_w)
    os.close(results_r)


def test_claim_taken_before_the_group_commit_answers_duplicate(
    held: Held, make_order: OrderMaker
) -> None:
    """Held order whose hash another order claimed meanwhile: a duplicate error, not its result."""
    session = held.session
    job, _ = make_order("echo-result", "copied")
    result = held.hold(1, "first", job.request)
    assert result.request_hash is not None
    # Another process commits a copy of the same request for another order.
    session.server.store.commit(
        StoredResult("other", result.worker_id, 0, b"{}", result.request_hash, None),
        claim=True,
    )

    session.flush()

    ((job_id, status, response, *_),) = held.sent(1)
    assert job_id == 1 and status == EeaError.INVALID_PARAMETER
    assert b"duplicate request" in response
    stored = session.server.store.result("first")
    assert stored is not None and stored.response == response
    assert session.server.store.claimed_by(result.worker_id, result.request_hash) == (
        "other"
    )


def test_order_answered_before_the_group_commit_keeps_that_answer(
    held: Held, make_order: OrderMaker
) -> None:
    """Held order that another process already committed: its stored answer is sent."""
    session = held.session
    first, _ = make_order("echo-result", "one")
    second, _ = make_order("echo-result", "two")
    held.hold(1, "mine", first.request)
    raced = held.hold(2, "raced", second.request)
    earlier = StoredResult("raced", raced.worker_id, 0, b'{"earlier":1}', None, None)
    session.server.store.commit(earlier, claim=False)

    session.flush()

    (one, two) = held.sent(2)
    assert one[0] == 1 and one[1] == 0 and not one[2].startswith(b'{"earlier"')
    assert two[0] == 2 and two[2] == b'{"earlier":1}' and two[5] is False
    assert session.server.store.result("mine") is not None
    assert session.held == []
