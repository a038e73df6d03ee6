"""Requester-side helpers: build encrypted, signed work orders; check answers.

:func:`build_work_order` makes a tcbridge-style order by default: a fresh
session key wrapped with RSA-OAEP SHA-256 (said in
``keyEncryptionAlgorithm``), a fresh IV in every encrypted item, the session
IV used once (for ``encryptedRequestHash``), and the requester signature.
``style="avalon"`` builds what Avalon's SDK sends instead (SHA-1 OAEP, one
shared IV), for interoperability tests and benchmarks.

:func:`verify_response` checks a worker's answer against the order that was
sent, stricter than Avalon's client: the ids must be the ones sent (EEA's
hash joins fields without separators, so a signature alone does not pin
them), output indexes must be ones the order could ask for, a response
without outData gets a clear verdict instead of a crash, and an answer to
a tcbridge-style order must not fall back to the shared session IV.
"""

from __future__ import annotations

import base64
import binascii
import os
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import coincurve
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from enclave_bridge import crypto
from enclave_bridge.crypto import OaepHash
from enclave_bridge.eea import (
    DATA_ENCRYPTION_ALGORITHM,
    KEY_ENCRYPTION_FIELD,
    OAEP_SHA256,
    PAYLOAD_FORMAT,
    PLAINTEXT_MARKER,
    SESSION_KEY_MARKERS,
    DataItem,
    WorkOrderRequest,
    parse_request,
)
from enclave_bridge.errors import ConfigurationError, CryptoError, WorkOrderError

Style = Literal["tcbridge", "avalon"]
Encryption = Literal["session", "plain", "item"]

# A requester's default patience, as Avalon's generic client uses.
DEFAULT_TIMEOUT_MSECS = 6000


@dataclass(frozen=True)
class WorkerDetails:
    """What a requester needs from a worker's registered EEA details."""

    worker_id: str
    encryption_key_pem: str
    verification_key_pem: str
    encryption_key_signature: str | None = None
    proof_data_type: str | None = None
    proof_data: str | None = None
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False)

    @classmethod
    def from_json(
        cls, document: Mapping[str, Any], worker_id: str | None = None
    ) -> WorkerDetails:
        """Read a WorkerRetrieve response, its ``result``, or a file holding one.

        ``worker_id`` is needed when the document does not name the worker
        (WorkerRetrieve's result does not).
        """
        worker_id = worker_id or _find_worker_id(document)
        result = document
        for key in ("workerRetrieveResponse", "result"):
            inner = result.get(key)
            if isinstance(inner, Mapping):
                result = inner
        details = result.get("details", result)
        type_data = (
            details.get("workerTypeData", details)
            if isinstance(details, Mapping)
            else {}
        )
        try:
            encryption_pem = type_data["encryptionKey"]
            verification_pem = type_data["verificationKey"]
        except (KeyError, TypeError):
            raise ConfigurationError(
                "worker details lack workerTypeData.encryptionKey/verificationKey"
            ) from None
        if not worker_id:
            raise ConfigurationError(
                "worker details do not name the worker: pass worker_id"
            )
        return cls(
            worker_id=worker_id,
            encryption_key_pem=encryption_pem,
            verification_key_pem=verification_pem,
            encryption_key_signature=type_data.get("encryptionKeySignature"),
            proof_data_type=type_data.get("proofDataType"),
            proof_data=type_data.get("proofData"),
            raw=document,
        )

    def encryption_key(self) -> rsa.RSAPublicKey:
        key = serialization.load_pem_public_key(self.encryption_key_pem.encode())
        if not isinstance(key, rsa.RSAPublicKey):
            raise ConfigurationError("the worker's encryptionKey is not an RSA key")
        return key

    def verifying_key(self) -> coincurve.PublicKey:
        return crypto.load_verifying_key(self.verification_key_pem)

    def encryption_key_signed(self) -> bool:
        """The worker's signing key vouches for its encryption key (SHA-256 of the PEM)."""
        if not self.encryption_key_signature:
            return False
        try:
            der = bytes.fromhex(self.encryption_key_signature)
        except ValueError:
            return False
        digest = crypto.sha256(self.encryption_key_pem.encode())
        return crypto.verify_digest(self.verifying_key(), digest, der)


