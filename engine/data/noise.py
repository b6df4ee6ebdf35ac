"""Label noise and the few-label (semi-supervised) split, applied after any classification builder.

Both draw from their own seeded streams, never from the split's, so changing the noise rate or
the number of labels leaves the train/test split and the inputs bit-identical.

Label noise (training labels only; the test set stays clean):
- ``symmetric`` — exactly ``round(rate · N)`` examples, each relabelled to a uniformly random
  *different* class (the ELR / Zhang et al. convention, so the realised noise rate is exact).
- ``class_dependent`` — the same number of examples, each of class c relabelled to (c + 1) mod C:
  the standard "pair flip" (Han et al., co-teaching), the structured noise that symmetric-noise
  methods find hardest because one wrong class systematically absorbs another's examples.
The chosen examples are a prefix of one seeded permutation and the replacement classes are drawn
for every example up front, so for a fixed seed the noisy set at rate 0.2 is a subset of the one at
0.4 with the same wrong labels — curves over the rate differ only by the rate.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import torch

from engine.data._common import data_rng
from engine.data.base import Dataset

_NOISE = 901
_FEW_LABELS = 902

NOISE_KINDS = ("symmetric", "class_dependent")


def _require_classification(data: Dataset, key: str, what: str) -> int:
    if data.task != "classification" or data.num_classes is None:
        raise ValueError(f"{key}: {what} needs a classification dataset, not {data.name} ({data.task})")
    return data.num_classes


def apply_label_noise(data: Dataset, rate: float, kind: str, seed: int) -> Dataset:
    """Corrupt exactly ``round(rate · n_train)`` training labels; record ``y_train_true`` and ``is_noisy``.

    Invariant kept for the memorisation metrics: ``is_noisy == (y_train != y_train_true)``.
    """
    num_classes = _require_classification(data, "data.noise", "label noise")
    if not 0 <= rate < 1:
        raise ValueError(f"data.noise: must be in [0, 1) (got {rate})")
    if kind not in NOISE_KINDS:
        raise ValueError(f"data.noise_type: must be one of {', '.join(NOISE_KINDS)} (got {kind!r})")
    true = (data.y_train_true if data.y_train_true is not None else data.y_train).cpu().numpy()
    n = len(true)
    rng = data_rng(seed, _NOISE)
    chosen = rng.permutation(n)[: round(rate * n)]
    shift = rng.integers(1, num_classes, size=n) if kind == "symmetric" else np.ones(n, dtype=np.int64)
    given = true.copy()
    given[chosen] = (true[chosen] + shift[chosen]) % num_classes
    return replace(
        data,
        y_train=torch.from_numpy(given),
        y_train_true=torch.from_numpy(true.copy()),
        is_noisy=torch.from_numpy(given != true),
    )


def stratified_quotas(counts: np.ndarray, n_labeled: int, rng: np.random.Generator) -> np.ndarray:
    """How many labelled examples to take from each class: as equal as the class sizes allow.

    Water-filling: the largest level L with Σ min(count, L) ≤ n_labeled gives each class
    min(count, L); the few left over go, one each, to randomly chosen classes that still have
    examples to spare (fewer than the number of such classes, by the choice of L).
    """
    lo, hi = 0, int(counts.max())
    while lo < hi:  # largest L with sum(min(counts, L)) <= n_labeled
        mid = (lo + hi + 1) // 2
        if np.minimum(counts, mid).sum() <= n_labeled:
            lo = mid
        else:
            hi = mid - 1
    quotas = np.minimum(counts, lo)
    spare = np.flatnonzero(counts > lo)
    extra = n_labeled - int(quotas.sum())
    quotas[rng.permutation(spare)[:extra]] += 1
    return quotas


def apply_few_labels(data: Dataset, n_labeled: int, seed: int) -> Dataset:
    """Mark ``n_labeled`` training examples as labelled, stratified over the (given) classes.

    Stratifying on ``y_train`` — the labels a user would actually see — gives every class at least
    one label once ``n_labeled ≥`` the number of classes present. Labels are not removed: the
    unlabelled ones stay in ``y_train`` for measuring pseudo-label accuracy only.
    """
    num_classes = _require_classification(data, "data.n_labeled", "a few-label split")
    y = data.y_train.cpu().numpy()
    if not 0 < n_labeled <= len(y):
        raise ValueError(f"data.n_labeled: must be in 1..{len(y)} (the training set size), got {n_labeled}")
    rng = data_rng(seed, _FEW_LABELS)
    counts = np.bincount(y, minlength=num_classes)
    quotas = stratified_quotas(counts, n_labeled, rng)
    labeled = np.zeros(len(y), dtype=bool)
    for c, k in enumerate(quotas):
        if k:
            labeled[rng.choice(np.flatnonzero(y == c), size=k, replace=False)] = True
    return replace(data, labeled=torch.from_numpy(labeled))
