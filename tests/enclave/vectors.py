"""Loader for the Avalon interoperability vectors (``shared/vectors/avalon``).

The vectors live outside the repository: ``$TCBRIDGE_SHARED`` when set,
else ``<repo>/../shared``. Cases come from ``index.json`` only, never from a
hand-kept list. Other suites may import this module.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import coincurve
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from enclave_bridge.keys import WorkerKeys

REPO = Path(__file__).resolve().parents[2]


def shared_dir() -> Path:
    override = os.environ.get("TCBRIDGE_SHARED")
    return Path(override) if override else REPO.parent / "shared"


def vectors_dir() -> Path:
    return shared_dir() / "vectors" / "avalon"


def available() -> bool:
    return (vectors_dir() / "index.json").is_file()


def _read(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


@cache
def index() -> dict[str, Any]:
    return dict(_read(vectors_dir() / "index.json"))


def case_ids() -> list[str]:
    """Every case id in index.json (empty when the vectors are absent)."""
    if not available():
        return []
    return [case["id"] for case in index()["cases"]]


@dataclass(frozen=True)
class Case:
    id: str
    tags: dict[str, Any]
    request: dict[str, Any]
    response: dict[str, Any]
    hashes: dict[str, Any]
    expected: dict[str, Any]
    secrets: dict[str, Any]
    variants: list[dict[str, Any]]

    def fresh_request(self) -> dict[str, Any]:
        return copy.deepcopy(self.request)

    def fresh_response(self) -> dict[str, Any]:
        return copy.deepcopy(self.response)


@cache
def load_case(case_id: str) -> Case:
    folder = vectors_dir() / "cases" / case_id
    tags = next(c for c in index()["cases"] if c["id"] == case_id)
    return Case(
        id=case_id,
        tags=dict(tags),
        request=_read(folder / "request.json"),
        response=_read(folder / "response.json"),
        hashes=_read(folder / "hashes.json"),
        expected=_read(folder / "expected.json"),
        secrets=_read(folder / "secrets.json"),
        variants=list(_read(folder / "tampered.json")["variants"]),
    )


def cases() -> Iterator[Case]:
    for case_id in case_ids():
        yield load_case(case_id)


def variants(target: str) -> list[tuple[str, str]]:
    """(case id, variant id) for every tampered variant aimed at ``target``."""
    return [
        (case.id, variant["id"])
        for case in cases()
        for variant in case.variants
        if variant["target"] == target
    ]


def variant(case_id: str, variant_id: str) -> dict[str, Any]:
    return next(v for v in load_case(case_id).variants if v["id"] == variant_id)


def apply_patch(document: Any, patch: list[dict[str, Any]]) -> Any:
    """Apply RFC 6902 ``replace`` / ``remove`` operations to a copy."""
    out = copy.deepcopy(document)
    for op in patch:
        parts = [
            p.replace("~1", "/").replace("~0", "~") for p in op["path"].split("/")[1:]
        ]
        parent = out
        for part in parts[:-1]:
            parent = parent[int(part)] if isinstance(parent, list) else parent[part]
        last: Any = int(parts[-1]) if isinstance(parent, list) else parts[-1]
        if op["op"] == "replace":
            parent[last] = op["value"]
        elif op["op"] == "remove":
            del parent[last]
        else:
            raise ValueError(f"unsupported patch op {op['op']!r}")
    return out


@cache
def worker() -> dict[str, Any]:
    return dict(_read(vectors_dir() / "worker.json"))


@cache
def worker_keys() -> WorkerKeys:
    """The vectors' worker identity (published TEST-ONLY keys)."""
    raw = _read(vectors_dir() / "worker-keys.TEST-ONLY.json")
    rsa_key = serialization.load_pem_private_key(
        raw["encryptionPrivateKeyPem"].encode(), password=None
    )
    ec_key = serialization.load_pem_private_key(
        raw["signingPrivateKeyPem"].encode(), password=None
    )
    assert isinstance(rsa_key, rsa.RSAPrivateKey)
    assert isinstance(ec_key, ec.EllipticCurvePrivateKey)
    signing = ec_key.private_numbers().private_value.to_bytes(32, "big")
    return WorkerKeys(raw["workerId"], signing, rsa_key)


def signing_key_of(pem: str) -> bytes:
    """Raw 32-byte secp256k1 private key from a SEC1 PEM."""
    key = serialization.load_pem_private_key(pem.encode(), password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    return key.private_numbers().private_value.to_bytes(32, "big")


def worker_verifying_key() -> coincurve.PublicKey:
    return coincurve.PrivateKey(worker_keys().signing_key).public_key


def fixed_rng(seed: bytes = b"tcbridge-tests") -> Callable[[int], bytes]:
    """A deterministic byte source (SHA-256 in counter mode) for ``rng=``."""
    counter = 0

    def rng(n: int) -> bytes:
        nonlocal counter
        out = b""
        while len(out) < n:
            out += hashlib.sha256(seed + counter.to_bytes(8, "big")).digest()
            counter += 1
        return out[:n]

    return rng


def nonce_rng(case: Case) -> Callable[[int], bytes]:
    """Replays the case's worker nonce bytes; anything else comes from a fixed rng."""
    nonce = bytes.fromhex(case.secrets["workerNonceRandomHex"])
    fallback = fixed_rng(case.id.encode())

    def rng(n: int) -> bytes:
        return nonce if n == len(nonce) else fallback(n)

    return rng
