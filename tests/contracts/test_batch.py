"""workOrderCompleteBatch: items complete independently; every skip reason."""

from __future__ import annotations

from typing import Any

from eth_utils import keccak

from enclave_bridge.result_signature import order_key
from tests.contracts.support import (
    FAR_DEADLINE,
    REQUEST,
    RESPONSE,
    WORKER_ID,
    Env,
    key_of,
    logs,
)

PENDING, COMPLETED = 1, 2
UNKNOWN, ALREADY_COMPLETED, CANCELLED, BAD_SIGNATURE, CALLBACK_GAS = 1, 2, 3, 4, 5


def item(
    env: Env, key: bytes, signature: bytes | None = None, status: int = 0
) -> tuple[Any, ...]:
    return (
        key,
        status,
        RESPONSE,
        env.sign(key, status=status) if signature is None else signature,
    )


def run_batch(env: Env, items: list[tuple[Any, ...]], gas: int | None = None) -> Any:
    return env.transact(
        env.orders.functions.workOrderCompleteBatch(items), env.relayer, gas
    )


def skips(env: Env, receipt: Any) -> list[tuple[bytes, int]]:
    return [
        (e["args"]["orderKey"], e["args"]["reason"])
        for e in logs(receipt, env.orders, "CompletionSkipped")
    ]


def test_batch_completes_every_valid_item(env: Env) -> None:
    """Three valid items in one batch complete three orders, with their own statuses."""
    keys = [env.submit() for _ in range(3)]

    receipt = run_batch(env, [item(env, k, status=i) for i, k in enumerate(keys)])

    completed = logs(receipt, env.orders, "WorkOrderCompleted")
    assert [e["args"]["orderKey"] for e in completed] == keys
    assert [env.get(k)["status"] for k in keys] == [0, 1, 2]
    assert skips(env, receipt) == []


def test_every_skip_reason_without_reverting_the_batch(env: Env) -> None:
    """Unknown, completed, cancelled and badly signed items are skipped; the good one completes."""
    done = env.submit()
    env.complete(done)
    cancelled = env.submit(deadline=env.now() + 5)
    env.travel_to(env.now() + 10)
    env.transact(env.orders.functions.workOrderCancel(cancelled), env.requester)
    forged, good = env.submit(), env.submit()
    unknown = keccak(b"never submitted")

    receipt = run_batch(
        env,
        [
            item(env, unknown),
            item(env, done),
            item(env, cancelled),
            item(
                env, forged, signature=env.sign(forged, private_key=key_of("relayer"))
            ),
            item(env, good),
        ],
    )

    assert skips(env, receipt) == [
        (unknown, UNKNOWN),
        (done, ALREADY_COMPLETED),
        (cancelled, CANCELLED),
        (forged, BAD_SIGNATURE),
    ]
    assert [
        e["args"]["orderKey"] for e in logs(receipt, env.orders, "WorkOrderCompleted")
    ] == [good]
    assert (env.get(forged)["state"], env.get(good)["state"]) == (PENDING, COMPLETED)


def test_the_same_order_twice_in_a_batch_completes_once(env: Env) -> None:
    """A repeated item is skipped as already completed."""
    key = env.submit()

    receipt = run_batch(env, [item(env, key), item(env, key)])

    assert len(logs(receipt, env.orders, "WorkOrderCompleted")) == 1
    assert skips(env, receipt) == [(key, ALREADY_COMPLETED)]


def test_item_whose_callback_cannot_get_its_gas_is_skipped(env: Env) -> None:
    """With too little gas left for an item's callback, that item is skipped (reason 5), cleanly."""
    probe = env.deploy("CallbackProbe", env.orders.address)
    work_order_id = env.next_id()
    call = probe.functions.submit(
        work_order_id, WORKER_ID, REQUEST, FAR_DEADLINE, 1_500_000
    )
    env.transact(call, env.requester)
    hungry = order_key(probe.address, work_order_id)
    plain = env.submit()

    receipt = run_batch(env, [item(env, plain), item(env, hungry)], gas=400_000)

    assert receipt["status"] == 1
    assert skips(env, receipt) == [(hungry, CALLBACK_GAS)]
    assert (env.get(plain)["state"], env.get(hungry)["state"]) == (COMPLETED, PENDING)
    assert probe.functions.calls().call() == 0


def test_batch_with_callbacks_delivers_each(env: Env) -> None:
    """Each item's callback runs once when the batch carries enough gas."""
    probe = env.deploy("CallbackProbe", env.orders.address)
    keys = []
    for _ in range(3):
        work_order_id = env.next_id()
        call = probe.functions.submit(
            work_order_id, WORKER_ID, REQUEST, FAR_DEADLINE, 200_000
        )
        env.transact(call, env.requester)
        keys.append(order_key(probe.address, work_order_id))

    # eth_estimateGas would settle on a limit where the callbacks are skipped
    # (skipping is not failing), so a relayer sets the limit itself.
    receipt = run_batch(env, [item(env, k) for k in keys], gas=3_000_000)

    assert skips(env, receipt) == []
    assert probe.functions.calls().call() == 3


def test_empty_batch_is_a_no_op(env: Env) -> None:
    """An empty batch succeeds and emits nothing."""
    receipt = run_batch(env, [])

    assert receipt["status"] == 1
    assert receipt["logs"] == []
