"""WorkOrderRegistry: submit, signed completion, access checks, deadline and cancel."""

from __future__ import annotations

import pytest
from eth_utils import keccak

from enclave_bridge.result_signature import EthereumDomain, order_key
from tests.contracts.support import (
    FAR_DEADLINE,
    MAX_CALLBACK_GAS,
    REQUEST,
    RESPONSE,
    WORKER_ID,
    WORKER_KEY,
    Env,
    address_of,
    key_of,
    logs,
    reverts,
)

PENDING, COMPLETED, CANCELLED = 1, 2, 3
SECP256K1_N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141


def test_submit_stores_hashes_and_emits_the_request(env: Env) -> None:
    """Submit stores the request hash and the worker's signer; the request travels in the event."""
    work_order_id = env.next_id()
    call = env.orders.functions.workOrderSubmit(
        work_order_id, WORKER_ID, keccak(b"rid"), REQUEST, FAR_DEADLINE, 12_345
    )
    receipt = env.transact(call, env.requester)
    key = order_key(env.requester, work_order_id)

    (event,) = logs(receipt, env.orders, "WorkOrderSubmitted")
    assert event["args"] == {
        "workOrderId": work_order_id,
        "workerId": WORKER_ID,
        "requesterId": keccak(b"rid"),
        "orderKey": key,
        "requester": env.requester,
        "callbackGas": 12_345,
        "request": REQUEST,
    }
    got = env.get(key)
    assert got["state"] == PENDING
    assert got["workerId"] == WORKER_ID
    assert got["signer"] == address_of(WORKER_KEY)
    assert got["requester"] == env.requester
    assert got["requestHash"] == keccak(REQUEST)
    assert got["responseHash"] == b"\x00" * 32
    assert (got["status"], got["completedAt"], got["deadline"]) == (0, 0, FAR_DEADLINE)
    assert got["submittedAt"] == env.now()


def test_submit_returns_the_order_key(env: Env) -> None:
    """The return value of workOrderSubmit is keccak256(abi.encode(sender, id))."""
    work_order_id = env.next_id()
    call = env.orders.functions.workOrderSubmit(
        work_order_id, WORKER_ID, b"\x00" * 32, REQUEST, FAR_DEADLINE, 0
    )

    assert call.call({"from": env.requester}) == order_key(env.requester, work_order_id)


def test_duplicate_key_reverts_but_another_sender_may_reuse_the_id(env: Env) -> None:
    """The same sender cannot reuse an id; another sender's same id is a different order."""
    work_order_id = env.next_id()
    mine = env.submit(work_order_id=work_order_id)

    with reverts("DuplicateOrder(bytes32)"):
        env.submit(work_order_id=work_order_id)
    squatter = env.submit(work_order_id=work_order_id, sender=env.stranger)

    assert mine != squatter
    assert env.get(mine)["requester"] == env.requester
    assert env.get(squatter)["requester"] == env.stranger


def test_squatter_cannot_complete_or_cancel_the_victims_order(env: Env) -> None:
    """An order submitted under the same id by someone else leaves the original untouched."""
    work_order_id = env.next_id()
    victim = env.submit(work_order_id=work_order_id)
    env.submit(work_order_id=work_order_id, sender=env.stranger, deadline=env.now() + 5)
    env.travel_to(env.now() + 10)

    with reverts("NotRequester(bytes32,address)"):
        env.transact(env.orders.functions.workOrderCancel(victim), env.stranger)
    assert env.get(victim)["state"] == PENDING


def test_submit_to_unknown_worker_reverts(env: Env) -> None:
    """An unregistered worker id is refused."""
    with reverts("UnknownWorker(bytes32)"):
        env.submit(worker_id=keccak(b"nobody"))


@pytest.mark.parametrize("status", [2, 3, 4])
def test_submit_to_inactive_worker_reverts(env: Env, status: int) -> None:
    """Offline, decommissioned and compromised workers take no new orders."""
    env.transact(env.workers.functions.workerSetStatus(WORKER_ID, status), env.operator)

    with reverts("WorkerNotActive(bytes32,uint256)"):
        env.submit()


def test_callback_gas_above_the_cap_reverts(env: Env) -> None:
    """callbackGas above maxCallbackGas is refused; the cap itself is accepted."""
    with reverts("CallbackGasTooHigh(uint32,uint32)"):
        env.submit(callback_gas=MAX_CALLBACK_GAS + 1)
    key = env.submit(callback_gas=MAX_CALLBACK_GAS)

    assert env.get(key)["state"] == PENDING
    assert env.orders.functions.maxCallbackGas().call() == MAX_CALLBACK_GAS
    assert env.orders.functions.workerRegistry().call() == env.workers.address


def test_deadline_must_be_in_the_future(env: Env) -> None:
    """A non-zero deadline at or before the current block time is refused."""
    with reverts("DeadlineNotInFuture(uint64)"):
        env.submit(deadline=env.now() - 1)
    with reverts("DeadlineNotInFuture(uint64)"):
        env.submit(deadline=1)


