"""The Fabric Gateway gRPC service (``gateway.Gateway``) of the development peer.

Evaluate, Endorse, Submit, CommitStatus and ChaincodeEvents, with the
request and response messages of Fabric's gateway protocol, so the official
clients (``@hyperledger/fabric-gateway``) and tcbridge's Python connector
work against it. Errors become gRPC status codes in this one place.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

import grpc
from fabric_protos.common import common_pb2
from fabric_protos.gateway import gateway_pb2, gateway_pb2_grpc

from enclave_bridge.errors import ChainError, CryptoError
from tcbridge_devpeer.chaincode import ChaincodeFailed
from tcbridge_devpeer.peer import DevPeer, EndorsementFailed, UnknownChannel
from tcbridge_devpeer.protocol import MalformedMessage
from tcbridge_devpeer.rpc_status import DETAILS_KEY, encode_status

log = logging.getLogger(__name__)


async def _abort(
    context: grpc.aio.ServicerContext, exc: Exception, verb: str, peer: DevPeer
) -> None:
    if isinstance(exc, EndorsementFailed):
        # The chaincode's own message, as Fabric's gateway reports it.
        code = grpc.StatusCode.ABORTED if verb == "endorse" else grpc.StatusCode.UNKNOWN
        message = f"{verb} failed: chaincode response {exc.status}, {exc}"
    elif isinstance(exc, UnknownChannel):
        code, message = grpc.StatusCode.NOT_FOUND, str(exc)
    elif isinstance(exc, MalformedMessage):
        code, message = grpc.StatusCode.INVALID_ARGUMENT, str(exc)
    elif isinstance(exc, CryptoError):
        code, message = grpc.StatusCode.PERMISSION_DENIED, f"access denied: {exc}"
    elif isinstance(exc, ChaincodeFailed):
        code, message = grpc.StatusCode.UNAVAILABLE, f"chaincode failed: {exc}"
    elif isinstance(exc, ChainError):
        code, message = grpc.StatusCode.UNAVAILABLE, str(exc)
    else:
        raise exc
    detail = gateway_pb2.ErrorDetail(
        address=peer.address, msp_id=peer.msp_id, message=message
    )
    trailer = ((DETAILS_KEY, encode_status(code, message, [detail])),)
    await context.abort(code, message, trailing_metadata=trailer)


class GatewayService(gateway_pb2_grpc.GatewayServicer):  # type: ignore[misc]
    def __init__(self, peer: DevPeer) -> None:
        self._peer = peer

    async def Evaluate(
        self, request: gateway_pb2.EvaluateRequest, context: grpc.aio.ServicerContext
    ) -> gateway_pb2.EvaluateResponse:
        try:
            result = await self._peer.evaluate(request.proposed_transaction)
        except Exception as exc:
            await _abort(context, exc, "evaluate", self._peer)
            raise
        return gateway_pb2.EvaluateResponse(result=result)

    async def Endorse(
        self, request: gateway_pb2.EndorseRequest, context: grpc.aio.ServicerContext
    ) -> gateway_pb2.EndorseResponse:
        try:
            envelope = await self._peer.endorse(request.proposed_transaction)
        except Exception as exc:
            await _abort(context, exc, "endorse", self._peer)
            raise
        return gateway_pb2.EndorseResponse(prepared_transaction=envelope)

    async def Submit(
        self, request: gateway_pb2.SubmitRequest, context: grpc.aio.ServicerContext
    ) -> gateway_pb2.SubmitResponse:
        try:
            await self._peer.submit(request.prepared_transaction)
        except Exception as exc:
            await _abort(context, exc, "submit", self._peer)
            raise
        return gateway_pb2.SubmitResponse()

    async def CommitStatus(
        self,
        request: gateway_pb2.SignedCommitStatusRequest,
        context: grpc.aio.ServicerContext,
    ) -> gateway_pb2.CommitStatusResponse:
        try:
            inner = gateway_pb2.CommitStatusRequest.FromString(request.request)
            self._peer.check_signed(inner.identity, request.request, request.signature)
            if inner.channel_id != self._peer.channel:
                raise UnknownChannel(
                    f"this peer serves channel {self._peer.channel} only"
                )
        except Exception as exc:
            await _abort(context, exc, "commit status", self._peer)
            raise
        code, block = await self._peer.commit_status(inner.transaction_id)
        return gateway_pb2.CommitStatusResponse(result=code, block_number=block)

    async def ChaincodeEvents(
        self,
        request: gateway_pb2.SignedChaincodeEventsRequest,
        context: grpc.aio.ServicerContext,
    ) -> AsyncIterator[gateway_pb2.ChaincodeEventsResponse]:
        try:
            inner = gateway_pb2.ChaincodeEventsRequest.FromString(request.request)
            self._peer.check_signed(inner.identity, request.request, request.signature)
            if inner.channel_id != self._peer.channel:
                raise UnknownChannel(
                    f"this peer serves channel {self._peer.channel} only"
                )
        except Exception as exc:
            await _abort(context, exc, "chaincode events", self._peer)
            raise
        start = self._start_block(inner)
        async for batch in self._peer.chaincode_events(
            inner.chaincode_id, start, inner.after_transaction_id
        ):
            yield gateway_pb2.ChaincodeEventsResponse(
                events=batch.events, block_number=batch.block_number
            )

    def _start_block(self, request: gateway_pb2.ChaincodeEventsRequest) -> int:
        position = request.start_position
        kind = position.WhichOneof("Type")
        if kind == "specified":
            return int(position.specified.number)
        if kind == "oldest":
            return 0
        if kind == "newest":
            return max(self._peer.height - 1, 0)
        # next_commit, or no position: the next block to be committed.
        return self._peer.height


async def serve(peer: DevPeer, address: str) -> grpc.aio.Server:
    """Start the Gateway service on ``address`` (127.0.0.1:PORT)."""
    if not address.startswith("127.0.0.1:"):
        raise ValueError("the development peer listens on 127.0.0.1 only")
    peer.address = address
    server = grpc.aio.server()
    gateway_pb2_grpc.add_GatewayServicer_to_server(GatewayService(peer), server)
    bound = server.add_insecure_port(address)
    if bound == 0:
        raise OSError(f"cannot listen on {address}")
    await server.start()
    log.info("gateway listening on %s", address)
    return server


def envelope_of(raw: bytes) -> common_pb2.Envelope:
    return common_pb2.Envelope.FromString(raw)
