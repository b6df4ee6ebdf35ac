"""Dataset registry. Every dataset is generated or ships with a package; nothing is downloaded.

Adding a dataset is adding one module here. A module either registers a builder function with
``@register_dataset(name, task=..., inputs=..., params=...)`` or a ``DatasetFamily`` subclass with
``@register_family``. Either way the dataset *declares* what the rest of the engine needs to know
without building it: its task, the kind of inputs it yields, its number of classes and its own
``Param``s (``data.<param>`` keys). Config validation, model compatibility and technique
requirements are all checked from these declarations, so no other module lists dataset names.

A builder takes the validated ``DataConfig`` and a seed and returns a ``Dataset`` on the CPU; label
noise and the few-label split are applied afterwards by ``build_dataset`` (engine/data/noise.py),
so every classification family gets them the same way.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from engine.data.base import (
    INPUT_KINDS,
    REGISTRY,
    Builder,
    Dataset,
    DatasetFamily,
    Task,
    register_dataset,
    register_family,
)
from engine.data.noise import apply_few_labels, apply_label_noise

if TYPE_CHECKING:
    from engine.config import DataConfig

__all__ = ["INPUT_KINDS", "REGISTRY", "Builder", "Dataset", "DatasetFamily", "Task", "all_datasets", "build_dataset",
           "dataset_names", "register_dataset", "register_family"]


def build_dataset(cfg: DataConfig, seed: int, device: torch.device | str = "cpu") -> Dataset:
    """Build the configured dataset deterministically for ``seed``, then apply noise/few-label."""
    data = REGISTRY.lookup(cfg.name).build(cfg, seed)
    if cfg.noise > 0:
        data = apply_label_noise(data, cfg.noise, cfg.noise_type, seed)
    if cfg.n_labeled:
        data = apply_few_labels(data, cfg.n_labeled, seed)
    return data.to(device)


def dataset_names() -> list[str]:
    return sorted(REGISTRY.load())


def all_datasets() -> dict[str, type[DatasetFamily]]:
    return REGISTRY.sorted_items()
