"""Background numba warm-up: compile the UMAP code path once per process before a user asks for it.

numba holds the GIL while it compiles, so this runs in a daemon thread started after the first
page is drawn (see app.py)."""

from __future__ import annotations

import contextlib
import threading

import numpy as np

from engine.projections.backends import umap_embed

_WARM_LOCK = threading.Lock()
_WARM_THREAD: threading.Thread | None = None


def warm_up() -> threading.Thread:
    """Start (once per process) a daemon thread that imports umap and fits 100 × 8 random points,
    so numba has compiled the code paths of :func:`umap_embed` before a user asks for UMAP.

    Returns the thread (``join()`` it to wait); later calls return the same thread.
    """
    global _WARM_THREAD
    with _WARM_LOCK:
        if _WARM_THREAD is None:
            def work() -> None:
                with contextlib.suppress(Exception):  # warming is best effort; a real fit reports errors
                    x = np.random.default_rng(0).normal(size=(100, 8)).astype(np.float32)
                    first = umap_embed(x, n_neighbors=10, n_epochs=20)
                    umap_embed(x, n_neighbors=10, init=first, n_epochs=10)

            _WARM_THREAD = threading.Thread(target=work, name="umap-warm-up", daemon=True)
            _WARM_THREAD.start()
        return _WARM_THREAD

