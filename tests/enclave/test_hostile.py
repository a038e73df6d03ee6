"""Hostile input: mutated work orders get clean error outcomes, never exceptions."""

from __future__ import annotations

import base64
import copy
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from enclave_bridge import crypto
from enclave_bridge.eea import EeaError, Limits, parse_request
from enclave_bridge.processor import (
    STAGES,
    ProcessorPolicy,
    WorkOrderProcessor,
)
from enclave_bridge.requester import (
    InputItem,
    OutputSlot,
    WorkerDetails,
    build_work_order,
)
from enclave_bridge.workload import default_registry
from tests.enclave import vectors
from tests.enclave.conftest import requires_vectors

pytestmark = requires_vectors

# Small limits keep oversized inputs cheap to build and to refuse.
LIMITS = Limits(
    max_request_bytes=256 * 1024,
    max_items=16,
    max_item_bytes=32 * 1024,
    max_field_chars=4096,
)
OWN_KEY = bytes.fromhex("66" * 32)

# The stages hostile input must be able to reach: every check of the worker.
MUST_REACH = {
    "session_key",
    "data_decrypt",
    "data_hash",
    "request_hash",
    "requester_signature",
    "workload",
}

_HEX = re.compile(r"[0-9a-fA-F]+")
# Fields whose bytes a flip or a cut damages: ciphertexts, IVs and digests.
FLIPPABLE = {
    "encryptedSessionKey",
    "encryptedRequestHash",
    "data",
    "encryptedDataEncryptionKey",
    "iv",
    "dataHash",
}
WRONG_VALUES: list[Any] = [
    None,
    0,
    -1,
    True,
    [],
    {},
    1.5,
    "",
    "xyz",
    "\ud800",
    "é" * 3,
    2**70,
    [{"index": 0}],
]


@dataclass(frozen=True)
class Base:
    """A valid order with the secrets needed to re-seal a mutated copy."""

    name: str
    request: dict[str, Any]
    session_key: bytes
    signing_key: bytes | None


def _vector_base(case_id: str) -> Base:
    case = vectors.load_case(case_id)
    pem = case.secrets.get("requesterSigningKeyPem")
    return Base(
        case_id,
        case.request,
        bytes.fromhex(case.secrets["sessionKeyHex"]),
        vectors.signing_key_of(pem) if pem else None,
    )


def _bases() -> list[Base]:
    if not vectors.available():
        return []
    wanted = [
        c for c in vectors.case_ids() if not vectors.load_case(c).tags["stateful"]
    ]
    # A spread of shapes: plain, outData, signed, dataHash, per-item key, "-" items.
    picks = [
        c for c in wanted if c[:4] in {"av02", "av08", "av11", "av13", "av15", "av21"}
    ]
    details = WorkerDetails.from_json(vectors.worker())
    own = build_work_order(
        details,
        "echo-result",
        [
            InputItem(b"alpha", with_data_hash=True),
            InputItem(b"beta", "item"),
            b"gamma",
        ],
        requester_key=OWN_KEY,
        out_slots=[OutputSlot(0), OutputSlot(1, "item")],
        rng=vectors.fixed_rng(b"hostile"),
    )
    own_plain = build_work_order(
        details,
        "echo-result",
        [b"x"],
        requester_key=OWN_KEY,
        rng=vectors.fixed_rng(b"h2"),
    )
    return [
        *(_vector_base(c) for c in picks),
        Base("tcbridge-mixed", own.request, own.session_key, OWN_KEY),
        Base("tcbridge-plain", own_plain.request, own_plain.session_key, OWN_KEY),
    ]


BASES = _bases()


# --- paths into params ------------------------------------------------------


def leaf_paths(params: dict[str, Any]) -> list[tuple[Any, ...]]:
    paths: list[tuple[Any, ...]] = [(key,) for key in params]
    for array in ("inData", "outData"):
        for position, item in enumerate(params.get(array) or []):
            paths.append((array, position))
            paths += [(array, position, key) for key in item]
    return paths


def _parent(params: Any, path: tuple[Any, ...]) -> Any:
    target = params
    for step in path[:-1]:
        target = target[step]
    return target


def get(params: Any, path: tuple[Any, ...]) -> Any:
    return _parent(params, path)[path[-1]]


def put(params: Any, path: tuple[Any, ...], value: Any) -> None:
    _parent(params, path)[path[-1]] = value


def remove(params: Any, path: tuple[Any, ...]) -> None:
    del _parent(params, path)[path[-1]]


# --- mutations --------------------------------------------------------------


def _decode(text: str) -> tuple[bytes, Callable[[bytes], str]]:
    if _HEX.fullmatch(text) and len(text) % 2 == 0:
        upper = text.isupper()
        return bytes.fromhex(text), lambda b: b.hex().upper() if upper else b.hex()
    return base64.b64decode(text), lambda b: base64.b64encode(b).decode()


