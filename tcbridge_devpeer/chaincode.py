"""Runs the chaincode as a service and talks to it over ``protos.Chaincode/Connect``.

The peer is the gRPC client here, as with Fabric's chaincode-as-a-service:
``fabric-chaincode-node server`` listens, the peer connects, the chaincode
sends REGISTER, the peer answers REGISTERED then READY, and from then on the
peer sends TRANSACTION messages and serves the chaincode's state requests
(GET_STATE, PUT_STATE, DEL_STATE, GET_STATE_BY_RANGE, QUERY_STATE_NEXT,
QUERY_STATE_CLOSE) until the chaincode answers COMPLETED or ERROR. Many
transactions share the one stream; messages are routed by channel and
transaction id.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import socket
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import grpc
from fabric_protos.ledger.queryresult import kv_query_result_pb2
from fabric_protos.peer import (
    chaincode_event_pb2,
    chaincode_pb2,
    chaincode_shim_pb2,
    chaincode_shim_pb2_grpc,
    proposal_pb2,
    proposal_response_pb2,
)

from enclave_bridge.errors import ChainError, NodeUnavailable
from tcbridge_devpeer.simulator import SimulationError, TxSimulator

log = logging.getLogger(__name__)

Msg = chaincode_shim_pb2.ChaincodeMessage

# How many range results travel in one QueryResponse (Fabric's default).
QUERY_BATCH = 100
# Time a chaincode gets for one invocation before the peer gives up on it.
INVOKE_TIMEOUT = 30.0
# Time the chaincode server gets to start listening and register.
START_TIMEOUT = 20.0

CHAINCODE_DIR = Path(__file__).resolve().parent.parent / "chaincode"


class ChaincodeFailed(ChainError):
    """The chaincode refused the invocation or broke the protocol."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass(frozen=True, slots=True)
class Invocation:
    """The outcome of one chaincode invocation."""

    response: proposal_response_pb2.Response
    event: chaincode_event_pb2.ChaincodeEvent | None
    simulator: TxSimulator


