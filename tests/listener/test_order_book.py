"""The listener's order book: buffered writes that every reader sees, one commit each flush."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import pytest

from enclave_bridge.errors import StoreError
from enclave_bridge.listener_book import OrderBook, OrderRow


def row(key: str, request: bytes = b"{}") -> OrderRow:
    return OrderRow(
        key=key,
        work_order_id=key.removeprefix("wo:"),
        request=request,
        request_sha256=b"\x00" * 32,
        requester_id="ab",
        verifying_key="",
        target=None,
        max_seconds=5.0,
        state="pending",
        status=None,
        response=None,
        extension=None,
    )


def rows_on_disk(path: Path) -> dict[str, tuple[str, bytes | None]]:
    """What another connection reads from the database file."""
    with sqlite3.connect(path) as other:
        return {
            key: (state, response)
            for key, state, response in other.execute(
                "SELECT key, state, response FROM orders"
            )
        }


def test_orders_and_answers_are_buffered_until_a_flush(tmp_path: Path) -> None:
    path = tmp_path / "book.db"
    book = OrderBook(path)

    assert book.add_order(row("wo:01"))
    assert book.add_order(row("wo:02"))
    book.finish_order("wo:01", 0, b"answer one", None)

    seen = book.order("wo:01")
    assert seen is not None and (seen.state, seen.response) == ("done", b"answer one")
    assert not book.written("wo:01") and book.buffered() == 3
    assert rows_on_disk(path) == {}

    book.flush()

    assert book.written("wo:01") and book.buffered() == 0
    assert rows_on_disk(path) == {
        "wo:01": ("done", b"answer one"),
        "wo:02": ("pending", None),
    }
    book.close()


def test_a_known_key_is_refused_written_or_not(tmp_path: Path) -> None:
    book = OrderBook(tmp_path / "book.db")
    assert book.add_order(row("wo:01", b"first"))
    assert not book.add_order(row("wo:01", b"second"))
    book.flush()
    assert not book.add_order(row("wo:01", b"third"))
    stored = book.order("wo:01")
    assert stored is not None and stored.request == b"first"
    book.close()


def test_pending_orders_and_counts_include_the_buffer(tmp_path: Path) -> None:
    book = OrderBook(tmp_path / "book.db")
    book.add_order(row("wo:01"))
    book.add_order(row("wo:02"))
    book.finish_order("wo:02", 0, b"done", None)

    assert [r.key for r in book.pending_orders()] == ["wo:01"]
    assert book.count_orders() == {"pending": 1, "done": 1}
    book.close()


def test_close_writes_the_buffer(tmp_path: Path) -> None:
    path = tmp_path / "book.db"
    book = OrderBook(path)
    book.add_order(row("wo:01"))
    book.close()
    assert rows_on_disk(path) == {"wo:01": ("pending", None)}


def test_a_failed_flush_keeps_the_buffer_for_the_next(tmp_path: Path) -> None:
    path = tmp_path / "book.db"
    book = OrderBook(path)
    book.add_order(row("wo:01"))
    with sqlite3.connect(path, isolation_level=None) as other:
        other.execute("PRAGMA busy_timeout=0")
        other.execute("BEGIN IMMEDIATE")  # another writer holds the lock
        book._db.execute("PRAGMA busy_timeout=0")
        with pytest.raises(StoreError, match="1 orders and 0 answers"):
            book.flush()
        assert not book.written("wo:01") and book.order("wo:01") is not None
        other.execute("ROLLBACK")

    book.flush()
    assert rows_on_disk(path) == {"wo:01": ("pending", None)}
    book.close()


def test_prune_drops_only_orders_answered_before_the_cutoff(tmp_path: Path) -> None:
    path = tmp_path / "book.db"
    book = OrderBook(path)
    for key in ("wo:old", "wo:new", "wo:pending"):
        book.add_order(row(key))
    book.finish_order("wo:old", 0, b"old", None)
    book.flush()
    cutoff = time.time()
    book.finish_order("wo:new", 0, b"new", None)  # buffered: pruning flushes first

    assert book.prune_answered(cutoff) == 1
    assert set(rows_on_disk(path)) == {"wo:new", "wo:pending"}
    assert book.order("wo:old") is None
    book.close()
