"""Minimum labelled samples per mini-batch (Arazo et al. 2020)."""

from __future__ import annotations

from typing import Any

import torch

from engine.regularizers.base import Batch, Param, Regularizer, Setup, register


@register
class MinLabeled(Regularizer):
    """Guarantee at least k labelled examples in every mini-batch (unlabelled rows swapped out).

    Source: Arazo et al., *Pseudo-Labeling and Confirmation Bias in Deep Semi-Supervised
    Learning* (2020), who keep k = 16 labelled samples in each batch of 100 so the supervised
    signal never vanishes from a batch dominated by unlabelled data. Convention here: when a
    batch holds fewer than k labelled rows, the missing number of *unlabelled* rows (the first
    ones) are replaced by labelled examples drawn uniformly with replacement from the labelled
    set, from the technique's own generator; the batch size stays the same and full batches are
    left untouched. Runs first in the transform_batch chain so the SSL views see the final batch.
    """

    name = "min_labeled"
    group = "ssl"
    source = "Pseudo-Labeling and Confirmation Bias in Deep Semi-Supervised Learning (Arazo et al., 2020)"
    order = 0
    tasks = ("classification",)
    params = (Param("k", int, 16, 1, 1024, live=True, help="labelled examples guaranteed in each mini-batch"),)

    @classmethod
    def check_config(cls, cfg: Any) -> None:
        if not cfg.data.n_labeled:
            raise ValueError("regularizers.min_labeled: needs a few-label run; set data.n_labeled (e.g. 10)")

    def __init__(self, setup: Setup, **values: Any) -> None:
        super().__init__(setup, **values)
        labeled = setup.dataset.labeled
        if labeled is None:
            raise ValueError("regularizers.min_labeled: the dataset has no labelled mask; set data.n_labeled")
        self.pool = torch.nonzero(labeled.cpu(), as_tuple=True)[0]
        self.dataset = setup.dataset

    def transform_batch(self, batch: Batch, step: int) -> Batch:
        if batch.labeled is None:
            return batch
        k = min(self["k"], len(batch.idx))
        missing = k - int(batch.labeled.sum())
        if missing <= 0:
            return batch
        rows = torch.nonzero(~batch.labeled, as_tuple=True)[0][:missing]
        picks = self.pool[torch.randint(len(self.pool), (len(rows),), generator=self.generator)].to(batch.idx.device)
        idx, x, y, labeled = batch.idx.clone(), batch.x.clone(), batch.y.clone(), batch.labeled.clone()
        idx[rows], labeled[rows] = picks, True
        x[rows], y[rows] = self.dataset.x_train[picks], self.dataset.y_train[picks]
        return Batch(x, y, idx, batch.y_soft, labeled)
