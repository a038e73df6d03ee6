"""Crash points for fault-injection tests; inert unless ``TCBRIDGE_CRASH_AT`` is set.

``TCBRIDGE_CRASH_AT="submitter.after_broadcast:3"`` makes the process exit
at once (``os._exit``, as abruptly as SIGKILL: no cleanup, no flush) the
third time it passes that point. Several points may be given, separated
by commas. The chaos test uses it to crash the bridge exactly between two
steps whose order matters; production never sets it, and an unset
variable costs one dictionary lookup per point.
"""

from __future__ import annotations

import os
import sys

_PLAN: dict[str, int] = {}
for _item in filter(None, os.environ.get("TCBRIDGE_CRASH_AT", "").split(",")):
    _name, _, _count = _item.partition(":")
    _PLAN[_name.strip()] = int(_count or "1")

# Exit status of a crash point: 128 + SIGKILL, as the shell reports a kill.
CRASH_STATUS = 137


def crash_point(name: str) -> None:
    """Exit abruptly here if the plan says so (see the module docstring)."""
    if not _PLAN or name not in _PLAN:
        return
    _PLAN[name] -= 1
    if _PLAN[name] <= 0:
        sys.stderr.write(f"crash point {name} reached: exiting\n")
        sys.stderr.flush()
        os._exit(CRASH_STATUS)
