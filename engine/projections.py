"""Embedding projections of feature snapshots (diagnostics.md §16): live PCA, background UMAP / t-SNE.

Used by the Embeddings page and by export. Three methods:

* **PCA** (``"pca"``) is the live view: computed for every snapshot on the calling thread (a few
  milliseconds at 2,000 × 256: top eigenvectors of the smaller Gram matrix), and each frame
  is rotated/reflected onto the previous one by orthogonal Procrustes on the shared sample ids, so
  the picture neither flips sign nor spins between frames. :class:`LivePCA` does this for a
  stream of :class:`~engine.events.Snapshot` events (as a trainer subscriber: every frame on
  arrival, its trustworthiness only when the page asks); :class:`ProjectionService` does it
  for the stored snapshots of a run (a fixed chain step 0 → 1 → …, so a frame does not depend on
  the order in which frames were looked at).
* **UMAP** (``"umap"``, umap-learn) and **t-SNE** (``"tsne"``) are snapshot views, computed on
  demand in a background worker (:meth:`ProjectionService.submit` returns a
  :class:`ProjectionHandle` to poll) and cached by (run, step, method, params) in memory and on
  disk as ``projection_<method>_<step>_<params hash>.npz`` next to the run's snapshots (read back
  with ``allow_pickle=False``).

Why it is fast (figures from ``benchmarks/bench_projections.py``: 1,797 × 256 digits snapshots,
2 CPU cores shared with other work, so absolute times vary ±2× with the load):

* **PCA-50 pre-reduction** of inputs wider than 50 dimensions (distances barely change; every
  later step gets ≈ 5× cheaper at width 256).
* **Exact k-nearest neighbours by one matrix product** (blocked, float32) handed to UMAP as
  ``precomputed_knn``. A default ``umap.UMAP()`` on fewer than 4,096 points builds the full
  distance matrix through sklearn ``pairwise_distances`` with umap's numba metric as a *Python
  callable* — one Python call per pair, ≈ 1.6 M calls, seconds — which is most of its run time.
* **Warm start from the previous frame.** A later snapshot starts from the embedding of the
  nearest earlier cached snapshot of the same run (UMAP ``init`` = those coordinates and
  ``warm_epochs`` = 150 epochs instead of 500 after a spectral initialisation; t-SNE initialised
  with them, no early exaggeration, ``warm_iters`` = 250 iterations), then Procrustes-aligned to
  it — so the animation over steps is coherent and a frame costs a fraction of a cold one.
  Measured: a repeat UMAP frame through :class:`ProjectionService` (snapshot read to ``.npz``
  write, trustworthiness included) takes 0.6–1.1 s against 2.8–9 s for a default
  ``umap.UMAP().fit_transform`` (4.5–10.6× faster, median per run), with trustworthiness 0.988 vs
  0.989.
* **One BLAS thread** for all of it (:func:`single_blas_thread`): OpenBLAS threads spin-waiting
  on a small shared machine made a 256 × 256 eigendecomposition 10–20× slower.
* **umap is imported lazily** (its first import compiles numba code for ≈ 20 s), and
  :func:`warm_up` compiles our code path in a daemon thread before anyone asks (numba holds the
  GIL while it compiles, so other Python work in the process slows down for those seconds).
  ``NUMBA_CACHE_DIR`` is set (when not already set) to ``<user cache>/regularization-lab/numba``
  before umap is imported, so compiled code is reused across restarts (the UMAP unit test takes
  20 s with an empty cache directory, 8 s with a filled one).

t-SNE backend — measured, one thread, interleaved: a cold fit with openTSNE (default schedule,
exact neighbours) takes 3.8–4.2 s against 5.3–11.3 s for scikit-learn ``TSNE(init="pca")``
(1.4–2.7× faster), same trustworthiness (0.995). For the 250-iteration warm runs scikit-learn's
Barnes–Hut is as fast or faster (0.83 s vs 1.31 s in a fresh process, 1.35 s vs 1.32 s in one
that has run umap; openTSNE's default FFT gradients are far slower there, ≈ 11 s, because their
grid grows with the span of a converged embedding, so its warm path uses Barnes–Hut).
``backend="auto"`` therefore uses openTSNE for cold fits when it is installed and scikit-learn
for warm ones; ``"sklearn"`` and ``"opentsne"`` force one library.

**Quality number.** Every :class:`Projection` carries ``sklearn.manifold.trustworthiness`` at
k = 10 of the 2-D coordinates against the snapshot's original features. It is exact up to
:data:`TRUST_MAX_POINTS` = 2,000 points (the probe size, 0.1–0.2 s at 1,797 points); larger inputs
are scored on a fixed seeded subsample of 2,000 points (neighbours are then looked up within the
subsample, which makes the number slightly coarser-scaled but comparable across frames and
methods of the same run, since the subsample depends only on n).

**Export.** :func:`projection_csv` returns CSV text with columns
``index,label,given_label,pred,x,y,is_noisy,correct,step,method`` plus any other per-sample flag.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import io
import json
import math
import os
import queue
import tempfile
import threading
import time
import warnings
from collections import OrderedDict
from collections.abc import Callable, Mapping
from concurrent.futures import Future
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from engine.events import Event, Snapshot

if TYPE_CHECKING:
    from engine.store import RunStore

__all__ = [
    "METHODS",
    "TRUST_K",
    "TRUST_MAX_POINTS",
    "LivePCA",
    "Projection",
    "ProjectionHandle",
    "ProjectionService",
    "align_procrustes",
    "embed",
    "exact_knn",
    "normalize_params",
    "params_key",
    "pca_coords",
    "pre_reduce",
    "projection_csv",
    "single_blas_thread",
    "trustworthiness",
    "tsne_embed",
    "umap_embed",
    "warm_up",
]

METHODS = ("pca", "umap", "tsne")
TRUST_K = 10
TRUST_MAX_POINTS = 2000

# Defaults of each method's parameters; ``normalize_params`` fills them in, so ``{}`` and the
# explicit defaults share one cache entry.
DEFAULT_PARAMS: dict[str, dict[str, Any]] = {
    "pca": {},
    "umap": {"n_neighbors": 15, "min_dist": 0.1, "seed": 0, "pca_dims": 50, "warm_epochs": 150},
    "tsne": {"perplexity": 30.0, "seed": 0, "pca_dims": 50, "warm_iters": 250, "backend": "auto"},
}
_PARAM_TYPES: dict[str, Callable[[Any], Any]] = {
    "n_neighbors": int, "min_dist": float, "seed": int, "pca_dims": int, "warm_epochs": int,
    "perplexity": float, "warm_iters": int, "backend": str,
}
TSNE_BACKENDS = ("auto", "opentsne", "sklearn")


# --------------------------------------------------------------------------------------------
# Parameters
# --------------------------------------------------------------------------------------------


def normalize_params(method: str, params: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """``params`` with defaults filled in and types coerced; ValueError names a bad key or value."""
    if method not in METHODS:
        raise ValueError(f"method: {method!r} is not one of {', '.join(METHODS)}")
    defaults = DEFAULT_PARAMS[method]
    out = dict(defaults)
    for key, value in (params or {}).items():
        if key not in defaults:
            allowed = ", ".join(defaults) or "none"
            raise ValueError(f"{method} params: unknown key {key!r} (allowed: {allowed})")
        try:
            out[key] = _PARAM_TYPES[key](value)
        except (TypeError, ValueError):
            raise ValueError(f"{method} params: {key}={value!r} is not a valid {_PARAM_TYPES[key].__name__}") from None
    checks = {
        "n_neighbors": lambda v: v >= 2, "min_dist": lambda v: 0 <= v <= 10, "pca_dims": lambda v: v == 0 or v >= 2,
        "warm_epochs": lambda v: v >= 1, "warm_iters": lambda v: v >= 1, "perplexity": lambda v: v > 0,
        "seed": lambda v: v >= 0, "backend": lambda v: v in TSNE_BACKENDS,
    }
    for key, value in out.items():
        if not checks[key](value):
            raise ValueError(f"{method} params: {key}={value!r} is out of range")
    return out


def params_key(method: str, params: Mapping[str, Any] | None = None) -> str:
    """Short stable hash of the normalised parameters (part of the cache key and file name)."""
    norm = normalize_params(method, params)
    blob = json.dumps({"method": method, **norm}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha1(blob.encode()).hexdigest()[:12]


# --------------------------------------------------------------------------------------------
# Linear algebra: PCA, pre-reduction, Procrustes, exact kNN
# --------------------------------------------------------------------------------------------


def _as_matrix(features: Any) -> np.ndarray:
    x = np.asarray(features)
    if x.ndim != 2:
        x = x.reshape(len(x), -1)
    return x


@contextlib.contextmanager
def single_blas_thread() -> Any:
    """Run NumPy/SciPy BLAS on one thread inside the block (threadpoolctl, a scikit-learn dependency).

    On a small shared machine OpenBLAS's worker threads spin-wait on each other and on other
    processes: measured on 2 contended cores, a 256 × 256 ``eigh`` takes 70–230 ms with 2 BLAS
    threads and 5–15 ms with one. The limit is process-wide while the block runs (harmless: the
    trainer's torch keeps its own thread pool).
    """
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - scikit-learn always brings it
        yield
        return
    with threadpool_limits(1, user_api="blas"):
        yield


def _top_eigh(gram: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Largest ``k`` eigenpairs of a symmetric matrix, descending (LAPACK syevr on a subset)."""
    import scipy.linalg

    m = len(gram)
    w, v = scipy.linalg.eigh(gram, subset_by_index=[m - k, m - 1], check_finite=False)
    return w[::-1], v[:, ::-1]


def pca_coords(features: Any, n_components: int = 2) -> np.ndarray:
    """Top principal-component scores (n × n_components, float64) of centred ``features``.

    Top eigenpairs of the smaller Gram matrix (d × d covariance when d ≤ n, else n × n), with the
    product in float32 and the eigensolver in float64, on one BLAS thread: ≈ 5 ms at 1,797 × 256.
    Components are ordered by variance; their sign is arbitrary (see :func:`align_procrustes`).
    Missing components (rank < n_components) are zero columns.
    """
    x = _as_matrix(features).astype(np.float32, copy=False)
    n, d = x.shape
    k = min(n_components, n, d)
    out = np.zeros((n, n_components))
    if k == 0:
        return out
    with single_blas_thread():
        x = x - x.mean(axis=0, dtype=np.float64).astype(np.float32)
        if d <= n:
            _, comps = _top_eigh((x.T @ x).astype(np.float64), k)
            out[:, :k] = x.astype(np.float64) @ comps
        else:
            w, u = _top_eigh((x @ x.T).astype(np.float64), k)
            out[:, :k] = u * np.sqrt(np.clip(w, 0, None))
    return out


def pre_reduce(features: Any, dims: int = 50) -> np.ndarray:
    """PCA to ``dims`` dimensions (float32) when ``features`` are wider; else the features as float32.

    ``dims = 0`` turns the reduction off.
    """
    x = _as_matrix(features).astype(np.float32, copy=False)
    if dims <= 0 or x.shape[1] <= dims:
        return np.ascontiguousarray(x)
    return np.ascontiguousarray(pca_coords(x, dims).astype(np.float32))


def align_procrustes(coords: np.ndarray, reference: np.ndarray, index: np.ndarray | None = None,
                     reference_index: np.ndarray | None = None, *, translate: bool = True) -> np.ndarray:
    """``coords`` rotated/reflected (and shifted when ``translate``) onto ``reference``.

    Orthogonal Procrustes on the samples present in both (matched by ``index`` / ``reference_index``
    sample ids, or by row when both are None): R = argmin ‖(C − c̄) R − (P − p̄)‖ over orthogonal R,
    i.e. U Vᵀ from the SVD of (C − c̄)ᵀ (P − p̄). No scaling, so distances within a frame are kept.
    With fewer than 3 shared samples, or NaN rows only, ``coords`` come back unchanged.
    """
    coords = np.asarray(coords, dtype=np.float64)
    reference = np.asarray(reference, dtype=np.float64)
    if index is None and reference_index is None:
        if len(coords) != len(reference):
            raise ValueError("align_procrustes: give sample ids when the frames differ in length")
        rows, ref_rows = np.arange(len(coords)), np.arange(len(reference))
    else:
        index = np.arange(len(coords)) if index is None else np.asarray(index)
        reference_index = np.arange(len(reference)) if reference_index is None else np.asarray(reference_index)
        _, rows, ref_rows = np.intersect1d(index, reference_index, assume_unique=True, return_indices=True)
    a, b = coords[rows], reference[ref_rows]
    ok = np.isfinite(a).all(axis=1) & np.isfinite(b).all(axis=1)
    a, b = a[ok], b[ok]
    if len(a) < 3:
        return coords.copy()
    a_mean = a.mean(axis=0) if translate else np.zeros(a.shape[1])
    b_mean = b.mean(axis=0) if translate else np.zeros(b.shape[1])
    u, _, vt = np.linalg.svd((a - a_mean).T @ (b - b_mean))
    rotation = u @ vt
    return (coords - a_mean) @ rotation + b_mean


def exact_knn(x: np.ndarray, k: int, block: int = 1024) -> tuple[np.ndarray, np.ndarray]:
    """Exact Euclidean k nearest neighbours of every row, itself included first (UMAP's convention).

    Squared distances ‖a‖² + ‖b‖² − 2ab in row blocks (memory ``block × n``), ``argpartition`` then a
    sort of the k candidates. Returns (indices int64 n × k, distances float32 n × k).
    """
    x = np.ascontiguousarray(x, dtype=np.float32)
    n = len(x)
    k = min(k, n)
    sq = np.einsum("ij,ij->i", x, x)
    indices = np.empty((n, k), dtype=np.int64)
    dists = np.empty((n, k), dtype=np.float32)
    with single_blas_thread():
        return _knn_blocks(x, sq, k, block, indices, dists)


def _knn_blocks(x: np.ndarray, sq: np.ndarray, k: int, block: int, indices: np.ndarray,
                dists: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    n = len(x)
    for start in range(0, n, block):
        stop = min(start + block, n)
        d2 = sq[start:stop, None] + sq[None, :] - 2.0 * (x[start:stop] @ x.T)
        rows = np.arange(stop - start)
        d2[rows, rows + start] = -1.0  # self first, whatever the rounding
        part = np.argpartition(d2, k - 1, axis=1)[:, :k] if k < n else np.tile(np.arange(n), (stop - start, 1))
        cand = np.take_along_axis(d2, part, axis=1)
        order = np.argsort(cand, axis=1, kind="stable")
        indices[start:stop] = np.take_along_axis(part, order, axis=1)
        dists[start:stop] = np.sqrt(np.clip(np.take_along_axis(cand, order, axis=1), 0.0, None))
    return indices, dists


# --------------------------------------------------------------------------------------------
# Quality
# --------------------------------------------------------------------------------------------


def trust_subsample(n: int, max_points: int | None = TRUST_MAX_POINTS) -> np.ndarray:
    """Rows scored by :func:`trustworthiness`: all of them, or a fixed seeded sorted subset."""
    if max_points is None or n <= max_points:
        return np.arange(n)
    return np.sort(np.random.default_rng([n, 10]).choice(n, max_points, replace=False))


def trustworthiness(features: Any, coords: np.ndarray, k: int = TRUST_K,
                    max_points: int | None = TRUST_MAX_POINTS) -> float:
    """``sklearn.manifold.trustworthiness`` at ``k`` (NaN rows dropped; NaN when it is undefined)."""
    from sklearn.manifold import trustworthiness as sk_trustworthiness

    x = _as_matrix(features)
    y = np.asarray(coords)
    rows = trust_subsample(len(x), max_points)
    x, y = x[rows], y[rows]
    ok = np.isfinite(y).all(axis=1)
    x, y = x[ok], y[ok]
    if len(x) < 3 or k >= len(x) / 2:
        return math.nan
    with single_blas_thread():
        return float(sk_trustworthiness(x.astype(np.float64), y.astype(np.float64), n_neighbors=k))


# --------------------------------------------------------------------------------------------
# UMAP (lazily imported, warmed in the background)
# --------------------------------------------------------------------------------------------

_UMAP_LOCK = threading.Lock()
_WARM_LOCK = threading.Lock()
_WARM_THREAD: threading.Thread | None = None


def numba_cache_dir() -> Path:
    """Where compiled numba code is kept across restarts: ``$NUMBA_CACHE_DIR`` when set, else
    ``$XDG_CACHE_HOME/regularization-lab/numba`` (``~/.cache/...``)."""
    env = os.environ.get("NUMBA_CACHE_DIR", "").strip()
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME", "").strip() or str(Path.home() / ".cache")
    return Path(base) / "regularization-lab" / "numba"


def _set_numba_cache_dir() -> None:
    """Set ``NUMBA_CACHE_DIR`` (if unset) before numba is imported; also patch a loaded numba."""
    if os.environ.get("NUMBA_CACHE_DIR", "").strip():
        return
    path = numba_cache_dir()
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError:
        return  # unwritable home: numba falls back to its own locations
    os.environ["NUMBA_CACHE_DIR"] = str(path)
    import sys

    numba = sys.modules.get("numba")
    if numba is not None and not getattr(numba.config, "CACHE_DIR", ""):
        numba.config.CACHE_DIR = str(path)


def _import_umap() -> Any:
    """``import umap`` once, thread-safely, with the numba cache directory set first."""
    with _UMAP_LOCK:
        _set_numba_cache_dir()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import umap
    return umap


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


def umap_embed(x: np.ndarray, *, n_neighbors: int = 15, min_dist: float = 0.1, seed: int = 0,
               init: np.ndarray | None = None, n_epochs: int | None = None) -> np.ndarray:
    """2-D UMAP of ``x`` (already pre-reduced) with exact kNN passed as ``precomputed_knn``.

    ``init`` = previous coordinates (n × 2) for a warm start, else spectral initialisation;
    ``n_epochs`` None = umap's default (500 below 10,000 points). ``seed`` fixes the result (umap
    then optimises on one thread). Disconnected points come back as NaN rows (umap's convention).
    """
    n = len(x)
    if n < 4:
        raise ValueError(f"umap: need at least 4 points (got {n})")
    umap = _import_umap()
    k = max(2, min(n_neighbors, n - 1))
    knn_indices, knn_dists = exact_knn(x, k)
    model = umap.UMAP(
        n_neighbors=k, min_dist=min_dist, n_components=2, random_state=seed, n_epochs=n_epochs,
        init="spectral" if init is None else np.asarray(init, dtype=np.float32),
        precomputed_knn=(knn_indices, knn_dists), n_jobs=1,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # seed → single thread; no search index → no transform
        coords = model.fit_transform(x)
    return np.asarray(coords, dtype=np.float64)


# --------------------------------------------------------------------------------------------
# t-SNE
# --------------------------------------------------------------------------------------------


def _have_opentsne() -> bool:
    try:
        import openTSNE  # noqa: F401
    except ImportError:
        return False
    return True


def tsne_embed(x: np.ndarray, *, perplexity: float = 30.0, seed: int = 0, init: np.ndarray | None = None,
               warm_iters: int = 250, backend: str = "auto") -> np.ndarray:
    """2-D t-SNE of ``x`` (already pre-reduced), one thread.

    Cold (``init`` None): openTSNE's default schedule (250 exaggerated + 500 iterations, PCA
    initialisation, exact neighbours) when available, else sklearn ``TSNE(init="pca")``. Warm
    (``init`` = previous coordinates, kept at their scale): ``warm_iters`` iterations without early
    exaggeration, sklearn Barnes–Hut by default (faster than openTSNE for short runs, see the module
    docstring). ``perplexity`` is clipped below (n − 1)/3 so small inputs work.
    """
    n = len(x)
    if n < 5:
        raise ValueError(f"tsne: need at least 5 points (got {n})")
    perplexity = float(min(perplexity, max(1.0, (n - 1) / 3.0 - 1.0)))
    if backend not in TSNE_BACKENDS:
        raise ValueError(f"tsne backend: {backend!r} is not one of {', '.join(TSNE_BACKENDS)}")
    use_opentsne = backend == "opentsne" or (backend == "auto" and init is None and _have_opentsne())
    x = np.ascontiguousarray(x, dtype=np.float64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if use_opentsne:
            import openTSNE

            if init is None:
                emb = openTSNE.TSNE(perplexity=perplexity, neighbors="exact", n_jobs=1, random_state=seed,
                                    verbose=False).fit(x)
            else:
                aff = openTSNE.affinity.PerplexityBasedNN(x, perplexity=perplexity, method="exact", n_jobs=1,
                                                         random_state=seed)
                emb = openTSNE.TSNEEmbedding(np.array(init, dtype=np.float64), aff, n_jobs=1, random_state=seed,
                                             negative_gradient_method="bh")
                emb = emb.optimize(warm_iters, exaggeration=1.0, momentum=0.8)
            return np.asarray(emb, dtype=np.float64)
        from sklearn.manifold import TSNE

        if init is None:
            model = TSNE(perplexity=perplexity, init="pca", random_state=seed, n_jobs=1)
        else:
            # sklearn's schedule starts with a 250-iteration "exploration" phase; with exaggeration 1
            # it is plain optimisation, so max_iter = 250 runs exactly that phase.
            model = TSNE(perplexity=perplexity, init=np.array(init, dtype=np.float64), early_exaggeration=1.0,
                         max_iter=max(250, warm_iters), random_state=seed, n_jobs=1)
        return np.asarray(model.fit_transform(x), dtype=np.float64)


def embed(method: str, features: Any, params: Mapping[str, Any] | None = None,
          init: np.ndarray | None = None) -> np.ndarray:
    """2-D coordinates (n × 2 float64) of ``features`` by ``method`` — the computation, uncached.

    Runs with BLAS on one thread (see :func:`single_blas_thread`); ``init`` = previous coordinates
    in the same row order for a warm start (UMAP / t-SNE only).
    """
    p = normalize_params(method, params)
    if method == "pca":
        return pca_coords(features)
    with single_blas_thread():
        x = pre_reduce(features, p["pca_dims"])
        if method == "umap":
            return umap_embed(x, n_neighbors=p["n_neighbors"], min_dist=p["min_dist"], seed=p["seed"], init=init,
                              n_epochs=None if init is None else p["warm_epochs"])
        return tsne_embed(x, perplexity=p["perplexity"], seed=p["seed"], init=init, warm_iters=p["warm_iters"],
                          backend=p["backend"])


# --------------------------------------------------------------------------------------------
# Results and export
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Projection:
    """2-D coordinates of one snapshot. ``index`` = sample ids (rows of ``coords``);
    ``init_step`` = step whose embedding initialised this one (None: cold start / PCA)."""

    run_id: str | None
    step: int
    method: str
    params: dict[str, Any]
    coords: np.ndarray
    index: np.ndarray
    trustworthiness: float
    seconds: float
    init_step: int | None = None

    @property
    def x(self) -> np.ndarray:
        return self.coords[:, 0]

    @property
    def y(self) -> np.ndarray:
        return self.coords[:, 1]


def _snapshot_parts(
    snapshot: Snapshot | Mapping[str, np.ndarray],
) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """(features, labels, flags) of a Snapshot event or of a stored snapshot (``flag_<name>`` keys)."""
    if isinstance(snapshot, Snapshot):
        return np.asarray(snapshot.features), np.asarray(snapshot.labels), dict(snapshot.flags)
    flags = {key[5:]: np.asarray(value) for key, value in snapshot.items() if key.startswith("flag_")}
    return np.asarray(snapshot["features"]), np.asarray(snapshot["labels"]), flags


def _sample_ids(features: np.ndarray, flags: Mapping[str, np.ndarray]) -> np.ndarray:
    index = flags.get("index")
    return np.arange(len(features), dtype=np.int64) if index is None else np.asarray(index, dtype=np.int64)


def _cell(value: Any) -> str:
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, float):
        return "" if math.isnan(value) else format(value, ".7g")
    return str(value)


def projection_csv(projection: Projection, snapshot: Snapshot | Mapping[str, np.ndarray]) -> str:
    """CSV text of a projection's coordinates, one row per sample, in the snapshot's row order.

    Columns ``index,label,given_label,pred,x,y,is_noisy,correct,step,method`` then any other flag.
    ``label`` is the true class (``true_label`` when label noise was applied, else the training
    label), ``given_label`` the training label the model saw; ``pred``/``correct`` are empty when the
    snapshot has no predictions (regression), ``is_noisy`` is 0 when no noise was applied. NaN
    coordinates (points UMAP left disconnected) are written as empty cells.
    """
    features, labels, flags = _snapshot_parts(snapshot)
    index = _sample_ids(features, flags)
    if len(index) != len(projection.index) or not np.array_equal(index, projection.index):
        raise ValueError("projection_csv: the projection was computed on other samples than this snapshot")
    n = len(index)
    empty = np.full(n, "", dtype=object)
    label = flags.get("true_label", labels)
    columns: dict[str, Any] = {
        "index": index, "label": label, "given_label": labels,
        "pred": flags.get("pred", empty), "x": projection.coords[:, 0], "y": projection.coords[:, 1],
        "is_noisy": flags.get("is_noisy", np.zeros(n, dtype=bool)), "correct": flags.get("correct", empty),
        "step": np.full(n, projection.step), "method": np.full(n, projection.method, dtype=object),
    }
    for name in sorted(flags):
        if name not in columns and name not in ("true_label",) and np.asarray(flags[name]).shape[:1] == (n,):
            columns[name] = np.asarray(flags[name])
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(list(columns))
    cols = [np.asarray(c).tolist() if not isinstance(c, np.ndarray) or c.dtype != object else list(c)
            for c in columns.values()]
    for row in zip(*cols, strict=True):
        writer.writerow([_cell(v) for v in row])
    return buf.getvalue()


# --------------------------------------------------------------------------------------------
# Live PCA
# --------------------------------------------------------------------------------------------


class LivePCA:
    """PCA of a stream of snapshots, each frame Procrustes-aligned to the previous one.

    Use it as a trainer subscriber (``trainer.run(..., live_pca)`` or ``execute(cfg, store,
    live_pca)``): every :class:`~engine.events.Snapshot` gets its aligned PCA frame on arrival
    (≈ 5 ms at 1,797 × 256 — less than taking the snapshot), so consecutive frames are aligned to
    each other whatever the page's refresh rate. The trustworthiness (0.1–0.2 s at 1,797 points) is
    *not* computed on the training thread: :meth:`latest` adds it when the page asks, once per
    frame. :meth:`update` computes a frame directly (with quality when ``quality``). The last
    ``max_frames`` frames are kept for animation (:meth:`frames`). Thread-safe.
    """

    def __init__(self, run_id: str | None = None, quality: bool = True, max_frames: int = 256) -> None:
        self.run_id = run_id
        self.quality = quality
        self._lock = threading.Lock()
        self._frames: OrderedDict[int, Projection] = OrderedDict()
        self._max_frames = max(1, max_frames)
        self._latest: Projection | None = None
        self._latest_features: np.ndarray | None = None

    def __call__(self, event: Event) -> None:
        if isinstance(event, Snapshot):
            with self._lock:
                self._update(event, None, quality=False)

    def update(self, snapshot: Snapshot | Mapping[str, np.ndarray], step: int | None = None) -> Projection:
        """The aligned PCA frame of ``snapshot`` (which becomes the reference for the next one)."""
        with self._lock:
            return self._update(snapshot, step, quality=self.quality)

    def latest(self) -> Projection | None:
        """The newest frame, with its trustworthiness (computed here on first request) when ``quality``."""
        with self._lock:
            frame = self._latest
            if frame is not None and self.quality and math.isnan(frame.trustworthiness) \
                    and self._latest_features is not None:
                frame = replace(frame, trustworthiness=trustworthiness(self._latest_features, frame.coords))
                self._latest = self._frames[frame.step] = frame
            return frame

    def frames(self) -> list[Projection]:
        """The kept frames, oldest first (trustworthiness NaN where it was never asked for)."""
        with self._lock:
            return list(self._frames.values())

    def reset(self) -> None:
        with self._lock:
            self._frames.clear()
            self._latest = self._latest_features = None

    def _update(self, snapshot: Snapshot | Mapping[str, np.ndarray], step: int | None, quality: bool) -> Projection:
        features, _, flags = _snapshot_parts(snapshot)
        if step is None:
            step = int(snapshot.step) if isinstance(snapshot, Snapshot) else int(np.asarray(snapshot.get("step", 0)))
        t0 = time.perf_counter()
        index = _sample_ids(features, flags)
        coords = pca_coords(features)
        prev = self._latest
        if prev is not None:
            coords = align_procrustes(coords, prev.coords, index, prev.index, translate=False)
        tw = trustworthiness(features, coords) if quality else math.nan
        frame = Projection(self.run_id, step, "pca", {}, coords, index, tw, time.perf_counter() - t0)
        self._latest, self._latest_features = frame, features
        self._frames[step] = frame
        self._frames.move_to_end(step)
        while len(self._frames) > self._max_frames:
            self._frames.popitem(last=False)
        return frame


# --------------------------------------------------------------------------------------------
# Background service with caching
# --------------------------------------------------------------------------------------------

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
        features, _, flags = _snapshot_parts(self.snapshot(run_id, step))
        index = _sample_ids(features, flags)
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
                features, _, flags = _snapshot_parts(self.snapshot(run_id, s))
                index = _sample_ids(features, flags)
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
