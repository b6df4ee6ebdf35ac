"""Background projection service: a daemon worker pool, memory + on-disk cache, warm starts.

UMAP / t-SNE fits take seconds, so they run off the page's thread and are cached by (run, step,
method, params); PCA of stored snapshots is aligned along a fixed chain of the run's steps."""

from __future__ import annotations

import contextlib
import json
import os
import queue
import tempfile
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from concurrent.futures import Future
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from engine.projections.backends import embed
from engine.projections.maths import align_procrustes, pca_coords, trustworthiness
from engine.projections.params import normalize_params, params_key
from engine.projections.results import Projection, projection_csv, sample_ids, snapshot_parts

if TYPE_CHECKING:
    from engine.store import RunStore

Key = tuple[str, int, str, str]  # (run_id, step, method, params hash)


class ProjectionHandle:
    """A submitted projection. Poll ``status`` ("queued", "running", "done", "failed",
    "cancelled") or ``done()``; ``result(timeout)`` waits and returns the :class:`Projection`
    (re-raising the job's error); ``error`` is the exception of a failed job."""

    def __init__(self, key: Key, params: dict[str, Any], future: Future[Projection]) -> None:
        self.run_id, self.step, self.method, _ = key
        self.key = key
        self.params = params
        self.future = future

    @property
    def status(self) -> str:
        f = self.future
        if f.cancelled():
            return "cancelled"
        if f.done():
            return "failed" if f.exception() is not None else "done"
        return "running" if f.running() else "queued"

    def done(self) -> bool:
        return self.future.done()

    def result(self, timeout: float | None = None) -> Projection:
        return self.future.result(timeout)

    @property
    def error(self) -> BaseException | None:
        f = self.future
        return f.exception() if f.done() and not f.cancelled() else None

    def cancel(self) -> bool:
        """Drop the job if it has not started yet."""
        return self.future.cancel()

    def __repr__(self) -> str:
        return f"ProjectionHandle({self.run_id!r}, step={self.step}, {self.method!r}, {self.status})"


