"""Workload state and work-order results, shared by every pool process.

The interface (:class:`WorkloadStateStore`) is four calls:

``load(worker_id, workload)``
    the state committed so far for (worker identity, workload), with its
    version (0 and ``None`` before the first commit);
``result(order_key)``
    the result committed for a work order, if any;
``claimed_by(worker_id, request_hash)``
    which order holds the claim on a request hash, if any;
``lookup(order_key, worker_id, request_hash)``
    both of the above in one read (one read transaction in SQLite);
    ``lookup_many`` does it for several orders in one read transaction;
``commit_many(staged)``
    results without state changes, each judged as ``commit`` would judge
    it, in one transaction (a pool process commits a few orders at once);
``commit(...)``
    ONE atomic transaction that (a) stores the order's result keyed by
    order key, (b) claims the request hash for that order if asked to, and
    (c) replaces the state if the stored version still equals the version
    the workload started from. It answers COMMITTED, ALREADY_COMMITTED (a
    retry: the earlier result stands and nothing changes), DUPLICATE (the
    request hash belongs to another order) or CONFLICT (another process
    committed state in between: re-run the workload on the new state).

:func:`execute_once` is the loop every caller runs around a work order: it
returns a committed result instead of executing again, re-runs on a
conflict, and turns a lost claim into a "duplicate request" answer. So a
retried work order returns its committed result and never counts twice,
and a worker serves one request hash once, whatever the source.

``state_lock(worker_id, workload)`` serialises the runs of one stateful
workload across processes: :func:`execute_once` holds it from the load to
the commit. Optimistic runs alone starve: two processes that keep
committing the same state make each other's runs conflict again and
again (measured here: 16 conflicts in a row once writers stopped sleeping
in SQLite's busy handler). A conflict now needs a writer that ignores the
lock, and is still re-run.

:meth:`WorkloadStateStore.claim` is the claim on its own, for callers that
must claim before they have a result: it succeeds for the first order and
for a retry of the same order, and fails for any other order.

Two implementations: :class:`SqliteWorkloadStateStore` (SQLAlchemy 2, sync
engine, SQLite in WAL mode with a busy timeout; one store per process) and
:class:`MemoryWorkloadStateStore` for unit tests. The tables are plain and
keyed as the main work-order store keys things, so that store can absorb
them later.
"""

from __future__ import annotations

import contextlib
import enum
import fcntl
import hashlib
import json
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from sqlalchemy import (
    Column,
    Engine,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    bindparam,
    create_engine,
    event,
    insert,
    literal_column,
    select,
    update,
)
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import SQLAlchemyError

from enclave_bridge.errors import BugError, StoreError

# A busy SQLite writer holds the lock for well under a millisecond per
# commit; 10 s only matters when the disk stalls.
SQLITE_BUSY_TIMEOUT_MS = 10_000

# SQLite copies the WAL into the database file, with fsyncs, once the WAL
# holds this many pages; the process whose commit crosses the mark does it
# while its work order waits (40 ms and more at 10,000 pages, measured here:
# some 25 µs of every order's time, and the p99). The pool's parent
# checkpoints instead (:func:`checkpoint_wal`, every second, off the
# orders' path); this mark is only the fallback should it stop, and bounds
# the WAL at about 200 MB.
SQLITE_WAL_AUTOCHECKPOINT_PAGES = 50_000

# Conflicts need another process to commit the same (worker, workload) state
# between our load and commit; more than a handful in a row means a bug.
MAX_CONFLICT_RERUNS = 16

metadata = MetaData()

workload_state = Table(
    "workload_state",
    metadata,
    Column("worker_id", String(64), primary_key=True),
    Column("workload", String(128), primary_key=True),
    Column("version", Integer, nullable=False),
    Column("state", Text, nullable=False),
)

work_order_result = Table(
    "work_order_result",
    metadata,
    Column("order_key", String(256), primary_key=True),
    Column("worker_id", String(64), nullable=False),
    Column("request_hash", LargeBinary, nullable=True),
    Column("status", Integer, nullable=False),
    Column("response", LargeBinary, nullable=False),
    Column("result_signature", LargeBinary, nullable=True),
    Column("committed_at", Integer, nullable=False),
)