def m_wrong_type(params: dict[str, Any], path: tuple[Any, ...], n: int) -> None:
    put(params, path, WRONG_VALUES[n % len(WRONG_VALUES)])


def m_remove(params: dict[str, Any], path: tuple[Any, ...], n: int) -> None:
    remove(params, path)


def m_bad_hex(params: dict[str, Any], path: tuple[Any, ...], n: int) -> None:
    value = get(params, path)
    if isinstance(value, str) and value:
        at = n % len(value)
        put(params, path, value[:at] + "g" + value[at + 1 :])


def m_flip(params: dict[str, Any], path: tuple[Any, ...], n: int) -> None:
    value = get(params, path)
    if path[-1] in FLIPPABLE and isinstance(value, str) and len(value) > 4:
        raw, encode = _decode(value)
        if raw:
            flipped = bytearray(raw)
            flipped[(n // 8) % len(raw)] ^= 1 << (n % 8)
            put(params, path, encode(bytes(flipped)))


def m_truncate(params: dict[str, Any], path: tuple[Any, ...], n: int) -> None:
    value = get(params, path)
    if path[-1] in FLIPPABLE and isinstance(value, str) and len(value) > 4:
        raw, encode = _decode(value)
        put(params, path, encode(raw[: n % max(len(raw), 1)]))


def m_oversize(params: dict[str, Any], path: tuple[Any, ...], n: int) -> None:
    value = get(params, path)
    if isinstance(value, str):
        unit = "AAAA" if path[-1] == "data" else "AB"
        put(params, path, unit * (LIMITS.max_item_bytes // 2 + 1 + n % 7))
    elif isinstance(value, list):
        put(
            params, path, [copy.deepcopy(value[0]) for _ in range(LIMITS.max_items + 1)]
        )


def m_duplicate_index(params: dict[str, Any], path: tuple[Any, ...], n: int) -> None:
    items = params.get("inData") or []
    if isinstance(items, list) and items:
        clone = copy.deepcopy(items[n % len(items)])
        items.append(clone)


MUTATIONS: dict[str, Callable[[dict[str, Any], tuple[Any, ...], int], None]] = {
    "wrong-type": m_wrong_type,
    "remove": m_remove,
    "bad-hex": m_bad_hex,
    "flip": m_flip,
    "truncate": m_truncate,
    "oversize": m_oversize,
    "duplicate-index": m_duplicate_index,
}


def reseal(base: Base, params: dict[str, Any], *, resign: bool) -> None:
    """Redo encryptedRequestHash (and the signature) after a change, where it parses."""
    try:
        digest = crypto.request_hash(
            parse_request({**params, "encryptedRequestHash": "00"})
        )
    except Exception:
        return
    iv = bytes.fromhex(params["sessionKeyIv"])
    sealed = crypto.gcm_encrypt(base.session_key, iv, digest)
    params["encryptedRequestHash"] = sealed.hex().upper()
    if resign and base.signing_key is not None and params.get("requesterSignature"):
        params["requesterSignature"] = crypto.sign_digest_b64(base.signing_key, digest)


def r_data_hash(params: dict[str, Any], n: int) -> None:
    items = params["inData"]
    items[n % len(items)]["dataHash"] = crypto.data_hash_hex(b"something else")


def r_workload(params: dict[str, Any], n: int) -> None:
    params["workloadId"] = f"no-such-workload-{n}".encode().hex()


def r_nonce(params: dict[str, Any], n: int) -> None:
    params["requesterNonce"] = f"{n:032x}"


def r_flip_data(params: dict[str, Any], n: int) -> None:
    items = params["inData"]
    m_flip(params, ("inData", n % len(items), "data"), n)


# (change, re-sign?) applied before re-sealing the request hash.
RESEALED: dict[str, tuple[Callable[[dict[str, Any], int], None], bool]] = {
    "resealed-data-hash": (r_data_hash, True),
    "resealed-workload": (r_workload, True),
    "resealed-nonce-old-signature": (r_nonce, False),
    "resealed-flip-data": (r_flip_data, True),
}


def mutate(base: Base, kind: str, path_pick: int, n: int) -> dict[str, Any]:
    request = copy.deepcopy(base.request)
    params = request["params"]
    if kind in RESEALED:
        change, resign = RESEALED[kind]
        change(params, n)
        reseal(base, params, resign=resign)
        return request
    paths = leaf_paths(params)
    MUTATIONS[kind](params, paths[path_pick % len(paths)], n)
    return request


def make_processor() -> WorkOrderProcessor:
    keys = vectors.worker_keys()
    return WorkOrderProcessor(
        {keys.worker_id: keys}, default_registry(), ProcessorPolicy(limits=LIMITS)
    )


def check_outcome(
    processor: WorkOrderProcessor, request: dict[str, Any] | bytes
) -> str | None:
    """Process one mutated order; assert a clean outcome; return its stage."""
    outcome = processor.process(request, rng=vectors.fixed_rng(b"w"))

    assert outcome.stage != "internal", outcome.response
    assert json.loads(outcome.response_bytes) == json.loads(
        json.dumps(outcome.response)
    )
    if outcome.status == 0:
        assert outcome.stage is None
        assert "result" in outcome.response
        return None
    assert outcome.stage in STAGES
    assert outcome.status in {int(code) for code in EeaError}
    error = outcome.response["error"]
    assert error["code"] == outcome.status
    assert isinstance(error["message"], str) and error["message"]
    return outcome.stage


def test_every_check_is_reachable_by_some_mutation() -> None:
    """A sweep of every mutation kind over every base reaches every rejection stage."""
    processor = make_processor()
    reached: set[str] = set()
    for base in BASES:
        paths = len(leaf_paths(base.request["params"]))
        for kind in [*MUTATIONS, *RESEALED]:
            picks = range(paths) if kind in MUTATIONS else range(2)
            for pick in picks:
                stage = check_outcome(
                    processor, mutate(base, kind, pick, pick * 13 + 5)
                )
                if stage:
                    reached.add(stage)

    assert reached >= MUST_REACH, MUST_REACH - reached
    assert "parse" in reached


@settings(
    max_examples=400,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(
    base=st.sampled_from(BASES) if BASES else st.none(),
    kinds=st.lists(st.sampled_from([*MUTATIONS, *RESEALED]), min_size=1, max_size=3),
    picks=st.lists(st.integers(0, 10_000), min_size=3, max_size=3),
    as_bytes=st.booleans(),
)
def test_random_mutations_never_raise(
    base: Base | None, kinds: list[str], picks: list[int], as_bytes: bool
) -> None:
    """Stacked random mutations give clean outcomes, and a valid order still succeeds after."""
    if base is None:
        pytest.skip("no vectors")
    processor = _shared_processor()
    request = base.request
    for kind, pick in zip(kinds, picks, strict=False):
        layered = Base(base.name, request, base.session_key, base.signing_key)
        try:
            request = mutate(layered, kind, pick, pick)
        except (
            KeyError,
            IndexError,
            TypeError,
            AttributeError,
            ValueError,
            ZeroDivisionError,
        ):
            break  # an earlier mutation removed what this one edits

    check_outcome(processor, json.dumps(request).encode() if as_bytes else request)
    valid = processor.process(BASES[-1].request)
    assert valid.status == 0, valid.response


_PROCESSOR: list[WorkOrderProcessor] = []


def _shared_processor() -> WorkOrderProcessor:
    if not _PROCESSOR:
        _PROCESSOR.append(make_processor())
    return _PROCESSOR[0]


# (base name prefix, mutation, path, expected stage) for one clear case each.
TARGETED = [
    ("av02", "flip", ("encryptedSessionKey",), "session_key"),
    ("av02", "truncate", ("encryptedSessionKey",), "session_key"),
    ("av02", "flip", ("inData", 0, "data"), "data_decrypt"),
    ("av02", "truncate", ("inData", 0, "data"), "data_decrypt"),
    ("av21", "flip", ("inData", 0, "encryptedDataEncryptionKey"), "data_decrypt"),
    ("av02", "flip", ("encryptedRequestHash",), "request_hash"),
    ("av08", "flip", ("inData", 0, "data"), "request_hash"),
    ("av02", "bad-hex", ("workOrderId",), "parse"),
    ("av02", "wrong-type", ("inData",), "parse"),
    (
        "tcbridge-mixed",
        "flip",
        ("outData", 1, "encryptedDataEncryptionKey"),
        "data_decrypt",
    ),
    ("tcbridge-mixed", "flip", ("inData", 0, "iv"), "data_decrypt"),
    ("tcbridge-mixed", "flip", ("inData", 0, "dataHash"), "data_hash"),
    ("av15", "truncate", ("inData", 0, "dataHash"), "parse"),
]


@pytest.mark.parametrize(
    ("prefix", "kind", "path", "stage"),
    TARGETED,
    ids=[f"{p}-{k}-{'.'.join(map(str, path))}" for p, k, path, _ in TARGETED],
)
def test_targeted_mutations_stop_at_their_stage(
    prefix: str, kind: str, path: tuple[Any, ...], stage: str
) -> None:
    """Each encrypted field, when damaged, is caught by the check that owns it."""
    base = next(b for b in BASES if b.name.startswith(prefix))
    request = copy.deepcopy(base.request)
    MUTATIONS[kind](request["params"], path, 3)

    assert check_outcome(make_processor(), request) == stage