class _Workers:
    """A minimal thread pool of *daemon* threads (a long fit never delays interpreter exit, unlike
    ``ThreadPoolExecutor``), FIFO, running callables into ``Future`` objects."""

    def __init__(self, max_workers: int, name: str) -> None:
        self._queue: queue.SimpleQueue[tuple[Future[Any], Callable[[], Any]] | None] = queue.SimpleQueue()
        self._threads = [threading.Thread(target=self._loop, name=f"{name}-{i}", daemon=True)
                         for i in range(max_workers)]
        for t in self._threads:
            t.start()

    def submit(self, fn: Callable[[], Any]) -> Future[Any]:
        future: Future[Any] = Future()
        self._queue.put((future, fn))
        return future

    def _loop(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            future, fn = item
            if not future.set_running_or_notify_cancel():
                continue
            try:
                result = fn()
            except BaseException as err:
                future.set_exception(err)
            else:
                future.set_result(result)

    def shutdown(self) -> None:
        for _ in self._threads:
            self._queue.put(None)


class ProjectionService:
    """Projections of a store's snapshots: PCA on the caller's thread, UMAP / t-SNE in background.

    ``submit(run_id, step, method, params)`` returns a :class:`ProjectionHandle` at once: already
    done when the result is cached (memory, then the ``.npz`` on disk) or the method is PCA;
    otherwise queued for the worker (``max_workers = 1`` by default: UMAP and t-SNE are CPU-bound
    and each worker would compete with training). Submitting a key that is already queued or
    running returns the same handle. A UMAP / t-SNE job warm-starts from the cached projection of
    the nearest earlier step of the same run, method and params (else the nearest later one, else
    a cold fit) and is Procrustes-aligned to it, so submit steps in increasing order for an
    animation. Results are therefore path-dependent at the margin (what was cached first is what
    is kept); the ``init_step`` of a projection says which frame started it.
    """

    def __init__(self, store: RunStore, *, max_workers: int = 1, memory_items: int = 512,
                 disk_cache: bool = True) -> None:
        self.store = store
        self.disk_cache = disk_cache
        self.memory_items = memory_items
        self._memory: OrderedDict[Key, Projection] = OrderedDict()
        self._inflight: dict[Key, ProjectionHandle] = {}
        self._snapshot_paths: dict[str, dict[int, Path]] = {}
        self._snapshots: OrderedDict[tuple[str, int], dict[str, np.ndarray]] = OrderedDict()
        self._pca_chain: dict[str, dict[int, tuple[np.ndarray, np.ndarray]]] = {}
        self._lock = threading.RLock()
        self._pca_lock = threading.Lock()
        self._workers = _Workers(max_workers, "projections")

    # -- snapshots ---------------------------------------------------------------------------

    def steps(self, run_id: str, refresh: bool = False) -> list[int]:
        """Steps with a stored snapshot, ascending (re-read from the store when ``refresh``)."""
        return sorted(self._paths(run_id, refresh))

    def _paths(self, run_id: str, refresh: bool = False) -> dict[int, Path]:
        with self._lock:
            paths = self._snapshot_paths.get(run_id)
            if paths is None or refresh:
                paths = {int(a["step"]): Path(a["path"]) for a in self.store.artifacts(run_id, kind="snapshot")
                         if a["step"] is not None}
                self._snapshot_paths[run_id] = paths
            return paths

    def snapshot_path(self, run_id: str, step: int) -> Path:
        paths = self._paths(run_id)
        if step not in paths:
            paths = self._paths(run_id, refresh=True)  # a live run may have added it
        if step not in paths:
            raise KeyError(f"run {run_id!r} has no snapshot at step {step}")
        return paths[step]

    def snapshot(self, run_id: str, step: int) -> dict[str, np.ndarray]:
        """The stored snapshot arrays (``features``, ``labels``, ``flag_<name>``); a few kept in memory."""
        key = (run_id, int(step))
        with self._lock:
            if key in self._snapshots:
                self._snapshots.move_to_end(key)
                return self._snapshots[key]
        from engine.store import RunStore

        data = RunStore.load_snapshot(self.snapshot_path(run_id, int(step)))
        with self._lock:
            self._snapshots[key] = data
            while len(self._snapshots) > 8:
                self._snapshots.popitem(last=False)
        return data

    # -- cache -------------------------------------------------------------------------------

    def cache_path(self, run_id: str, step: int, method: str, params: Mapping[str, Any] | None = None) -> Path:
        """``<folder of the run's snapshots>/projection_<method>_<step>_<params hash>.npz``."""
        try:
            folder = self.snapshot_path(run_id, step).parent
        except KeyError:
            folder = self.store.run_dir(run_id)
        return folder / f"projection_{method}_{int(step):08d}_{params_key(method, params)}.npz"

    def get(self, run_id: str, step: int, method: str, params: Mapping[str, Any] | None = None) -> Projection | None:
        """The cached projection (memory, then disk), or None; never computes (except PCA)."""
        norm = normalize_params(method, params)
        if method == "pca":
            return self._pca(run_id, int(step))
        return self._cached((run_id, int(step), method, params_key(method, norm)), norm)

    def _remember(self, key: Key, proj: Projection) -> None:
        with self._lock:
            self._memory[key] = proj
            self._memory.move_to_end(key)
            while len(self._memory) > self.memory_items:
                self._memory.popitem(last=False)

    def _cached(self, key: Key, norm: dict[str, Any]) -> Projection | None:
        with self._lock:
            proj = self._memory.get(key)
            if proj is not None:
                self._memory.move_to_end(key)
                return proj
        if not self.disk_cache:
            return None
        run_id, step, method, _ = key
        try:
            path = self.cache_path(run_id, step, method, norm)
        except ValueError:
            return None
        proj = _load_projection(path, run_id, step, method, norm)
        if proj is not None:
            self._remember(key, proj)
        return proj

    def _save(self, path: Path, proj: Projection) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".projection-", suffix=".npz.tmp")
        try:
            with os.fdopen(fd, "wb") as fh:
                np.savez(fh, coords=proj.coords.astype(np.float64), index=proj.index.astype(np.int64),
                         trustworthiness=np.float64(proj.trustworthiness), seconds=np.float64(proj.seconds),
                         init_step=np.int64(-1 if proj.init_step is None else proj.init_step),
                         step=np.int64(proj.step), method=np.str_(proj.method),
                         params_json=np.str_(json.dumps(proj.params, sort_keys=True)))
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise

    # -- jobs --------------------------------------------------------------------------------

    def submit(self, run_id: str, step: int, method: str = "umap",
               params: Mapping[str, Any] | None = None) -> ProjectionHandle:
        """Start (or find) the projection of one snapshot; returns immediately with a handle."""
        norm = normalize_params(method, params)
        key: Key = (run_id, int(step), method, params_key(method, norm))
        if method == "pca":  # live view: milliseconds, computed right here
            future: Future[Projection] = Future()
            try:
                future.set_result(self._pca(run_id, int(step)))
            except Exception as err:
                future.set_exception(err)
            return ProjectionHandle(key, norm, future)
        with self._lock:
            handle = self._inflight.get(key)
            if handle is not None and not handle.done():
                return handle
        proj = self._cached(key, norm)
        if proj is not None:
            future = Future()
            future.set_result(proj)
            return ProjectionHandle(key, norm, future)
        with self._lock:
            handle = self._inflight.get(key)
            if handle is not None and not handle.done():
                return handle
            handle = ProjectionHandle(key, norm, self._workers.submit(lambda: self._compute(key, norm)))
            self._inflight[key] = handle
            handle.future.add_done_callback(lambda _f: self._forget(key, handle))
            return handle

    def _forget(self, key: Key, handle: ProjectionHandle) -> None:
        with self._lock:
            if self._inflight.get(key) is handle:
                del self._inflight[key]

    def project(self, run_id: str, step: int, method: str = "umap", params: Mapping[str, Any] | None = None,
                timeout: float | None = None) -> Projection:
        """``submit(...).result(timeout)``: blocking, for scripts and export."""
        return self.submit(run_id, step, method, params).result(timeout)

    def export_csv(self, run_id: str, step: int, method: str = "pca", params: Mapping[str, Any] | None = None,
                   timeout: float | None = None) -> str:
        """CSV text of one projection (computing it if needed; see :func:`projection_csv`)."""
        proj = self.project(run_id, step, method, params, timeout)
        return projection_csv(proj, self.snapshot(run_id, step))

    def shutdown(self) -> None:
        """Stop the worker threads after the queued jobs (they are daemons: exit never waits)."""
        self._workers.shutdown()

    def _neighbour(self, run_id: str, step: int, method: str, norm: dict[str, Any]) -> Projection | None:
        """Cached projection of the nearest earlier snapshot step (else nearest later), or None."""
        steps = self.steps(run_id)
        pkey = params_key(method, norm)
        earlier = [s for s in steps if s < step][::-1]
        later = [s for s in steps if s > step]
        for s in earlier + later:
            proj = self._cached((run_id, s, method, pkey), norm)
            if proj is not None:
                return proj
        return None

    def _compute(self, key: Key, norm: dict[str, Any]) -> Projection:
        run_id, step, method, _ = key
        cached = self._cached(key, norm)
        if cached is not None:
            return cached
        t0 = time.perf_counter()
        features, _, flags = snapshot_parts(self.snapshot(run_id, step))
        index = sample_ids(features, flags)
        ref = self._neighbour(run_id, step, method, norm)
        init = None
        if ref is not None:
            init = _init_from(ref, index)
            if init is None:
                ref = None
        coords = embed(method, features, norm, init=init)
        if ref is not None:
            coords = align_procrustes(coords, ref.coords, index, ref.index)
        tw = trustworthiness(features, coords)
        proj = Projection(run_id, step, method, norm, coords, index, tw, time.perf_counter() - t0,
                          None if ref is None else ref.step)
        if self.disk_cache:
            with contextlib.suppress(OSError):  # a read-only store still gets the in-memory cache
                self._save(self.cache_path(run_id, step, method, norm), proj)
        self._remember(key, proj)
        return proj

    # -- PCA chain ---------------------------------------------------------------------------

    def _pca(self, run_id: str, step: int) -> Projection:
        """PCA of a stored snapshot, aligned along the fixed chain of the run's earlier steps."""
        key: Key = (run_id, step, "pca", params_key("pca"))
        with self._lock:
            if key in self._memory:
                return self._memory[key]
        t0 = time.perf_counter()
        steps = self.steps(run_id)
        if step not in steps:
            steps = self.steps(run_id, refresh=True)
        if step not in steps:
            raise KeyError(f"run {run_id!r} has no snapshot at step {step}")
        with self._pca_lock:
            chain = self._pca_chain.setdefault(run_id, {})
            pos = steps.index(step)
            start = pos
            while start > 0 and steps[start - 1] not in chain:
                start -= 1
            prev = chain.get(steps[start - 1]) if start > 0 else None
            for s in steps[start : pos + 1]:
                if s in chain:
                    prev = chain[s]
                    continue
                features, _, flags = snapshot_parts(self.snapshot(run_id, s))
                index = sample_ids(features, flags)
                coords = pca_coords(features)
                if prev is not None:
                    coords = align_procrustes(coords, prev[0], index, prev[1], translate=False)
                chain[s] = prev = (coords, index)
            coords, index = chain[step]
        features = self.snapshot(run_id, step)["features"]
        proj = Projection(run_id, step, "pca", {}, coords, index, trustworthiness(features, coords),
                          time.perf_counter() - t0)
        self._remember(key, proj)
        return proj


