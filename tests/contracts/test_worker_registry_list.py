"""WorkerRegistryList: the owner-curated directory of registries (EEA names)."""

from __future__ import annotations

import pytest
from eth_utils import keccak

from tests.contracts.support import Env, logs, reverts

ORG = keccak(b"org one")
APP = keccak(b"app one")
SC_ADDR = keccak(b"registry contract")[:32]


def add(
    env: Env,
    org: bytes = ORG,
    apps: tuple[bytes, ...] = (APP,),
    sender: str | None = None,
) -> object:
    call = env.worker_list.functions.registryAdd(
        org, "http://127.0.0.1:1947", SC_ADDR, list(apps)
    )
    return env.transact(call, sender or env.operator)


def test_add_and_retrieve(env: Env) -> None:
    """An added registry is retrievable and announced with its indexed org id."""
    receipt = add(env)

    assert env.worker_list.functions.registryRetrieve(ORG).call() == [
        "http://127.0.0.1:1947",
        SC_ADDR,
        [APP],
        1,
    ]
    (event,) = logs(receipt, env.worker_list, "RegistryAdded")
    assert event["args"]["orgId"] == ORG


def test_update_and_set_status(env: Env) -> None:
    """The owner can update an entry and move it through statuses 1-3."""
    add(env)
    call = env.worker_list.functions.registryUpdate(
        ORG, "http://127.0.0.1:2000", SC_ADDR, []
    )
    env.transact(call, env.operator)
    receipt = env.transact(
        env.worker_list.functions.registrySetStatus(ORG, 3), env.operator
    )

    assert env.worker_list.functions.registryRetrieve(ORG).call() == [
        "http://127.0.0.1:2000",
        SC_ADDR,
        [],
        3,
    ]
    (event,) = logs(receipt, env.worker_list, "RegistryStatusChanged")
    assert event["args"]["status"] == 3


@pytest.mark.parametrize("who", ["stranger", "relayer"])
def test_every_write_is_owner_only(env: Env, who: str) -> None:
    """Add, update, status change and ownership transfer revert for anyone but the owner."""
    add(env)
    attacker = getattr(env, who)
    functions = env.worker_list.functions
    calls = [
        functions.registryAdd(keccak(b"org two"), "u", SC_ADDR, []),
        functions.registryUpdate(ORG, "u", SC_ADDR, []),
        functions.registrySetStatus(ORG, 2),
        functions.transferOwnership(attacker),
    ]
    for call in calls:
        with reverts("NotOwner(address)"):
            env.transact(call, attacker)


def test_ownership_transfer_moves_the_right_to_write(env: Env) -> None:
    """After a transfer the new owner writes and the old one cannot."""
    env.transact(
        env.worker_list.functions.transferOwnership(env.stranger), env.operator
    )

    add(env, sender=env.stranger)
    with reverts("NotOwner(address)"):
        add(env, org=keccak(b"org two"))
    assert env.worker_list.functions.owner().call() == env.stranger


def test_duplicates_unknowns_and_bad_values_revert(env: Env) -> None:
    """Duplicate add, unknown entry, org id 0 and status outside 1-3 revert."""
    add(env)
    functions = env.worker_list.functions
    with reverts("RegistryAlreadyAdded(bytes32)"):
        add(env)
    with reverts("InvalidOrganizationId()"):
        add(env, org=b"\x00" * 32)
    with reverts("UnknownRegistry(bytes32)"):
        functions.registryRetrieve(keccak(b"nobody")).call()
    with reverts("UnknownRegistry(bytes32)"):
        env.transact(
            functions.registryUpdate(keccak(b"nobody"), "", SC_ADDR, []), env.operator
        )
    for status in (0, 4):
        with reverts("InvalidRegistryStatus(uint256)"):
            env.transact(functions.registrySetStatus(ORG, status), env.operator)


def test_lookup_pages_by_application(env: Env) -> None:
    """25 registries page as 10, 10, 5; the app filter keeps only those serving it."""
    orgs = [keccak(f"org {i}".encode()) for i in range(25)]
    other = keccak(b"other app")
    for i, org in enumerate(orgs):
        add(env, org=org, apps=(APP,) if i % 5 else (APP, other))
    functions = env.worker_list.functions

    total, tag, page = functions.registryLookUp(b"\x00" * 32).call()
    found, sizes = list(page), [len(page)]
    while tag:
        total, tag, page = functions.registryLookUpNext(b"\x00" * 32, tag).call()
        found += page
        sizes.append(len(page))

    assert (found, sizes, total) == (orgs, [10, 10, 5], 25)
    assert functions.registryLookUp(other).call() == [5, "", orgs[::5]]
    with reverts("InvalidLookupTag(string)"):
        functions.registryLookUpNext(APP, "-1").call()
