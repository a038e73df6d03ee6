"""An in-memory submitter store: the double the submitter's unit tests share."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from connector.ethereum.submitter import PendingTx, ReadyResult
from connector.ethereum.transactions import SignedTx


@dataclass
class MemorySubmitterStore:
    ready: dict[bytes, ReadyResult] = field(default_factory=dict)
    submitted: dict[bytes, ReadyResult] = field(default_factory=dict)
    txs: dict[int, PendingTx] = field(default_factory=dict)
    mined: dict[int, tuple[str, bool]] = field(default_factory=dict)
    next_nonce: int = 0
    released: list[tuple[bytes, str]] = field(default_factory=list)
    events: list[str] = field(default_factory=list)
    now: Callable[[], float] = lambda: 0.0

    async def ready_results(self, limit: int) -> list[ReadyResult]:
        return list(self.ready.values())[:limit]

    async def record_send(
        self,
        sender: str,
        chain_nonce: int,
        build: Callable[[int], SignedTx],
        order_keys: Sequence[bytes],
        gas: int,
        data: bytes,
    ) -> SignedTx:
        nonce = max(self.next_nonce, chain_nonce)
        signed = build(nonce)
        self.next_nonce = nonce + 1
        self.txs[nonce] = PendingTx(
            nonce,
            signed.raw,
            [signed.hash],
            signed.max_fee,
            signed.max_priority_fee,
            gas,
            data,
            list(order_keys),
            self.now(),
        )
        for key in order_keys:
            self.submitted[key] = self.ready.pop(key)
        self.events.append(f"recorded {nonce}")
        return signed

    async def record_replacement(self, sender: str, tx: SignedTx) -> None:
        old = self.txs[tx.nonce]
        old.raw = tx.raw
        old.hashes.append(tx.hash)
        old.max_fee, old.max_priority_fee = tx.max_fee, tx.max_priority_fee
        old.sent_at = self.now()
        self.events.append(f"replaced {tx.nonce}")

    async def pending_transactions(self, sender: str) -> list[PendingTx]:
        return [tx for n, tx in sorted(self.txs.items()) if n not in self.mined]

    async def mark_mined(
        self, sender: str, nonce: int, tx_hash: str, ok: bool, gas_used: int
    ) -> None:
        self.mined[nonce] = (tx_hash, ok)

    async def reopen_from(self, sender: str, nonce: int) -> int:
        reopened = [n for n in self.mined if n >= nonce]
        for n in reopened:
            del self.mined[n]
        return len(reopened)

    async def release(self, order_keys: Sequence[bytes], reason: str) -> None:
        for key in order_keys:
            self.ready[key] = self.submitted.pop(key)
            self.released.append((key, reason))

    async def settle_unsendable(self, order_keys: Sequence[bytes], state: int) -> None:
        return None