def _init_from(ref: Projection, index: np.ndarray) -> np.ndarray | None:
    """``ref``'s coordinates in the row order of ``index``; None unless every sample has one."""
    if len(ref.index) == len(index) and np.array_equal(ref.index, index):
        init = ref.coords
    else:
        order = np.argsort(ref.index)
        pos = np.searchsorted(ref.index, index, sorter=order)
        pos = np.clip(pos, 0, len(order) - 1)
        rows = order[pos]
        if not np.array_equal(ref.index[rows], index):
            return None
        init = ref.coords[rows]
    if not np.isfinite(init).all():
        return None
    if len(np.unique(init, axis=0)) < len(init):  # t-SNE / UMAP dislike coincident starting points
        init = init + np.random.default_rng(0).normal(scale=1e-4 * float(np.std(init)) + 1e-8, size=init.shape)
    return np.asarray(init, dtype=np.float64)


def _load_projection(path: Path, run_id: str, step: int, method: str, norm: dict[str, Any]) -> Projection | None:
    """A projection read from ``path`` (``allow_pickle=False``), or None if absent, unreadable or stale."""
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as npz:
            if str(npz["params_json"]) != json.dumps(norm, sort_keys=True) or str(npz["method"]) != method:
                return None
            init_step = int(npz["init_step"])
            return Projection(run_id, step, method, dict(norm), np.array(npz["coords"]), np.array(npz["index"]),
                              float(npz["trustworthiness"]), float(npz["seconds"]),
                              None if init_step < 0 else init_step)
    except (OSError, KeyError, ValueError):
        return None
