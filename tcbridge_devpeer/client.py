"""A minimal Python client of the Fabric Gateway protocol.

Builds and signs proposals (SignedProposal over a real Proposal with
ChannelHeader, SignatureHeader and ChaincodeInvocationSpec), then Evaluate,
Endorse, Submit, CommitStatus and ChaincodeEvents, with the stubs from
``fabric_protos.gateway``. It serves the development peer's tests and demo;
tcbridge's Fabric connector is the production client.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

import grpc
from fabric_protos.common import common_pb2
from fabric_protos.gateway import gateway_pb2, gateway_pb2_grpc
from fabric_protos.orderer import ab_pb2
from fabric_protos.peer import (
    chaincode_event_pb2,
    proposal_pb2,
)

from connector.fabric.gateway import sign_proposal
from tcbridge_devpeer.msp import Identity
from tcbridge_devpeer.protocol import parse_envelope


@dataclass(frozen=True, slots=True)
class Proposed:
    tx_id: str
    signed: proposal_pb2.SignedProposal


@dataclass(frozen=True, slots=True)
class Prepared:
    tx_id: str
    envelope: common_pb2.Envelope
    result: bytes


class GatewayClient:
    """One identity talking to one chaincode on one channel."""

    def __init__(
        self, address: str, identity: Identity, channel: str, chaincode: str
    ) -> None:
        self.address = address
        self.identity = identity
        self.channel = channel
        self.chaincode = chaincode
        self._grpc = grpc.aio.insecure_channel(address)
        self._stub = gateway_pb2_grpc.GatewayStub(self._grpc)

    async def close(self) -> None:
        await self._grpc.close()

    def propose(self, function: str, *args: str | bytes) -> Proposed:
        tx_id, signed = sign_proposal(
            self.identity, self.channel, self.chaincode, function, *args
        )
        return Proposed(tx_id, signed)

    async def evaluate(self, function: str, *args: str | bytes) -> bytes:
        proposed = self.propose(function, *args)
        response = await self._stub.Evaluate(
            gateway_pb2.EvaluateRequest(
                transaction_id=proposed.tx_id,
                channel_id=self.channel,
                proposed_transaction=proposed.signed,
            )
        )
        return bytes(response.result.payload)

    async def endorse(self, proposed: Proposed) -> Prepared:
        response = await self._stub.Endorse(
            gateway_pb2.EndorseRequest(
                transaction_id=proposed.tx_id,
                channel_id=self.channel,
                proposed_transaction=proposed.signed,
            )
        )
        envelope = response.prepared_transaction
        result = parse_envelope(envelope).action.response.payload
        return Prepared(proposed.tx_id, envelope, bytes(result))

    async def submit_prepared(self, prepared: Prepared) -> None:
        envelope = common_pb2.Envelope(
            payload=prepared.envelope.payload,
            signature=self.identity.sign(prepared.envelope.payload),
        )
        await self._stub.Submit(
            gateway_pb2.SubmitRequest(
                transaction_id=prepared.tx_id,
                channel_id=self.channel,
                prepared_transaction=envelope,
            )
        )

    async def commit_status(self, tx_id: str) -> tuple[int, int]:
        """``(TxValidationCode, block number)`` once the transaction is committed."""
        request = gateway_pb2.CommitStatusRequest(
            transaction_id=tx_id,
            channel_id=self.channel,
            identity=self.identity.serialized(),
        ).SerializeToString()
        response = await self._stub.CommitStatus(
            gateway_pb2.SignedCommitStatusRequest(
                request=request, signature=self.identity.sign(request)
            )
        )
        return int(response.result), int(response.block_number)

    async def submit(self, function: str, *args: str | bytes) -> tuple[bytes, int, int]:
        """Endorse, submit and wait: ``(result, validation code, block number)``."""
        prepared = await self.endorse(self.propose(function, *args))
        await self.submit_prepared(prepared)
        code, block = await self.commit_status(prepared.tx_id)
        return prepared.result, code, block

    async def events(
        self, start_block: int | None = None, after_tx_id: str = ""
    ) -> AsyncIterator[tuple[int, chaincode_event_pb2.ChaincodeEvent]]:
        """``(block number, event)`` pairs from ``start_block`` (default: next block)."""
        position = ab_pb2.SeekPosition()
        if start_block is None:
            position.next_commit.SetInParent()
        else:
            position.specified.number = start_block
        request = gateway_pb2.ChaincodeEventsRequest(
            channel_id=self.channel,
            chaincode_id=self.chaincode,
            identity=self.identity.serialized(),
            start_position=position,
            after_transaction_id=after_tx_id,
        ).SerializeToString()
        stream = self._stub.ChaincodeEvents(
            gateway_pb2.SignedChaincodeEventsRequest(
                request=request, signature=self.identity.sign(request)
            )
        )
        async for response in stream:
            for event in response.events:
                yield int(response.block_number), event
