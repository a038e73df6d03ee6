"""WorkerRegistry lookups: real paging over 26 workers, filters, tags."""

from __future__ import annotations

import pytest
from eth_utils import keccak
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from web3 import EthereumTesterProvider, Web3

from tests.contracts.support import APP_ID, ORG_ID, WORKER_ID, Env, key_of, reverts

ANY = b"\x00" * 32
APP_A, APP_B = keccak(b"app A"), keccak(b"app B")
# Worker i: type 1 + i % 2; serves app A, and app B too when i % 3 == 0.
PAGED = [keccak(f"paged worker {i}".encode()) for i in range(25)]


@pytest.fixture(scope="module")
def deployed() -> Env:
    """One deployment holding the fixture worker and 25 more, registered once."""
    env = Env.create(Web3(EthereumTesterProvider()))
    for i, worker_id in enumerate(PAGED):
        apps = (APP_A, APP_B) if i % 3 == 0 else (APP_A,)
        env.register_worker(
            worker_id, key_of(f"p{i}"), worker_type=1 + i % 2, apps=apps
        )
    return env


def all_pages(
    env: Env, *filters: object
) -> tuple[list[int], list[str], list[list[bytes]]]:
    """Walks LookUp then LookUpNext until the tag is empty."""
    total, tag, ids = env.workers.functions.workerLookUp(*filters).call()
    totals, tags, pages = [total], [tag], [list(ids)]
    while tag:
        total, tag, ids = env.workers.functions.workerLookUpNext(*filters, tag).call()
        totals.append(total)
        tags.append(tag)
        pages.append(list(ids))
    return totals, tags, pages


def flat(pages: list[list[bytes]]) -> list[bytes]:
    return [worker_id for page in pages for worker_id in page]


def test_lookup_pages_26_workers(env: Env) -> None:
    """26 workers come back in registration order, in pages of 10, 10 and 6."""
    totals, tags, pages = all_pages(env, 0, ANY, ANY)

    assert [len(p) for p in pages] == [10, 10, 6]
    assert flat(pages) == [WORKER_ID, *PAGED]
    assert totals == [26, 26, 26]
    assert tags == ["10", "20", ""]


def test_filtered_tag_continues_after_the_last_match_taken(env: Env) -> None:
    """With a sparse filter the tag points past the non-matching entries already scanned."""
    totals, tags, pages = all_pages(env, 2, ANY, ANY)

    type2 = [w for i, w in enumerate(PAGED) if i % 2 == 1]
    assert pages == [type2[:10], type2[10:]]
    # The 11th type-2 worker is PAGED[21], at index 22 of the list.
    assert tags == ["22", ""]
    assert totals == [12, 12]


def test_lookup_filters_by_type_org_and_application(env: Env) -> None:
    """Each non-zero filter field narrows the result; 0 means any."""
    _, _, with_b = all_pages(env, 0, ANY, APP_B)
    _, _, type1_b = all_pages(env, 1, ORG_ID, APP_B)
    _, _, fixture_app = all_pages(env, 0, ANY, APP_ID)
    totals, tags, other_org = all_pages(env, 0, keccak(b"other org"), ANY)

    assert flat(with_b) == [w for i, w in enumerate(PAGED) if i % 3 == 0]
    assert flat(type1_b) == [w for i, w in enumerate(PAGED) if i % 6 == 0]
    assert fixture_app == [[WORKER_ID]]
    assert (totals, tags, other_org) == ([0], [""], [[]])


def test_new_registrations_extend_a_walk_in_progress(env: Env) -> None:
    """A worker registered between pages shows up on a later page: tags index an append-only list."""
    _, tag, _ = env.workers.functions.workerLookUp(0, ANY, ANY).call()
    late = keccak(b"late worker")
    env.register_worker(late, key_of("late"))

    total, tag, _ = env.workers.functions.workerLookUpNext(0, ANY, ANY, tag).call()
    total, tag, last = env.workers.functions.workerLookUpNext(0, ANY, ANY, tag).call()

    assert (total, tag) == (27, "")
    assert last[-1] == late


def test_lookup_next_refuses_a_bad_tag(env: Env) -> None:
    """A non-numeric, empty or overlong tag reverts instead of restarting silently."""
    for tag in ("", "x1", "1" * 21):
        with reverts("InvalidLookupTag(string)"):
            env.workers.functions.workerLookUpNext(0, ANY, ANY, tag).call()


def test_lookup_next_past_the_end_is_empty(env: Env) -> None:
    """A tag beyond the list yields an empty page with the full total."""
    result = env.workers.functions.workerLookUpNext(0, ANY, ANY, "99").call()

    assert result == [26, "", []]


@settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    worker_type=st.sampled_from([0, 1, 2, 3]),
    org=st.sampled_from([ANY, ORG_ID, keccak(b"other org")]),
    app=st.sampled_from([ANY, APP_A, APP_B, APP_ID, keccak(b"unknown app")]),
)
def test_paging_matches_a_model_for_any_filter(
    env: Env, worker_type: int, org: bytes, app: bytes
) -> None:
    """For any filter, walking the pages yields exactly the model's matches, in order."""
    registered = [(WORKER_ID, 1, ORG_ID, {APP_ID})] + [
        (w, 1 + i % 2, ORG_ID, {APP_A, APP_B} if i % 3 == 0 else {APP_A})
        for i, w in enumerate(PAGED)
    ]
    expected = [
        w
        for w, t, o, apps in registered
        if worker_type in (0, t) and org in (ANY, o) and (app == ANY or app in apps)
    ]

    totals, tags, pages = all_pages(env, worker_type, org, app)

    assert flat(pages) == expected
    assert set(totals) == {len(expected)}
    assert all(len(page) == 10 for page in pages[:-1])
    assert tags[-1] == ""
