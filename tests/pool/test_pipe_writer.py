"""The parent's command pipe: frames of one loop turn leave in one write."""

from __future__ import annotations

import asyncio
import os
import pickle

from enclave_bridge.pool import _PipeWriter


def _frames(data: bytes) -> list[object]:
    """The complete frames at the start of ``data``."""
    out = []
    while len(data) >= 4:
        size = int.from_bytes(data[:4], "big")
        if len(data) < 4 + size:
            break
        out.append(pickle.loads(data[4 : 4 + size]))
        data = data[4 + size :]
    return out


def _pending(fd: int) -> bytes:
    try:
        return os.read(fd, 1 << 20)
    except BlockingIOError:
        return b""


async def test_frames_sent_in_one_turn_leave_together_on_the_next() -> None:
    read_fd, write_fd = os.pipe()
    os.set_blocking(read_fd, False)
    writer = _PipeWriter(asyncio.get_running_loop(), write_fd)
    try:
        for n in range(3):
            writer.send(("run", n))
        assert _pending(read_fd) == b""

        await asyncio.sleep(0)

        assert _frames(_pending(read_fd)) == [("run", 0), ("run", 1), ("run", 2)]
    finally:
        writer.close()
        os.close(read_fd)


async def test_close_still_writes_what_was_sent() -> None:
    read_fd, write_fd = os.pipe()
    os.set_blocking(read_fd, False)
    writer = _PipeWriter(asyncio.get_running_loop(), write_fd)
    writer.send(("run", 7))

    writer.close()
    await asyncio.sleep(0)

    assert _frames(_pending(read_fd)) == [("run", 7)]
    os.close(read_fd)


async def test_a_full_pipe_keeps_the_rest_until_it_drains() -> None:
    read_fd, write_fd = os.pipe()
    os.set_blocking(read_fd, False)
    writer = _PipeWriter(asyncio.get_running_loop(), write_fd)
    big = b"x" * (1 << 16)
    try:
        for n in range(8):
            writer.send(("run", n, big))
        received = b""
        for _ in range(200):
            await asyncio.sleep(0.001)
            received += _pending(read_fd)
            if len(_frames(received)) == 8:
                break

        assert [frame[1] for frame in _frames(received)] == list(range(8))  # type: ignore[index]
    finally:
        writer.close()
        os.close(read_fd)
