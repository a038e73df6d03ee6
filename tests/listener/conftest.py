"""Fixtures for the listener tests: a real pool, a listener on 127.0.0.1, a URL catcher."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
from aiohttp import web

from enclave_bridge.identity import SealedIdentity
from enclave_bridge.listener import EeaListener, ListenerSettings, serve_listener
from enclave_bridge.listener_book import OrderBook
from enclave_bridge.pool import EnclavePool, open_pool
from tests.pool.conftest import (  # noqa: F401 - fixtures used by this package
    PASSPHRASE,
    sealed_worker,
    vector_details,
    vector_keys,
)

ADMIN_TOKEN = "admin-token-for-tests"
PROXY_TOKEN = "proxy-token-for-tests"
REGISTRY = "tests.listener.listener_workloads:registry"
# Polling for a result: the loops end at the first answer; the bound is long
# because the two cores are shared with other test runs.
POLL_S = 0.02
POLLS = 1000


@dataclass
class Catcher:
    """A local HTTP server that records every request it gets."""

    url: str
    seen: list[tuple[str, str, bytes]] = field(default_factory=list)

    @property
    def host_port(self) -> str:
        return self.url.split("//", 1)[1].rstrip("/")


@asynccontextmanager
async def run_catcher() -> AsyncIterator[Catcher]:
    """Start a catcher on 127.0.0.1; stop it on the way out."""
    catcher = Catcher(url="")

    async def record(request: web.Request) -> web.Response:
        catcher.seen.append((request.method, request.path, await request.read()))
        return web.json_response({"ok": True})

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", record)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    catcher.url = f"http://127.0.0.1:{port}/"
    try:
        yield catcher
    finally:
        await runner.cleanup()


@dataclass
class Harness:
    """A running listener with its pool and an HTTP client."""

    url: str
    listener: EeaListener
    pool: EnclavePool
    http: aiohttp.ClientSession
    catcher: Catcher
    next_id: int = 1000

    async def call(
        self,
        method: str,
        params: dict[str, Any] | None = None,
        *,
        token: str | None = None,
        rpc_id: int | None = None,
    ) -> dict[str, Any]:
        """POST one JSON-RPC call and return the decoded answer (asserting HTTP 200)."""
        self.next_id += 1
        body = {
            "jsonrpc": "2.0",
            "method": method,
            "id": self.next_id if rpc_id is None else rpc_id,
            "params": params or {},
        }
        return await self.post_raw(json.dumps(body).encode(), token=token)

    async def post_raw(
        self, data: Any, *, token: str | None = None, **headers: str
    ) -> dict[str, Any]:
        sent = dict(headers)
        if token is not None:
            sent["Authorization"] = f"Bearer {token}"
        async with self.http.post(self.url, data=data, headers=sent) as answer:
            assert answer.status == 200, await answer.text()
            document: dict[str, Any] = await answer.json(content_type=None)
            return document


@asynccontextmanager
async def run_listener(
    tmp_path: Path,
    sealed: SealedIdentity,
    *,
    processes: int = 1,
    **settings: Any,
) -> AsyncIterator[Harness]:
    """A pool of the vector worker, a listener in front of it, a catcher beside it."""
    async with (
        run_catcher() as catcher,
        open_pool(
            [sealed],
            PASSPHRASE,
            tmp_path / "state.db",
            processes=processes,
            registry=REGISTRY,
            default_max_seconds=10.0,
        ) as pool,
    ):
        options: dict[str, Any] = {
            "admin_token": ADMIN_TOKEN,
            "proxy_token": PROXY_TOKEN,
            "url_allowlist": (catcher.host_port,),
            "max_body_bytes": 4 * 1024 * 1024,
            "default_max_seconds": 10.0,
            **settings,
        }
        book = OrderBook(tmp_path / "listener.db")
        listener = EeaListener(pool, book, ListenerSettings(**options))
        async with serve_listener(listener) as url, aiohttp.ClientSession() as http:
            yield Harness(url, listener, pool, http, catcher)
        book.close()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def harness(
    tmp_path_factory: pytest.TempPathFactory,
    sealed_worker: SealedIdentity,  # noqa: F811
) -> AsyncIterator[Harness]:
    """One listener and pool shared by a test module (started once, stopped at its end)."""
    async with run_listener(tmp_path_factory.mktemp("listener"), sealed_worker) as h:
        yield h
