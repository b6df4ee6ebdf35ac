"""Dataset registry. Every dataset is generated or ships with a package; nothing is downloaded.

One module per family registers builder functions with ``@register_dataset(name)``. A builder
takes the validated ``DataConfig`` and a seed and returns a ``Dataset`` on the CPU; label noise
and the few-label split are applied afterwards by ``build_dataset`` (engine/data/noise.py), so
every classification family gets them the same way.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Literal

import torch
from torch import Tensor

from engine.registry import Registry

if TYPE_CHECKING:
    from engine.config import DataConfig

Task = Literal["classification", "regression", "reconstruction"]


@dataclass
class Dataset:
    """Train/test tensors plus the bookkeeping the diagnostics need.

    ``y_train`` holds the labels as *given* for training (possibly noisy); ``y_train_true`` the
    clean labels and ``is_noisy`` which ones were flipped, so clean/noisy accuracy and the
    memorised fraction can be measured. ``labeled`` marks the labelled subset of a few-label
    (semi-supervised) split; unlabelled examples keep their true label in ``y_train`` only for
    measuring pseudo-label accuracy and must not be trained on as labels.
    """

    name: str
    task: Task
    x_train: Tensor
    y_train: Tensor
    x_test: Tensor
    y_test: Tensor
    num_classes: int | None = None
    y_train_true: Tensor | None = None
    is_noisy: Tensor | None = None
    labeled: Tensor | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def n_train(self) -> int:
        return int(self.x_train.shape[0])

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.x_train.shape[1:])

    @property
    def output_dim(self) -> int:
        if self.task == "classification":
            assert self.num_classes is not None
            return self.num_classes
        return int(self.y_train.shape[1])

    def to(self, device: torch.device | str) -> Dataset:
        moved = {k: (v.to(device) if isinstance(v, Tensor) else v) for k, v in self.__dict__.items()}
        return replace(self, **moved)


Builder = Callable[["DataConfig", int], Dataset]
REGISTRY: Registry[Builder] = Registry(__name__, "data.name")
register_dataset = REGISTRY.register


def build_dataset(cfg: DataConfig, seed: int, device: torch.device | str = "cpu") -> Dataset:
    """Build the configured dataset deterministically for ``seed``, then apply noise/few-label."""
    from engine.data.noise import apply_few_labels, apply_label_noise

    data = REGISTRY.lookup(cfg.name)(cfg, seed)
    if cfg.noise > 0:
        data = apply_label_noise(data, cfg.noise, cfg.noise_type, seed)
    if cfg.n_labeled:
        data = apply_few_labels(data, cfg.n_labeled, seed)
    return data.to(device)


def dataset_names() -> list[str]:
    return sorted(REGISTRY.load())
