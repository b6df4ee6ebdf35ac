"""Linear algebra of projections: PCA, pre-reduction, Procrustes alignment, exact kNN, trustworthiness.

NumPy/SciPy only (scikit-learn for the quality score, imported when called), on one BLAS thread,
so the live PCA view costs milliseconds and imports nothing heavy."""

from __future__ import annotations

import contextlib
import math
from typing import Any

import numpy as np

from engine.projections.params import TRUST_K, TRUST_MAX_POINTS


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
