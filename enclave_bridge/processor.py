"""One work order in, one signed response out: the heart of a pool worker.

:class:`WorkOrderProcessor` checks a WorkOrderSubmit request in the order
of Avalon's C++ worker (unwrap the session key; decrypt every inData and
outData item and check its ``dataHash``; check the encrypted request hash;
check the requester signature), then lets the pool claim the request hash
(a worker serves one request hash once), runs the workload, encrypts the
outputs and signs the EEA response hash.

Before any of that, when the caller passes ``expected_ids`` (the ids a
registry put in its event topics), the request's own workOrderId, workerId
and requesterId must equal them: a hostile requester can make the JSON
disagree with the call, and the registry only accepts an answer signed by
the worker it names. So every answer to such an order is signed by that
worker's key, whatever the JSON says or whether it parses at all.

It never raises for bad input. Every refusal is an error outcome with an
EEA error code and a message that says what went wrong, and, when the
caller names an on-chain target, it carries a result signature too, so the
bridge can complete the order on-chain and no requester waits forever.

Two request styles, told apart by ``keyEncryptionAlgorithm``:

* Avalon's (field absent): RSA-OAEP with SHA-1, and one session IV for the
  request hash, every session-key input and every output. The worker
  answers the same way, because that is what Avalon's client can read,
  unless the policy refuses IV reuse.
* tcbridge's (``RSA-OAEP-SHA256``): each encrypted item carries its own
  ``iv``; the worker answers with a fresh IV per output, in the item's
  ``iv``. The session IV then encrypts the request hash only.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import coincurve
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from enclave_bridge import crypto
from enclave_bridge.crypto import OaepHash
from enclave_bridge.eea import (
    DataItem,
    EeaError,
    Limits,
    LoadedRequest,
    RawRequest,
    ResponseItem,
    WorkOrderErrorBody,
    WorkOrderRequest,
    WorkOrderResult,
    load_request,
    parse_request,
    peek_field,
)
from enclave_bridge.errors import (
    BugError,
    ConfigurationError,
    CryptoError,
    WorkOrderError,
)
from enclave_bridge.keys import WorkerKeys
from enclave_bridge.result_signature import (
    EthereumDomain,
    FabricDomain,
    SigningKey,
    sign_eip712,
    sign_fabric,
)
from enclave_bridge.workload import (
    WorkloadContext,
    WorkloadFailed,
    WorkloadInput,
    WorkloadOutput,
    WorkloadRegistry,
    WorkloadResult,
)

log = logging.getLogger(__name__)

# The ids a registry names in its event topics, as ``expected_ids`` keys,
# with the request field each must equal.
EXPECTED_ID_FIELDS = ("workOrderId", "workerId", "requesterId")

# Requesters' verifying keys (PEM text) decoded so far; decoding one costs
# about as much as checking its signature. Bounded against key floods.
VERIFYING_KEY_CACHE_SIZE = 4096

# Rejection stages, in the order the checks run; the first is no check: the
# caller refused the order (see WorkOrderProcessor.refusal).
STAGE_CALLER = "caller"
STAGE_PARSE = "parse"
STAGE_IDS = "ids"
STAGE_POLICY = "policy"
STAGE_SESSION_KEY = "session_key"
STAGE_DATA_DECRYPT = "data_decrypt"
STAGE_DATA_HASH = "data_hash"
STAGE_REQUEST_HASH = "request_hash"
STAGE_REQUESTER_SIGNATURE = "requester_signature"
STAGE_DUPLICATE = "duplicate"
STAGE_WORKLOAD = "workload"
STAGE_INTERNAL = "internal"

STAGES = (
    STAGE_CALLER,
    STAGE_PARSE,
    STAGE_IDS,
    STAGE_POLICY,
    STAGE_SESSION_KEY,
    STAGE_DATA_DECRYPT,
    STAGE_DATA_HASH,
    STAGE_REQUEST_HASH,
    STAGE_REQUESTER_SIGNATURE,
    STAGE_DUPLICATE,
    STAGE_WORKLOAD,
)


@dataclass(frozen=True)
class ProcessorPolicy:
    """What a worker accepts beyond the protocol's minimum."""

    # Avalon's requesters wrap the session key with RSA-OAEP SHA-1.
    allow_sha1_oaep: bool = True
    # Avalon's requesters and client use one GCM IV for everything.
    allow_iv_reuse: bool = True
    # requesterId (hex, any case) -> secp256k1 public key (PEM or SEC1): a
    # bound requester must sign with this key; its request's own
    # verifyingKey does not count.
    requester_keys: Mapping[str, bytes] = field(default_factory=dict)
    limits: Limits = field(default_factory=Limits)


