"""The listener's order book: direct-model work orders, workers and receipts.

Kept in a small SQLite database of its own (WAL), not in the bridge's
work-order store: direct-model orders never touch a chain, have no block,
transaction or checkpoint, and need only three facts — the request as
received, whether its answer exists, and the answer. The pool keeps the
authoritative result per order key in its state store; the book keeps the
JSON-RPC answer so WorkOrderGetResult can serve it, and the request bytes
so a restarted listener can hand unfinished orders to the pool again (the
pool answers a known order key from its commit instead of running it twice).

Statements are tiny and indexed, so they run on the event loop thread;
``":memory:"`` gives the in-memory double the unit tests use.

Keys: a direct-model order is keyed ``wo:<workOrderId, lower case>``; an
order sent through the proxy-model extension by a bridge is keyed
``bridge:<the bridge's order key>``.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from enclave_bridge.errors import StoreError

_SCHEMA = """
CREATE TABLE IF NOT EXISTS orders (
    key TEXT PRIMARY KEY,
    work_order_id TEXT NOT NULL,
    request BLOB NOT NULL,
    request_sha256 BLOB NOT NULL,
    -- the requester facts receipts are checked against
    requester_id TEXT NOT NULL DEFAULT '',
    verifying_key TEXT NOT NULL DEFAULT '',
    target TEXT,
    max_seconds REAL,
    state TEXT NOT NULL CHECK (state IN ('pending', 'done')),
    status INTEGER,
    response BLOB,
    extension TEXT,
    created REAL NOT NULL,
    finished REAL
);
CREATE TABLE IF NOT EXISTS workers (
    worker_id TEXT PRIMARY KEY,
    record TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS receipts (
    work_order_id TEXT PRIMARY KEY,
    worker_service_id TEXT NOT NULL,
    worker_id TEXT NOT NULL,
    requester_id TEXT NOT NULL,
    status INTEGER NOT NULL,
    receipt TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS receipt_updates (
    work_order_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    updater_id TEXT NOT NULL,
    digest BLOB NOT NULL UNIQUE,
    body TEXT NOT NULL,
    PRIMARY KEY (work_order_id, seq)
);
"""


@dataclass(frozen=True, slots=True)
class OrderRow:
    key: str
    work_order_id: str
    request: bytes
    request_sha256: bytes
    requester_id: str
    verifying_key: str
    target: str | None
    max_seconds: float | None
    state: str
    status: int | None
    response: bytes | None
    extension: str | None


class OrderBook:
    """See the module docstring. ``path`` may be ``":memory:"``."""

    def __init__(self, path: Path | str) -> None:
        try:
            self._db = sqlite3.connect(
                str(path), isolation_level=None, check_same_thread=False
            )
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.executescript(_SCHEMA)
        except sqlite3.Error as exc:
            raise StoreError(
                f"cannot open the listener's order book {path}: {exc}"
            ) from exc

    def close(self) -> None:
        self._db.close()

    # --- orders ------------------------------------------------------------------

    def add_order(self, row: OrderRow) -> bool:
        """Record a new pending order; False when its key is already known."""
        try:
            self._db.execute(
                "INSERT INTO orders (key, work_order_id, request, request_sha256,"
                " requester_id, verifying_key, target, max_seconds, state, created)"
                " VALUES (?,?,?,?,?,?,?,?, 'pending', ?)",
                (
                    row.key,
                    row.work_order_id,
                    row.request,
                    row.request_sha256,
                    row.requester_id,
                    row.verifying_key,
                    row.target,
                    row.max_seconds,
                    time.time(),
                ),
            )
        except sqlite3.IntegrityError:
            return False
        return True

    def finish_orders(self, done: list[tuple[str, int, bytes, str | None]]) -> None:
        """Record several answers (key, status, response, extension) in one commit."""
        now = time.time()
        self._db.execute("BEGIN IMMEDIATE")
        try:
            self._db.executemany(
                "UPDATE orders SET state='done', status=?, response=?, extension=?,"
                " finished=? WHERE key=?",
                [
                    (status, response, ext, now, key)
                    for key, status, response, ext in done
                ],
            )
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def order(self, key: str) -> OrderRow | None:
        row = self._db.execute(
            "SELECT key, work_order_id, request, request_sha256,"
            " requester_id, verifying_key, target, max_seconds, state, status,"
            " response, extension FROM orders WHERE key=?",
            (key,),
        ).fetchone()
        return OrderRow(*row) if row is not None else None

    def pending_orders(self) -> Iterator[OrderRow]:
        keys = [
            k
            for (k,) in self._db.execute("SELECT key FROM orders WHERE state='pending'")
        ]
        for key in keys:
            row = self.order(key)
            if row is not None:
                yield row

    def count_orders(self) -> dict[str, int]:
        return dict(
            self._db.execute("SELECT state, COUNT(*) FROM orders GROUP BY state")
        )

    # --- workers ---------------------------------------------------------------------

    def put_worker(self, worker_id: str, record: Mapping[str, Any]) -> None:
        self._db.execute(
            "INSERT INTO workers (worker_id, record) VALUES (?, ?) ON CONFLICT"
            " (worker_id) DO UPDATE SET record=excluded.record",
            (worker_id.lower(), json.dumps(record)),
        )

    def add_worker(self, worker_id: str, record: Mapping[str, Any]) -> bool:
        try:
            self._db.execute(
                "INSERT INTO workers (worker_id, record) VALUES (?, ?)",
                (worker_id.lower(), json.dumps(record)),
            )
        except sqlite3.IntegrityError:
            return False
        return True

    def worker(self, worker_id: str) -> dict[str, Any] | None:
        row = self._db.execute(
            "SELECT record FROM workers WHERE worker_id=?", (worker_id.lower(),)
        ).fetchone()
        return dict(json.loads(row[0])) if row is not None else None

    def workers(self) -> list[tuple[str, dict[str, Any]]]:
        return [
            (worker_id, dict(json.loads(record)))
            for worker_id, record in self._db.execute(
                "SELECT worker_id, record FROM workers ORDER BY worker_id"
            )
        ]

    # --- receipts ----------------------------------------------------------------------

    def add_receipt(self, work_order_id: str, receipt: Mapping[str, Any]) -> bool:
        try:
            self._db.execute(
                "INSERT INTO receipts (work_order_id, worker_service_id, worker_id,"
                " requester_id, status, receipt) VALUES (?,?,?,?,?,?)",
                (
                    work_order_id.lower(),
                    str(receipt["workerServiceId"]).lower(),
                    str(receipt["workerId"]).lower(),
                    str(receipt["requesterId"]).lower(),
                    int(receipt["receiptCreateStatus"]),
                    json.dumps(receipt),
                ),
            )
        except sqlite3.IntegrityError:
            return False
        return True

    def receipt(self, work_order_id: str) -> dict[str, Any] | None:
        row = self._db.execute(
            "SELECT receipt FROM receipts WHERE work_order_id=?",
            (work_order_id.lower(),),
        ).fetchone()
        return dict(json.loads(row[0])) if row is not None else None

    def receipt_ids(
        self,
        worker_service_id: str | None,
        worker_id: str | None,
        requester_id: str | None,
        status: int | None,
    ) -> list[str]:
        clauses, args = [], []
        for column, value in (
            ("worker_service_id", worker_service_id),
            ("worker_id", worker_id),
            ("requester_id", requester_id),
        ):
            if value is not None:
                clauses.append(f"{column}=?")
                args.append(value.lower())
        if status is not None:
            clauses.append("status=?")
            args.append(str(status))
        where = " WHERE " + " AND ".join(clauses) if clauses else ""
        return [
            wid
            for (wid,) in self._db.execute(
                f"SELECT work_order_id FROM receipts{where} ORDER BY work_order_id",
                args,
            )
        ]

    def add_update(
        self,
        work_order_id: str,
        updater_id: str,
        digest: bytes,
        body: Mapping[str, Any],
    ) -> int | None:
        """Append an update; its 0-based index, or None for a replayed one."""
        key = work_order_id.lower()
        try:
            self._db.execute("BEGIN IMMEDIATE")
            (count,) = self._db.execute(
                "SELECT COUNT(*) FROM receipt_updates WHERE work_order_id=?", (key,)
            ).fetchone()
            self._db.execute(
                "INSERT INTO receipt_updates (work_order_id, seq, updater_id, digest,"
                " body) VALUES (?,?,?,?,?)",
                (key, count, updater_id.lower(), digest, json.dumps(body)),
            )
            self._db.execute("COMMIT")
        except sqlite3.IntegrityError:
            self._db.execute("ROLLBACK")
            return None
        return int(count)

    def updates(
        self, work_order_id: str, updater_id: str | None
    ) -> list[dict[str, Any]]:
        args: list[str] = [work_order_id.lower()]
        where = "work_order_id=?"
        if updater_id is not None:
            where += " AND updater_id=?"
            args.append(updater_id.lower())
        return [
            dict(json.loads(body))
            for (body,) in self._db.execute(
                f"SELECT body FROM receipt_updates WHERE {where} ORDER BY seq", args
            )
        ]
