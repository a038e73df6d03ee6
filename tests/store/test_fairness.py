"""Fair claims: a flooding requester does not starve others, and its work in flight is capped."""

from __future__ import annotations

import dataclasses

from connector.states import State
from connector.store import WorkOrderStore

from .factories import CHAIN, REGISTRY, order


def _from(requester: str, n: int, block: int = 10):  # type: ignore[no-untyped-def]
    return dataclasses.replace(order(n, block=block), requester_address=requester)


FLOOD = "0x" + "f1" * 20
OTHERS = ["0x" + "a1" * 20, "0x" + "b2" * 20]


async def _record(store: WorkOrderStore) -> None:
    flood = [_from(FLOOD, n) for n in range(300)]
    late = [_from(OTHERS[n % 2], 1000 + n, block=11) for n in range(4)]
    await store.record_events(CHAIN, REGISTRY, flood, checkpoint_block=10)
    await store.record_events(CHAIN, REGISTRY, late, checkpoint_block=11)


async def test_requesters_take_turns_so_a_flood_does_not_starve_others(store: WorkOrderStore) -> None:
    """Orders that arrived after 300 from one requester are among the first claimed."""
    await _record(store)

    claimed = await store.claim_next(6, "pool-a")

    who = [o.requester_address for o in claimed]
    assert who.count(OTHERS[0]) == 2 and who.count(OTHERS[1]) == 2
    assert who.count(FLOOD) == 2


async def test_work_in_flight_per_requester_is_capped(store: WorkOrderStore) -> None:
    """With a cap of 5, the flooder never holds more than 5 claimed orders; others still get theirs."""
    await _record(store)

    first = await store.claim_next(50, "pool-a", per_requester=5)
    again = await store.claim_next(50, "pool-a", per_requester=5)

    who = [o.requester_address for o in first]
    assert who.count(FLOOD) == 5 and who.count(OTHERS[0]) == 2 and who.count(OTHERS[1]) == 2
    assert again == []
    counts = await store.counts_by_state()
    assert counts[State.CLAIMED] == 9


async def test_claims_can_be_scoped_to_one_chain(store: WorkOrderStore) -> None:
    """A bridge scoped to its chain never claims another chain's orders from a shared database."""
    await store.record_events("fabric:ch", "tcbridge", [order(1)], checkpoint_block=1)
    await store.record_events(CHAIN, REGISTRY, [order(2)], checkpoint_block=1)

    claimed = await store.claim_next(10, "eth-bridge", chain_id=CHAIN)

    assert [o.ref.chain_id for o in claimed] == [str(CHAIN)]