@dataclass(frozen=True)
class EthereumTarget:
    """Where the result goes on Ethereum; ``request_hash`` is the stored keccak."""

    domain: EthereumDomain
    order_key: bytes
    request_hash: bytes


@dataclass(frozen=True)
class FabricTarget:
    """Where the result goes on Fabric; ``request_hash`` is SHA-256 of the request."""

    domain: FabricDomain
    work_order_id: str
    request_hash: bytes


@dataclass(frozen=True)
class OracleTarget:
    """A TrustedOracle request: the worker signs its plain result, not the response.

    A consumer contract needs the value, so the on-chain result is the
    plaintext of the first output (or, for an error result, the error
    message in UTF-8). The worker signs ``keccak256`` of exactly those bytes
    in the oracle's EIP-712 domain, with ``request_id`` as the order key and
    ``request_hash`` the hash the oracle stored at request time. Nothing but
    the worker's own answer is ever signed: the bridge cannot ask for a
    signature over bytes the worker did not produce.
    """

    domain: EthereumDomain
    request_id: bytes
    request_hash: bytes


AnyTarget = EthereumTarget | FabricTarget | OracleTarget


@dataclass(frozen=True)
class ProcessOutcome:
    """What one call of :meth:`WorkOrderProcessor.process` produced."""

    # 0 for a result, else the EEA error code.
    status: int
    # The whole JSON-RPC response object, result or error.
    response: dict[str, Any]
    # Compact JSON of ``response``: the exact bytes posted on-chain.
    response_bytes: bytes
    # EEA SHA-256 request hash, when the request parsed far enough.
    request_hash: bytes | None
    # Workload state to commit with this result (None: leave it unchanged).
    new_state: Mapping[str, Any] | None
    # On-chain signature over ``response_bytes`` for the given target; None
    # without a target, when ``expected_ids`` names a worker this processor
    # does not hold, or, without ``expected_ids``, when the order names a
    # worker it does not hold and it holds several (whose answer is it?).
    result_signature: bytes | None
    # Which check refused the request (one of STAGES), None for a result.
    stage: str | None = None


class _Refusal(Exception):
    def __init__(self, stage: str, code: int, message: str) -> None:
        super().__init__(message)
        self.stage = stage
        self.code = code
        self.message = message


@dataclass(frozen=True, slots=True)
class PreparedRequest:
    """A request parsed and hashed by :meth:`WorkOrderProcessor.prepare`.

    Nothing is decrypted or verified yet. The pool reads ``request_hash``
    to look up the order's result and the hash's claim in one read before
    the expensive checks; :meth:`WorkOrderProcessor.process` takes the
    object and goes on from where ``prepare`` stopped.
    """

    source: RawRequest
    # normalise_expected_ids() of the caller's ids.
    expected: Mapping[str, str] | None
    parsed: WorkOrderRequest | None
    # None when the request did not parse: process() refuses it.
    request_hash: bytes | None
    refusal: _Refusal | None


@dataclass
class _Opened:
    """A verified request with what decryption produced."""

    request: WorkOrderRequest
    # Lower case: the key of the processor's per-worker tables.
    worker_id: str
    worker: WorkerKeys
    session_key: bytes
    session_iv: bytes
    inputs: list[WorkloadInput]
    # Data keys of outData slots that carry their own key, by slot position.
    slot_keys: dict[int, bytes]
    request_hash: bytes


