"""A pool process on its own: the lifeline watchdog and the result wire format."""

from __future__ import annotations

import mmap
import os
import subprocess
import sys
import time

from enclave_bridge import _pool_worker as wire


def test_process_exits_when_the_lifeline_closes() -> None:
    """Closing the parent's end of the lifeline ends a pool process, even one mid-wait."""
    cmd_r, cmd_w = os.pipe()
    res_r, res_w = os.pipe()
    life_r, life_w = os.pipe()
    marker = os.memfd_create("test-marker")
    os.ftruncate(marker, wire.MARKER.size)
    child = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "enclave_bridge._pool_worker",
            str(cmd_r),
            str(res_w),
            str(life_r),
            str(os.getpid()),
            str(marker),
        ],
        pass_fds=(cmd_r, res_w, life_r, marker),
    )
    for fd in (cmd_r, res_w, life_r, marker):
        os.close(fd)
    try:
        time.sleep(0.3)
        assert child.poll() is None

        # The command pipe stays open: only the lifeline says the parent is gone.
        os.close(life_w)

        assert child.wait(10) == 0
    finally:
        if child.poll() is None:
            child.kill()
            child.wait(10)
        for fd in (cmd_w, res_r):
            os.close(fd)


def test_done_frames_round_trip() -> None:
    """Result frames decode to what was encoded, absent fields included."""
    full = wire.encode_done(7, 0, b'{"result":{}}', b"h" * 32, b"s" * 65, True)
    bare = wire.encode_done(8, 2, b'{"error":{}}', None, None, False)

    assert wire.decode_done(full) == (
        7,
        0,
        b'{"result":{}}',
        b"h" * 32,
        b"s" * 65,
        True,
    )
    assert wire.decode_done(bare) == (8, 2, b'{"error":{}}', None, None, False)


def test_the_marker_is_never_read_half_written() -> None:
    """A reader sees a whole (order, start) pair, or no order while the writer is mid-way."""
    fd = os.memfd_create("test-marker")
    os.ftruncate(fd, wire.MARKER.size)
    view = mmap.mmap(fd, wire.MARKER.size)
    marker = wire.Marker(os.dup(fd))
    os.close(fd)

    marker.running(7)
    job_id, started = wire.read_marker(view)
    assert job_id == 7 and 0 < started <= time.monotonic()

    # The process stopped between its two stores: the next order's id is
    # written, its start not yet.
    sequence = int.from_bytes(view[:8], sys.byteorder)
    view[:8] = (sequence + 1).to_bytes(8, sys.byteorder)
    view[8:16] = (8).to_bytes(8, sys.byteorder)
    assert wire.read_marker(view) == (0, 0.0)

    marker.idle()
    assert wire.read_marker(view) == (0, 0.0)
    marker.running(9)
    assert wire.read_marker(view)[0] == 9
    view.close()
