"""UMAP and t-SNE backends, imported lazily (umap's first import compiles numba code for ≈ 20 s).

``NUMBA_CACHE_DIR`` is set before umap is imported so compiled code is reused across restarts;
:func:`embed` is the uncached computation that the service and the benchmarks call."""

from __future__ import annotations

import os
import threading
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from engine.projections.maths import exact_knn, pca_coords, pre_reduce, single_blas_thread
from engine.projections.params import TSNE_BACKENDS, normalize_params

_UMAP_LOCK = threading.Lock()


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


def import_umap() -> Any:
    """``import umap`` once, thread-safely, with the numba cache directory set first."""
    with _UMAP_LOCK:
        _set_numba_cache_dir()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import umap
    return umap



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
    umap = import_umap()
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

