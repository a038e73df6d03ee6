"""A client of the Fabric Gateway gRPC service: Evaluate, Endorse, Submit,
CommitStatus and ChaincodeEvents, signed with one X.509 identity.

Proposals are built as Fabric's own clients build them: a ``ChannelHeader``
(ENDORSER_TRANSACTION, the transaction id, channel, timestamp and the
chaincode id in its extension) and a ``SignatureHeader`` (creator and a
fresh nonce) in a ``Header``; a ``ChaincodeInvocationSpec`` in the payload;
the whole ``Proposal`` signed. The transaction id is the hex SHA-256 of
nonce and creator, so the peer can check it was not chosen freely.

gRPC errors become tcbridge errors in one place, :func:`translate`.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Protocol

import grpc
from fabric_protos.common import common_pb2
from fabric_protos.gateway import gateway_pb2, gateway_pb2_grpc
from fabric_protos.orderer import ab_pb2
from fabric_protos.peer import (
    chaincode_event_pb2,
    chaincode_pb2,
    proposal_pb2,
    proposal_response_pb2,
    transaction_pb2,
)
from google.protobuf import timestamp_pb2

from connector.fabric.identity import FabricIdentity
from enclave_bridge.errors import (
    ChainError,
    ConfigurationError,
    NodeUnavailable,
    TcbridgeError,
    TransactionFailed,
)

# TxValidationCode values the connector acts on (fabric-protos transaction.proto).
VALID = transaction_pb2.VALID
MVCC_READ_CONFLICT = transaction_pb2.MVCC_READ_CONFLICT

# Status codes that mean "the peer is away or busy": try again later.
_TRANSIENT = {
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.DEADLINE_EXCEEDED,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
    grpc.StatusCode.CANCELLED,
}
# Status codes that mean "the configuration points at the wrong thing".
_MISCONFIGURED = {
    grpc.StatusCode.PERMISSION_DENIED,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.UNAUTHENTICATED,
    grpc.StatusCode.UNIMPLEMENTED,
}

# gRPC's own reconnect backoff grows to two minutes; keep it near the
# watcher's and bridge's backoff so a restarted peer is found within seconds.
_CHANNEL_OPTIONS = [
    ("grpc.initial_reconnect_backoff_ms", 200),
    ("grpc.min_reconnect_backoff_ms", 200),
    ("grpc.max_reconnect_backoff_ms", 5000),
]


class EndorsementRefused(TransactionFailed):
    """The chaincode refused the proposal; ``reason`` is its code (``DuplicateOrder``)."""


@dataclass(frozen=True, slots=True)
class Proposal:
    """A signed proposal and the transaction id it carries."""

    tx_id: str
    signed: proposal_pb2.SignedProposal


@dataclass(frozen=True, slots=True)
class Prepared:
    """An endorsed transaction, signed by the client and ready for Submit."""

    tx_id: str
    envelope: common_pb2.Envelope
    result: bytes


@dataclass(frozen=True, slots=True)
class EventBlock:
    """The chaincode events of one block, in transaction order."""

    block_number: int
    events: list[chaincode_event_pb2.ChaincodeEvent]


def translate(exc: grpc.RpcError, what: str, address: str) -> TcbridgeError:
    """The tcbridge error for a failed Gateway call (the one mapping place)."""
    code = exc.code() if isinstance(exc, grpc.aio.AioRpcError) else None
    detail = exc.details() if isinstance(exc, grpc.aio.AioRpcError) else str(exc)
    text = f"{what} at {address}: {detail}"
    if code in _TRANSIENT or code is None:
        return NodeUnavailable(f"{text} (the peer is unreachable or busy; retrying)")
    if code in _MISCONFIGURED:
        # Not a ChainError, which the bridge would retry forever: the
        # operator must fix the identity, channel or chaincode name.
        return ConfigurationError(
            f"{text}: check the MSP id, certificate, channel and chaincode in [fabric]"
        )
    if code in (grpc.StatusCode.ABORTED, grpc.StatusCode.UNKNOWN):
        return EndorsementRefused(text, reason=_chaincode_reason(detail or ""))
    return ChainError(text)


def _chaincode_reason(detail: str) -> str | None:
    """The chaincode's error code: the text before the first colon of its message."""
    marker = "chaincode response 500, "
    if marker not in detail:
        return None
    message = detail.split(marker, 1)[1]

    return message.split(":", 1)[0].strip() or None


