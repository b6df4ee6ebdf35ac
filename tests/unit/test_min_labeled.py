"""min_labeled: every mini-batch ends up with at least k labelled rows, taken from the labelled set."""

from __future__ import annotations

import torch

from engine.config import validate
from engine.regularizers.base import Batch
from engine.trainer import Trainer


def test_batches_get_at_least_k_labelled_rows() -> None:
    cfg = validate({"seed": 0, "data": {"name": "moons", "n_train": 200, "n_test": 50, "n_labeled": 10},
                    "model": {"name": "mlp", "width": 8}, "train": {"steps": 3, "batch_size": 20},
                    "regularizers": {"min_labeled": {"k": 4}}})
    trainer = Trainer(cfg)
    technique = trainer.techniques["min_labeled"]
    data = trainer.data
    unlabeled = torch.nonzero(~data.labeled, as_tuple=True)[0][:20]
    batch = Batch(data.x_train[unlabeled], data.y_train[unlabeled], unlabeled, labeled=data.labeled[unlabeled])
    out = technique.transform_batch(batch, 1)
    assert int(out.labeled.sum()) == 4 and len(out.idx) == 20
    swapped = out.labeled
    assert bool(data.labeled[out.idx[swapped]].all())  # only truly labelled examples were brought in
    assert torch.equal(out.x[swapped], data.x_train[out.idx[swapped]])
    assert torch.equal(out.idx[~swapped], unlabeled[~swapped])  # the other rows are untouched
    assert technique.transform_batch(out, 2) is out  # already enough labelled rows: unchanged
    assert trainer.run().status == "completed"