def _find_worker_id(document: Mapping[str, Any]) -> str | None:
    value = document.get("workerId")
    if isinstance(value, str):
        return value
    retrieve = document.get("workerRetrieveRequest")
    if isinstance(retrieve, Mapping):
        params = retrieve.get("params")
        if isinstance(params, Mapping) and isinstance(params.get("workerId"), str):
            return str(params["workerId"])
    return None


@dataclass(frozen=True)
class InputItem:
    """One input of an order to build."""

    data: bytes
    encryption: Encryption = "session"
    index: int | None = None
    with_data_hash: bool = False


@dataclass(frozen=True)
class OutputSlot:
    """An outData slot the requester supplies: where output i goes."""

    index: int
    encryption: Encryption = "session"


@dataclass(frozen=True)
class SentWorkOrder:
    """An order as sent, with the secrets needed to read its answer."""

    request: dict[str, Any]
    session_key: bytes = field(repr=False)
    # Data keys of per-item-key slots, by outData index.
    slot_keys: Mapping[int, bytes] = field(default_factory=dict, repr=False)

    @classmethod
    def from_request(
        cls,
        request: Mapping[str, Any],
        session_key: bytes,
        slot_keys: Mapping[int, bytes] | None = None,
    ) -> SentWorkOrder:
        """Wrap a request built elsewhere (for example by Avalon's SDK)."""
        return cls(dict(request), session_key, dict(slot_keys or {}))

    @property
    def params(self) -> Mapping[str, Any]:
        params = self.request.get("params", self.request)
        return params if isinstance(params, Mapping) else {}

    @property
    def parsed(self) -> WorkOrderRequest:
        return parse_request(self.request)

    @property
    def style(self) -> Style:
        return "tcbridge" if KEY_ENCRYPTION_FIELD in self.params else "avalon"

    @property
    def session_iv(self) -> bytes:
        return bytes.fromhex(self.params["sessionKeyIv"])

    @property
    def request_hash(self) -> bytes:
        return crypto.request_hash(self.parsed)


def build_work_order(
    worker: WorkerDetails,
    workload: str,
    inputs: Sequence[bytes | str | InputItem],
    *,
    requester_key: bytes | None = None,
    requester_id: str | None = None,
    work_order_id: str | None = None,
    out_slots: Sequence[OutputSlot] = (),
    style: Style = "tcbridge",
    result_uri: str | None = None,
    notify_uri: str | None = None,
    timeout_msecs: int = DEFAULT_TIMEOUT_MSECS,
    jsonrpc_id: int = 1,
    rng: Callable[[int], bytes] = os.urandom,
) -> SentWorkOrder:
    """An encrypted (and, with ``requester_key``, signed) WorkOrderSubmit request."""
    tcbridge = style == "tcbridge"
    oaep = OaepHash.SHA256 if tcbridge else OaepHash.SHA1
    public_key = worker.encryption_key()
    session_key = rng(crypto.SESSION_KEY_BYTES)
    session_iv = rng(crypto.GCM_IV_BYTES)

    sealer = _Sealer(public_key, session_key, session_iv, oaep, tcbridge, rng)
    in_data = [
        sealer.seal(_as_input(value), position) for position, value in enumerate(inputs)
    ]
    slot_keys: dict[int, bytes] = {}
    out_data = []
    for slot in out_slots:
        item = sealer.seal(InputItem(b"", slot.encryption, slot.index), slot.index)
        if sealer.last_item_key is not None:
            slot_keys[slot.index] = sealer.last_item_key
        out_data.append(item)

    params: dict[str, Any] = {
        "workOrderId": work_order_id or rng(32).hex(),
        "responseTimeoutMSecs": timeout_msecs,
        "payloadFormat": PAYLOAD_FORMAT,
        "requesterNonce": rng(16).hex(),
        "workloadId": workload.encode().hex(),
        "workerId": worker.worker_id,
        "requesterId": requester_id or rng(32).hex(),
        "sessionKeyIv": session_iv.hex().upper(),
    }
    if result_uri is not None:
        params["resultUri"] = result_uri
    if notify_uri is not None:
        params["notifyUri"] = notify_uri
    params["workerEncryptionKey"] = worker.encryption_key_pem.encode().hex()
    params["dataEncryptionAlgorithm"] = DATA_ENCRYPTION_ALGORITHM
    if tcbridge:
        params[KEY_ENCRYPTION_FIELD] = OAEP_SHA256
    params["encryptedSessionKey"] = (
        crypto.rsa_wrap(public_key, session_key, oaep).hex().upper()
    )
    params["inData"] = in_data
    if out_data:
        params["outData"] = out_data

    # encryptedRequestHash is outside the hash; a placeholder lets it parse.
    digest = crypto.request_hash(
        parse_request({**params, "encryptedRequestHash": "00"})
    )
    params["encryptedRequestHash"] = (
        crypto.gcm_encrypt(session_key, session_iv, digest).hex().upper()
    )
    params["requesterSignature"] = ""
    if requester_key is not None:
        params["requesterSignature"] = crypto.sign_digest_b64(requester_key, digest)
        public = coincurve.PrivateKey(requester_key).public_key
        params["verifyingKey"] = crypto.public_key_pem(public)

    request = {
        "jsonrpc": "2.0",
        "method": "WorkOrderSubmit",
        "id": jsonrpc_id,
        "params": params,
    }
    return SentWorkOrder(request, session_key, slot_keys)