class ChaincodeProcess:
    """``fabric-chaincode-node server`` for the chaincode in ``chaincode/``."""

    def __init__(self, name: str, version: str, log_file: Path) -> None:
        self.name = name
        self.version = version
        self.address = f"127.0.0.1:{free_port()}"
        self._log_file = log_file
        self._process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    def start(self) -> None:
        binary = CHAINCODE_DIR / "node_modules" / ".bin" / "fabric-chaincode-node"
        if not binary.exists():
            raise NodeUnavailable(
                f"{binary} is missing: run ./scripts/setup to install the chaincode"
            )
        self._log = self._log_file.open("ab")
        self._process = subprocess.Popen(
            [
                str(binary),
                "server",
                "--chaincode-address",
                self.address,
                "--chaincode-id",
                f"{self.name}:{self.version}",
                "--module-path",
                str(CHAINCODE_DIR),
            ],
            cwd=CHAINCODE_DIR,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "CORE_CHAINCODE_LOGGING_LEVEL": "warning"},
        )

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    def stop(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        if self._log is not None:
            self._log.close()


class _Iterators:
    """Open range-query iterators of one transaction, by id."""

    def __init__(self) -> None:
        self._open: dict[str, list[kv_query_result_pb2.KV]] = {}
        self._ids = itertools.count(1)

    def open(
        self, rows: list[kv_query_result_pb2.KV]
    ) -> chaincode_shim_pb2.QueryResponse:
        iterator_id = f"it{next(self._ids)}"
        self._open[iterator_id] = rows
        return self.next(iterator_id)

    def next(self, iterator_id: str) -> chaincode_shim_pb2.QueryResponse:
        rows = self._open.get(iterator_id)
        if rows is None:
            raise SimulationError(f"no open query iterator {iterator_id}")
        batch, rest = rows[:QUERY_BATCH], rows[QUERY_BATCH:]
        self._open[iterator_id] = rest
        return chaincode_shim_pb2.QueryResponse(
            results=[
                chaincode_shim_pb2.QueryResultBytes(resultBytes=kv.SerializeToString())
                for kv in batch
            ],
            has_more=bool(rest),
            id=iterator_id,
        )

    def close(self, iterator_id: str) -> chaincode_shim_pb2.QueryResponse:
        self._open.pop(iterator_id, None)
        return chaincode_shim_pb2.QueryResponse(id=iterator_id)


class ChaincodeSession:
    """The peer's end of the Connect stream to one chaincode server."""

    def __init__(self, process: ChaincodeProcess) -> None:
        self._process = process
        self._channel: grpc.aio.Channel | None = None
        self._call: Any = None
        self._write_lock = asyncio.Lock()
        self._inboxes: dict[
            tuple[str, str], asyncio.Queue[chaincode_shim_pb2.ChaincodeMessage]
        ] = {}
        self._reader: asyncio.Task[None] | None = None
        # Set once the stream has ended: later invocations fail at once.
        self._gone: str | None = None

    async def connect(self) -> None:
        self._channel = grpc.aio.insecure_channel(self._process.address)
        await asyncio.wait_for(self._channel.channel_ready(), START_TIMEOUT)
        stub = chaincode_shim_pb2_grpc.ChaincodeStub(self._channel)
        self._call = stub.Connect()
        register = await asyncio.wait_for(self._call.read(), START_TIMEOUT)
        if register is grpc.aio.EOF or register.type != Msg.REGISTER:
            raise ChaincodeFailed("the chaincode did not open with REGISTER")
        chaincode_id = chaincode_pb2.ChaincodeID.FromString(register.payload)
        log.info("chaincode registered: %s", chaincode_id.name)
        await self._call.write(Msg(type=Msg.REGISTERED))
        await self._call.write(Msg(type=Msg.READY))
        self._reader = asyncio.create_task(self._read_loop(), name="chaincode-reader")

    async def close(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
        if self._call is not None:
            self._call.cancel()
        if self._channel is not None:
            await self._channel.close()

    async def _read_loop(self) -> None:
        while True:
            try:
                msg = await self._call.read()
            except (grpc.aio.AioRpcError, asyncio.InvalidStateError) as exc:
                self._lost(f"the chaincode stream failed: {exc}")
                return
            if msg is grpc.aio.EOF:
                self._lost("the chaincode closed its stream")
                return
            target = self._inboxes.get((msg.channel_id, msg.txid))
            if target is None:
                log.debug("message for unknown transaction %s dropped", msg.txid)
                continue
            target.put_nowait(msg)

    def _lost(self, reason: str) -> None:
        """The stream is gone: fail every waiting and every later invocation."""
        log.error("%s; chaincode invocations will fail", reason)
        self._gone = reason
        for inbox in self._inboxes.values():
            inbox.put_nowait(Msg(type=Msg.ERROR, payload=reason.encode()))

    async def _send(self, msg: chaincode_shim_pb2.ChaincodeMessage) -> None:
        async with self._write_lock:
            try:
                await self._call.write(msg)
            except (grpc.aio.AioRpcError, asyncio.InvalidStateError) as exc:
                self._gone = self._gone or f"the chaincode stream failed: {exc!r}"
                raise ChaincodeFailed(self._gone) from exc

    async def invoke(
        self,
        channel: str,
        tx_id: str,
        signed_proposal: proposal_pb2.SignedProposal,
        args: list[bytes],
        simulator: TxSimulator,
    ) -> Invocation:
        """Run one transaction on the chaincode and collect what it did."""
        if self._gone is not None:
            raise ChaincodeFailed(self._gone)
        route = (channel, tx_id)
        if route in self._inboxes:
            raise ChaincodeFailed(f"transaction {tx_id} is already being simulated")
        inbox: asyncio.Queue[chaincode_shim_pb2.ChaincodeMessage] = asyncio.Queue()
        self._inboxes[route] = inbox
        try:
            await self._send(
                Msg(
                    type=Msg.TRANSACTION,
                    payload=chaincode_pb2.ChaincodeInput(args=args).SerializeToString(),
                    txid=tx_id,
                    channel_id=channel,
                    proposal=signed_proposal,
                )
            )
            return await asyncio.wait_for(
                self._converse(inbox, channel, tx_id, simulator), INVOKE_TIMEOUT
            )
        finally:
            del self._inboxes[route]

    async def _converse(
        self,
        inbox: asyncio.Queue[chaincode_shim_pb2.ChaincodeMessage],
        channel: str,
        tx_id: str,
        simulator: TxSimulator,
    ) -> Invocation:
        iterators = _Iterators()
        while True:
            msg = await inbox.get()
            if msg.type == Msg.COMPLETED:
                response = proposal_response_pb2.Response.FromString(msg.payload)
                event = None
                if msg.HasField("chaincode_event") and msg.chaincode_event.event_name:
                    event = chaincode_event_pb2.ChaincodeEvent()
                    event.CopyFrom(msg.chaincode_event)
                    event.chaincode_id = simulator.namespace
                    event.tx_id = tx_id
                return Invocation(response, event, simulator)
            if msg.type == Msg.ERROR:
                raise ChaincodeFailed(msg.payload.decode(errors="replace"))
            try:
                payload = self._serve(msg, simulator, iterators)
                reply = Msg(
                    type=Msg.RESPONSE, payload=payload, txid=tx_id, channel_id=channel
                )
            except SimulationError as exc:
                reply = Msg(
                    type=Msg.ERROR,
                    payload=str(exc).encode(),
                    txid=tx_id,
                    channel_id=channel,
                )
            await self._send(reply)

    def _serve(
        self,
        msg: chaincode_shim_pb2.ChaincodeMessage,
        sim: TxSimulator,
        iterators: _Iterators,
    ) -> bytes:
        kind = msg.type
        if kind == Msg.GET_STATE:
            get = chaincode_shim_pb2.GetState.FromString(msg.payload)
            self._public_only(get.collection)
            return bytes(sim.get(get.key))
        if kind == Msg.PUT_STATE:
            put = chaincode_shim_pb2.PutState.FromString(msg.payload)
            self._public_only(put.collection)
            sim.put(put.key, put.value)
            return b""
        if kind == Msg.DEL_STATE:
            delete = chaincode_shim_pb2.DelState.FromString(msg.payload)
            self._public_only(delete.collection)
            sim.delete(delete.key)
            return b""
        if kind == Msg.GET_STATE_BY_RANGE:
            return bytes(self._range(msg, sim, iterators).SerializeToString())
        if kind == Msg.QUERY_STATE_NEXT:
            next_ = chaincode_shim_pb2.QueryStateNext.FromString(msg.payload)
            return bytes(iterators.next(next_.id).SerializeToString())
        if kind == Msg.QUERY_STATE_CLOSE:
            close = chaincode_shim_pb2.QueryStateClose.FromString(msg.payload)
            return bytes(iterators.close(close.id).SerializeToString())
        name = Msg.Type.Name(kind)
        raise SimulationError(f"the development peer does not serve {name}")

    @staticmethod
    def _public_only(collection: str) -> None:
        if collection:
            raise SimulationError("private data collections are not supported")

    @staticmethod
    def _range(
        msg: chaincode_shim_pb2.ChaincodeMessage,
        sim: TxSimulator,
        iterators: _Iterators,
    ) -> chaincode_shim_pb2.QueryResponse:
        request = chaincode_shim_pb2.GetStateByRange.FromString(msg.payload)
        ChaincodeSession._public_only(request.collection)
        # fabric-shim sends "\x01" for an open start key.
        start = "" if request.startKey == "\x01" else request.startKey
        if request.metadata:
            meta = chaincode_shim_pb2.QueryMetadata.FromString(request.metadata)
            if meta.pageSize <= 0:
                raise SimulationError("a paged query needs a page size above 0")
            entries, bookmark = sim.paged_range(
                start, request.endKey, meta.pageSize, meta.bookmark
            )
        else:
            entries, bookmark = sim.range(start, request.endKey), None
        rows = [
            kv_query_result_pb2.KV(namespace=sim.namespace, key=e.key, value=e.value)
            for e in entries
        ]
        response = iterators.open(rows)
        if bookmark is not None:
            # The shim reads the page's metadata from the first response only.
            response.metadata = chaincode_shim_pb2.QueryResponseMetadata(
                fetched_records_count=len(rows), bookmark=bookmark
            ).SerializeToString()
        return response