request_claim = Table(
    "request_claim",
    metadata,
    Column("worker_id", String(64), primary_key=True),
    Column("request_hash", LargeBinary, primary_key=True),
    Column("order_key", String(256), nullable=False),
    sqlite_with_rowid=False,
)


@dataclass(frozen=True, slots=True)
class StateSnapshot:
    version: int
    state: Mapping[str, Any] | None


@dataclass(frozen=True, slots=True)
class StoredResult:
    """A work order's answer as committed: signed, ready to submit."""

    order_key: str
    worker_id: str
    status: int
    response: bytes
    request_hash: bytes | None = None
    result_signature: bytes | None = None


class CommitOutcome(enum.Enum):
    COMMITTED = "committed"
    ALREADY_COMMITTED = "already-committed"
    DUPLICATE = "duplicate"
    CONFLICT = "conflict"


class WorkloadStateStore(Protocol):
    def load(self, worker_id: str, workload: str) -> StateSnapshot: ...

    def result(self, order_key: str) -> StoredResult | None: ...

    def claimed_by(self, worker_id: str, request_hash: bytes) -> str | None: ...

    def lookup(
        self, order_key: str, worker_id: str, request_hash: bytes
    ) -> tuple[StoredResult | None, str | None]: ...

    def lookup_many(
        self, keys: Sequence[tuple[str, str, bytes]]
    ) -> list[tuple[StoredResult | None, str | None]]: ...

    def claim(self, worker_id: str, request_hash: bytes, order_key: str) -> bool: ...

    def commit_many(
        self, staged: Sequence[tuple[StoredResult, bool]]
    ) -> list[CommitOutcome]: ...

    def commit(
        self,
        result: StoredResult,
        *,
        claim: bool,
        workload: str | None = None,
        expected_version: int = 0,
        new_state: Mapping[str, Any] | None = None,
    ) -> CommitOutcome: ...

    def state_lock(
        self, worker_id: str, workload: str
    ) -> contextlib.AbstractContextManager[None]: ...

    def close(self) -> None: ...


def encode_state(state: Mapping[str, Any]) -> str:
    return json.dumps(state, sort_keys=True, separators=(",", ":"))


# --- SQLite through SQLAlchemy ----------------------------------------------------


