"""A scripted Ethereum node for watcher tests: blocks, logs, reorgs, provider limits.

It serves the handful of JSON-RPC methods the watcher uses over real HTTP
on 127.0.0.1, so the watcher's own client, batching and error mapping are
exercised. Limits imitate real providers: one refuses ranges wider than N
blocks with -32602, one refuses more than N results with -32005, one just
times out.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web


def _h(*parts: object) -> str:
    return "0x" + hashlib.sha256(repr(parts).encode()).hexdigest()


@dataclass
class FakeChain:
    chain_id: int = 31337
    # block number -> list of raw logs (without position fields)
    logs: dict[int, list[dict[str, Any]]] = field(default_factory=dict)
    height: int = 0
    fork: int = 0
    forks_at: dict[int, int] = field(default_factory=dict)
    max_range: int | None = None
    max_results: int | None = None
    timeout_over_range: int | None = None
    fail_next: list[tuple[int, str]] = field(default_factory=list)
    http_fail_next: list[int] = field(default_factory=list)
    getlogs_calls: list[tuple[int, int]] = field(default_factory=list)

    def block_hash(self, number: int) -> str:
        # A block's hash depends on the fork it was (re)mined in.
        fork = max((f for b, f in self.forks_at.items() if b <= number), default=0)
        return _h("block", number, fork)

    def mine(self, count: int = 1) -> None:
        self.height += count

    def add_log(
        self, block: int, address: str, topics: list[str], data: str, **extra: Any
    ) -> None:
        entry = {"address": address.lower(), "topics": topics, "data": data, **extra}
        self.logs.setdefault(block, []).append(entry)
        self.height = max(self.height, block)

    def reorg(
        self, depth: int, replacement: dict[int, list[dict[str, Any]]] | None = None
    ) -> None:
        """Replace the last ``depth`` blocks; their logs become ``replacement``."""
        first = self.height - depth + 1
        self.fork += 1
        self.forks_at[first] = self.fork
        for number in range(first, self.height + 1):
            self.logs.pop(number, None)
        for number, entries in (replacement or {}).items():
            self.logs[number] = entries

    def positioned(self, number: int) -> list[dict[str, Any]]:
        out = []
        for index, entry in enumerate(self.logs.get(number, [])):
            out.append(
                {
                    **entry,
                    "blockNumber": hex(number),
                    "blockHash": self.block_hash(number),
                    "transactionHash": _h("tx", number, index, self.block_hash(number)),
                    "logIndex": hex(index),
                    "transactionIndex": hex(index),
                }
            )
        return out


class RpcFailure(Exception):
    def __init__(self, code: int, message: str) -> None:
        self.code = code
        self.message = message


class FakeNode:
    def __init__(self, chain: FakeChain) -> None:
        self.chain = chain

    async def handle(self, request: web.Request) -> web.Response:
        if self.chain.http_fail_next:
            return web.Response(
                status=self.chain.http_fail_next.pop(0), text="unavailable"
            )
        body = json.loads(await request.read())
        if isinstance(body, list):
            return web.json_response([await self._one(item) for item in body])
        return web.json_response(await self._one(body))

    async def _one(self, req: dict[str, Any]) -> dict[str, Any]:
        try:
            result = await self._dispatch(req["method"], req.get("params", []))
        except RpcFailure as exc:
            return {
                "jsonrpc": "2.0",
                "id": req["id"],
                "error": {"code": exc.code, "message": exc.message},
            }
        return {"jsonrpc": "2.0", "id": req["id"], "result": result}

    async def _dispatch(self, method: str, params: list[Any]) -> Any:
        c = self.chain
        if c.fail_next:
            code, message = c.fail_next.pop(0)
            raise RpcFailure(code, message)
        if method == "eth_chainId":
            return hex(c.chain_id)
        if method == "eth_blockNumber":
            return hex(c.height)
        if method == "eth_getBlockByNumber":
            tag = params[0]
            number = {
                "latest": c.height,
                "safe": c.height - 4,
                "finalized": c.height - 8,
            }.get(tag)
            if number is None:
                number = int(tag, 16)
            if number < 0 or number > c.height:
                return None
            return {
                "number": hex(number),
                "hash": c.block_hash(number),
                "parentHash": c.block_hash(number - 1),
                "baseFeePerGas": hex(10**9),
            }
        if method == "eth_getLogs":
            return await self._get_logs(params[0])
        raise RpcFailure(-32601, f"method {method} not found")

    async def _get_logs(self, flt: dict[str, Any]) -> list[dict[str, Any]]:
        c = self.chain
        start, end = int(flt["fromBlock"], 16), int(flt["toBlock"], 16)
        c.getlogs_calls.append((start, end))
        if c.max_range is not None and end - start + 1 > c.max_range:
            raise RpcFailure(-32602, f"query exceeds max block range {c.max_range}")
        if c.timeout_over_range is not None and end - start + 1 > c.timeout_over_range:
            raise RpcFailure(-32603, "request timed out")
        address = flt.get("address", "").lower()
        topic_set = set(flt.get("topics", [[]])[0] or [])
        out = []
        for number in range(start, min(end, c.height) + 1):
            for entry in c.positioned(number):
                if entry["address"] != address:
                    continue
                if topic_set and (
                    not entry["topics"] or entry["topics"][0] not in topic_set
                ):
                    continue
                out.append(entry)
        if c.max_results is not None and len(out) > c.max_results:
            raise RpcFailure(
                -32005, f"query returned more than {c.max_results} results"
            )
        return out


@asynccontextmanager
async def serve(chain: FakeChain) -> AsyncIterator[str]:
    """Serve ``chain`` on 127.0.0.1 at a free port; yields the URL."""
    app = web.Application(client_max_size=64 * 1024 * 1024)
    app.router.add_post("/", FakeNode(chain).handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"http://127.0.0.1:{port}/"
    finally:
        await runner.cleanup()
        await asyncio.sleep(0)
