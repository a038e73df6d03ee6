"""Transaction simulation: what a chaincode invocation read and wrote.

A ``TxSimulator`` serves one invocation's state requests from the committed
world state, as Fabric's does: reads never see the invocation's own writes;
each key read records the version it had (or none), writes are buffered, and
range scans record the keys and versions they returned so that commit can
detect phantoms. Paged range queries are allowed only in a transaction
that writes nothing, Fabric's rule, because their results are not
re-validated at commit.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from fabric_protos.ledger.rwset import rwset_pb2
from fabric_protos.ledger.rwset.kvrwset import kv_rwset_pb2

from enclave_bridge.errors import TcbridgeError
from tcbridge_devpeer.ledger import Ledger, StateEntry, Version


class SimulationError(TcbridgeError):
    """The chaincode asked for something this transaction may not do."""


def _kv_read(key: str, version: Version | None) -> kv_rwset_pb2.KVRead:
    read = kv_rwset_pb2.KVRead(key=key)
    if version is not None:
        read.version.block_num, read.version.tx_num = version
    return read


@dataclass
class RangeRead:
    start: str
    end: str
    entries: list[tuple[str, Version]]


@dataclass
class TxSimulator:
    ledger: Ledger
    namespace: str
    reads: dict[str, Version | None] = field(default_factory=dict)
    writes: dict[str, bytes | None] = field(default_factory=dict)
    ranges: list[RangeRead] = field(default_factory=list)
    paged_query_done: bool = False

    def get(self, key: str) -> bytes:
        entry = self.ledger.get(self.namespace, key)
        self.reads.setdefault(key, entry.version if entry else None)
        return entry.value if entry else b""

    def put(self, key: str, value: bytes) -> None:
        self._check_writable()
        self.writes[key] = value

    def delete(self, key: str) -> None:
        self._check_writable()
        self.writes[key] = None

    def range(self, start: str, end: str) -> list[StateEntry]:
        entries = self.ledger.range(self.namespace, start, end)
        self.ranges.append(RangeRead(start, end, [(e.key, e.version) for e in entries]))
        return entries

    def paged_range(
        self, start: str, end: str, page_size: int, bookmark: str
    ) -> tuple[list[StateEntry], str]:
        """One page from ``bookmark`` (or ``start``) and the next page's bookmark."""
        if self.writes:
            raise SimulationError(
                "a paged query is not allowed in a transaction that writes"
            )
        self.paged_query_done = True
        entries = self.ledger.range(
            self.namespace, bookmark or start, end, limit=page_size + 1
        )
        if len(entries) > page_size:
            return entries[:page_size], entries[page_size].key
        return entries, ""

    def _check_writable(self) -> None:
        if self.paged_query_done:
            raise SimulationError(
                "this transaction ran a paged query: writes are not allowed"
            )

    def results(self) -> bytes:
        """The TxReadWriteSet bytes that go into the ChaincodeAction."""
        kv = kv_rwset_pb2.KVRWSet(
            reads=[_kv_read(k, v) for k, v in self.reads.items()],
            writes=[
                kv_rwset_pb2.KVWrite(key=k, is_delete=v is None, value=v or b"")
                for k, v in self.writes.items()
            ],
        )
        for scan in self.ranges:
            info = kv.range_queries_info.add(
                start_key=scan.start, end_key=scan.end, itr_exhausted=True
            )
            info.raw_reads.kv_reads.extend(_kv_read(k, v) for k, v in scan.entries)
        rwset = rwset_pb2.TxReadWriteSet(
            data_model=rwset_pb2.TxReadWriteSet.KV,
            ns_rwset=[
                rwset_pb2.NsReadWriteSet(
                    namespace=self.namespace, rwset=kv.SerializeToString()
                )
            ],
        )
        return bytes(rwset.SerializeToString())
