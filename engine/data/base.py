"""The dataset plugin API: the ``Dataset`` record, the ``DatasetFamily`` declaration and the registry.

Kept apart from ``engine/data/__init__.py`` (which re-exports all of it) so the helpers that
``build_dataset`` calls (label noise, few-label splits) can import the record without importing
the package that imports them: no import cycle, not even a deferred one.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import torch
from torch import Tensor

from engine.plugin import Param, Plugin
from engine.registry import Registry

if TYPE_CHECKING:
    from engine.config import DataConfig

Task = Literal["classification", "regression", "reconstruction", "sequence"]
# Input kinds a dataset can yield; models declare which of them they accept.
INPUT_KINDS = ("points2d", "vector", "image", "tokens")


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


class DatasetFamily(Plugin):
    """Base of a dataset declaration: what the dataset is, without building it.

    ``input_kinds`` lists every kind the dataset can yield; ``inputs(cfg)`` says which one this
    config yields (e.g. modular: ``tokens`` or one-hot ``vector`` depending on ``data.encoding``).
    """

    task: ClassVar[str] = "classification"
    input_kinds: ClassVar[frozenset[str]] = frozenset({"vector"})

    @classmethod
    def inputs(cls, cfg: Any) -> str:
        """The input kind this data config yields (default: the dataset's only kind)."""
        return min(cls.input_kinds)

    @classmethod
    def num_classes(cls, cfg: Any) -> int | None:
        """Classes of a classification config, known without building the data (None otherwise)."""
        return None

    @classmethod
    def require_inputs(cls, cfg: Any, accepted: frozenset[str], model: str) -> None:
        """Refuse inputs the model cannot read, naming the ``data.<key>`` that would fix it.

        Called only when the dataset can yield an accepted kind but this config does not; datasets
        whose kind depends on a parameter override it to name that parameter.
        """
        raise ValueError(f"model.name: {model} reads {'/'.join(sorted(accepted))} inputs; data.name={cfg.name} "
                         f"gives {cls.inputs(cfg)}; pick another model")

    @classmethod
    def check_config(cls, cfg: Any) -> None:
        """Refuse a data section (``cfg`` is ``DataConfig``) this dataset cannot build, naming the key."""

    @classmethod
    def build(cls, cfg: DataConfig, seed: int) -> Dataset:
        raise NotImplementedError


REGISTRY: Registry[type[DatasetFamily]] = Registry("engine.data", "data.name", default="moons")


def register_family(cls: type[DatasetFamily]) -> type[DatasetFamily]:
    """Class decorator: add a ``DatasetFamily`` subclass to the registry under ``cls.name``."""
    REGISTRY.add(cls.name, cls)
    return cls


def register_dataset(name: str, *, task: str = "classification", inputs: str | Callable[[Any], str] = "vector",
                     kinds: Iterable[str] | None = None, params: tuple[Param, ...] = (),
                     classes: int | Callable[[Any], int] | None = None,
                     check: Callable[[Any], None] | None = None) -> Callable[[Builder], Builder]:
    """Decorator registering a builder function with its declarations (the builder is returned as is).

    ``inputs`` is the input kind, or a function of the data config when it depends on one (then
    ``kinds`` lists every kind it can return); ``classes`` the number of classes (or a function of
    the config); ``check`` a config check raising ValueError naming the ``data.<key>`` to fix.
    """
    if callable(inputs) and kinds is None:
        raise ValueError(f"register_dataset({name!r}): inputs depends on the config, so list its kinds=")
    all_kinds = frozenset(kinds) if kinds is not None else frozenset({inputs})  # type: ignore[arg-type]
    unknown = all_kinds - set(INPUT_KINDS)
    if unknown:
        raise ValueError(f"register_dataset({name!r}): unknown input kinds {sorted(unknown)}; use {INPUT_KINDS}")

    def wrap(builder: Builder) -> Builder:
        def inputs_of(_cls: type[DatasetFamily], cfg: Any) -> str:
            return inputs(cfg) if callable(inputs) else inputs

        def classes_of(_cls: type[DatasetFamily], cfg: Any) -> int | None:
            return classes(cfg) if callable(classes) else classes

        def check_of(_cls: type[DatasetFamily], cfg: Any) -> None:
            if check is not None:
                check(cfg)

        def build_of(_cls: type[DatasetFamily], cfg: DataConfig, seed: int) -> Dataset:
            return builder(cfg, seed)

        family = type(f"{name}_dataset", (DatasetFamily,), {
            "__doc__": builder.__doc__, "__module__": builder.__module__, "name": name, "task": task,
            "input_kinds": all_kinds, "params": tuple(params), "inputs": classmethod(inputs_of),
            "num_classes": classmethod(classes_of), "check_config": classmethod(check_of),
            "build": classmethod(build_of),
        })
        REGISTRY.add(name, family)
        return builder

    return wrap


