"""A lean asynchronous Ethereum JSON-RPC client.

web3.py costs about 270 µs per decoded event and several milliseconds of
CPU per transaction on the hot path (DESIGN.md, pitfalls), so the bridge
speaks JSON-RPC directly: one aiohttp session, raw JSON, and batching.

This module is the one place where aiohttp and JSON-RPC failures are
translated into tcbridge's errors:

- connection refused, reset, timeout, HTTP 5xx, HTTP 429 -> NodeUnavailable
- a JSON-RPC ``error`` object -> RpcError (a ChainError) with code and data
- a body that is not JSON-RPC -> NodeUnavailable (the node is misbehaving)
"""

from __future__ import annotations

import itertools
import json
import logging
from collections.abc import Sequence
from typing import Any

import aiohttp

from enclave_bridge.errors import ChainError, NodeUnavailable

log = logging.getLogger("tcbridge.rpc")

# A node that answers nothing for this long is treated as unavailable; the
# caller's retry loop decides when to ask again.
DEFAULT_TIMEOUT_S = 20.0


class RpcError(ChainError):
    """The node answered with a JSON-RPC error object."""

    def __init__(self, method: str, code: int, message: str, data: Any = None) -> None:
        super().__init__(f"{method} failed: {message} (code {code})")
        self.method = method
        self.code = code
        self.rpc_message = message
        self.data = data


class JsonRpcClient:
    """One HTTP JSON-RPC endpoint. Use as an async context manager."""

    def __init__(self, url: str, *, timeout_s: float = DEFAULT_TIMEOUT_S) -> None:
        self.url = url
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._ids = itertools.count(1)
        self._session: aiohttp.ClientSession | None = None
        self.calls = 0

    async def __aenter__(self) -> JsonRpcClient:
        await self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def open(self) -> None:
        if self._session is None:
            connector = aiohttp.TCPConnector(limit=32)
            self._session = aiohttp.ClientSession(
                connector=connector,
                timeout=self._timeout,
                json_serialize=json.dumps,
            )

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def call(self, method: str, *params: Any) -> Any:
        """Send one request; return its ``result`` or raise RpcError/NodeUnavailable."""
        body = {
            "jsonrpc": "2.0",
            "id": next(self._ids),
            "method": method,
            "params": list(params),
        }
        reply = await self._post(body, method)
        if not isinstance(reply, dict):
            raise NodeUnavailable(
                f"{method}: node answered a non-object: {str(reply)[:200]}"
            )
        return _result_of(method, reply)

    async def batch(self, calls: Sequence[tuple[str, Sequence[Any]]]) -> list[Any]:
        """Send several requests in one HTTP round trip; results in call order.

        An item that failed is returned as its RpcError instance, not raised,
        so one bad item does not hide the others.
        """
        if not calls:
            return []
        first = next(self._ids)
        ids = list(range(first, first + len(calls)))
        for _ in calls[1:]:
            next(self._ids)
        body = [
            {"jsonrpc": "2.0", "id": i, "method": m, "params": list(p)}
            for i, (m, p) in zip(ids, calls, strict=True)
        ]
        reply = await self._post(body, "batch")
        if not isinstance(reply, list):
            if isinstance(reply, dict) and "error" in reply:
                _result_of("batch", reply)
            raise NodeUnavailable(
                f"batch: node answered a non-list: {str(reply)[:200]}"
            )
        by_id = {item.get("id"): item for item in reply if isinstance(item, dict)}
        out: list[Any] = []
        for i, (method, _) in zip(ids, calls, strict=True):
            item = by_id.get(i)
            if item is None:
                out.append(NodeUnavailable(f"{method}: missing from the batch reply"))
                continue
            try:
                out.append(_result_of(method, item))
            except ChainError as exc:
                out.append(exc)
        return out

    async def _post(self, body: Any, what: str) -> Any:
        await self.open()
        assert self._session is not None
        self.calls += 1
        try:
            async with self._session.post(self.url, json=body) as resp:
                if resp.status == 429 or resp.status >= 500:
                    text = (await resp.text())[:200]
                    raise NodeUnavailable(
                        f"{what}: HTTP {resp.status} from {self.url}: {text}"
                    )
                raw = await resp.read()
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            raise NodeUnavailable(
                f"{what}: cannot reach the node at {self.url} ({type(exc).__name__}: {exc});"
                " is it running?"
            ) from exc
        try:
            return json.loads(raw)
        except ValueError as exc:
            raise NodeUnavailable(
                f"{what}: node answered something that is not JSON"
            ) from exc


def _result_of(method: str, reply: dict[str, Any]) -> Any:
    error = reply.get("error")
    if error is not None:
        if not isinstance(error, dict):
            raise RpcError(method, -1, str(error))
        raise RpcError(
            method,
            int(error.get("code", -1)),
            str(error.get("message", "")),
            error.get("data"),
        )
    if "result" not in reply:
        raise NodeUnavailable(f"{method}: reply has neither result nor error")
    return reply["result"]