class SqliteWorkloadStateStore:
    """The store in one SQLite file, shared by every pool process (WAL mode).

    SQLAlchemy owns the schema, the engine and the statements; the hot path
    runs the statements, compiled once, on one DBAPI connection that the
    store keeps (about 10 times cheaper than building each statement per
    call, measured here). Writes take the write lock at BEGIN (``BEGIN
    IMMEDIATE``), so two processes never deadlock upgrading a read lock.

    The stores of one database first queue on an ``flock`` of the file
    beside it (``<database>.writer``): the kernel wakes the next writer the
    moment the last one commits. SQLite's own wait for a busy database
    sleeps a millisecond or more per try, longer than a commit takes: with
    two pool processes about one write in eleven waited that way, some
    0.1 ms of every work order (measured here). Programs that do not take
    the flock (a shell on the database) still meet the busy timeout,
    :data:`SQLITE_BUSY_TIMEOUT_MS`.

    One store per process and per thread: it is not thread-safe.
    """

    def __init__(self, path: Path | str, *, create: bool = True) -> None:
        self.path = Path(path)
        self.engine: Engine = create_engine(f"sqlite:///{self.path}")
        event.listen(self.engine, "connect", _sqlite_on_connect)
        with _translated(f"open the workload-state database {self.path}"):
            if create:
                with self.engine.begin() as conn:
                    metadata.create_all(conn)
            self._conn = self.engine.raw_connection()
            self._cursor = self._conn.cursor()
            self._writer_lock = os.open(
                f"{self.path}.writer", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600
            )
            self._state_locks = os.open(
                f"{self.path}.state", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600
            )
        self._sql = _Statements(self.engine.dialect)

    def close(self) -> None:
        self._cursor.close()
        self._conn.close()
        self.engine.dispose()
        os.close(self._writer_lock)
        os.close(self._state_locks)

    @contextlib.contextmanager
    def state_lock(self, worker_id: str, workload: str) -> Iterator[None]:
        """One byte of ``<database>.state``, locked (POSIX record lock).

        The byte's offset is a hash of the state's key, so unrelated states
        rarely share a lock; the kernel drops it when the process dies.
        """
        key = f"{worker_id}\0{workload}".encode("utf-8", "surrogatepass")
        offset = int.from_bytes(hashlib.sha256(key).digest()[:5], "big")
        with _translated("lock a workload state"):
            fcntl.lockf(self._state_locks, fcntl.LOCK_EX, 1, offset)
        try:
            yield
        finally:
            fcntl.lockf(self._state_locks, fcntl.LOCK_UN, 1, offset)

    def load(self, worker_id: str, workload: str) -> StateSnapshot:
        with _translated("load workload state"):
            row = self._one(
                self._sql.load_state, worker_id=worker_id, workload=workload
            )
        if row is None:
            return StateSnapshot(version=0, state=None)

        return StateSnapshot(version=row[0], state=json.loads(row[1]))

    def result(self, order_key: str) -> StoredResult | None:
        with _translated("read a work-order result"):
            row = self._one(self._sql.load_result, order_key=order_key)

        return None if row is None else _stored(order_key, row)

    def claimed_by(self, worker_id: str, request_hash: bytes) -> str | None:
        with _translated("read a request-hash claim"):
            return self._claim_owner(worker_id, request_hash)

    def lookup(
        self, order_key: str, worker_id: str, request_hash: bytes
    ) -> tuple[StoredResult | None, str | None]:
        with _translated("read a work-order result and its claim"):
            return self._lookup_in(order_key, worker_id, request_hash)

    def lookup_many(
        self, keys: Sequence[tuple[str, str, bytes]]
    ) -> list[tuple[StoredResult | None, str | None]]:
        if len(keys) <= 1:
            return [self.lookup(*key) for key in keys]
        with _translated("read work-order results and their claims"):
            # One read transaction: the page cache is checked once, not per order.
            self._conn.execute("BEGIN")
            try:
                return [self._lookup_in(*key) for key in keys]
            finally:
                self._conn.execute("COMMIT")

    def _lookup_in(
        self, order_key: str, worker_id: str, request_hash: bytes
    ) -> tuple[StoredResult | None, str | None]:
        row = self._one(
            self._sql.lookup,
            order_key=order_key,
            worker_id=worker_id,
            request_hash=request_hash,
        )
        assert row is not None  # an outer join of one row always has one
        owner = None if row[0] is None else str(row[0])
        # status is NOT NULL: None means the join found no result.
        stored = None if row[3] is None else _stored(order_key, row[1:])

        return stored, owner

    def claim(self, worker_id: str, request_hash: bytes, order_key: str) -> bool:
        keys = {"worker_id": worker_id, "request_hash": request_hash}
        with _translated("claim a request hash"), self._write():
            if self._run(self._sql.insert_claim_if_new, **keys, order_key=order_key):
                return True
            owner = self._claim_owner(worker_id, request_hash)

        return owner == order_key

    def commit(
        self,
        result: StoredResult,
        *,
        claim: bool,
        workload: str | None = None,
        expected_version: int = 0,
        new_state: Mapping[str, Any] | None = None,
    ) -> CommitOutcome:
        if claim and result.request_hash is None:
            raise BugError("a claim needs the request hash")
        if new_state is not None and workload is None:
            raise BugError("committing state needs the workload name")

        with _translated("commit a work-order result"), self._write() as tx:
            outcome = self._commit_in(
                result, claim, workload, expected_version, new_state
            )
            if outcome is not CommitOutcome.COMMITTED:
                tx.rollback = True

        return outcome

    def commit_many(
        self, staged: Sequence[tuple[StoredResult, bool]]
    ) -> list[CommitOutcome]:
        if not staged:
            return []
        with _translated("commit work-order results"), self._write():
            return [self._commit_result(result, claim) for result, claim in staged]

    def _commit_result(self, result: StoredResult, claim: bool) -> CommitOutcome:
        """Result and claim, inside a write transaction; writes only on COMMITTED."""
        if claim and result.request_hash is None:
            raise BugError("a claim needs the request hash")
        owner = (
            self._claim_owner(result.worker_id, result.request_hash) if claim else None
        )
        if owner not in (None, result.order_key):
            return CommitOutcome.DUPLICATE
        if not self._insert_result(result):
            return CommitOutcome.ALREADY_COMMITTED
        if claim and owner is None:
            self._run(
                self._sql.insert_claim_if_new,
                worker_id=result.worker_id,
                request_hash=result.request_hash,
                order_key=result.order_key,
            )
        return CommitOutcome.COMMITTED

    def _commit_in(
        self,
        result: StoredResult,
        claim: bool,
        workload: str | None,
        expected_version: int,
        new_state: Mapping[str, Any] | None,
    ) -> CommitOutcome:
        """commit() inside a write transaction; the caller rolls back unless COMMITTED."""
        if new_state is not None:
            assert workload is not None
            # A claim lost to another order answers DUPLICATE before a conflict.
            if claim and self._claim_owner(
                result.worker_id, result.request_hash
            ) not in (None, result.order_key):
                return CommitOutcome.DUPLICATE
            if not self._replace_state(
                result.worker_id, workload, expected_version, encode_state(new_state)
            ):
                return CommitOutcome.CONFLICT
        return self._commit_result(result, claim)

    def _claim_owner(self, worker_id: str, request_hash: bytes | None) -> str | None:
        row = self._one(
            self._sql.claim_owner, worker_id=worker_id, request_hash=request_hash
        )
        return None if row is None else str(row[0])

    def _insert_result(self, result: StoredResult) -> bool:
        """Store the result unless the order has one already; True if stored."""
        return bool(
            self._run(
                self._sql.insert_result_if_new,
                order_key=result.order_key,
                worker_id=result.worker_id,
                request_hash=result.request_hash,
                status=result.status,
                response=result.response,
                result_signature=result.result_signature,
                committed_at=int(time.time()),
            )
        )

    def _replace_state(
        self, worker_id: str, workload: str, expected_version: int, text: str
    ) -> bool:
        keys = {"worker_id": worker_id, "workload": workload}
        if expected_version == 0:
            if self._one(self._sql.load_state, **keys) is not None:
                return False
            self._run(self._sql.insert_state, **keys, version=1, state=text)
            return True
        changed = self._run(
            self._sql.update_state,
            **keys,
            expected_version=expected_version,
            new_version=expected_version + 1,
            state=text,
        )

        return changed == 1

    def _one(self, statement: _Prepared, **params: Any) -> tuple[Any, ...] | None:
        self._cursor.execute(statement.sql, statement.bind(params))
        row = self._cursor.fetchone()

        return None if row is None else tuple(row)

    def _run(self, statement: _Prepared, **params: Any) -> int:
        self._cursor.execute(statement.sql, statement.bind(params))

        return int(self._cursor.rowcount)

    def _write(self) -> _WriteTransaction:
        return _WriteTransaction(self._conn, self._writer_lock)


