"""Pool workers die with the sweep driver that started them.

Why this is needed: the ``local`` backend forks its workers from a ``forkserver``, so a worker's
parent is the fork server, not the driver. Every worker also holds the fork server's "driver is
alive" pipe and the resource tracker's pipe, so after a ``kill -9`` of the driver nothing ever
saw EOF: the fork server, the resource tracker and every worker (hundreds of MB each) lived on,
still training into the store, and a ``--resume`` ran their cells a second time.

So each worker binds itself to the driver when the pool starts it:

* a watchdog thread checks the driver's pid (and its start time, so a reused pid does not count
  as the driver) every ``every_s`` seconds and ends the worker with ``os._exit`` once it is gone;
* on Linux, ``prctl(PR_SET_PDEATHSIG, SIGKILL)`` also kills the worker the moment its parent
  (the fork server, or the driver under ``spawn``) dies.

Once the workers are gone the fork server reads EOF on its pipe and exits, and the resource
tracker, whose last holders were the workers, exits too. The run a killed worker was training
stays ``running`` with the worker's pid; the next open of the store sees that pid dead and marks
the run ``interrupted``, so a resume reruns the cell exactly once.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
import threading
import time

from engine.store import _owner_alive

_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
EXIT_ORPHANED = 70  # the worker's exit status when its driver is gone (EX_SOFTWARE)


def die_with_parent() -> bool:
    """Ask Linux to SIGKILL this process when its parent dies; False where that is not available."""
    if not sys.platform.startswith("linux"):
        return False
    parent = os.getppid()
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0) != 0:
            return False
    except (OSError, AttributeError):
        return False
    if os.getppid() != parent:  # the parent died before the request took effect
        os._exit(EXIT_ORPHANED)
    return True


def driver_alive(pid: int, start: int | None) -> bool:
    """Whether the driver process ``pid`` (started at ``start`` clock ticks) still runs.

    The store's owner check, so "alive" means the same here as for a run's owner.
    """
    return _owner_alive("", pid, None, start)


def bind_to_driver(pid: int, start: int | None, every_s: float = 0.5) -> threading.Thread:
    """Make this process (a pool worker) end when the driver ``pid`` ends; returns the watchdog thread."""
    die_with_parent()

    def watch() -> None:
        while driver_alive(pid, start):
            time.sleep(every_s)
        os._exit(EXIT_ORPHANED)  # nothing to clean up that the store's recovery does not handle

    thread = threading.Thread(target=watch, name="lab-sweep-lifeline", daemon=True)
    thread.start()
    return thread