class WorkOrderProcessor:
    """Turns WorkOrderSubmit requests into signed EEA responses."""

    def __init__(
        self,
        keys: Mapping[str, WorkerKeys],
        registry: WorkloadRegistry,
        policy: ProcessorPolicy = ProcessorPolicy(),
    ) -> None:
        # Worker ids compare case-insensitively: hex names the same bytes.
        self._keys = {worker_id.lower(): worker for worker_id, worker in keys.items()}
        self._registry = registry
        self._policy = policy
        self._public_numbers = {
            worker_id: worker.encryption_key.public_key().public_numbers()
            for worker_id, worker in self._keys.items()
        }
        # Built once per worker: each object saves a public-key derivation
        # per signature.
        self._signers = {
            worker_id: coincurve.PrivateKey(worker.signing_key)
            for worker_id, worker in self._keys.items()
        }
        # The hex of each worker's published PEM, as requesters copy it into
        # workerEncryptionKey: a string compare instead of a PEM load.
        self._own_key_hex = {
            worker_id: _published_key_hex(worker)
            for worker_id, worker in self._keys.items()
        }
        self._verifying_keys: dict[str, coincurve.PublicKey] = {}
        self._bound_keys: dict[str, coincurve.PublicKey] = {}
        for requester, key in policy.requester_keys.items():
            try:
                self._bound_keys[requester.lower()] = crypto.load_verifying_key(key)
            except CryptoError as exc:
                raise ConfigurationError(
                    f"requester_keys[{requester!r}] is not a secp256k1 public key "
                    "(PEM or SEC1)"
                ) from exc

    def load(self, request: bytes) -> LoadedRequest | None:
        """The request's JSON decoded within this processor's limits, else None.

        A caller that needs fields before :meth:`process` (a pool process
        routes by workerId and workloadId) passes the result on to it, so
        the text is decoded once; None means :meth:`process` will refuse the
        raw bytes with the reason.
        """
        try:
            return load_request(request, self._policy.limits)
        except WorkOrderError:
            return None

    def prepare(
        self, request: RawRequest, expected_ids: Mapping[str, str] | None = None
    ) -> PreparedRequest:
        """Parse the request and compute its hash; never raises for bad input.

        Malformed ``expected_ids`` raise, as they do in :meth:`process`:
        they are the caller's, not the requester's.
        """
        expected = normalise_expected_ids(expected_ids)
        parsed: WorkOrderRequest | None = None
        try:
            parsed = self._parse(request, expected)
            return PreparedRequest(
                request, expected, parsed, crypto.request_hash(parsed), None
            )
        except _Refusal as refusal:
            return PreparedRequest(request, expected, parsed, None, refusal)
        except Exception:
            log.exception("work order check failed unexpectedly")
            return PreparedRequest(request, expected, parsed, None, _internal())

    def process(
        self,
        request: RawRequest | PreparedRequest,
        *,
        state: Mapping[str, Any] | None = None,
        target: AnyTarget | None = None,
        claim_request: Callable[[bytes], bool] | None = None,
        rng: Callable[[int], bytes] = os.urandom,
        expected_ids: Mapping[str, str] | None = None,
    ) -> ProcessOutcome:
        """Verify, run and answer one work order; never raises for bad input.

        ``claim_request`` is called with the request hash once the request
        verified and before the workload runs; False means the hash was
        already served for another order. Its own exceptions propagate:
        they are the pool's, not the requester's.

        ``expected_ids`` holds the ``workOrderId``, ``workerId`` and
        ``requesterId`` a registry named for this order (its event topics).
        A request whose own ids differ is refused before any cryptography,
        and every answer is then signed by the expected worker's key: the
        registry accepts no other signature for the order.

        A :class:`PreparedRequest` carries its own expected ids; passing
        ``expected_ids`` with it is a bug.
        """
        if not isinstance(request, PreparedRequest):
            request = self.prepare(request, expected_ids)
        elif expected_ids is not None:
            raise BugError("a prepared request carries its expected ids already")
        source, expected = request.source, request.expected
        parsed, request_hash = request.parsed, request.request_hash

        def refuse(refusal: _Refusal) -> ProcessOutcome:
            return self._refuse(source, parsed, request_hash, refusal, target, expected)

        if request.refusal is not None:
            return refuse(request.refusal)
        assert parsed is not None and request_hash is not None
        try:
            opened = self._open(parsed, request_hash)
        except _Refusal as refusal:
            return refuse(refusal)
        except Exception:
            log.exception("work order check failed unexpectedly")
            return refuse(_internal())

        if claim_request is not None and not claim_request(opened.request_hash):
            return refuse(
                _Refusal(
                    STAGE_DUPLICATE,
                    EeaError.INVALID_PARAMETER,
                    "duplicate request: this request hash was already served for "
                    "another work order; build a new request (fresh requesterNonce)",
                )
            )

        try:
            result, new_state, plain = self._run(opened, state, rng)
        except _Refusal as refusal:
            return refuse(refusal)
        except Exception:
            log.exception("work order %s failed unexpectedly", parsed.work_order_id)
            return refuse(_internal())

        response = {
            "jsonrpc": "2.0",
            "id": parsed.jsonrpc_id,
            "result": result.to_json(),
        }
        response_bytes = encode_response(response)
        size = len(response_bytes)
        limit = self._policy.limits.max_response_bytes
        if size > limit:
            # Never truncate a result: the requester gets a signed error that
            # says why, and the workload's state change is not committed.
            return refuse(
                _Refusal(
                    STAGE_WORKLOAD,
                    EeaError.INVALID_PARAMETER,
                    f"the result is {size} bytes, over this worker's limit of {limit}"
                    " bytes; send smaller inputs or split the work order",
                )
            )
        return self._outcome(
            0,
            response,
            request_hash,
            new_state,
            opened.worker_id,
            target,
            None,
            plain,
            response_bytes,
        )

    def refusal(
        self,
        request: RawRequest,
        code: int,
        message: str,
        *,
        target: AnyTarget | None = None,
        expected_ids: Mapping[str, str] | None = None,
    ) -> ProcessOutcome:
        """A signed error result the caller decided on; nothing is checked or run.

        For orders the bridge must answer but not run (a requester over its
        limits, an order whose retries crashes used up). The request is only
        read for its JSON-RPC id and workOrderId; the signer is the
        ``expected_ids`` worker, else as for any refusal.
        """
        return self._refuse(
            request,
            None,
            None,
            _Refusal(STAGE_CALLER, code, message),
            target,
            normalise_expected_ids(expected_ids),
        )

    # --- checks ---------------------------------------------------------

    def _parse(
        self, request: RawRequest, expected: Mapping[str, str] | None
    ) -> WorkOrderRequest:
        try:
            parsed = parse_request(request, self._policy.limits)
        except WorkOrderError as exc:
            raise _Refusal(STAGE_PARSE, exc.code, str(exc)) from None
        if expected is not None:
            _check_ids(parsed, expected)
        worker = self._keys.get(parsed.worker_id.lower())
        if worker is None:
            raise _Refusal(
                STAGE_PARSE,
                EeaError.INVALID_PARAMETER,
                f"workerId: {parsed.worker_id} is not a worker of this pool",
            )
        if parsed.worker_encryption_key and not self._is_own_key(parsed):
            raise _Refusal(
                STAGE_PARSE,
                EeaError.INVALID_PARAMETER,
                "workerEncryptionKey: not this worker's encryption key; fetch the "
                "worker's details again",
            )
        return parsed

    def _is_own_key(self, request: WorkOrderRequest) -> bool:
        sent = request.worker_encryption_key or ""
        if sent.lower() == self._own_key_hex[request.worker_id.lower()]:
            return True
        # Another PEM spelling (line breaks, PKCS#1) of the same key also counts.
        try:
            pem = bytes.fromhex(request.worker_encryption_key or "")
            key = serialization.load_pem_public_key(pem)
        except Exception:  # any undecodable key is simply not ours
            return False
        own = self._public_numbers[request.worker_id.lower()]
        return isinstance(key, rsa.RSAPublicKey) and key.public_numbers() == own

    def _open(self, request: WorkOrderRequest, request_hash: bytes) -> _Opened:
        worker = self._keys[request.worker_id.lower()]
        oaep = self._check_policy(request)

        try:
            session_key = crypto.unwrap_session_key(
                worker.encryption_key,
                bytes.fromhex(request.encrypted_session_key),
                oaep,
            )
        except CryptoError as exc:
            raise _Refusal(
                STAGE_SESSION_KEY, EeaError.INVALID_PARAMETER, str(exc)
            ) from None
        session_iv = bytes.fromhex(request.session_key_iv)

        opener = _ItemOpener(request, worker, session_key, session_iv, oaep)
        inputs = [
            WorkloadInput(item.index, opener.open(item, f"inData[{n}]"))
            for n, item in enumerate(request.in_data)
        ]
        slot_keys: dict[int, bytes] = {}
        for n, slot in enumerate(request.out_data or ()):
            if slot.data:
                opener.open(slot, f"outData[{n}]")
            if slot.key_kind == "item":
                slot_keys[n] = opener.item_key(slot, f"outData[{n}]")

        self._check_request_hash(request, request_hash, session_key, session_iv)
        self._check_requester_signature(request, request_hash)
        return _Opened(
            request,
            request.worker_id.lower(),
            worker,
            session_key,
            session_iv,
            inputs,
            slot_keys,
            request_hash,
        )

    def _check_policy(self, request: WorkOrderRequest) -> OaepHash:
        if not request.per_item_ivs:
            if not self._policy.allow_sha1_oaep:
                raise _Refusal(
                    STAGE_POLICY,
                    EeaError.UNSUPPORTED_MODE,
                    "this worker refuses RSA-OAEP with SHA-1: wrap the session key "
                    "with RSA-OAEP-SHA256 and say so in keyEncryptionAlgorithm",
                )
            if not self._policy.allow_iv_reuse:
                raise _Refusal(
                    STAGE_POLICY,
                    EeaError.UNSUPPORTED_MODE,
                    "this worker refuses GCM IV reuse: the request uses one session "
                    "IV for everything (Avalon style); send keyEncryptionAlgorithm "
                    "and a fresh iv in every encrypted item",
                )
            return OaepHash.SHA1
        if not self._policy.allow_iv_reuse:
            self._refuse_shared_ivs(request)
        return OaepHash.SHA256

    def _refuse_shared_ivs(self, request: WorkOrderRequest) -> None:
        # Under the session key, the session IV seals the request hash: every
        # session-key item needs an IV of its own, used once.
        used = {request.session_key_iv.lower()}
        for item in [*request.in_data, *(request.out_data or ())]:
            if item.key_kind != "session" or not item.data:
                continue
            if not item.iv:
                problem = "has no iv of its own and would reuse the session IV"
            elif item.iv.lower() in used:
                problem = "repeats an IV already used under the session key"
            else:
                used.add(item.iv.lower())
                continue
            raise _Refusal(
                STAGE_POLICY,
                EeaError.UNSUPPORTED_MODE,
                f"this worker refuses GCM IV reuse: item {item.index} {problem}",
            )

    def _check_request_hash(
        self, request: WorkOrderRequest, request_hash: bytes, key: bytes, iv: bytes
    ) -> None:
        try:
            sent = crypto.gcm_decrypt(
                key, iv, bytes.fromhex(request.encrypted_request_hash)
            )
        except CryptoError:
            sent = b""
        if not crypto.same_bytes(sent, request_hash):
            raise _Refusal(
                STAGE_REQUEST_HASH,
                EeaError.INVALID_SIGNATURE,
                "encryptedRequestHash does not match the request: the request was "
                "changed after it was built",
            )

    def _check_requester_signature(
        self, request: WorkOrderRequest, digest: bytes
    ) -> None:
        signature = request.requester_signature or ""
        bound = self._bound_keys.get(request.requester_id.lower())
        if bound is not None:
            if not signature or not crypto.verify_digest_b64(bound, digest, signature):
                raise _Refusal(
                    STAGE_REQUESTER_SIGNATURE,
                    EeaError.ACCESS_DENIED,
                    f"requesterId {request.requester_id} is bound to a verifying key "
                    "and the request is not signed with it",
                )
            return
        if not signature:
            return
        key = self._verifying_key(request.verifying_key or "")
        if not crypto.verify_digest_b64(key, digest, signature):
            raise _Refusal(
                STAGE_REQUESTER_SIGNATURE,
                EeaError.INVALID_SIGNATURE,
                "requesterSignature does not verify over the request hash",
            )

    def _verifying_key(self, text: str) -> coincurve.PublicKey:
        key = self._verifying_keys.get(text)
        if key is not None:
            return key
        try:
            key = crypto.load_verifying_key(text)
        except CryptoError:
            raise _Refusal(
                STAGE_REQUESTER_SIGNATURE,
                EeaError.INVALID_SIGNATURE,
                "verifyingKey: missing or not a secp256k1 public key (PEM)",
            ) from None
        if len(self._verifying_keys) >= VERIFYING_KEY_CACHE_SIZE:
            self._verifying_keys.clear()
        self._verifying_keys[text] = key
        return key

    # --- workload and response --------------------------------------------

    def _run(
        self,
        opened: _Opened,
        state: Mapping[str, Any] | None,
        rng: Callable[[int], bytes],
    ) -> tuple[WorkOrderResult, Mapping[str, Any] | None, bytes]:
        """The signed result, the new workload state, the first output in plain."""
        request = opened.request
        name = request.workload_name
        workload = self._registry.get(name) if name is not None else None
        if workload is None:
            raise _Refusal(
                STAGE_WORKLOAD,
                EeaError.INVALID_PARAMETER,
                f"workloadId: {request.workload_id} names no workload of this worker",
            )

        ctx = WorkloadContext(
            worker_id=request.worker_id,
            work_order_id=request.work_order_id,
            requester_id=request.requester_id,
            state=MappingProxyType(dict(state)) if state is not None else None,
        )
        try:
            result = workload.run(opened.inputs, ctx)
        except WorkloadFailed as exc:
            raise _Refusal(
                STAGE_WORKLOAD, EeaError.UNKNOWN_ERROR, f"workload refused: {exc}"
            ) from None
        except Exception as exc:
            log.debug("workload %s raised %r", name, exc)
            raise _Refusal(
                STAGE_WORKLOAD, EeaError.UNKNOWN_ERROR, f"workload {name} failed"
            ) from None
        outputs = self._check_result(result, name or "")

        items = [
            self._seal_output(opened, n, output, rng)
            for n, output in enumerate(outputs)
        ]
        nonce = crypto.worker_nonce(rng)
        digest = crypto.response_hash(
            nonce,
            request.work_order_id,
            request.worker_id,
            request.workload_id,
            request.requester_id,
            items,
        )
        signed = WorkOrderResult(
            work_order_id=request.work_order_id,
            workload_id=request.workload_id,
            worker_id=request.worker_id,
            requester_id=request.requester_id,
            worker_nonce=nonce,
            worker_signature=crypto.sign_digest_b64(
                self._signers[opened.worker_id], digest
            ),
            out_data=tuple(items),
        )
        return signed, result.new_state, outputs[0].data

    def _check_result(self, result: object, name: str) -> Sequence[WorkloadOutput]:
        garbage = _Refusal(
            STAGE_WORKLOAD,
            EeaError.UNKNOWN_ERROR,
            f"workload {name} returned a malformed result",
        )
        if not isinstance(result, WorkloadResult):
            raise garbage
        outputs = result.outputs
        if not isinstance(outputs, list | tuple) or not outputs:
            raise garbage
        if len(outputs) > self._policy.limits.max_items:
            raise garbage
        for output in outputs:
            if not (
                isinstance(output, WorkloadOutput)
                and isinstance(output.data, bytes)
                and isinstance(output.index, int)
                and not isinstance(output.index, bool)
                and 0 <= output.index < 2**31
                and len(output.data) <= self._policy.limits.max_item_bytes
            ):
                raise garbage
        if result.new_state is not None and not isinstance(result.new_state, Mapping):
            raise garbage
        return outputs

    def _seal_output(
        self,
        opened: _Opened,
        position: int,
        output: WorkloadOutput,
        rng: Callable[[int], bytes],
    ) -> ResponseItem:
        request = opened.request
        slots = request.out_data or ()
        slot: DataItem | None = slots[position] if position < len(slots) else None
        index = slot.index if slot is not None else output.index
        kind = slot.key_kind if slot is not None else "session"
        key_field = (
            (slot.encrypted_data_encryption_key or "") if slot is not None else ""
        )
        iv_field = (slot.iv or "") if slot is not None else ""

        if kind == "plain":
            data = output.data
        elif kind == "item":
            # A per-item key is never paired with the requester's IV again.
            iv = _fresh_iv(rng)
            data = crypto.gcm_encrypt(opened.slot_keys[position], iv, output.data)
            iv_field = iv.hex().upper()
        elif request.per_item_ivs:
            iv = _fresh_iv(rng)
            data = crypto.gcm_encrypt(opened.session_key, iv, output.data)
            iv_field = iv.hex().upper()
        else:
            # Avalon's client decrypts outputs with the session IV only.
            data = crypto.gcm_encrypt(
                opened.session_key, opened.session_iv, output.data
            )

        return ResponseItem(
            index=index,
            data_hash=crypto.data_hash_hex(output.data),
            data=base64.b64encode(data).decode(),
            encrypted_data_encryption_key=key_field,
            iv=iv_field,
        )

    # --- answers ----------------------------------------------------------

    def _refuse(
        self,
        request: RawRequest,
        parsed: WorkOrderRequest | None,
        request_hash: bytes | None,
        refusal: _Refusal,
        target: AnyTarget | None,
        expected: Mapping[str, str] | None,
    ) -> ProcessOutcome:
        if parsed is not None:
            rpc_id: Any = parsed.jsonrpc_id
            work_order_id: str | None = parsed.work_order_id
            worker_id: Any = parsed.worker_id
        else:
            rpc_id = _json_id(peek_field(request, "id"))
            work_order_id = _short_str(peek_field(request, "workOrderId"))
            worker_id = peek_field(request, "workerId")
        if expected is not None:
            # The registry's ids decide: the answer names its order and is
            # signed by its worker, whatever the JSON says.
            worker_id = expected["workerId"]
            if (work_order_id or "").lower() != expected["workOrderId"]:
                work_order_id = expected["workOrderId"]
        log.debug(
            "work order %s refused at %s: %s",
            work_order_id,
            refusal.stage,
            refusal.message,
        )
        body = WorkOrderErrorBody(refusal.code, refusal.message, work_order_id)
        response = {"jsonrpc": "2.0", "id": rpc_id, "error": body.to_json()}
        signer = self._signer_for(worker_id, strict=expected is not None)
        return self._outcome(
            int(refusal.code),
            response,
            request_hash,
            None,
            signer,
            target,
            refusal.stage,
            refusal.message.encode(),
        )

    def _signer_for(self, worker_id: Any, *, strict: bool) -> str | None:
        """The (lower-case) id of the worker that signs, None for no signature."""
        if isinstance(worker_id, str) and worker_id.lower() in self._keys:
            return worker_id.lower()
        # A pool process usually serves one identity: it answers for it,
        # unless a registry named the worker (no other signature counts).
        if len(self._keys) == 1 and not strict:
            return next(iter(self._keys))
        return None

    def _outcome(
        self,
        status: int,
        response: dict[str, Any],
        request_hash: bytes | None,
        new_state: Mapping[str, Any] | None,
        signer: str | None,
        target: AnyTarget | None,
        stage: str | None,
        oracle_result: bytes = b"",
        response_bytes: bytes | None = None,
    ) -> ProcessOutcome:
        if response_bytes is None:
            response_bytes = encode_response(response)
        signature = None
        if isinstance(target, OracleTarget) and signer is not None:
            signature = sign_eip712(
                self._signers[signer],
                target.domain,
                target.request_id,
                target.request_hash,
                crypto.keccak256(oracle_result),
                status,
            )
        elif target is not None and signer is not None:
            assert not isinstance(target, OracleTarget)
            signature = result_signature(
                self._signers[signer], target, response_bytes, status
            )
        return ProcessOutcome(
            status=status,
            response=response,
            response_bytes=response_bytes,
            request_hash=request_hash,
            new_state=new_state,
            result_signature=signature,
            stage=stage,
        )


