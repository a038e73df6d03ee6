"""Fabric message structures the development peer reads and builds.

Reading: a ``SignedProposal`` down to the chaincode name and arguments.
Building: the endorsed transaction a real peer's Gateway returns from
Endorse (Envelope -> Payload -> Transaction -> ChaincodeActionPayload ->
ChaincodeEndorsedAction -> ProposalResponsePayload -> ChaincodeAction with
the read/write set, the event and the chaincode response), and blocks.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from fabric_protos.common import common_pb2
from fabric_protos.peer import (
    chaincode_event_pb2,
    chaincode_pb2,
    proposal_pb2,
    proposal_response_pb2,
    transaction_pb2,
)

from enclave_bridge.errors import CryptoError


class MalformedMessage(CryptoError):
    """A proposal or envelope does not decode into what Fabric requires."""


@dataclass(frozen=True, slots=True)
class ParsedProposal:
    signed: proposal_pb2.SignedProposal
    proposal: proposal_pb2.Proposal
    header: common_pb2.Header
    channel_header: common_pb2.ChannelHeader
    signature_header: common_pb2.SignatureHeader
    payload: proposal_pb2.ChaincodeProposalPayload
    chaincode: str
    args: list[bytes]

    @property
    def tx_id(self) -> str:
        return str(self.channel_header.tx_id)

    @property
    def channel(self) -> str:
        return str(self.channel_header.channel_id)

    @property
    def creator(self) -> bytes:
        return bytes(self.signature_header.creator)


def compute_tx_id(nonce: bytes, creator: bytes) -> str:
    """Fabric's transaction id: hex SHA-256 of nonce ‖ creator."""
    return hashlib.sha256(nonce + creator).hexdigest()


def parse_proposal(signed: proposal_pb2.SignedProposal) -> ParsedProposal:
    try:
        proposal = proposal_pb2.Proposal.FromString(signed.proposal_bytes)
        header = common_pb2.Header.FromString(proposal.header)
        channel_header = common_pb2.ChannelHeader.FromString(header.channel_header)
        signature_header = common_pb2.SignatureHeader.FromString(
            header.signature_header
        )
        payload = proposal_pb2.ChaincodeProposalPayload.FromString(proposal.payload)
        spec = chaincode_pb2.ChaincodeInvocationSpec.FromString(payload.input)
    except Exception as exc:
        raise MalformedMessage("the signed proposal does not decode") from exc
    if channel_header.type != common_pb2.ENDORSER_TRANSACTION:
        raise MalformedMessage(
            f"proposal type {channel_header.type} is not ENDORSER_TRANSACTION"
        )
    expected = compute_tx_id(signature_header.nonce, signature_header.creator)
    if channel_header.tx_id != expected:
        raise MalformedMessage("the transaction id is not SHA-256(nonce ‖ creator)")
    chaincode = spec.chaincode_spec.chaincode_id.name
    if not chaincode:
        raise MalformedMessage("the proposal names no chaincode")
    return ParsedProposal(
        signed=signed,
        proposal=proposal,
        header=header,
        channel_header=channel_header,
        signature_header=signature_header,
        payload=payload,
        chaincode=chaincode,
        args=list(spec.chaincode_spec.input.args),
    )


def _payload_without_transient(parsed: ParsedProposal) -> bytes:
    # The transient map never reaches the ledger.
    raw = proposal_pb2.ChaincodeProposalPayload(input=parsed.payload.input)
    return bytes(raw.SerializeToString())


def proposal_hash(parsed: ParsedProposal) -> bytes:
    """SHA-256 over channel header, signature header and transient-free payload."""
    digest = hashlib.sha256()
    digest.update(parsed.header.channel_header)
    digest.update(parsed.header.signature_header)
    digest.update(_payload_without_transient(parsed))
    return digest.digest()


