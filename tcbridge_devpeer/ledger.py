"""The development peer's ledger: versioned world state plus the block store.

One SQLite file holds both, and a block commits in one SQLite transaction
(its blocks row, its transactions' validation codes and its state updates),
so a peer killed at any moment restarts at a block boundary.

Every state entry carries the version of the transaction that last wrote it,
``(block number, transaction number in block)``, which is what Fabric's
read sets record and what MVCC validation compares. Keys are stored as
UTF-8 blobs so range scans order them bytewise, as Fabric's LevelDB does.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from pathlib import Path

from fabric_protos.common import common_pb2

Version = tuple[int, int]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS state (
    ns TEXT NOT NULL, key BLOB NOT NULL, value BLOB NOT NULL,
    block INTEGER NOT NULL, txnum INTEGER NOT NULL,
    PRIMARY KEY (ns, key)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS blocks (number INTEGER PRIMARY KEY, data BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS txs (
    txid TEXT PRIMARY KEY, block INTEGER NOT NULL, code INTEGER NOT NULL
);
"""


@dataclass(frozen=True, slots=True)
class StateEntry:
    key: str
    value: bytes
    version: Version


@dataclass(frozen=True, slots=True)
class Write:
    namespace: str
    key: str
    value: bytes | None
    version: Version


class Ledger:
    """World state and blocks of one channel, persisted in ``path``."""

    def __init__(self, path: Path) -> None:
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)

    def close(self) -> None:
        self._db.close()

    def height(self) -> int:
        """Number of blocks committed (the next block's number)."""
        row = self._db.execute("SELECT MAX(number) FROM blocks").fetchone()
        return 0 if row[0] is None else int(row[0]) + 1

    def block(self, number: int) -> common_pb2.Block | None:
        row = self._db.execute(
            "SELECT data FROM blocks WHERE number = ?", (number,)
        ).fetchone()
        if row is None:
            return None
        block = common_pb2.Block()
        block.ParseFromString(row[0])
        return block

    def last_block_hash(self) -> bytes:
        from tcbridge_devpeer.protocol import header_hash

        last = self.block(self.height() - 1)
        return b"" if last is None else header_hash(last.header)

    def get(self, namespace: str, key: str) -> StateEntry | None:
        row = self._db.execute(
            "SELECT value, block, txnum FROM state WHERE ns = ? AND key = ?",
            (namespace, key.encode()),
        ).fetchone()
        if row is None:
            return None
        return StateEntry(key, bytes(row[0]), (int(row[1]), int(row[2])))

    def range(
        self, namespace: str, start: str, end: str, limit: int | None = None
    ) -> list[StateEntry]:
        """Entries with start <= key < end (bytewise); end "" means no bound."""
        sql = "SELECT key, value, block, txnum FROM state WHERE ns = ? AND key >= ?"
        args: list[object] = [namespace, start.encode()]
        if end:
            sql += " AND key < ?"
            args.append(end.encode())
        sql += " ORDER BY key"
        if limit is not None:
            sql += " LIMIT ?"
            args.append(limit)
        return [
            StateEntry(bytes(k).decode(), bytes(v), (int(b), int(t)))
            for k, v, b, t in self._db.execute(sql, args)
        ]

    def tx_status(self, txid: str) -> tuple[int, int] | None:
        """``(validation code, block number)`` of a committed transaction."""
        row = self._db.execute(
            "SELECT code, block FROM txs WHERE txid = ?", (txid,)
        ).fetchone()
        return None if row is None else (int(row[0]), int(row[1]))

    def commit(
        self,
        block: common_pb2.Block,
        tx_codes: list[tuple[str, int]],
        writes: list[Write],
    ) -> None:
        """Store a block, its transactions' codes and its valid writes, atomically."""
        number = block.header.number
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        try:
            db.execute(
                "INSERT INTO blocks (number, data) VALUES (?, ?)",
                (number, block.SerializeToString()),
            )
            # A duplicate txid keeps its first (valid or not) record.
            db.executemany(
                "INSERT OR IGNORE INTO txs (txid, block, code) VALUES (?, ?, ?)",
                [(txid, number, code) for txid, code in tx_codes if txid],
            )
            for write in writes:
                if write.value is None:
                    db.execute(
                        "DELETE FROM state WHERE ns = ? AND key = ?",
                        (write.namespace, write.key.encode()),
                    )
                else:
                    db.execute(
                        "INSERT OR REPLACE INTO state VALUES (?, ?, ?, ?, ?)",
                        (
                            write.namespace,
                            write.key.encode(),
                            write.value,
                            *write.version,
                        ),
                    )
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