class _ItemOpener:
    """Decrypts data items of one request and checks their data hashes."""

    def __init__(
        self,
        request: WorkOrderRequest,
        worker: WorkerKeys,
        session_key: bytes,
        session_iv: bytes,
        oaep: OaepHash,
    ) -> None:
        self.request = request
        self.worker = worker
        self.session_key = session_key
        self.session_iv = session_iv
        self.oaep = oaep
        # Unwrapped per-item keys by item position: one RSA operation each.
        self._item_keys: dict[str, bytes] = {}

    def item_key(self, item: DataItem, where: str) -> bytes:
        cached = self._item_keys.get(where)
        if cached is not None:
            return cached
        wrapped = bytes.fromhex(item.encrypted_data_encryption_key or "")
        try:
            key = crypto.unwrap_item_key(
                self.worker.encryption_key, self.session_key, wrapped, self.oaep
            )
        except CryptoError as exc:
            raise _Refusal(
                STAGE_DATA_DECRYPT, EeaError.INVALID_PARAMETER, f"{where}: {exc}"
            ) from None
        self._item_keys[where] = key
        return key

    def open(self, item: DataItem, where: str) -> bytes:
        raw = base64.b64decode(item.data)
        kind = item.key_kind
        try:
            if kind == "plain":
                plaintext = raw
            elif kind == "item":
                key = self.item_key(item, where)
                plaintext = crypto.gcm_decrypt(key, bytes.fromhex(item.iv or ""), raw)
            else:
                iv = self.session_iv
                if self.request.per_item_ivs and item.iv:
                    iv = bytes.fromhex(item.iv)
                plaintext = crypto.gcm_decrypt(self.session_key, iv, raw)
        except CryptoError as exc:
            raise _Refusal(
                STAGE_DATA_DECRYPT, EeaError.INVALID_PARAMETER, f"{where}: {exc}"
            ) from None

        if item.data_hash and not crypto.same_bytes(
            hashlib.sha256(plaintext).digest(), bytes.fromhex(item.data_hash)
        ):
            raise _Refusal(
                STAGE_DATA_HASH,
                EeaError.INVALID_PARAMETER,
                f"{where}.dataHash does not match the decrypted data",
            )
        return plaintext


