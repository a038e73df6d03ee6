"""Commit-time read-set validation (MVCC), in block order.

``BlockState`` is the world state as a transaction in the middle of a block
must see it: the committed ledger plus the writes of the valid
transactions before it in the same block. ``check_reads`` compares a
transaction's read set with it: a key read at a version that has changed
since is MVCC_READ_CONFLICT, a range scan that would now return other keys
or versions is PHANTOM_READ_CONFLICT.
"""

from __future__ import annotations

from fabric_protos.ledger.rwset.kvrwset import kv_rwset_pb2
from fabric_protos.peer import transaction_pb2

from tcbridge_devpeer.ledger import Ledger, Version

Code = transaction_pb2.TxValidationCode


def read_version(read: kv_rwset_pb2.KVRead) -> Version | None:
    if not read.HasField("version"):
        return None
    return (int(read.version.block_num), int(read.version.tx_num))


class BlockState:
    """The ledger overlaid with the writes validated so far in one block."""

    def __init__(self, ledger: Ledger) -> None:
        self._ledger = ledger
        # (namespace, key) -> (value or None when deleted, version of the write)
        self._overlay: dict[tuple[str, str], tuple[bytes | None, Version]] = {}

    def apply(self, ns: str, key: str, value: bytes | None, version: Version) -> None:
        self._overlay[(ns, key)] = (value, version)

    def version(self, ns: str, key: str) -> Version | None:
        if (ns, key) in self._overlay:
            value, version = self._overlay[(ns, key)]
            return None if value is None else version
        entry = self._ledger.get(ns, key)
        return entry.version if entry else None

    def range(self, ns: str, start: str, end: str) -> list[tuple[str, Version]]:
        current = {e.key: e.version for e in self._ledger.range(ns, start, end)}
        for (key_ns, key), (value, version) in self._overlay.items():
            # Code-point order is UTF-8 byte order, the ledger's order.
            inside = key >= start and (not end or key < end)
            if key_ns != ns or not inside:
                continue
            if value is None:
                current.pop(key, None)
            else:
                current[key] = version
        return sorted(current.items())


def check_reads(ns: str, kv: kv_rwset_pb2.KVRWSet, state: BlockState) -> int:
    """VALID, MVCC_READ_CONFLICT or PHANTOM_READ_CONFLICT for one namespace."""
    for read in kv.reads:
        if state.version(ns, read.key) != read_version(read):
            return int(Code.MVCC_READ_CONFLICT)
    for scan in kv.range_queries_info:
        then = [(r.key, read_version(r)) for r in scan.raw_reads.kv_reads]
        if state.range(ns, scan.start_key, scan.end_key) != then:
            return int(Code.PHANTOM_READ_CONFLICT)
    return int(Code.VALID)
