"""WorkOrderReceiptRegistry: EEA receipts bound to tcbridge orders and their parties."""

from __future__ import annotations

import pytest
from eth_utils import keccak
from web3.contract import Contract

from tests.contracts.support import WORKER_ID, Env, logs, reverts

SERVICE = keccak(b"worker service")
REQUESTER_ID = keccak(b"requester id")
EEA_HASH = bytes.fromhex("aa" * 32)
ANY, ANY_STATUS, LAST = b"\x00" * 32, 255, 0xFFFFFFFF
PENDING, COMPLETED = 0, 1


@pytest.fixture
def receipts(env: Env) -> Contract:
    return env.deploy(
        "WorkOrderReceiptRegistry", env.orders.address, env.workers.address
    )


def create(
    env: Env, receipts: Contract, key: bytes, sender: str | None = None
) -> object:
    call = receipts.functions.workOrderReceiptCreate(
        key, SERVICE, WORKER_ID, REQUESTER_ID, PENDING, EEA_HASH
    )
    return env.transact(call, sender or env.requester)


def update(
    env: Env, receipts: Contract, key: bytes, sender: str, kind: int = COMPLETED
) -> object:
    call = receipts.functions.workOrderReceiptUpdate(
        key, ANY, kind, b"response hash", b"sig", "SHA-256/secp256k1"
    )
    return env.transact(call, sender)


def sender_id(address: str) -> bytes:
    return bytes(12) + bytes.fromhex(address[2:])


def test_requester_creates_and_retrieves_a_receipt(
    env: Env, receipts: Contract
) -> None:
    """The order's requester creates its receipt; retrieve returns what was stored."""
    key = env.submit()
    receipt = create(env, receipts, key)

    assert receipts.functions.workOrderReceiptRetrieve(key).call() == [
        SERVICE,
        REQUESTER_ID,
        key,
        PENDING,
        EEA_HASH,
    ]
    (event,) = logs(receipt, receipts, "WorkOrderReceiptCreated")
    assert event["args"]["workOrderId"] == key


def test_only_the_requester_creates_once_for_an_existing_order(
    env: Env, receipts: Contract
) -> None:
    """Strangers, unknown orders, another worker and a second create are refused."""
    key = env.submit()
    with reverts("NotOrderRequester(bytes32,address)"):
        create(env, receipts, key, sender=env.stranger)
    with reverts("UnknownWorkOrder(bytes32)"):
        create(env, receipts, keccak(b"no order"))
    other_worker = receipts.functions.workOrderReceiptCreate(
        key, SERVICE, keccak(b"other"), REQUESTER_ID, PENDING, EEA_HASH
    )
    with reverts("WrongWorker(bytes32,bytes32)"):
        env.transact(other_worker, env.requester)
    create(env, receipts, key)
    with reverts("ReceiptExists(bytes32)"):
        create(env, receipts, key)


def test_requester_and_worker_operator_update(env: Env, receipts: Contract) -> None:
    """Both parties may update; a status-type update sets the receipt status."""
    key = env.submit()
    create(env, receipts, key)

    update(env, receipts, key, env.operator, kind=2)
    receipt = update(env, receipts, key, env.requester, kind=COMPLETED)

    (event,) = logs(receipt, receipts, "WorkOrderReceiptUpdated")
    assert event["args"]["updaterId"] == sender_id(env.requester)
    assert receipts.functions.workOrderReceiptRetrieve(key).call()[3] == COMPLETED


def test_application_specific_update_keeps_the_status(
    env: Env, receipts: Contract
) -> None:
    """An update type above 255 is recorded without changing the status."""
    key = env.submit()
    create(env, receipts, key)

    update(env, receipts, key, env.requester, kind=1000)

    assert receipts.functions.workOrderReceiptRetrieve(key).call()[3] == PENDING


@pytest.mark.parametrize("who", ["stranger", "relayer"])
def test_outsiders_cannot_update(env: Env, receipts: Contract, who: str) -> None:
    """Neither a stranger nor a relayer may update a receipt."""
    key = env.submit()
    create(env, receipts, key)

    with reverts("NotUpdater(bytes32,address)"):
        update(env, receipts, key, getattr(env, who))


def test_updater_id_must_be_the_sender(env: Env, receipts: Contract) -> None:
    """A party cannot record an update in someone else's name."""
    key = env.submit()
    create(env, receipts, key)
    call = receipts.functions.workOrderReceiptUpdate(
        key, sender_id(env.operator), 1, b"", b"", ""
    )

    with reverts("UpdaterIdMismatch(bytes32,address)"):
        env.transact(call, env.requester)


def test_update_retrieve_by_index_updater_and_last(
    env: Env, receipts: Contract
) -> None:
    """Updates come back by index, filtered by updater, and the last one by 0xFFFFFFFF."""
    key = env.submit()
    create(env, receipts, key)
    update(env, receipts, key, env.operator, kind=2)
    update(env, receipts, key, env.requester, kind=3)
    update(env, receipts, key, env.operator, kind=1)
    functions = receipts.functions

    first = functions.workOrderReceiptUpdateRetrieve(key, ANY, 0).call()
    last = functions.workOrderReceiptUpdateRetrieve(key, ANY, LAST).call()
    by_operator = functions.workOrderReceiptUpdateRetrieve(
        key, sender_id(env.operator), 1
    ).call()

    assert (first[0], first[1], first[5]) == (sender_id(env.operator), 2, 3)
    assert (last[1], last[4], last[5]) == (1, "SHA-256/secp256k1", 3)
    assert (by_operator[1], by_operator[5]) == (1, 2)
    with reverts("UnknownUpdate(bytes32,uint256)"):
        functions.workOrderReceiptUpdateRetrieve(key, ANY, 3).call()


def test_unknown_receipt_reverts(env: Env, receipts: Contract) -> None:
    """Retrieve and update of a receipt never created revert."""
    with reverts("UnknownReceipt(bytes32)"):
        receipts.functions.workOrderReceiptRetrieve(keccak(b"none")).call()
    with reverts("UnknownReceipt(bytes32)"):
        update(env, receipts, keccak(b"none"), env.requester)


def test_lookup_pages_and_filters_by_status(env: Env, receipts: Contract) -> None:
    """12 receipts page as 10 and 2; the status filter keeps the completed ones."""
    keys = [env.submit() for _ in range(12)]
    for key in keys:
        create(env, receipts, key)
    for key in keys[::4]:
        update(env, receipts, key, env.requester, kind=COMPLETED)
    functions = receipts.functions

    total, tag, first = functions.workOrderReceiptLookUp(
        ANY, WORKER_ID, ANY, ANY_STATUS
    ).call()
    total2, tag2, rest = functions.workOrderReceiptLookUpNext(
        ANY, WORKER_ID, ANY, ANY_STATUS, tag
    ).call()
    done = functions.workOrderReceiptLookUp(
        SERVICE, ANY, REQUESTER_ID, COMPLETED
    ).call()
    nobody = functions.workOrderReceiptLookUp(ANY, keccak(b"w"), ANY, ANY_STATUS).call()

    assert (total, tag, total2, tag2) == (12, "10", 12, "")
    assert first + rest == keys
    assert done == [3, "", keys[::4]]
    assert nobody == [0, "", []]
