"""The processes of a Ray instance a test started, found by the unique temp dir in their command line.

Ray's workers, raylet, GCS and dashboard all carry ``--temp-dir``/``--session-dir`` of their
instance, so the marker picks out exactly one instance's processes and no other's: never a
bare ``ray stop``, which ends every Ray instance on the machine.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path


def pids_mentioning(marker: str) -> list[int]:
    """Processes with ``marker`` in their command line or in the path of a file they hold open: Ray's
    workers and agents rename themselves (``ray::IDLE``), but keep their logs in the session folder open."""
    needle, pids = marker.encode(), []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            try:
                if needle in (entry / "cmdline").read_bytes() or _holds_open(entry, marker):
                    pids.append(int(entry.name))
            except OSError:
                pass
    return pids


def _holds_open(proc: Path, marker: str) -> bool:
    try:
        fds = list((proc / "fd").iterdir())
    except OSError:
        return False
    for fd in fds:
        try:
            if marker in os.readlink(fd):
                return True
        except OSError:
            pass
    return False


def end_processes_mentioning(marker: str, grace_s: float = 15) -> None:
    """Wait up to ``grace_s`` for them to exit on their own, then SIGKILL the rest."""
    deadline = time.monotonic() + grace_s
    while pids_mentioning(marker) and time.monotonic() < deadline:
        time.sleep(0.5)
    for pid in pids_mentioning(marker):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