class _WriteTransaction:
    """flock, BEGIN IMMEDIATE ... COMMIT (or ROLLBACK on error or when asked to)."""

    def __init__(self, conn: Any, writer_lock: int) -> None:
        self._conn = conn
        self._lock = writer_lock
        self.rollback = False

    def __enter__(self) -> _WriteTransaction:
        fcntl.flock(self._lock, fcntl.LOCK_EX)
        try:
            self._conn.execute("BEGIN IMMEDIATE")
        except BaseException:
            fcntl.flock(self._lock, fcntl.LOCK_UN)
            raise
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        try:
            if exc_type is None and not self.rollback:
                self._conn.execute("COMMIT")
            else:
                self._conn.execute("ROLLBACK")
        finally:
            fcntl.flock(self._lock, fcntl.LOCK_UN)


@dataclass(frozen=True, slots=True)
class _Prepared:
    sql: str
    names: tuple[str, ...] | None  # positional parameter order, if positional

    def bind(self, params: Mapping[str, Any]) -> Any:
        if self.names is None:
            return params
        return tuple(params[name] for name in self.names)


def _prepare(statement: Any, dialect: Any) -> _Prepared:
    compiled = statement.compile(dialect=dialect)
    names = tuple(compiled.positiontup) if dialect.positional else None

    return _Prepared(sql=str(compiled), names=names)


