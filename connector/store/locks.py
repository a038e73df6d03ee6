"""Exclusive roles across processes: one watcher and one submitter per chain.

PostgreSQL: ``pg_try_advisory_lock`` on a connection held open for as long
as the role is held; the server frees it if the process dies. SQLite (one
host by nature): an exclusive, non-blocking ``flock`` on a file beside the
database; the kernel frees it if the process dies.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine


def advisory_key(name: str) -> int:
    """A stable signed 64-bit key for ``name`` (PostgreSQL's lock key type)."""
    digest = hashlib.blake2b(f"tcbridge:{name}".encode(), digest_size=8).digest()

    return int.from_bytes(digest, "big", signed=True)


class RoleLocks:
    """Hands out named exclusive locks on the store's database."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    @asynccontextmanager
    async def hold(self, name: str) -> AsyncIterator[bool]:
        """Yield True while ``name`` is held by this caller, False if taken."""
        if self._engine.dialect.name == "postgresql":
            async with self._hold_advisory(name) as held:
                yield held
        else:
            async with self._hold_file(name) as held:
                yield held

    @asynccontextmanager
    async def _hold_advisory(self, name: str) -> AsyncIterator[bool]:
        key = advisory_key(name)
        async with self._engine.connect() as connection:
            held = bool(
                (
                    await connection.execute(
                        text("SELECT pg_try_advisory_lock(:key)"), {"key": key}
                    )
                ).scalar_one()
            )
            await connection.commit()
            try:
                yield held
            finally:
                if held:
                    await connection.execute(
                        text("SELECT pg_advisory_unlock(:key)"), {"key": key}
                    )
                    await connection.commit()

    def _lock_path(self, name: str) -> Path:
        database = self._engine.url.database or "tcbridge.db"
        safe = re.sub(r"[^A-Za-z0-9_.-]", "_", name)

        return Path(f"{database}.{safe}.lock")

    @asynccontextmanager
    async def _hold_file(self, name: str) -> AsyncIterator[bool]:
        descriptor = os.open(self._lock_path(name), os.O_RDWR | os.O_CREAT, 0o600)
        try:
            try:
                fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                yield False
                return
            try:
                yield True
            finally:
                fcntl.flock(descriptor, fcntl.LOCK_UN)
        finally:
            os.close(descriptor)
