"""Embedding projections: repeat UMAP through engine.projections vs a plain umap call; live PCA.

**Data.** A real run: the digits MLP (width 256, depth 2, Adam 1e-3, batch 128) with
``data.n_train = 1797`` and ``n_test = 0``, so the probe is all 1,797 training images and every
snapshot is 1,797 × 256 (``--dataset blobs`` trains on 2,000 blobs points in 64-d, 10 classes,
instead: 2,000 × 256). ``train.snapshot_every = 50``, trained through ``engine.runner.execute``
into a temporary store; the snapshots are read back from the store. Step 0 (untrained features)
is skipped.

**UMAP.** Both sides are warmed first (untimed): ``warm_up()`` for ours, one default fit for the
plain call, so neither timing includes numba compilation. Ours then computes the first snapshot
cold (untimed). Each round takes the next snapshot and times, interleaved (ours first in even
rounds, plain first in odd ones):

* ours: ``ProjectionService.submit(run, step, "umap").result()`` — the whole path a user waits
  for: snapshot read, PCA-50, exact kNN, UMAP warm-started from the previous snapshot's embedding
  (150 epochs), Procrustes alignment, trustworthiness, ``.npz`` write. One thread (seeded).
* plain: ``umap.UMAP().fit_transform(features)`` on the same 256-d features: all defaults
  (spectral init, 500 epochs, no seed, hence numba-parallel on all cores).

Reported: median over rounds of plain/ours time (target ≥ 3×), and the median trustworthiness
(k = 10, sklearn, all points) of each against the snapshot's 256-d features (target: ours within
0.02 of plain).

**PCA.** ``LivePCA(quality=False).update(snapshot)`` for every snapshot (PCA + Procrustes
alignment to the previous frame, the per-frame cost of the live view), median over 3 passes
(target ≤ 50 ms); the trustworthiness shown beside it is timed separately. Timed after the umap
warm-up thread has finished: while numba compiles (once per process, seconds) it holds the GIL
and any Python work in the process, PCA included, slows down.

**t-SNE** (``--tsne``): scikit-learn vs openTSNE on the PCA-50 input of one snapshot, cold
(each library's defaults, one thread) and warm (250 iterations from the previous embedding
without exaggeration), interleaved — the measurement behind ``backend="auto"``.

Usage::

    .venv/bin/python benchmarks/bench_projections.py              # 5 rounds, digits
    .venv/bin/python benchmarks/bench_projections.py --rounds 7 --tsne

The last line holds the figures, e.g.
``bench_projections: umap repeat ours=0.6s plain=3.1s speedup=5.2x (target ≥ 3x) trust ours=0.988
plain=0.989 Δ=-0.001 (target |Δ| ≤ 0.02) pca=7.9 ms/snapshot (target ≤ 50 ms)``.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from engine import projections as P
from engine.config import validate
from engine.projections.backends import import_umap
from engine.runner import execute
from engine.store import RunStore

SPEED_TARGET = 3.0
TRUST_TOL = 0.02
PCA_TARGET_MS = 50.0
EVERY = 50


def make_config(dataset: str, snapshots: int) -> Any:
    if dataset == "digits":
        data = {"name": "digits", "n_train": 1797, "n_test": 0}
    else:
        data = {"name": "blobs", "n_train": 2000, "n_test": 200, "dim": 64, "n_classes": 10, "jitter": 1.0}
    return validate({
        "name": f"bench-projections-{dataset}", "device": "cpu", "seed": 0, "data": data,
        "model": {"name": "mlp", "width": 256, "depth": 2},
        "optim": {"name": "adam", "lr": 1e-3},
        "train": {"steps": EVERY * snapshots, "batch_size": 128, "eval_every": EVERY * snapshots,
                  "snapshot_every": EVERY, "threads": 1},
    })


def fmt(values: list[float]) -> str:
    return "[" + ", ".join(f"{v:.2f}" for v in values) + "]"


def bench_tsne(x_prev: np.ndarray, x: np.ndarray, features: np.ndarray, rounds: int) -> dict[str, Any]:
    import openTSNE
    from sklearn.manifold import TSNE

    a, b = P.pre_reduce(x_prev), P.pre_reduce(x)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        prev = TSNE(init="pca", random_state=0, n_jobs=1).fit_transform(a.astype(np.float64))

        def sk_cold() -> np.ndarray:
            return TSNE(init="pca", random_state=0, n_jobs=1).fit_transform(b.astype(np.float64))

        def ot_cold() -> np.ndarray:
            return np.asarray(openTSNE.TSNE(n_jobs=1, random_state=0, neighbors="exact").fit(b.astype(np.float64)))

        def sk_warm() -> np.ndarray:
            return P.tsne_embed(b, init=prev, backend="sklearn")

        def ot_warm() -> np.ndarray:
            return P.tsne_embed(b, init=prev, backend="opentsne")

        fns = {"sklearn cold": sk_cold, "openTSNE cold": ot_cold, "sklearn warm": sk_warm, "openTSNE warm": ot_warm}
        times: dict[str, list[float]] = {k: [] for k in fns}
        trust: dict[str, float] = {}
        for r in range(rounds):
            for name in (list(fns) if r % 2 == 0 else list(fns)[::-1]):
                t0 = time.perf_counter()
                with P.single_blas_thread():  # what the service does; 2 BLAS threads are slower here
                    coords = fns[name]()
                times[name].append(time.perf_counter() - t0)
                trust[name] = P.trustworthiness(features, coords)
    out = {}
    for name in fns:
        med = statistics.median(times[name])
        out[name] = med
        print(f"  t-SNE {name:14s} median {med:6.2f} s {fmt(times[name])}  trust {trust[name]:.4f}")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=5, help="UMAP rounds (one new snapshot each)")
    ap.add_argument("--dataset", choices=("digits", "blobs"), default="digits")
    ap.add_argument("--tsne", action="store_true", help="also compare sklearn and openTSNE")
    ap.add_argument("--tsne-rounds", type=int, default=3)
    args = ap.parse_args()

    warm = P.warm_up()  # start compiling umap while we train
    with tempfile.TemporaryDirectory(prefix="bench-projections-") as tmp:
        store = RunStore(Path(tmp) / "lab.db")
        t0 = time.perf_counter()
        cfg = make_config(args.dataset, args.rounds + 2)
        run_id, result = execute(cfg, store)
        svc = P.ProjectionService(store)
        steps = [s for s in svc.steps(run_id) if s > 0]
        first = svc.snapshot(run_id, steps[0])
        n, d = first["features"].shape
        took = time.perf_counter() - t0
        print(f"run {run_id} ({args.dataset}, {result.status}, {result.steps} steps, {took:.1f} s): "
              f"{len(steps)} snapshots of {n} × {d} at steps {steps}")

        # numba compiling in the warm-up thread holds the GIL for seconds at a time; time PCA after it.
        t = time.perf_counter()
        warm.join()
        print(f"warm_up finished {time.perf_counter() - t:.1f} s after training")

        # ---- PCA, live ---------------------------------------------------------------------
        snaps = [svc.snapshot(run_id, s) for s in svc.steps(run_id)]
        pca_ms: list[float] = []
        for _ in range(3):
            live = P.LivePCA(quality=False)
            for snap in snaps:
                t = time.perf_counter()
                frame = live.update(snap)
                pca_ms.append((time.perf_counter() - t) * 1e3)
        t = time.perf_counter()
        P.trustworthiness(snaps[-1]["features"], frame.coords)
        trust_ms = (time.perf_counter() - t) * 1e3
        pca_med = statistics.median(pca_ms)
        print(f"PCA per snapshot (PCA + Procrustes): median {pca_med:.1f} ms, max {max(pca_ms):.1f} ms "
              f"over {len(pca_ms)} frames; its trustworthiness takes {trust_ms:.0f} ms more")

        # ---- UMAP --------------------------------------------------------------------------
        umap = import_umap()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            t = time.perf_counter()
            umap.UMAP().fit_transform(first["features"])  # compile the plain path too (untimed)
            print(f"plain warm-up fit: {time.perf_counter() - t:.1f} s")
        t = time.perf_counter()
        cold = svc.submit(run_id, steps[0], "umap").result()
        took = time.perf_counter() - t
        print(f"ours, first snapshot (cold, untimed): {took:.2f} s, trust {cold.trustworthiness:.4f}")

        ours_t, plain_t, ours_tw, plain_tw, ratios = [], [], [], [], []
        for r, step in enumerate(steps[1 : args.rounds + 1]):
            features = svc.snapshot(run_id, step)["features"]
            timings: dict[str, float] = {}
            for side in (("ours", "plain") if r % 2 == 0 else ("plain", "ours")):
                t = time.perf_counter()
                if side == "ours":
                    proj = svc.submit(run_id, step, "umap").result()
                else:
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore")
                        plain = umap.UMAP().fit_transform(features)
                timings[side] = time.perf_counter() - t
            assert proj.init_step is not None, "the repeat projection was not warm-started"
            ours_t.append(timings["ours"])
            plain_t.append(timings["plain"])
            ratios.append(timings["plain"] / timings["ours"])
            ours_tw.append(proj.trustworthiness)
            plain_tw.append(P.trustworthiness(features, plain))
            print(f"  round {r} step {step}: ours {timings['ours']:.2f} s (init from {proj.init_step}, "
                  f"trust {ours_tw[-1]:.4f})  plain {timings['plain']:.2f} s (trust {plain_tw[-1]:.4f})  "
                  f"ratio {ratios[-1]:.1f}x")

        if args.tsne:
            print("t-SNE backends (PCA-50 input, one thread):")
            bench_tsne(snaps[-2]["features"], snaps[-1]["features"], snaps[-1]["features"], args.tsne_rounds)

    speed = statistics.median(ratios)
    tw_ours, tw_plain = statistics.median(ours_tw), statistics.median(plain_tw)
    t_ours, t_plain = statistics.median(ours_t), statistics.median(plain_t)
    print(f"bench_projections: umap repeat ours={t_ours:.2f}s plain={t_plain:.2f}s "
          f"speedup={speed:.1f}x (target ≥ {SPEED_TARGET:g}x) trust ours={tw_ours:.3f} plain={tw_plain:.3f} "
          f"Δ={tw_ours - tw_plain:+.3f} (target |Δ| ≤ {TRUST_TOL:g}) pca={pca_med:.1f} ms/snapshot "
          f"(target ≤ {PCA_TARGET_MS:g} ms) [{args.dataset} {n}×{d}, {len(ratios)} rounds]")


if __name__ == "__main__":
    main()