class _Statements:
    """Every statement the store runs, compiled once for the engine's dialect."""

    def __init__(self, dialect: Any) -> None:
        s, r, k = workload_state.c, work_order_result.c, request_claim.c
        p = bindparam
        self.load_state = _prepare(
            select(s.version, s.state).where(
                s.worker_id == p("worker_id"), s.workload == p("workload")
            ),
            dialect,
        )
        self.insert_state = _prepare(
            insert(workload_state).values(
                worker_id=p("worker_id"),
                workload=p("workload"),
                version=p("version"),
                state=p("state"),
            ),
            dialect,
        )
        self.update_state = _prepare(
            update(workload_state)
            .where(
                s.worker_id == p("worker_id"),
                s.workload == p("workload"),
                s.version == p("expected_version"),
            )
            .values(version=p("new_version"), state=p("state")),
            dialect,
        )
        self.load_result = _prepare(
            select(
                r.worker_id, r.request_hash, r.status, r.response, r.result_signature
            ).where(r.order_key == p("order_key")),
            dialect,
        )
        self.insert_result_if_new = _prepare(
            sqlite_insert(work_order_result)
            .values({col.name: p(col.name) for col in work_order_result.columns})
            .on_conflict_do_nothing(),
            dialect,
        )
        self.claim_owner = _prepare(
            select(k.order_key).where(
                k.worker_id == p("worker_id"), k.request_hash == p("request_hash")
            ),
            dialect,
        )
        # One read transaction instead of two: after a write by another
        # process SQLite starts each read transaction with an empty page
        # cache, so each one costs the B-tree pages again.
        one_row = select(literal_column("1").label("one")).subquery()
        self.lookup = _prepare(
            select(
                select(k.order_key)
                .where(
                    k.worker_id == p("worker_id"), k.request_hash == p("request_hash")
                )
                .scalar_subquery(),
                r.worker_id,
                r.request_hash,
                r.status,
                r.response,
                r.result_signature,
            ).select_from(
                one_row.outerjoin(work_order_result, r.order_key == p("order_key"))
            ),
            dialect,
        )
        self.insert_claim_if_new = _prepare(
            sqlite_insert(request_claim)
            .values(
                worker_id=p("worker_id"),
                request_hash=p("request_hash"),
                order_key=p("order_key"),
            )
            .on_conflict_do_nothing(),
            dialect,
        )


def _stored(order_key: str, row: tuple[Any, ...]) -> StoredResult:
    return StoredResult(
        order_key=order_key,
        worker_id=row[0],
        request_hash=row[1],
        status=row[2],
        response=row[3],
        result_signature=row[4],
    )


@contextlib.contextmanager
def _translated(action: str) -> Iterator[None]:
    """The one place where database errors become StoreError.

    OSError too: the lock files beside the database fail that way.
    """
    try:
        yield
    except (sqlite3.Error, SQLAlchemyError, OSError) as exc:
        raise StoreError(
            f"cannot {action}: {exc}; is the state database on a local disk and "
            "writable, and is another program holding a lock on it?"
        ) from exc


def _sqlite_on_connect(dbapi_connection: Any, _record: Any) -> None:
    # Transactions are explicit (BEGIN IMMEDIATE in _WriteTransaction); the
    # driver's implicit BEGIN would be DEFERRED.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    # WAL + NORMAL: a commit survives a process crash; the last commits may
    # roll back on power loss, which the work-order retry path tolerates.
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute(f"PRAGMA wal_autocheckpoint={SQLITE_WAL_AUTOCHECKPOINT_PAGES}")
    cursor.close()


