"""What a run *is*, read from the plugins' declarations: task, input kind, model capabilities.

Techniques and diagnostics ask these questions ("is this classification?", "does the model have
dropout slots?") instead of comparing ``cfg.data.name``/``cfg.model.name`` with names of other
plugins, so adding a dataset or a model never means editing a technique. The module sits at the
bottom of the import graph: it reads the dataset and model registries inside ``run_traits`` and
takes the config duck-typed (anything with ``.data`` and ``.model`` sections), so plugins may
import it without importing ``engine.config``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class RunTraits:
    """The declared facts about one configured run."""

    task: str  # classification | regression | reconstruction | sequence
    inputs: str  # points2d | vector | image | tokens
    dataset: str
    model: str
    model_traits: frozenset[str]
    num_classes: int | None  # classes of a classification task when known without building the data

    def has(self, trait: str) -> bool:
        return trait in self.model_traits


def run_traits(cfg: Any) -> RunTraits:
    """Traits of a config (``RunConfig`` or anything with the same ``data``/``model`` sections)."""
    from engine.data import REGISTRY as DATASETS
    from engine.models import REGISTRY as MODELS

    dataset = DATASETS.lookup(cfg.data.name)
    model = MODELS.lookup(cfg.model.name)
    return RunTraits(task=dataset.task, inputs=dataset.inputs(cfg.data), dataset=dataset.name, model=model.name,
                     model_traits=frozenset(model.traits), num_classes=dataset.num_classes(cfg.data))


def dataset_task(name: str) -> str:
    """The task a dataset declares (``ValueError`` naming ``data.name`` for an unknown one)."""
    from engine.data import REGISTRY as DATASETS

    return DATASETS.lookup(name).task


def optimizer_family(cfg: Any) -> Any:
    """The declaration of the run's optimizer (``engine.optim.OptimizerFamily``: coupled decay,
    Adam preconditioning, stability line), so instruments ask it instead of naming optimizers."""
    from engine.optim import OPTIMIZERS

    return OPTIMIZERS.lookup(cfg.optim.name)
