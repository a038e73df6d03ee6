"""A JSON-RPC proxy on 127.0.0.1 that can make a healthy node misbehave on demand.

Modes: ``ok`` forwards; ``http_error`` answers HTTP 503; ``rpc_error``
answers every call with a JSON-RPC error; ``hang`` never answers (until the
mode changes); ``down`` closes the connection at once.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import aiohttp
from aiohttp import web


@dataclass
class FlakyProxy:
    upstream: str
    mode: str = "ok"
    requests: int = 0

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.requests += 1
        body = await request.read()
        while self.mode == "hang":
            await asyncio.sleep(0.05)
        if self.mode == "http_error":
            return web.Response(status=503, text="upstream unavailable")
        if self.mode == "rpc_error":
            return web.json_response({"jsonrpc": "2.0", "id": 1,
                                      "error": {"code": -32603, "message": "internal error"}})
        if self.mode == "down":
            assert request.transport is not None
            request.transport.close()
            return web.Response(status=500)
        async with aiohttp.ClientSession() as http, http.post(
            self.upstream, data=body, headers={"Content-Type": "application/json"}
        ) as resp:
            return web.Response(body=await resp.read(), status=resp.status,
                                content_type="application/json")


@asynccontextmanager
async def serve_proxy(proxy: FlakyProxy) -> AsyncIterator[str]:
    app = web.Application(client_max_size=64 * 1024 * 1024)
    app.router.add_post("/", proxy.handle)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"http://127.0.0.1:{port}/"
    finally:
        proxy.mode = "ok"
        await runner.cleanup()