def encode_response(response: Mapping[str, Any]) -> bytes:
    """Compact ASCII JSON, keys in the order built (Avalon's order).

    ASCII because an error answer may echo a requester's string (an id) that
    holds a lone surrogate, which has no UTF-8 form; JSON escapes it.
    """
    return json.dumps(response, separators=(",", ":")).encode("ascii")


def result_signature(
    signing_key: SigningKey,
    target: EthereumTarget | FabricTarget,
    response_bytes: bytes,
    status: int,
) -> bytes:
    """The on-chain signature over exact response bytes for one target."""
    if isinstance(target, EthereumTarget):
        return sign_eip712(
            signing_key,
            target.domain,
            target.order_key,
            target.request_hash,
            crypto.keccak256(response_bytes),
            status,
        )
    return sign_fabric(
        signing_key,
        target.domain,
        target.work_order_id,
        target.request_hash,
        hashlib.sha256(response_bytes).digest(),
        status,
    )


def _published_key_hex(worker: WorkerKeys) -> str:
    pem = worker.encryption_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return pem.hex()


def normalise_expected_ids(
    expected_ids: Mapping[str, str] | None,
) -> dict[str, str] | None:
    """``expected_ids`` lower-cased; BugError when malformed (a caller's bug)."""
    if expected_ids is None:
        return None
    out: dict[str, str] = {}
    for name in EXPECTED_ID_FIELDS:
        value = expected_ids.get(name)
        if not isinstance(value, str) or not value or not _is_hex(value):
            raise BugError(
                f"expected_ids[{name!r}] must be a hex string without 0x, got {value!r}"
            )
        out[name] = value.lower()
    return out


