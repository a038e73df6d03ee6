"""A scripted node for the submitter: a mempool, mining on demand, fee rules.

Served over real HTTP on 127.0.0.1 so the submitter's own JSON-RPC client
is exercised. Mining takes, for each next nonce, the pending transaction
with the highest fee if its max fee covers the base fee; a replacement
must raise both fee fields by at least 10 % (geth's and anvil's rule).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import rlp
from aiohttp import web
from eth_abi import encode as abi_encode
from eth_utils import keccak

from connector.ethereum.transactions import GET


@dataclass
class Tx:
    hash: str
    nonce: int
    tip: int
    max_fee: int
    gas: int
    data: bytes


@dataclass
class FakeTxNode:
    base_fee: int = 10**9
    tip: int = 10**9
    chain_nonce: int = 0
    block: int = 1
    pool: dict[str, Tx] = field(default_factory=dict)
    receipts: dict[str, dict[str, Any]] = field(default_factory=dict)
    order_state: dict[bytes, int] = field(default_factory=dict)
    revert_estimate: str | None = None
    revert_on_chain: str | None = None
    refuse_send: list[str] = field(default_factory=list)
    forget: bool = False
    sent: list[Tx] = field(default_factory=list)
    estimate: int = 100_000
    estimates: int = 0
    http_fail_next: list[int] = field(default_factory=list)
    calls: int = 0

    def mine(self) -> list[Tx]:
        mined = []
        while True:
            candidates = [t for t in self.pool.values() if t.nonce == self.chain_nonce]
            best = max(candidates, key=lambda t: t.max_fee, default=None)
            if best is None or best.max_fee < self.base_fee:
                break
            for t in candidates:
                del self.pool[t.hash]
            self.block += 1
            status = "0x0" if self.revert_on_chain else "0x1"
            self.receipts[best.hash] = {
                "transactionHash": best.hash,
                "status": status,
                "gasUsed": hex(50_000),
                "blockNumber": hex(self.block),
            }
            self.chain_nonce += 1
            mined.append(best)
        return mined

    def drop_all(self) -> None:
        self.pool.clear()

    async def handle(self, request: web.Request) -> web.Response:
        body = json.loads(await request.read())
        if self.http_fail_next and "eth_sendRawTransaction" in json.dumps(body):
            return web.Response(status=self.http_fail_next.pop(0), text="slow down")
        if isinstance(body, list):
            return web.json_response([self._one(item) for item in body])
        return web.json_response(self._one(body))

    def _one(self, req: dict[str, Any]) -> dict[str, Any]:
        try:
            result = self._dispatch(req["method"], req.get("params", []))
        except _Fail as exc:
            return {
                "jsonrpc": "2.0",
                "id": req["id"],
                "error": {"code": exc.code, "message": exc.message},
            }
        return {"jsonrpc": "2.0", "id": req["id"], "result": result}

    def _dispatch(self, method: str, params: list[Any]) -> Any:
        if method == "eth_getTransactionCount":
            pending = sum(1 for t in self.pool.values() if t.nonce >= self.chain_nonce)
            return hex(self.chain_nonce + (pending if params[1] == "pending" else 0))
        if method == "eth_getTransactionReceipt":
            return self.receipts.get(params[0])
        if method == "eth_getTransactionByHash":
            tx = self.pool.get(params[0])
            return None if tx is None else {"hash": tx.hash, "nonce": hex(tx.nonce)}
        if method == "eth_getBlockByNumber":
            return {
                "number": hex(self.block),
                "hash": "0x" + "00" * 32,
                "baseFeePerGas": hex(self.base_fee),
            }
        if method == "eth_maxPriorityFeePerGas":
            return hex(self.tip)
        if method == "eth_estimateGas":
            self.estimates += 1
            if self.revert_estimate:
                raise _Fail(3, f"execution reverted: {self.revert_estimate}")
            return hex(self.estimate)
        if method == "eth_call":
            data = bytes.fromhex(params[0]["data"][2:])
            if data[:4] == GET:
                key = data[4:36]
                state = self.order_state.get(key, 1)
                words = [
                    state,
                    b"\x00" * 32,
                    "0x" + "00" * 20,
                    "0x" + "00" * 20,
                    b"\x00" * 32,
                    b"\x00" * 32,
                    0,
                    0,
                    0,
                    0,
                ]
                types = [
                    "uint8",
                    "bytes32",
                    "address",
                    "address",
                    "bytes32",
                    "bytes32",
                    "uint256",
                    "uint64",
                    "uint64",
                    "uint64",
                ]
                return "0x" + abi_encode(types, words).hex()
            reason = self.revert_on_chain or self.revert_estimate
            if reason:
                raise _Fail(3, f"execution reverted: {reason}")
            self.calls += 1
            return "0x"
        if method == "eth_sendRawTransaction":
            return self._send(bytes.fromhex(params[0][2:]))
        raise _Fail(-32601, f"no method {method}")

    def _send(self, raw: bytes) -> str:
        if self.refuse_send:
            raise _Fail(-32000, self.refuse_send.pop(0))
        f = rlp.decode(raw[1:])
        tx = Tx(
            "0x" + keccak(raw).hex(),
            _int(f[1]),
            _int(f[2]),
            _int(f[3]),
            _int(f[4]),
            bytes(f[7]),
        )
        self.sent.append(tx)
        if tx.nonce < self.chain_nonce:
            raise _Fail(-32000, "nonce too low")
        if tx.hash in self.pool:
            raise _Fail(-32000, "already known")
        for other in list(self.pool.values()):
            if other.nonce == tx.nonce:
                if tx.max_fee * 10 < other.max_fee * 11 or tx.tip * 10 < other.tip * 11:
                    raise _Fail(-32000, "replacement transaction underpriced")
                del self.pool[other.hash]
        if not self.forget:
            self.pool[tx.hash] = tx
        return tx.hash


class _Fail(Exception):
    def __init__(self, code: int, message: str) -> None:
        self.code = code
        self.message = message


def _int(raw: bytes) -> int:
    return int.from_bytes(raw, "big")


@asynccontextmanager
async def serve_txnode(node: FakeTxNode) -> AsyncIterator[str]:
    app = web.Application()
    app.router.add_post("/", node.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"http://127.0.0.1:{port}/"
    finally:
        await runner.cleanup()
