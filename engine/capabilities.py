"""Questions about a run that combine the model's declared traits with its configured parameters.

Techniques and instruments both ask them, and neither family may import the other, so the
answer is written once here, at the bottom of the import graph, instead of once per family.
"""

from __future__ import annotations

from typing import Any

from engine.traits import run_traits


def has_relu_modules(cfg: Any) -> bool:
    """Whether the configured model builds ReLU-family activation *modules* (hookable).

    A model declaring ``relu_units`` has them when its activation is ReLU: either it picks its own
    (``own_activation``, e.g. a transformer's MLP is ReLU whatever ``model.activation`` says) or
    ``model.activation=relu``.
    """
    traits = run_traits(cfg)
    return traits.has("relu_units") and (traits.has("own_activation") or cfg.model.activation == "relu")
