"""Embedding projections of feature snapshots: live PCA, background UMAP / t-SNE.

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

from engine.projections.backends import embed, numba_cache_dir, tsne_embed, umap_embed
from engine.projections.live import LivePCA
from engine.projections.maths import (
    align_procrustes,
    exact_knn,
    pca_coords,
    pre_reduce,
    single_blas_thread,
    trust_subsample,
    trustworthiness,
)
from engine.projections.params import (
    DEFAULT_PARAMS,
    METHODS,
    TRUST_K,
    TRUST_MAX_POINTS,
    TSNE_BACKENDS,
    normalize_params,
    params_key,
)
from engine.projections.results import Projection, projection_csv
from engine.projections.service import ProjectionHandle, ProjectionService
from engine.projections.warmup import warm_up

__all__ = [
    "DEFAULT_PARAMS",
    "METHODS",
    "TRUST_K",
    "TRUST_MAX_POINTS",
    "TSNE_BACKENDS",
    "LivePCA",
    "Projection",
    "ProjectionHandle",
    "ProjectionService",
    "align_procrustes",
    "embed",
    "exact_knn",
    "normalize_params",
    "numba_cache_dir",
    "params_key",
    "pca_coords",
    "pre_reduce",
    "projection_csv",
    "single_blas_thread",
    "trust_subsample",
    "trustworthiness",
    "tsne_embed",
    "umap_embed",
    "warm_up",
]