def _is_hex(text: str) -> bool:
    return all(c in "0123456789abcdefABCDEF" for c in text)


def _check_ids(request: WorkOrderRequest, expected: Mapping[str, str]) -> None:
    sent = {
        "workOrderId": request.work_order_id,
        "workerId": request.worker_id,
        "requesterId": request.requester_id,
    }
    for name in EXPECTED_ID_FIELDS:
        if sent[name].lower() != expected[name]:
            raise _Refusal(
                STAGE_IDS,
                EeaError.INVALID_PARAMETER,
                f"{name}: the request says {_clip(sent[name])} but the registry's "
                f"event names {expected[name]}; submit the order with the same "
                "ids in the request and the call",
            )


def _clip(text: str) -> str:
    return text if len(text) <= 80 else text[:77] + "..."


def _fresh_iv(rng: Callable[[int], bytes]) -> bytes:
    iv = rng(crypto.GCM_IV_BYTES)
    if len(iv) != crypto.GCM_IV_BYTES:
        raise ValueError("rng returned the wrong number of bytes")
    return iv


def _internal() -> _Refusal:
    return _Refusal(
        STAGE_INTERNAL,
        EeaError.UNKNOWN_ERROR,
        "internal error while processing the work order; the operator's log has details",
    )


def _json_id(value: Any) -> Any:
    if isinstance(value, bool) or not isinstance(value, int | str):
        return None
    return value


def _short_str(value: Any) -> str | None:
    return value if isinstance(value, str) and len(value) <= 256 else None
