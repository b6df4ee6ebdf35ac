"""Embedding projections (engine/projections/): aligned live PCA, cached background jobs, quality.

umap is imported only inside the one UMAP test (its first import compiles numba code for tens of
seconds); everything else uses PCA, t-SNE on ~100–300 points, or a stand-in embedding function.
"""

from __future__ import annotations

import csv
import io
import itertools
import math
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from engine import projections as P
from engine.events import Snapshot
from engine.projections import service as projection_service  # where the service looks up embed()
from engine.store import RunStore

ROOT = Path(__file__).resolve().parents[2]


def blobs(n: int = 300, dim: int = 8, centers: int = 4, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Well-separated Gaussian blobs: centres ≈ 20 apart, unit isotropic noise.

    8 dimensions: PCA is linear, so within-blob neighbourhoods of isotropic noise in many more
    dimensions are scrambled by any 2-D projection (trustworthiness ≈ 0.89 at 32-d, 3 blobs, while
    the blobs themselves stay perfectly separated); UMAP and t-SNE score > 0.95 either way.
    """
    rng = np.random.default_rng(seed)
    means = rng.normal(size=(centers, dim))
    means *= 20.0 / np.linalg.norm(means[0] - means[1])
    labels = np.arange(n) % centers
    x = means[labels] + rng.normal(size=(n, dim))
    return x.astype(np.float32), labels


def nearest_centroid_accuracy(coords: np.ndarray, labels: np.ndarray) -> float:
    """How separated the classes are in 2-D: accuracy of the nearest class mean."""
    means = np.stack([coords[labels == c].mean(axis=0) for c in np.unique(labels)])
    pred = np.argmin(((coords[:, None, :] - means[None]) ** 2).sum(-1), axis=1)
    return float((pred == labels).mean())


def random_rotation(dim: int, rng: np.random.Generator) -> np.ndarray:
    q, r = np.linalg.qr(rng.normal(size=(dim, dim)))
    return q * np.sign(np.diag(r))


def make_store(tmp_path: Path, frames: list[np.ndarray], labels: np.ndarray, every: int = 10,
               **flags: np.ndarray) -> tuple[RunStore, str]:
    store = RunStore(tmp_path / "runs" / "lab.db")
    run_id = store.create_run({"test": True})
    index = flags.pop("index", np.arange(len(labels)) * 3 + 1)  # sample ids that are not row numbers
    for i, x in enumerate(frames):
        store.save_snapshot(run_id, i * every, features=x, labels=labels, flag_index=index,
                            **{f"flag_{k}": v for k, v in flags.items()})
    return store, run_id


# --------------------------------------------------------------------------------------------
# Parameters, kNN, Procrustes
# --------------------------------------------------------------------------------------------


def test_params_normalised_and_checked() -> None:
    assert P.params_key("umap") == P.params_key("umap", {"n_neighbors": 15, "seed": 0})
    assert P.params_key("umap", {"n_neighbors": 30}) != P.params_key("umap")
    assert P.normalize_params("tsne", {"perplexity": "20"})["perplexity"] == 20.0
    with pytest.raises(ValueError, match="unknown key 'k'"):
        P.normalize_params("umap", {"k": 3})
    with pytest.raises(ValueError, match="out of range"):
        P.normalize_params("tsne", {"backend": "cuda"})
    with pytest.raises(ValueError, match="method"):
        P.normalize_params("isomap")


def test_exact_knn_matches_brute_force() -> None:
    x = np.random.default_rng(1).normal(size=(150, 7)).astype(np.float32)
    idx, dist = P.exact_knn(x, 6, block=64)
    full = np.sqrt(((x[:, None] - x[None]) ** 2).sum(-1))
    assert (idx[:, 0] == np.arange(150)).all() and np.allclose(dist[:, 0], 0, atol=1e-3)
    assert np.allclose(np.sort(full, axis=1)[:, :6], dist, atol=1e-3)
    assert np.allclose(np.take_along_axis(full, idx, axis=1), dist, atol=1e-3)


def test_procrustes_undoes_rotation_reflection_and_shift_on_shared_ids() -> None:
    rng = np.random.default_rng(2)
    ref = rng.normal(size=(50, 2))
    theta = 2.0
    rot = np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]]) @ np.diag([1, -1])
    moved = ref @ rot + [5.0, -3.0]
    perm = rng.permutation(50)[:40]  # a shuffled subset, matched by sample id
    aligned = P.align_procrustes(moved[perm], ref, index=perm + 100, reference_index=np.arange(50) + 100)
    assert np.allclose(aligned, ref[perm], atol=1e-9)


# --------------------------------------------------------------------------------------------
# Live PCA: aligned frames of a slowly changing cloud
# --------------------------------------------------------------------------------------------


def test_pca_alignment_keeps_frames_of_a_slowly_changing_cloud_close() -> None:
    rng = np.random.default_rng(3)
    n, dim = 400, 24
    base = rng.normal(size=(n, dim)) * np.linspace(6, 0.5, dim)
    drift = rng.normal(size=(n, dim)) * 0.02
    frames = []
    for t in range(12):
        cloud = base + t * drift + rng.normal(size=(n, dim)) * 0.01
        # Each frame's feature basis is rotated at random (a network may do that freely): the cloud's
        # shape changes slowly, but raw PCA signs / orientations are arbitrary per frame.
        frames.append((cloud @ random_rotation(dim, rng)).astype(np.float32))
    raw = [P.pca_coords(f) for f in frames]
    live = P.LivePCA(quality=False)
    aligned = [live.update({"features": f, "labels": np.zeros(n), "flag_index": np.arange(n)}, step=t).coords
               for t, f in enumerate(frames)]

    def rel_change(a: np.ndarray, b: np.ndarray) -> float:
        return float(np.linalg.norm(a - b) / np.linalg.norm(b))

    raw_jumps = [rel_change(raw[t], raw[t - 1]) for t in range(1, len(frames))]
    steps = [rel_change(aligned[t], aligned[t - 1]) for t in range(1, len(frames))]
    assert max(raw_jumps) > 0.5  # unaligned PCA does flip between frames here
    assert max(steps) < 0.05, steps
    for t in range(1, len(frames)):  # no sign flip on either axis
        for axis in range(2):
            assert np.corrcoef(aligned[t][:, axis], aligned[t - 1][:, axis])[0, 1] > 0.99


def test_live_pca_as_subscriber_aligns_every_snapshot_and_scores_on_request() -> None:
    x, labels = blobs(120, dim=10)
    live = P.LivePCA(run_id="r1")
    assert live.latest() is None
    live(Snapshot(step=5, features=x, labels=labels, flags={"index": np.arange(120)}))
    live(Snapshot(step=10, features=-x * 1.01, labels=labels, flags={"index": np.arange(120)}))
    frames = live.frames()
    assert [f.step for f in frames] == [5, 10]
    assert all(math.isnan(f.trustworthiness) for f in frames)  # nothing slow on the training thread
    assert np.allclose(frames[1].coords, frames[0].coords * 1.01)  # the sign flip of -x is undone
    frame = live.latest()
    assert frame is not None and frame.step == 10 and frame.method == "pca" and frame.coords.shape == (120, 2)
    assert frame.trustworthiness > 0.9
    assert live.latest() is frame  # scored once


# --------------------------------------------------------------------------------------------
# Quality: well-separated blobs stay separated
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["pca", "tsne"])
def test_blobs_stay_separated(method: str) -> None:
    x, labels = blobs(200)
    coords = P.embed(method, x)
    assert coords.shape == (200, 2) and np.isfinite(coords).all()
    assert P.trustworthiness(x, coords) > 0.9
    assert nearest_centroid_accuracy(coords, labels) == 1.0


def test_umap_warm_up_then_blobs_stay_separated_cold_and_warm() -> None:
    """The single UMAP test (≈ 300 points): warm_up's daemon thread, numba cache dir, cold + warm fit."""
    thread = P.warm_up()
    assert thread.daemon and P.warm_up() is thread
    thread.join(timeout=300)
    assert not thread.is_alive()
    assert os.environ.get("NUMBA_CACHE_DIR")
    x, labels = blobs(300)
    cold = P.embed("umap", x)
    assert P.trustworthiness(x, cold) > 0.9 and nearest_centroid_accuracy(cold, labels) == 1.0
    moved = x + np.random.default_rng(4).normal(size=x.shape).astype(np.float32) * 0.05
    warm = P.embed("umap", moved, init=cold)
    assert P.trustworthiness(moved, warm) > 0.9 and nearest_centroid_accuracy(warm, labels) == 1.0


def test_trustworthiness_subsample_is_fixed_and_bounded() -> None:
    rows = P.trust_subsample(5000, 2000)
    assert len(rows) == 2000 and np.array_equal(rows, P.trust_subsample(5000, 2000))
    assert np.array_equal(P.trust_subsample(300, 2000), np.arange(300))


# --------------------------------------------------------------------------------------------
# Service: background jobs, polling, warm start, caching
# --------------------------------------------------------------------------------------------


def test_background_job_finishes_and_polling_sees_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    x, labels = blobs(90, dim=8)
    store, run_id = make_store(tmp_path, [x, x * 1.01], labels)
    gate = threading.Event()
    calls: list[np.ndarray | None] = []

    def slow_embed(method, features, params=None, init=None):  # stands in for a long UMAP fit
        calls.append(init)
        assert gate.wait(timeout=60)
        return P.pca_coords(features) + (0.0 if init is None else 1.0)

    monkeypatch.setattr(projection_service, "embed", slow_embed)
    svc = P.ProjectionService(store)
    t0 = time.perf_counter()
    handle = svc.submit(run_id, 0, "umap")
    assert time.perf_counter() - t0 < 5  # returned while the job is blocked
    assert handle.status in ("queued", "running") and not handle.done()
    assert svc.submit(run_id, 0, "umap") is handle  # same key in flight: same handle
    assert svc.get(run_id, 0, "umap") is None
    gate.set()
    deadline = time.monotonic() + 60
    while not handle.done() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert handle.status == "done" and handle.error is None
    first = handle.result()
    assert first.init_step is None and first.coords.shape == (90, 2) and 0 <= first.trustworthiness <= 1
    # The next snapshot warm-starts from the cached previous frame, in its row order.
    second = svc.submit(run_id, 10, "umap").result(timeout=60)
    assert second.init_step == 0 and calls[1] is not None and np.allclose(calls[1], first.coords)
    svc.shutdown()


def test_failed_job_reports_its_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    x, labels = blobs(60, dim=8)
    store, run_id = make_store(tmp_path, [x], labels)

    def broken(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(projection_service, "embed", broken)
    handle = P.ProjectionService(store).submit(run_id, 0, "tsne")
    with pytest.raises(RuntimeError, match="boom"):
        handle.result(timeout=60)
    assert handle.status == "failed" and isinstance(handle.error, RuntimeError)


def test_cache_returns_the_identical_array_from_memory_and_disk(tmp_path: Path) -> None:
    x, labels = blobs(120, dim=16)
    store, run_id = make_store(tmp_path, [x], labels)
    params = {"perplexity": 15, "backend": "sklearn"}
    svc = P.ProjectionService(store)
    first = svc.submit(run_id, 0, "tsne", params).result(timeout=120)
    again = svc.submit(run_id, 0, "tsne", params)
    assert again.status == "done" and again.result() is first  # memory
    path = svc.cache_path(run_id, 0, "tsne", params)
    assert path.parent == Path(store.artifacts(run_id, kind="snapshot")[0]["path"]).parent
    with np.load(path, allow_pickle=False) as npz:  # plain arrays, no pickles
        assert np.array_equal(npz["coords"], first.coords)
    fresh = P.ProjectionService(store)  # a new process: from disk, without recomputing
    loaded = fresh.get(run_id, 0, "tsne", params)
    assert loaded is not None and np.array_equal(loaded.coords, first.coords)
    assert np.array_equal(loaded.index, first.index) and loaded.trustworthiness == first.trustworthiness
    assert fresh.submit(run_id, 0, "tsne", params).status == "done"
    assert fresh.get(run_id, 0, "tsne", {"perplexity": 16, "backend": "sklearn"}) is None  # other params


def test_service_pca_chain_is_aligned_and_order_independent(tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    base, labels = blobs(150, dim=12)
    frames = [(base + rng.normal(size=base.shape) * 0.01) @ random_rotation(12, rng) for _ in range(4)]
    store, run_id = make_store(tmp_path, [f.astype(np.float32) for f in frames], labels)
    late_first = P.ProjectionService(store)
    last = late_first.submit(run_id, 30, "pca").result()  # computes the chain 0 → 10 → 20 → 30
    in_order = P.ProjectionService(store)
    coords = [in_order.get(run_id, s, "pca").coords for s in (0, 10, 20, 30)]
    assert np.allclose(coords[-1], last.coords)
    for a, b in itertools.pairwise(coords):
        assert np.linalg.norm(a - b) / np.linalg.norm(a) < 0.05


# --------------------------------------------------------------------------------------------
# Export
# --------------------------------------------------------------------------------------------


def test_csv_export_columns_and_rows(tmp_path: Path) -> None:
    x, given = blobs(60, dim=6)
    true = given.copy()
    noisy = np.zeros(60, dtype=bool)
    noisy[::7] = True
    given = np.where(noisy, (given + 1) % 3, given)
    store, run_id = make_store(tmp_path, [x], given, pred=true, correct=true == given, is_noisy=noisy,
                               true_label=true)
    text = P.ProjectionService(store).export_csv(run_id, 0, "pca")
    rows = list(csv.DictReader(io.StringIO(text)))
    header = text.splitlines()[0].split(",")
    assert header == ["index", "label", "given_label", "pred", "x", "y", "is_noisy", "correct", "step", "method"]
    assert len(rows) == 60
    r = rows[7]
    assert r["index"] == "22" and r["label"] == str(true[7]) and r["given_label"] == str(given[7])
    assert r["is_noisy"] == "1" and r["correct"] == "0" and r["method"] == "pca" and r["step"] == "0"
    float(r["x"]), float(r["y"])


def test_csv_export_without_predictions_or_noise() -> None:
    x, labels = blobs(30, dim=4)
    snap = Snapshot(step=3, features=x, labels=labels, flags={})
    proj = P.LivePCA(quality=False).update(snap)
    rows = list(csv.DictReader(io.StringIO(P.projection_csv(proj, snap))))
    assert rows[0]["pred"] == "" and rows[0]["is_noisy"] == "0" and rows[0]["index"] == "0"
    with pytest.raises(ValueError, match="other samples"):
        P.projection_csv(proj, Snapshot(step=3, features=x[:10], labels=labels[:10]))


# --------------------------------------------------------------------------------------------
# Laziness
# --------------------------------------------------------------------------------------------


def test_import_is_lazy_and_cache_dir_is_under_the_user_cache(monkeypatch: pytest.MonkeyPatch,
                                                                 tmp_path: Path) -> None:
    code = ("import sys, engine.projections; "
            "print(sorted(m for m in ('umap', 'numba', 'openTSNE', 'sklearn') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
    monkeypatch.delenv("NUMBA_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert P.numba_cache_dir() == tmp_path / "regularization-lab" / "numba"
    monkeypatch.setenv("NUMBA_CACHE_DIR", str(tmp_path / "mine"))
    assert P.numba_cache_dir() == tmp_path / "mine"