def test_complete_accepts_the_stored_signer(env: Env) -> None:
    """A relayed completion signed by the worker is stored and announced."""
    key = env.submit()
    receipt = env.complete(key)

    (event,) = logs(receipt, env.orders, "WorkOrderCompleted")
    assert event["args"]["orderKey"] == key
    assert event["args"]["workerId"] == WORKER_ID
    assert event["args"]["status"] == 0
    assert event["args"]["response"] == RESPONSE
    got = env.get(key)
    assert got["state"] == COMPLETED
    assert got["responseHash"] == keccak(RESPONSE)
    assert got["completedAt"] == env.now()


def test_completion_event_carries_the_work_order_id(env: Env) -> None:
    """WorkOrderCompleted names the requester's work-order id, not only the key."""
    work_order_id = env.next_id()
    key = env.submit(work_order_id=work_order_id)

    (event,) = logs(env.complete(key), env.orders, "WorkOrderCompleted")

    assert event["args"]["workOrderId"] == work_order_id


def test_error_result_stores_its_status(env: Env) -> None:
    """A non-zero status (an EEA error code) is signed, stored and emitted."""
    key = env.submit()
    env.complete(key, b'{"error":{"code":5}}', status=5)

    got = env.get(key)
    assert (got["state"], got["status"]) == (COMPLETED, 5)


def test_completes_exactly_once(env: Env) -> None:
    """A second completion of the same order reverts, even with a valid signature."""
    key = env.submit()
    env.complete(key)

    with reverts("AlreadyCompleted(bytes32)"):
        env.complete(key)
    with reverts("AlreadyCompleted(bytes32)"):
        env.complete(key, b"other response")


def test_completing_an_unknown_order_reverts(env: Env) -> None:
    """A key nobody submitted is refused."""
    with reverts("UnknownOrder(bytes32)"):
        env.complete(keccak(b"no such order"))


def test_relayer_cannot_sign_its_own_result(env: Env) -> None:
    """Only the signer stored at submit completes: a relayer's or stranger's key is refused."""
    key = env.submit()
    for label in ("relayer", "stranger"):
        forged = env.sign(key, private_key=key_of(label))
        with reverts("BadSignature(bytes32)"):
            env.complete(key, signature=forged)
    assert env.get(key)["state"] == PENDING


def test_signature_for_another_order_is_rejected(env: Env) -> None:
    """A worker signature made for one order does not complete another."""
    first, second = env.submit(), env.submit()

    with reverts("BadSignature(bytes32)"):
        env.complete(second, signature=env.sign(first))


def test_signature_for_another_contract_is_rejected(env: Env) -> None:
    """A signature made for another registry's domain is refused."""
    key = env.submit()
    other = EthereumDomain(env.w3.eth.chain_id, env.workers.address)

    with reverts("BadSignature(bytes32)"):
        env.complete(key, signature=env.sign(key, domain=other))


def test_signature_for_another_chain_is_rejected(env: Env) -> None:
    """A signature made for the same registry address on another chain id is refused."""
    key = env.submit()
    other = EthereumDomain(1, env.orders.address)

    with reverts("BadSignature(bytes32)"):
        env.complete(key, signature=env.sign(key, domain=other))


def test_signature_replayed_in_a_second_deployment_is_rejected(env: Env) -> None:
    """The same order key and bytes in another WorkOrderRegistry need that registry's signature."""
    work_order_id = env.next_id()
    key = env.submit(work_order_id=work_order_id)
    signature = env.sign(key)
    twin = env.deploy("WorkOrderRegistry", env.workers.address, MAX_CALLBACK_GAS)
    env.transact(
        twin.functions.workOrderSubmit(
            work_order_id, WORKER_ID, b"\x00" * 32, REQUEST, FAR_DEADLINE, 0
        ),
        env.requester,
    )

    with reverts("BadSignature(bytes32)"):
        env.transact(
            twin.functions.workOrderComplete(key, 0, RESPONSE, signature), env.relayer
        )


def test_signature_paired_with_other_bytes_is_rejected(env: Env) -> None:
    """A valid signature over one response does not accept different response bytes or status."""
    key = env.submit()
    signature = env.sign(key)

    with reverts("BadSignature(bytes32)"):
        env.complete(key, RESPONSE + b" ", signature=signature)
    with reverts("BadSignature(bytes32)"):
        env.complete(key, RESPONSE, status=1, signature=signature)


def test_signature_over_another_request_is_rejected(env: Env) -> None:
    """The stored request hash is part of what the worker signs."""
    key = env.submit()

    with reverts("BadSignature(bytes32)"):
        env.complete(key, signature=env.sign(key, request=b"another request"))


def test_high_s_twin_is_rejected(env: Env) -> None:
    """The malleable twin (n - s, flipped v) of a good signature is refused."""
    key = env.submit()
    good = env.sign(key)
    s = int.from_bytes(good[32:64], "big")
    twin = good[:32] + (SECP256K1_N - s).to_bytes(32, "big") + bytes([55 - good[64]])

    with reverts("BadSignature(bytes32)"):
        env.complete(key, signature=twin)
    env.complete(key, signature=good)
    assert env.get(key)["state"] == COMPLETED