def _as_input(value: bytes | str | InputItem) -> InputItem:
    if isinstance(value, InputItem):
        return value
    return InputItem(value.encode() if isinstance(value, str) else value)


class _Sealer:
    def __init__(
        self,
        public_key: rsa.RSAPublicKey,
        session_key: bytes,
        session_iv: bytes,
        oaep: OaepHash,
        tcbridge: bool,
        rng: Callable[[int], bytes],
    ) -> None:
        self.public_key = public_key
        self.session_key = session_key
        self.session_iv = session_iv
        self.oaep = oaep
        self.tcbridge = tcbridge
        self.rng = rng
        self.last_item_key: bytes | None = None

    def seal(self, item: InputItem, default_index: int) -> dict[str, Any]:
        index = default_index if item.index is None else item.index
        out: dict[str, Any] = {"index": index}
        if item.with_data_hash:
            out["dataHash"] = crypto.data_hash_hex(item.data)
        self.last_item_key = None
        if item.encryption == "plain":
            out["encryptedDataEncryptionKey"] = PLAINTEXT_MARKER
            out["data"] = base64.b64encode(item.data).decode()
        elif item.encryption == "item":
            data_key = self.rng(crypto.SESSION_KEY_BYTES)
            iv = self.rng(crypto.GCM_IV_BYTES)
            out["encryptedDataEncryptionKey"] = crypto.wrap_item_key(
                self.public_key, self.session_key, data_key, self.rng(12), self.oaep
            )
            out["iv"] = iv.hex().upper()
            out["data"] = base64.b64encode(
                crypto.gcm_encrypt(data_key, iv, item.data)
            ).decode()
            self.last_item_key = data_key
        elif self.tcbridge:
            iv = self.rng(crypto.GCM_IV_BYTES)
            out["iv"] = iv.hex().upper()
            sealed = crypto.gcm_encrypt(self.session_key, iv, item.data)
            out["data"] = base64.b64encode(sealed).decode()
        else:
            sealed = crypto.gcm_encrypt(self.session_key, self.session_iv, item.data)
            out["data"] = base64.b64encode(sealed).decode()
        return out


@dataclass(frozen=True)
class Output:
    """One decrypted output of a verified response."""

    index: int
    data: bytes


@dataclass(frozen=True)
class ResponseVerdict:
    """Whether a response answers the order that was sent, and its outputs."""

    accepted: bool
    reason: str = ""
    outputs: tuple[Output, ...] = ()
    # The worker's JSON-RPC error, when it refused the order.
    error: Mapping[str, Any] | None = None