def chaincode_action(
    parsed: ParsedProposal,
    response: proposal_response_pb2.Response,
    results: bytes,
    event: chaincode_event_pb2.ChaincodeEvent | None,
    version: str,
) -> bytes:
    """The ProposalResponsePayload bytes the endorser signs."""
    action = proposal_pb2.ChaincodeAction(
        results=results,
        events=event.SerializeToString() if event is not None else b"",
        response=response,
        chaincode_id=chaincode_pb2.ChaincodeID(name=parsed.chaincode, version=version),
    )
    response_payload = proposal_response_pb2.ProposalResponsePayload(
        proposal_hash=proposal_hash(parsed), extension=action.SerializeToString()
    )
    return bytes(response_payload.SerializeToString())


def endorsed_envelope(
    parsed: ParsedProposal,
    response_payload: bytes,
    endorsement: proposal_response_pb2.Endorsement,
) -> common_pb2.Envelope:
    """The unsigned transaction envelope the client signs and submits."""
    action_payload = transaction_pb2.ChaincodeActionPayload(
        chaincode_proposal_payload=_payload_without_transient(parsed),
        action=transaction_pb2.ChaincodeEndorsedAction(
            proposal_response_payload=response_payload, endorsements=[endorsement]
        ),
    )
    transaction = transaction_pb2.Transaction(
        actions=[
            transaction_pb2.TransactionAction(
                header=parsed.header.signature_header,
                payload=action_payload.SerializeToString(),
            )
        ]
    )
    payload = common_pb2.Payload(
        header=parsed.header, data=transaction.SerializeToString()
    )
    return common_pb2.Envelope(payload=payload.SerializeToString())


@dataclass(frozen=True, slots=True)
class SubmittedTransaction:
    """What commit needs from a submitted envelope."""

    envelope: common_pb2.Envelope
    tx_id: str
    channel: str
    creator: bytes
    response_payload: bytes
    endorsements: list[proposal_response_pb2.Endorsement]
    action: proposal_pb2.ChaincodeAction


def parse_envelope(envelope: common_pb2.Envelope) -> SubmittedTransaction:
    try:
        payload = common_pb2.Payload.FromString(envelope.payload)
        channel_header = common_pb2.ChannelHeader.FromString(
            payload.header.channel_header
        )
        signature_header = common_pb2.SignatureHeader.FromString(
            payload.header.signature_header
        )
        transaction = transaction_pb2.Transaction.FromString(payload.data)
        (tx_action,) = transaction.actions
        action_payload = transaction_pb2.ChaincodeActionPayload.FromString(
            tx_action.payload
        )
        response_payload = proposal_response_pb2.ProposalResponsePayload.FromString(
            action_payload.action.proposal_response_payload
        )
        action = proposal_pb2.ChaincodeAction.FromString(response_payload.extension)
    except Exception as exc:
        raise MalformedMessage("the envelope is not an endorser transaction") from exc
    return SubmittedTransaction(
        envelope=envelope,
        tx_id=channel_header.tx_id,
        channel=channel_header.channel_id,
        creator=signature_header.creator,
        response_payload=action_payload.action.proposal_response_payload,
        endorsements=list(action_payload.action.endorsements),
        action=action,
    )


def header_hash(header: common_pb2.BlockHeader) -> bytes:
    """This peer's block hash: SHA-256 of the serialized header (not Fabric's ASN.1)."""
    return hashlib.sha256(header.SerializeToString()).digest()


def make_block(
    number: int, previous_hash: bytes, envelopes: list[bytes], codes: list[int]
) -> common_pb2.Block:
    data_hash = hashlib.sha256(b"".join(envelopes)).digest()
    metadata = [b""] * len(common_pb2.BlockMetadataIndex.items())
    metadata[common_pb2.BlockMetadataIndex.TRANSACTIONS_FILTER] = bytes(codes)
    return common_pb2.Block(
        header=common_pb2.BlockHeader(
            number=number, previous_hash=previous_hash, data_hash=data_hash
        ),
        data=common_pb2.BlockData(data=envelopes),
        metadata=common_pb2.BlockMetadata(metadata=metadata),
    )


def transactions_filter(block: common_pb2.Block) -> bytes:
    return bytes(
        block.metadata.metadata[common_pb2.BlockMetadataIndex.TRANSACTIONS_FILTER]
    )
