"""Result callbacks: delivery with exact gas, the 63/64 rule, failures and re-entry."""

from __future__ import annotations

from typing import Any

import pytest
from eth_utils import keccak
from web3.contract import Contract

from enclave_bridge.result_signature import order_key
from tests.contracts.support import (
    FAR_DEADLINE,
    REQUEST,
    RESPONSE,
    WORKER_ID,
    Env,
    logs,
    reverts,
)

COMPLETED = 2
MODE_RECORD, MODE_REVERT, MODE_REENTER, MODE_BURN, MODE_RETURN_BOMB = range(5)
# What the probe spends (dispatch, calldata decoding) before it reads gasleft().
ENTRY_OVERHEAD = 1_000


@pytest.fixture
def probe(env: Env) -> Contract:
    return env.deploy("CallbackProbe", env.orders.address)


def submit_via(
    env: Env, consumer: Contract, callback_gas: int, deadline: int = FAR_DEADLINE
) -> bytes:
    """Submits through the probe (so the probe is the requester); returns the order key."""
    work_order_id = env.next_id()
    call = consumer.functions.submit(
        work_order_id, WORKER_ID, REQUEST, deadline, callback_gas
    )
    env.transact(call, env.requester)
    return order_key(consumer.address, work_order_id)


def completion_call(env: Env, key: bytes, status: int = 0) -> Any:
    return env.orders.functions.workOrderComplete(
        key, status, RESPONSE, env.sign(key, status=status)
    )


def least_gas(env: Env, call: Any) -> int:
    """The smallest gas limit at which ``call`` succeeds (binary search over eth_call)."""
    low, high = 21_000, 5_000_000
    while high - low > 1:
        middle = (low + high) // 2
        try:
            call.call({"from": env.relayer, "gas": middle})
            high = middle
        except Exception:
            low = middle
    return high


def test_example_consumer_stores_the_verified_result(env: Env) -> None:
    """The example consumer requests a computation and keeps the result the registry verified."""
    consumer = env.deploy("ExampleConsumer", env.orders.address)
    work_order_id = env.next_id()
    call = consumer.functions.requestComputation(
        work_order_id, WORKER_ID, REQUEST, FAR_DEADLINE, 200_000
    )
    env.transact(call, env.operator)
    key = order_key(consumer.address, work_order_id)

    receipt = env.complete(key)

    (event,) = logs(receipt, consumer, "ResultReceived")
    assert event["args"] == {"orderKey": key, "workOrderId": work_order_id, "status": 0}
    assert consumer.functions.resultOf(key).call() == [True, 0, RESPONSE]
    assert logs(receipt, env.orders, "CallbackFailed") == []


def test_example_consumer_accepts_results_only_from_the_registry(env: Env) -> None:
    """A direct call to the callback, or a request by a non-owner, is refused."""
    consumer = env.deploy("ExampleConsumer", env.orders.address)
    fake = consumer.functions.onWorkOrderResult(
        b"\x01" * 32, b"\x02" * 32, 0, b"forged"
    )
    request = consumer.functions.requestComputation(
        env.next_id(), WORKER_ID, REQUEST, FAR_DEADLINE, 0
    )

    with reverts("NotRegistry(address)"):
        env.transact(fake, env.stranger)
    with reverts("NotOwner(address)"):
        env.transact(request, env.stranger)


def test_example_consumer_cancels_through_the_registry(env: Env) -> None:
    """The consumer, as requester, can cancel its order after the deadline."""
    consumer = env.deploy("ExampleConsumer", env.orders.address)
    work_order_id = env.next_id()
    deadline = env.now() + 50
    call = consumer.functions.requestComputation(
        work_order_id, WORKER_ID, REQUEST, deadline, 100_000
    )
    env.transact(call, env.operator)
    key = order_key(consumer.address, work_order_id)
    env.travel_to(deadline + 1)

    with reverts("NotOwner(address)"):
        env.transact(consumer.functions.cancel(key), env.stranger)
    env.transact(consumer.functions.cancel(key), env.operator)

    assert env.get(key)["state"] == 3
    assert consumer.functions.resultOf(key).call() == [False, 0, b""]


