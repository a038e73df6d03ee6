"""The development peer's ledger and transaction simulator, without a chaincode."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fabric_protos.ledger.rwset import rwset_pb2
from fabric_protos.ledger.rwset.kvrwset import kv_rwset_pb2

from tcbridge_devpeer.ledger import Ledger, Write
from tcbridge_devpeer.protocol import make_block
from tcbridge_devpeer.simulator import SimulationError, TxSimulator
from tcbridge_devpeer.validation import BlockState, Code, check_reads


@pytest.fixture
def ledger(tmp_path: Path) -> Iterator[Ledger]:
    ledger = Ledger(tmp_path / "ledger.sqlite")
    writes = [Write("cc", key, key.encode(), (1, n)) for n, key in enumerate("bdac")]
    ledger.commit(make_block(0, b"", [], []), [], [])
    ledger.commit(make_block(1, b"", [], []), [("tx1", 0)], writes)
    yield ledger
    ledger.close()


def kv_of(sim: TxSimulator) -> kv_rwset_pb2.KVRWSet:
    rwset = rwset_pb2.TxReadWriteSet.FromString(sim.results())
    return kv_rwset_pb2.KVRWSet.FromString(rwset.ns_rwset[0].rwset)


def test_reads_record_versions_and_never_see_own_writes(ledger: Ledger) -> None:
    """A read returns committed state and records its version, absent keys without one."""
    sim = TxSimulator(ledger, "cc")
    sim.put("a", b"new")

    assert sim.get("a") == b"a"
    assert sim.get("zz") == b""
    kv = kv_of(sim)
    assert [(r.key, r.HasField("version")) for r in kv.reads] == [
        ("a", True),
        ("zz", False),
    ]
    assert (kv.reads[0].version.block_num, kv.reads[0].version.tx_num) == (1, 2)
    assert [(w.key, w.value) for w in kv.writes] == [("a", b"new")]


def test_range_scans_are_bytewise_and_recorded_for_phantom_checks(
    ledger: Ledger,
) -> None:
    """A range scan returns keys in byte order, end exclusive, and lands in the read set."""
    sim = TxSimulator(ledger, "cc")

    assert [e.key for e in sim.range("b", "d")] == ["b", "c"]
    info = kv_of(sim).range_queries_info[0]
    assert (info.start_key, info.end_key) == ("b", "d")
    assert [r.key for r in info.raw_reads.kv_reads] == ["b", "c"]


def test_paged_ranges_return_a_bookmark_until_the_last_page(ledger: Ledger) -> None:
    """Pages of two from a four-key range: the bookmark is the next key, then empty."""
    sim = TxSimulator(ledger, "cc")

    first, bookmark = sim.paged_range("", "", 2, "")
    second, last = sim.paged_range("", "", 2, bookmark)

    assert ([e.key for e in first], bookmark) == (["a", "b"], "c")
    assert ([e.key for e in second], last) == (["c", "d"], "")


def test_paged_queries_and_writes_do_not_mix(ledger: Ledger) -> None:
    """Fabric's rule: a transaction that ran a paged query cannot write, and vice versa."""
    reader = TxSimulator(ledger, "cc")
    reader.paged_range("", "", 2, "")
    writer = TxSimulator(ledger, "cc")
    writer.put("x", b"1")

    with pytest.raises(SimulationError, match="paged query"):
        reader.put("x", b"1")
    with pytest.raises(SimulationError, match="paged query"):
        writer.paged_range("", "", 2, "")


def test_a_commit_is_atomic_and_survives_reopening(
    ledger: Ledger, tmp_path: Path
) -> None:
    """Blocks, codes and state written by commit are there after the file is reopened."""
    ledger.commit(
        make_block(2, ledger.last_block_hash(), [b"env"], [11]),
        [("tx2", 11)],
        [Write("cc", "a", None, (2, 0))],
    )
    ledger.close()

    reopened = Ledger(tmp_path / "ledger.sqlite")
    assert reopened.height() == 3
    assert reopened.tx_status("tx2") == (11, 2)
    assert reopened.get("cc", "a") is None
    assert reopened.get("cc", "b") is not None
    with pytest.raises(Exception, match="UNIQUE"):
        reopened.commit(
            make_block(2, b"", [], []), [], [Write("cc", "q", b"1", (2, 0))]
        )
    assert reopened.get("cc", "q") is None
    reopened.close()


def test_block_state_detects_mvcc_and_phantom_conflicts(ledger: Ledger) -> None:
    """Reads and scans validate against the ledger plus earlier writes in the block."""
    sim = TxSimulator(ledger, "cc")
    sim.get("a")
    sim.range("b", "d")
    kv = kv_of(sim)

    untouched = BlockState(ledger)
    untouched.apply("cc", "z", b"outside the scan", (2, 0))
    untouched.apply("other", "bb", b"another namespace", (2, 0))
    rewritten = BlockState(ledger)
    rewritten.apply("cc", "a", b"changed", (2, 0))
    inserted = BlockState(ledger)
    inserted.apply("cc", "bb", b"phantom", (2, 0))
    deleted = BlockState(ledger)
    deleted.apply("cc", "c", None, (2, 0))

    assert check_reads("cc", kv, untouched) == Code.VALID
    assert check_reads("cc", kv, rewritten) == Code.MVCC_READ_CONFLICT
    assert check_reads("cc", kv, inserted) == Code.PHANTOM_READ_CONFLICT
    assert check_reads("cc", kv, deleted) == Code.PHANTOM_READ_CONFLICT


def test_a_key_read_as_absent_conflicts_once_created(ledger: Ledger) -> None:
    """Reading a missing key records no version; creating it before commit conflicts."""
    sim = TxSimulator(ledger, "cc")
    sim.get("new")
    kv = kv_of(sim)
    state = BlockState(ledger)

    assert check_reads("cc", kv, state) == Code.VALID
    state.apply("cc", "new", b"1", (2, 0))
    assert check_reads("cc", kv, state) == Code.MVCC_READ_CONFLICT