class FabricGateway:
    """One identity talking to one chaincode on one channel through a Gateway peer."""

    def __init__(
        self,
        address: str,
        identity: FabricIdentity,
        channel: str,
        chaincode: str,
        *,
        credentials: grpc.ChannelCredentials | None = None,
    ) -> None:
        self.address = address
        self.identity = identity
        self.channel = channel
        self.chaincode = chaincode
        if credentials is None:
            self._grpc = grpc.aio.insecure_channel(address, options=_CHANNEL_OPTIONS)
        else:
            self._grpc = grpc.aio.secure_channel(
                address, credentials, options=_CHANNEL_OPTIONS
            )
        self._stub = gateway_pb2_grpc.GatewayStub(self._grpc)

    async def close(self) -> None:
        await self._grpc.close()

    async def __aenter__(self) -> FabricGateway:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- building and signing ---------------------------------------------

    def propose(self, function: str, *args: str | bytes) -> Proposal:
        """A signed proposal to call ``function(args)``, with a fresh transaction id."""
        tx_id, signed = sign_proposal(
            self.identity, self.channel, self.chaincode, function, *args
        )
        return Proposal(tx_id, signed)

    # -- calls ------------------------------------------------------------

    async def evaluate(self, function: str, *args: str | bytes) -> bytes:
        """Run a read-only query on the peer; nothing is ordered."""
        proposal = self.propose(function, *args)
        request = gateway_pb2.EvaluateRequest(
            transaction_id=proposal.tx_id,
            channel_id=self.channel,
            proposed_transaction=proposal.signed,
        )
        try:
            response = await self._stub.Evaluate(request)
        except grpc.RpcError as exc:
            raise translate(exc, f"evaluate {function}", self.address) from exc

        return bytes(response.result.payload)

    async def endorse(self, proposal: Proposal) -> Prepared:
        """Collect the endorsement and sign the transaction envelope."""
        request = gateway_pb2.EndorseRequest(
            transaction_id=proposal.tx_id,
            channel_id=self.channel,
            proposed_transaction=proposal.signed,
        )
        try:
            response = await self._stub.Endorse(request)
        except grpc.RpcError as exc:
            raise translate(exc, f"endorse {proposal.tx_id}", self.address) from exc
        unsigned = response.prepared_transaction
        envelope = common_pb2.Envelope(
            payload=unsigned.payload, signature=self.identity.sign(unsigned.payload)
        )

        return Prepared(proposal.tx_id, envelope, _result_of(envelope))

    async def submit(self, tx_id: str, envelope: common_pb2.Envelope) -> None:
        """Hand a signed envelope to the orderer through the gateway."""
        request = gateway_pb2.SubmitRequest(
            transaction_id=tx_id, channel_id=self.channel, prepared_transaction=envelope
        )
        try:
            await self._stub.Submit(request)
        except grpc.RpcError as exc:
            raise translate(exc, f"submit {tx_id}", self.address) from exc

    async def commit_status(
        self, tx_id: str, timeout: float | None = None
    ) -> tuple[int, int]:
        """``(TxValidationCode, block number)`` once ``tx_id`` is in a block.

        The gateway answers only when the transaction is committed; with
        ``timeout`` a transaction that is not (yet) in a block raises
        ``NodeUnavailable`` instead of waiting forever.
        """
        inner = gateway_pb2.CommitStatusRequest(
            transaction_id=tx_id,
            channel_id=self.channel,
            identity=self.identity.serialized(),
        ).SerializeToString()
        request = gateway_pb2.SignedCommitStatusRequest(
            request=inner, signature=self.identity.sign(inner)
        )
        try:
            response = await self._stub.CommitStatus(request, timeout=timeout)
        except grpc.RpcError as exc:
            raise translate(exc, f"commit status of {tx_id}", self.address) from exc

        return int(response.result), int(response.block_number)

    async def chaincode_events(
        self, start_block: int, after_tx_id: str = ""
    ) -> AsyncIterator[EventBlock]:
        """Blocks of events from ``start_block``, skipping up to ``after_tx_id`` in it."""
        position = ab_pb2.SeekPosition()
        position.specified.number = start_block
        inner = gateway_pb2.ChaincodeEventsRequest(
            channel_id=self.channel,
            chaincode_id=self.chaincode,
            identity=self.identity.serialized(),
            start_position=position,
            after_transaction_id=after_tx_id,
        ).SerializeToString()
        request = gateway_pb2.SignedChaincodeEventsRequest(
            request=inner, signature=self.identity.sign(inner)
        )
        stream = self._stub.ChaincodeEvents(request)
        try:
            async for response in stream:
                yield EventBlock(int(response.block_number), list(response.events))
        except grpc.RpcError as exc:
            raise translate(exc, "chaincode events", self.address) from exc
        finally:
            stream.cancel()
        raise NodeUnavailable(
            f"chaincode events at {self.address}: the peer ended the stream"
        )