def verify_response(
    sent: SentWorkOrder,
    response: Mapping[str, Any],
    worker: WorkerDetails,
    *,
    attestation: Callable[[WorkerDetails], bool] | None = None,
    expected_indexes: Collection[int] | None = None,
) -> ResponseVerdict:
    """Check a response (JSON-RPC object or its ``result``) against ``sent``.

    By default the output indexes an order can ask for are its outData slot
    indexes, its inData indexes (one output per input) and 0 (workloads
    with a single result); pass ``expected_indexes`` to be exact.
    """
    if attestation is not None and not attestation(worker):
        return _reject("the worker's attestation was not accepted")
    if "error" in response:
        error = response["error"]
        code = error.get("code") if isinstance(error, Mapping) else None
        message = error.get("message") if isinstance(error, Mapping) else None
        return ResponseVerdict(
            False,
            f"the worker refused the work order (code {code}): {message}",
            error=error if isinstance(error, Mapping) else None,
        )
    result = response.get("result", response)
    if not isinstance(result, Mapping):
        return _reject("the response holds no result object")

    params = sent.params
    for name in ("workOrderId", "workloadId", "workerId", "requesterId"):
        if result.get(name) != params.get(name):
            return _reject(f"{name} differs from the one sent")
    nonce = result.get("workerNonce")
    signature = result.get("workerSignature")
    if not isinstance(nonce, str) or not nonce:
        return _reject("the response has no workerNonce")
    if not isinstance(signature, str) or not signature:
        return _reject("the response has no workerSignature")
    raw_items = result.get("outData")
    if not isinstance(raw_items, list) or not raw_items:
        return _reject("the response has no outData: nothing to verify or decrypt")

    try:
        items = [_response_item(raw) for raw in raw_items]
    except ValueError as exc:
        return _reject(f"malformed outData: {exc}")
    digest = crypto.response_hash(
        nonce,
        params["workOrderId"],
        params["workerId"],
        params["workloadId"],
        params["requesterId"],
        items,
    )
    if not crypto.verify_digest_b64(worker.verifying_key(), digest, signature):
        return _reject("workerSignature does not verify with the worker's key")

    allowed = (
        set(expected_indexes) if expected_indexes is not None else _askable(params)
    )
    seen: set[int] = set()
    outputs = []
    for item in items:
        if item.index in seen:
            return _reject(f"output index {item.index} appears twice")
        seen.add(item.index)
        if item.index not in allowed:
            return _reject(f"output index {item.index} was not asked for")
        try:
            plaintext = _open_output(sent, item)
        except CryptoError as exc:
            return _reject(f"output {item.index} does not decrypt: {exc}")
        except ValueError as exc:
            return _reject(f"output {item.index}: {exc}")
        if (item.data_hash or "").lower() != crypto.sha256(plaintext).hex():
            return _reject(f"output {item.index}: dataHash does not match the data")
        outputs.append(Output(item.index, plaintext))
    return ResponseVerdict(True, outputs=tuple(outputs))


def _reject(reason: str) -> ResponseVerdict:
    return ResponseVerdict(False, reason)


def _askable(params: Mapping[str, Any]) -> set[int]:
    indexes = {0}
    for key in ("inData", "outData"):
        for item in params.get(key) or ():
            indexes.add(int(item["index"]))
    return indexes


def _response_item(raw: Any) -> DataItem:
    if not isinstance(raw, Mapping):
        raise ValueError("an item is not an object")
    index = raw.get("index")
    if not isinstance(index, int) or isinstance(index, bool) or index < 0:
        raise ValueError("an item's index is not a non-negative integer")
    fields = {}
    for name in ("dataHash", "data", "encryptedDataEncryptionKey", "iv"):
        value = raw.get(name, "")
        if not isinstance(value, str):
            raise ValueError(f"{name} of item {index} is not a string")
        fields[name] = value
    return DataItem(
        index=index,
        data=fields["data"],
        data_hash=fields["dataHash"],
        encrypted_data_encryption_key=fields["encryptedDataEncryptionKey"],
        iv=fields["iv"],
    )


def _open_output(sent: SentWorkOrder, item: DataItem) -> bytes:
    try:
        raw = base64.b64decode(item.data, validate=True)
        iv = bytes.fromhex(item.iv or "")
    except (binascii.Error, ValueError):
        raise ValueError("data is not base64 or iv is not hex") from None
    key = item.encrypted_data_encryption_key or ""
    if key == PLAINTEXT_MARKER:
        return raw
    if key in SESSION_KEY_MARKERS:
        if sent.style == "tcbridge":
            if not iv:
                raise ValueError("no iv of its own: the worker reused the session IV")
            return crypto.gcm_decrypt(sent.session_key, iv, raw)
        return crypto.gcm_decrypt(sent.session_key, sent.session_iv, raw)
    data_key = sent.slot_keys.get(item.index)
    if data_key is None:
        raise ValueError("encrypted under a data key this order did not send")
    return crypto.gcm_decrypt(data_key, iv, raw)


def decrypt_outputs(
    sent: SentWorkOrder, response: Mapping[str, Any], worker: WorkerDetails
) -> list[Output]:
    """The outputs of a response that verifies; :class:`WorkOrderError` otherwise."""
    verdict = verify_response(sent, response, worker)
    if not verdict.accepted:
        raise WorkOrderError(1, f"response rejected: {verdict.reason}")
    return list(verdict.outputs)