def test_callback_receives_exactly_its_gas(env: Env, probe: Contract) -> None:
    """The callee starts with the requested callback gas (minus its own entry cost)."""
    callback_gas = 150_000
    key = submit_via(env, probe, callback_gas)

    env.complete(key, status=0)

    entry_gas = probe.functions.gasAtEntry().call()
    assert callback_gas - ENTRY_OVERHEAD <= entry_gas <= callback_gas
    assert probe.functions.lastOrderKey().call() == key
    assert probe.functions.lastResponse().call() == RESPONSE
    assert probe.functions.calls().call() == 1


def test_relayer_cannot_starve_the_callback(env: Env, probe: Contract) -> None:
    """At the least gas that lets completion succeed, the callback still gets all its gas."""
    callback_gas = 400_000
    key = submit_via(env, probe, callback_gas)
    call = completion_call(env, key)
    least = least_gas(env, call)

    with reverts("InsufficientCallbackGas(bytes32,uint32)"):
        call.call({"from": env.relayer, "gas": least - 1})
    with reverts("InsufficientCallbackGas(bytes32,uint32)"):
        call.call({"from": env.relayer, "gas": callback_gas})
    env.transact(call, env.relayer, gas=least)

    assert probe.functions.gasAtEntry().call() >= callback_gas - ENTRY_OVERHEAD
    assert env.get(key)["state"] == COMPLETED


@pytest.mark.parametrize("mode", [MODE_REVERT, MODE_BURN])
def test_failing_callback_does_not_undo_completion(
    env: Env, probe: Contract, mode: int
) -> None:
    """A reverting or gas-burning callback leaves the order completed and emits CallbackFailed."""
    env.transact(probe.functions.setMode(mode, b""), env.requester)
    key = submit_via(env, probe, 100_000)

    receipt = env.complete(key)

    assert [
        e["args"]["orderKey"] for e in logs(receipt, env.orders, "CallbackFailed")
    ] == [key]
    assert len(logs(receipt, env.orders, "WorkOrderCompleted")) == 1
    assert env.get(key)["state"] == COMPLETED
    assert probe.functions.calls().call() == 0


def test_return_data_is_not_copied(env: Env, probe: Contract) -> None:
    """A callback returning 100 kB costs the registry nothing beyond the callback gas."""
    env.transact(probe.functions.setMode(MODE_RETURN_BOMB, b""), env.requester)
    callback_gas = 100_000
    key = submit_via(env, probe, callback_gas)

    receipt = env.complete(key)

    assert logs(receipt, env.orders, "CallbackFailed") == []
    assert receipt["gasUsed"] < callback_gas + 120_000
    assert env.get(key)["state"] == COMPLETED


def test_reentry_from_the_callback_finds_the_order_completed(
    env: Env, probe: Contract
) -> None:
    """Re-entering complete or cancel from the callback fails: state is written before the call."""
    key = submit_via(env, probe, 600_000, deadline=env.now() + 5)
    env.travel_to(env.now() + 10)
    env.transact(probe.functions.setMode(MODE_REENTER, env.sign(key)), env.requester)

    receipt = env.complete(key)

    assert len(logs(receipt, env.orders, "WorkOrderCompleted")) == 1
    assert logs(receipt, env.orders, "CallbackFailed") == []
    assert probe.functions.calls().call() == 1
    assert probe.functions.reentryCompleteSucceeded().call() is False
    assert probe.functions.reentryCancelSucceeded().call() is False
    assert env.get(key)["state"] == COMPLETED


def test_callback_to_an_account_without_code_is_reported(env: Env) -> None:
    """An externally owned requester asking for a callback gets CallbackFailed, not a revert."""
    key = env.submit(callback_gas=50_000)

    receipt = env.complete(key)

    assert [
        e["args"]["orderKey"] for e in logs(receipt, env.orders, "CallbackFailed")
    ] == [key]
    assert env.get(key)["state"] == COMPLETED


def test_error_status_reaches_the_callback(env: Env, probe: Contract) -> None:
    """The callback sees the signed EEA error code."""
    key = submit_via(env, probe, 300_000)

    env.complete(key, status=7)

    assert probe.functions.lastStatus().call() == 7
    assert keccak(probe.functions.lastResponse().call()) == keccak(RESPONSE)