def checkpoint_wal(path: Path | str) -> tuple[int, int, int]:
    """Copy committed WAL pages into the database file; the WAL then restarts.

    Two PASSIVE checkpoints on a connection of their own. The first copies
    the bulk while writers go on appending. A checkpoint alone never
    catches up with writers that never pause, and SQLite restarts the WAL
    from its beginning only once every page in it is copied: under steady
    load the WAL grew to the fallback mark (about 200 MB), and every page
    appended past its end cost the file system a new block (measured here:
    some 20 µs of a work order's CPU time). So the second copies what was
    appended meanwhile while holding the writers' flock (a fraction of a
    millisecond), and the next commit restarts the WAL. Returns SQLite's
    (busy, pages in the WAL, pages copied) of the second.
    """
    with _translated(f"checkpoint the workload-state database {path}"):
        writers = os.open(
            f"{path}.writer", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600
        )
        try:
            # mode=rw: a database deleted under a running pool is an error to
            # report, not an empty file to create.
            uri = f"{Path(path).resolve().as_uri()}?mode=rw"
            conn = sqlite3.connect(uri, uri=True, isolation_level=None)
            try:
                conn.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
                conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
                fcntl.flock(writers, fcntl.LOCK_EX)
                try:
                    row = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
                finally:
                    fcntl.flock(writers, fcntl.LOCK_UN)
            finally:
                conn.close()
        finally:
            os.close(writers)
    busy, pages, copied = (int(value) for value in row)
    return busy, pages, copied


# --- in memory -----------------------------------------------------------------


