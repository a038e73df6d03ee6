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


def register_many(env: Env, count: int) -> list[bytes]:
    """Registers ``count`` workers of types 1/2 alternating, apps A or B by thirds."""
    ids = []
    for i in range(count):
        worker_id = keccak(f"paged worker {i}".encode())
        apps = (keccak(b"app A"),) if i % 3 else (keccak(b"app A"), keccak(b"app B"))
        env.register_worker(
            worker_id, key_of(f"p{i}"), worker_type=1 + i % 2, apps=apps
        )
        ids.append(worker_id)
    return ids


def all_pages(env: Env, *filters: object) -> tuple[list[int], list[str], list[bytes]]:
    """Walks LookUp then LookUpNext until the tag is empty."""
    total, tag, ids = env.workers.functions.workerLookUp(*filters).call()
    totals, tags, found = [total], [tag], list(ids)
    while tag:
        total, tag, ids = env.workers.functions.workerLookUpNext(*filters, tag).call()
        totals.append(total)
        tags.append(tag)
        found += ids
    return totals, tags, found


def test_lookup_pages_25_workers(env: Env) -> None:
    """26 workers (the fixture's and 25 more) come back in pages of 10, 10 and 6, in order."""
    ids = [WORKER_ID, *register_many(env, 25)]

    totals, tags, found = all_pages(env, 0, b"\x00" * 32, b"\x00" * 32)

    assert found == ids
    assert totals == [26, 26, 26]
    assert tags[-1] == ""
    assert len(tags) == 3


def test_lookup_filters_by_type_org_and_application(env: Env) -> None:
    """Each non-zero filter field narrows the result; 0 means any."""
    ids = register_many(env, 25)
    app_b = keccak(b"app B")

    _, _, type2 = all_pages(env, 2, b"\x00" * 32, b"\x00" * 32)
    _, _, with_b = all_pages(env, 0, b"\x00" * 32, app_b)
    _, _, type1_b = all_pages(env, 1, ORG_ID, app_b)
    totals, _, other_org = all_pages(env, 0, keccak(b"other org"), b"\x00" * 32)

    assert type2 == [w for i, w in enumerate(ids) if i % 2 == 1]
    assert with_b == [w for i, w in enumerate(ids) if i % 3 == 0]
    assert type1_b == [w for i, w in enumerate(ids) if i % 3 == 0 and i % 2 == 0]
    assert (totals, other_org) == ([0], [])


def test_lookup_tag_continues_where_the_page_stopped(env: Env) -> None:
    """The tag of a filtered page skips the non-matching entries already scanned."""
    register_many(env, 25)
    app_b = keccak(b"app B")

    total, tag, first = env.workers.functions.workerLookUp(
        0, b"\x00" * 32, app_b
    ).call()

    assert (total, tag, len(first)) == (9, "", 9)
    total, tag, first = env.workers.functions.workerLookUp(
        0, b"\x00" * 32, APP_ID
    ).call()
    assert (total, tag, len(first)) == (1, "", 1)


def test_lookup_next_refuses_a_bad_tag(env: Env) -> None:
    """A non-numeric or empty tag reverts instead of restarting silently."""
    for tag in ("", "x1", "1" * 21):
        with reverts("InvalidLookupTag(string)"):
            env.workers.functions.workerLookUpNext(
                0, b"\x00" * 32, b"\x00" * 32, tag
            ).call()


def test_lookup_next_past_the_end_is_empty(env: Env) -> None:
    """A tag beyond the list yields an empty page with the full total."""
    result = env.workers.functions.workerLookUpNext(
        0, b"\x00" * 32, b"\x00" * 32, "99"
    ).call()

    assert result == [1, "", []]


def test_worker_count(env: Env) -> None:
    """workerCount counts every registration."""
    register_many(env, 3)

    assert env.workers.functions.workerCount().call() == 4
