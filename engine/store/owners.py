"""Who owns a ``running`` run or sweep, and whether that process is still alive.

A run left ``running`` by a process that died (SIGKILL, OOM, closed laptop) is marked
``interrupted`` the next time any process opens the store; these helpers decide "died".
"""

from __future__ import annotations

import os
import secrets
import socket
import threading
import time
from pathlib import Path

_HOSTNAME = socket.gethostname()

# Run (and sweep) ids created by *this* process. A run whose recorded pid equals our own pid but that we did
# not create belongs to an earlier process that had the same pid (common in containers, where
# the entry point is often pid 1 after every restart), so it is dead.
_OWN_RUNS: set[str] = set()
_OWN_RUNS_LOCK = threading.Lock()


def _proc_stat(pid: int) -> list[str] | None:
    """Fields 3.. of ``/proc/<pid>/stat`` (Linux), or None where there is no such file."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # Field 2 (comm) may contain spaces and parentheses; everything after the last ')' is fixed.
    return stat[stat.rfind(")") + 2 :].split()


def _process_start_ticks(pid: int) -> int | None:
    """Start time of ``pid`` in clock ticks since boot (Linux ``/proc``), or None if unknown.

    Stored with the pid so a *different* process that later reuses the same pid is not mistaken
    for the run's owner.
    """
    fields = _proc_stat(pid)
    try:
        return int(fields[19]) if fields else None  # field 22 overall: starttime
    except (IndexError, ValueError):
        return None


def _is_zombie(pid: int) -> bool:
    """Whether ``pid`` has exited but not been reaped (Linux). A zombie still answers
    ``kill(pid, 0)``, and a killed sweep worker can stay one for a while when its parent died too
    and the container's init is slow to reap orphans; it owns nothing any more."""
    fields = _proc_stat(pid)
    return bool(fields) and fields[0] in ("Z", "X")


def _owner_alive(run_id: str, pid: int | None, hostname: str | None, start: int | None) -> bool:
    """Whether the process that owns a ``running`` run may still be alive.

    Errs on the side of "alive" whenever it cannot tell (another host, Windows), because marking
    a live run interrupted is worse than leaving a dead one ``running``.
    """
    if pid is None:
        return False  # written before owner tracking existed (v1 store): nobody can still own it
    if hostname is not None and hostname != _HOSTNAME:
        return True
    if os.name == "nt":
        return True  # os.kill(pid, 0) would *terminate* the process on Windows
    if pid == os.getpid():
        with _OWN_RUNS_LOCK:
            return run_id in _OWN_RUNS
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # exists, owned by another user
    except OSError:
        return True
    if _is_zombie(pid):
        return False
    if start is not None:
        current = _process_start_ticks(pid)
        if current is not None and current != start:
            return False  # pid was reused by a newer process
    return True


def _new_run_id(prefix: str = "r") -> str:
    """Short, sortable (UTC second resolution), unique enough: 24 random bits per second."""
    return prefix + time.strftime("%y%m%d-%H%M%S", time.gmtime()) + "-" + secrets.token_hex(3)