def _result_of(envelope: common_pb2.Envelope) -> bytes:
    """The chaincode's return value inside an endorsed transaction envelope."""
    payload = common_pb2.Payload.FromString(envelope.payload)
    transaction = transaction_pb2.Transaction.FromString(payload.data)
    if not transaction.actions:
        raise ChainError("the endorsed transaction holds no action")
    action_payload = transaction_pb2.ChaincodeActionPayload.FromString(
        transaction.actions[0].payload
    )
    response_payload = proposal_response_pb2.ProposalResponsePayload.FromString(
        action_payload.action.proposal_response_payload
    )
    action = proposal_pb2.ChaincodeAction.FromString(response_payload.extension)

    return bytes(action.response.payload)


class _Signer(Protocol):
    def serialized(self) -> bytes: ...

    def sign(self, data: bytes) -> bytes: ...


def sign_proposal(
    identity: _Signer, channel: str, chaincode: str, function: str, *args: str | bytes
) -> tuple[str, proposal_pb2.SignedProposal]:
    """A SignedProposal to call ``function(args)`` on ``chaincode``, as Fabric clients build it.

    Returns the fresh transaction id (SHA-256 of nonce and creator) with it.
    Shared by the connector and the development peer's test client.
    """
    creator = identity.serialized()
    nonce = os.urandom(24)
    tx_id = hashlib.sha256(nonce + creator).hexdigest()
    timestamp = timestamp_pb2.Timestamp()
    timestamp.GetCurrentTime()
    chaincode_id = chaincode_pb2.ChaincodeID(name=chaincode)

    channel_header = common_pb2.ChannelHeader(
        type=common_pb2.ENDORSER_TRANSACTION,
        tx_id=tx_id,
        channel_id=channel,
        timestamp=timestamp,
        extension=proposal_pb2.ChaincodeHeaderExtension(
            chaincode_id=chaincode_id
        ).SerializeToString(),
    )
    header = common_pb2.Header(
        channel_header=channel_header.SerializeToString(),
        signature_header=common_pb2.SignatureHeader(
            creator=creator, nonce=nonce
        ).SerializeToString(),
    )
    raw_args = [function.encode()]
    raw_args += [a if isinstance(a, bytes) else a.encode() for a in args]
    invocation = chaincode_pb2.ChaincodeInvocationSpec(
        chaincode_spec=chaincode_pb2.ChaincodeSpec(
            type=chaincode_pb2.ChaincodeSpec.NODE,
            chaincode_id=chaincode_id,
            input=chaincode_pb2.ChaincodeInput(args=raw_args),
        )
    )
    proposal = proposal_pb2.Proposal(
        header=header.SerializeToString(),
        payload=proposal_pb2.ChaincodeProposalPayload(
            input=invocation.SerializeToString()
        ).SerializeToString(),
    )
    proposal_bytes = proposal.SerializeToString()
    signed = proposal_pb2.SignedProposal(
        proposal_bytes=proposal_bytes, signature=identity.sign(proposal_bytes)
    )

    return tx_id, signed
