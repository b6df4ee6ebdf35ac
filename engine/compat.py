"""Cross-section checks no single section can make, read from the plugins' declarations.

A dataset declares its task and input kind, a model the tasks and input kinds it accepts and its
traits, a loss the tasks it serves: whether a dataset/model/loss combination can run is decided
from those declarations, never from tables of names, so a new plugin needs no edit here. The
techniques' own requirements are checked by ``engine.regularizers.requirements``. Kept in one
place so the CLI and the UI refuse the same things with the same words.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from engine.config import RunConfig


def check_compatibility(cfg: RunConfig) -> None:
    """Raise ValueError('<key>: …') for combinations that cannot run."""
    from engine.data import REGISTRY as DATASETS
    from engine.losses import LOSSES
    from engine.models import REGISTRY as MODELS
    from engine.regularizers.requirements import check_techniques

    dataset, model = DATASETS.lookup(cfg.data.name), MODELS.lookup(cfg.model.name)
    data, task = dataset.name, dataset.task
    if task not in model.tasks or not dataset.input_kinds & model.inputs:
        fits = sorted(name for name, d in DATASETS.sorted_items().items()
                      if d.task in model.tasks and d.input_kinds & model.inputs)
        raise ValueError(f"model.name: {model.name} needs data.name in {fits} (got {data}); pick another model")
    if dataset.inputs(cfg.data) not in model.inputs:
        dataset.require_inputs(cfg.data, model.inputs, model.name)
    if cfg.model.activation == "crelu" and "crelu" not in model.traits:
        able = "/".join(name for name, m in MODELS.sorted_items().items() if "crelu" in m.traits)
        raise ValueError(f"model.activation: crelu doubles the hidden width, which only model.name={able} supports; "
                         "pick another activation")
    model.check_config(cfg.model)
    loss = LOSSES.lookup(cfg.loss.name)
    if task not in loss.tasks:
        fits = " or ".join(name for name, lo in LOSSES.sorted_items().items() if task in lo.tasks)
        raise ValueError(f"loss.name: {data} is a regression/reconstruction task; set loss.name={fits}")
    if task != "classification" and cfg.data.noise > 0:
        raise ValueError(f"data.noise: label noise needs a classification dataset, not {data}")
    dataset.check_config(cfg.data)
    if cfg.data.n_labeled and cfg.data.n_labeled > cfg.data.n_train:
        raise ValueError(f"data.n_labeled: must be ≤ data.n_train ({cfg.data.n_train})")
    check_techniques(cfg)


def task_of(cfg: RunConfig) -> str:
    """The task the configured dataset declares (classification, regression, reconstruction, ...)."""
    from engine.traits import dataset_task

    return dataset_task(cfg.data.name)
