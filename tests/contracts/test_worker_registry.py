"""WorkerRegistry: registration, operator-only changes, retrieval and paging."""

from __future__ import annotations

import pytest
from eth_utils import keccak

from tests.contracts.support import (
    APP_ID,
    ORG_ID,
    WORKER_ID,
    WORKER_KEY,
    Env,
    address_of,
    key_of,
    logs,
    reverts,
)

ZERO_ADDRESS = "0x" + "00" * 20


def test_register_stores_everything_and_emits(env: Env) -> None:
    """A registered worker is retrievable field by field and announced with indexed ids."""
    worker_id = keccak(b"fresh worker")
    receipt = env.register_worker(worker_id, key_of("fresh"), details="details v1")

    retrieved = env.workers.functions.workerRetrieve(worker_id).call()
    assert retrieved == [
        1,
        1,
        ORG_ID,
        [APP_ID],
        "details v1",
        address_of(key_of("fresh")),
        env.operator,
    ]
    (event,) = logs(receipt, env.workers, "WorkerRegistered")
    assert event["args"]["workerId"] == worker_id
    assert event["args"]["organizationId"] == ORG_ID
    assert event["args"]["owner"] == env.operator
    assert event["args"]["signingAddress"] == address_of(key_of("fresh"))


def test_duplicate_register_reverts_even_for_its_owner(env: Env) -> None:
    """A worker id is registered once: neither its owner nor a squatter can re-register it."""
    for sender in (env.operator, env.stranger):
        with reverts("WorkerAlreadyRegistered(bytes32)"):
            env.register_worker(WORKER_ID, key_of("squatter"), owner=sender)

    assert env.workers.functions.workerSigner(WORKER_ID).call() == [
        address_of(WORKER_KEY),
        1,
    ]


def test_register_refuses_zero_id_and_zero_signer(env: Env) -> None:
    """Worker id 0 and signing address 0 are refused."""
    with reverts("InvalidWorkerId()"):
        env.register_worker(b"\x00" * 32, key_of("a"))
    call = env.workers.functions.workerRegister(
        keccak(b"w0"), 1, ORG_ID, [], "", ZERO_ADDRESS
    )
    with reverts("InvalidSigningAddress()"):
        env.transact(call, env.operator)


def test_owner_updates_details_and_signer(env: Env) -> None:
    """The registering operator can change details and signing address."""
    new_signer = address_of(key_of("rotated"))
    call = env.workers.functions.workerUpdate(WORKER_ID, "details v2", new_signer)
    receipt = env.transact(call, env.operator)

    (event,) = logs(receipt, env.workers, "WorkerUpdated")
    assert event["args"]["workerId"] == WORKER_ID
    assert event["args"]["signingAddress"] == new_signer
    retrieved = env.workers.functions.workerRetrieve(WORKER_ID).call()
    assert retrieved[4:6] == ["details v2", new_signer]


@pytest.mark.parametrize("who", ["stranger", "relayer", "requester"])
def test_nobody_else_can_update_a_worker(env: Env, who: str) -> None:
    """A stranger, a relayer or a requester cannot change a worker's signer or details."""
    attacker = getattr(env, who)
    call = env.workers.functions.workerUpdate(WORKER_ID, "evil", attacker)

    with reverts("NotWorkerOwner(bytes32,address)"):
        env.transact(call, attacker)
    assert env.workers.functions.workerSigner(WORKER_ID).call() == [
        address_of(WORKER_KEY),
        1,
    ]


@pytest.mark.parametrize("who", ["stranger", "relayer"])
def test_nobody_else_can_change_a_worker_status(env: Env, who: str) -> None:
    """Only the operator who registered a worker may change its status."""
    attacker = getattr(env, who)
    with reverts("NotWorkerOwner(bytes32,address)"):
        env.transact(env.workers.functions.workerSetStatus(WORKER_ID, 4), attacker)


def test_update_refuses_zero_signer(env: Env) -> None:
    """The owner cannot set the signing address to zero."""
    call = env.workers.functions.workerUpdate(WORKER_ID, "x", ZERO_ADDRESS)
    with reverts("InvalidSigningAddress()"):
        env.transact(call, env.operator)


def test_unknown_worker_reverts_on_every_access(env: Env) -> None:
    """Update, status change and retrieve of an unregistered id revert; workerSigner reports zero."""
    unknown = keccak(b"nobody")
    with reverts("UnknownWorker(bytes32)"):
        env.transact(
            env.workers.functions.workerUpdate(unknown, "", env.operator), env.operator
        )
    with reverts("UnknownWorker(bytes32)"):
        env.transact(env.workers.functions.workerSetStatus(unknown, 2), env.operator)
    with reverts("UnknownWorker(bytes32)"):
        env.workers.functions.workerRetrieve(unknown).call()
    assert env.workers.functions.workerSigner(unknown).call() == [ZERO_ADDRESS, 0]


@pytest.mark.parametrize("status", [1, 2, 3, 4])
def test_set_status_accepts_eea_values(env: Env, status: int) -> None:
    """Statuses 1-4 are stored and announced."""
    receipt = env.transact(
        env.workers.functions.workerSetStatus(WORKER_ID, status), env.operator
    )

    (event,) = logs(receipt, env.workers, "WorkerStatusChanged")
    assert (event["args"]["workerId"], event["args"]["status"]) == (WORKER_ID, status)
    assert env.workers.functions.workerSigner(WORKER_ID).call()[1] == status


@pytest.mark.parametrize("status", [0, 5, 2**255])
def test_set_status_refuses_other_values(env: Env, status: int) -> None:
    """Statuses outside 1-4 revert."""
    with reverts("InvalidWorkerStatus(uint256)"):
        env.transact(
            env.workers.functions.workerSetStatus(WORKER_ID, status), env.operator
        )


def test_worker_owner(env: Env) -> None:
    """workerOwner names the registering operator, or zero for an unknown id."""
    assert env.workers.functions.workerOwner(WORKER_ID).call() == env.operator
    assert env.workers.functions.workerOwner(keccak(b"nobody")).call() == ZERO_ADDRESS


def test_worker_count(env: Env) -> None:
    """workerCount counts every registration."""
    for i in range(3):
        env.register_worker(keccak(f"counted {i}".encode()), key_of(f"c{i}"))

    assert env.workers.functions.workerCount().call() == 4