def test_malformed_signatures_are_rejected(env: Env) -> None:
    """v outside {27, 28}, wrong lengths and unrecoverable signatures are refused."""
    key = env.submit()
    good = env.sign(key)
    for bad in (
        good[:64] + b"\x00",
        good[:64] + b"\x1d",
        good[:64],
        good + b"\x00",
        b"\x00" * 65,
    ):
        with reverts("BadSignature(bytes32)"):
            env.complete(key, signature=bad)


def test_signer_change_after_submit_does_not_redirect_the_order(env: Env) -> None:
    """An order in flight stays bound to the signer of submit time; new orders use the new one."""
    in_flight = env.submit()
    new_key = key_of("rotated worker")
    call = env.workers.functions.workerUpdate(WORKER_ID, "rotated", address_of(new_key))
    env.transact(call, env.operator)
    later = env.submit()

    with reverts("BadSignature(bytes32)"):
        env.complete(in_flight, signature=env.sign(in_flight, private_key=new_key))
    env.complete(in_flight)
    env.complete(later, signature=env.sign(later, private_key=new_key))

    assert env.get(in_flight)["signer"] == address_of(WORKER_KEY)
    assert env.get(later)["signer"] == address_of(new_key)


def test_worker_going_offline_does_not_strand_orders_in_flight(env: Env) -> None:
    """An order submitted while the worker was active can still be completed."""
    key = env.submit()
    env.transact(env.workers.functions.workerSetStatus(WORKER_ID, 2), env.operator)

    env.complete(key)

    assert env.get(key)["state"] == COMPLETED


def test_cancel_after_deadline_by_requester(env: Env) -> None:
    """The requester cancels a pending order once its deadline has passed."""
    work_order_id = env.next_id()
    deadline = env.now() + 100
    key = env.submit(work_order_id=work_order_id, deadline=deadline)
    env.travel_to(deadline + 1)

    receipt = env.transact(env.orders.functions.workOrderCancel(key), env.requester)

    (event,) = logs(receipt, env.orders, "WorkOrderCancelled")
    assert event["args"] == {"orderKey": key, "workOrderId": work_order_id}
    assert env.get(key)["state"] == CANCELLED


def test_cancel_before_deadline_reverts(env: Env) -> None:
    """Until the deadline has passed, the worker keeps its chance to answer."""
    key = env.submit(deadline=env.now() + 1000)

    with reverts("DeadlineNotPassed(bytes32,uint64)"):
        env.transact(env.orders.functions.workOrderCancel(key), env.requester)


@pytest.mark.parametrize("who", ["stranger", "relayer", "operator"])
def test_only_the_requester_cancels(env: Env, who: str) -> None:
    """Nobody but the requester can cancel, even after the deadline."""
    key = env.submit(deadline=env.now() + 10)
    env.travel_to(env.now() + 20)

    with reverts("NotRequester(bytes32,address)"):
        env.transact(env.orders.functions.workOrderCancel(key), getattr(env, who))


def test_no_completion_after_cancel_and_no_cancel_after_completion(env: Env) -> None:
    """Cancel and completion exclude each other, in both orders."""
    cancelled = env.submit(deadline=env.now() + 10)
    completed = env.submit(deadline=env.now() + 10)
    env.complete(completed)
    env.travel_to(env.now() + 20)
    env.transact(env.orders.functions.workOrderCancel(cancelled), env.requester)

    with reverts("OrderCancelled(bytes32)"):
        env.complete(cancelled)
    with reverts("NotPending(bytes32,uint8)"):
        env.transact(env.orders.functions.workOrderCancel(completed), env.requester)
    with reverts("NotPending(bytes32,uint8)"):
        env.transact(env.orders.functions.workOrderCancel(cancelled), env.requester)


def test_completion_after_deadline_is_still_accepted_until_cancelled(env: Env) -> None:
    """A late result is accepted while the requester has not cancelled."""
    key = env.submit(deadline=env.now() + 10)
    env.travel_to(env.now() + 20)

    env.complete(key)

    assert env.get(key)["state"] == COMPLETED


def test_order_without_deadline_is_never_cancellable(env: Env) -> None:
    """Deadline 0 is accepted at submit and means the order cannot be cancelled."""
    key = env.submit(deadline=0)
    env.travel_to(env.now() + 10**6)

    with reverts("DeadlineNotPassed(bytes32,uint64)"):
        env.transact(env.orders.functions.workOrderCancel(key), env.requester)
    assert env.get(key)["deadline"] == 0
    env.complete(key)
    assert env.get(key)["state"] == COMPLETED


def test_cancel_unknown_order_reverts(env: Env) -> None:
    """Cancelling a key nobody submitted is refused."""
    with reverts("UnknownOrder(bytes32)"):
        env.transact(
            env.orders.functions.workOrderCancel(keccak(b"none")), env.requester
        )


def test_get_unknown_order_is_all_zero(env: Env) -> None:
    """workOrderGet of an unknown key reports state 0 and zero fields."""
    got = env.get(keccak(b"none"))

    assert got["state"] == 0
    assert got["requester"] == "0x" + "00" * 20