class MemoryWorkloadStateStore:
    """The same contract in one process's memory, for unit tests."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._states: dict[tuple[str, str], tuple[int, str]] = {}
        self._results: dict[str, StoredResult] = {}
        self._claims: dict[tuple[str, bytes], str] = {}
        self._state_locks: dict[tuple[str, str], threading.Lock] = {}

    def close(self) -> None:
        pass

    @contextlib.contextmanager
    def state_lock(self, worker_id: str, workload: str) -> Iterator[None]:
        with self._lock:
            lock = self._state_locks.setdefault((worker_id, workload), threading.Lock())
        with lock:
            yield

    def load(self, worker_id: str, workload: str) -> StateSnapshot:
        with self._lock:
            found = self._states.get((worker_id, workload))
        if found is None:
            return StateSnapshot(version=0, state=None)
        return StateSnapshot(version=found[0], state=json.loads(found[1]))

    def result(self, order_key: str) -> StoredResult | None:
        with self._lock:
            return self._results.get(order_key)

    def claimed_by(self, worker_id: str, request_hash: bytes) -> str | None:
        with self._lock:
            return self._claims.get((worker_id, request_hash))

    def lookup(
        self, order_key: str, worker_id: str, request_hash: bytes
    ) -> tuple[StoredResult | None, str | None]:
        with self._lock:
            return (
                self._results.get(order_key),
                self._claims.get((worker_id, request_hash)),
            )

    def lookup_many(
        self, keys: Sequence[tuple[str, str, bytes]]
    ) -> list[tuple[StoredResult | None, str | None]]:
        return [self.lookup(*key) for key in keys]

    def claim(self, worker_id: str, request_hash: bytes, order_key: str) -> bool:
        with self._lock:
            owner = self._claims.setdefault((worker_id, request_hash), order_key)
        return owner == order_key

    def commit_many(
        self, staged: Sequence[tuple[StoredResult, bool]]
    ) -> list[CommitOutcome]:
        return [self.commit(result, claim=claim) for result, claim in staged]

    def commit(
        self,
        result: StoredResult,
        *,
        claim: bool,
        workload: str | None = None,
        expected_version: int = 0,
        new_state: Mapping[str, Any] | None = None,
    ) -> CommitOutcome:
        with self._lock:
            if result.order_key in self._results:
                return CommitOutcome.ALREADY_COMMITTED
            claim_key = (result.worker_id, result.request_hash or b"")
            if (
                claim
                and self._claims.get(claim_key, result.order_key) != result.order_key
            ):
                return CommitOutcome.DUPLICATE
            if new_state is not None:
                if workload is None:
                    raise BugError("committing state needs the workload name")
                current = self._states.get((result.worker_id, workload), (0, ""))[0]
                if current != expected_version:
                    return CommitOutcome.CONFLICT
                self._states[(result.worker_id, workload)] = (
                    current + 1,
                    encode_state(new_state),
                )
            if claim:
                self._claims[claim_key] = result.order_key
            self._results[result.order_key] = result
        return CommitOutcome.COMMITTED


# --- the loop around one work order -----------------------------------------------


@dataclass(frozen=True, slots=True)
class Execution:
    """What one run of a work order produced, before it is committed."""

    status: int
    response: bytes
    request_hash: bytes | None
    result_signature: bytes | None
    new_state: Mapping[str, Any] | None


# execute(snapshot, claim_request) -> Execution. ``claim_request`` is the
# processor's callback: True lets the workload run, False makes the
# processor answer "duplicate request".
Executor = Callable[[StateSnapshot | None, Callable[[bytes], bool]], Execution]


@dataclass(frozen=True, slots=True)
class Outcome:
    result: StoredResult
    # True when this call ran the workload and committed its result; False
    # for a retry answered from an earlier commit and for refusals
    # (bad input, duplicate request) that never reached the workload.
    executed: bool
    reruns: int = 0


def execute_once(
    store: WorkloadStateStore,
    *,
    worker_id: str,
    order_key: str,
    workload: str | None,
    stateful: bool,
    execute: Executor,
    on_start: Callable[[bytes], None] | None = None,
    request_hash: bytes | None = None,
    stage: Callable[[StoredResult, bool], None] | None = None,
    known: tuple[StoredResult | None, str | None] | None = None,
) -> Outcome:
    """Run a work order at most once to a committed result (see module doc).

    ``on_start(request_hash)`` is called just before the workload would run
    (the audit log hooks in there). ``request_hash``, when the caller
    already knows it, lets the first run read the order's result and the
    hash's claim in one :meth:`~WorkloadStateStore.lookup`; the commit
    checks the claim again, so a claim taken in between is still caught.
    ``known``, that lookup's answer read earlier by the caller (with other
    orders' in one read), saves the lookup.

    ``stage(result, claim)``, when given, takes a stateless order's result
    instead of :meth:`~WorkloadStateStore.commit`: the caller commits it
    later with :meth:`~WorkloadStateStore.commit_many` and owns what that
    answers (the returned Outcome assumes COMMITTED). Stateful orders are
    always committed here.
    """
    lock: contextlib.AbstractContextManager[None] = (
        store.state_lock(worker_id, workload)
        if stateful and workload
        else contextlib.nullcontext()
    )
    with lock:
        duplicate = False
        for attempt in range(MAX_CONFLICT_RERUNS):
            # (hash, owner) read with the result; later runs read afresh.
            known_claim: tuple[bytes, str | None] | None = None
            if attempt == 0 and request_hash is not None:
                stored, owner = known or store.lookup(
                    order_key, worker_id, request_hash
                )
                known_claim = (request_hash, owner)
            else:
                stored = store.result(order_key)
            if stored is not None:
                return Outcome(result=stored, executed=False, reruns=attempt)

            snapshot = (
                store.load(worker_id, workload) if stateful and workload else None
            )
            claimed: list[bytes] = []

            def claim_request(
                digest: bytes,
                _dup: bool = duplicate,
                _claimed: list[bytes] = claimed,
                _known: tuple[bytes, str | None] | None = known_claim,
            ) -> bool:
                if _dup:
                    return False
                if _known is not None and _known[0] == digest:
                    owner = _known[1]
                else:
                    owner = store.claimed_by(worker_id, digest)
                if owner not in (None, order_key):
                    return False
                _claimed.append(digest)
                if on_start is not None:
                    on_start(digest)
                return True

            run = execute(snapshot, claim_request)
            result = StoredResult(
                order_key=order_key,
                worker_id=worker_id,
                status=run.status,
                response=run.response,
                request_hash=run.request_hash,
                result_signature=run.result_signature,
            )
            new_state = run.new_state if snapshot is not None else None
            claim = run.request_hash is not None and run.request_hash in claimed
            if stage is not None and snapshot is None:
                stage(result, claim)
                return Outcome(result=result, executed=bool(claimed), reruns=attempt)
            outcome = store.commit(
                result,
                claim=claim,
                workload=workload,
                expected_version=snapshot.version if snapshot is not None else 0,
                new_state=new_state,
            )
            if outcome is CommitOutcome.COMMITTED:
                return Outcome(result=result, executed=bool(claimed), reruns=attempt)
            if outcome is CommitOutcome.DUPLICATE:
                duplicate = True
        raise StoreError(
            f"work order {order_key}: state kept changing under {MAX_CONFLICT_RERUNS} "
            "runs; too many pool processes may be serving one stateful workload"
        )
