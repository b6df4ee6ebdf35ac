"""A fixed simplex-ETF classifier: the readout weights are set once and never trained."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

from engine.regularizers._common import class_count
from engine.regularizers.base import Need, Param, Regularizer, Setup, register
from engine.traits import run_traits


def simplex_etf(num_classes: int, dim: int, generator: torch.Generator, scale: float = 1.0) -> Tensor:
    """A C × d matrix whose rows have norm ``scale`` and pairwise cosine −1/(C − 1) (needs C ≤ d + 1).

    The centred simplex M = I − 11ᵀ/C has rank C − 1; with V (C × (C − 1)) an orthonormal basis of
    its range, VVᵀ = M, so the rows of √(C/(C − 1))·V have unit norm and inner products −1/(C − 1).
    They are embedded in ℝ^d by a random d × (C − 1) matrix R with orthonormal columns: W = √(C/(C−1))·VRᵀ.
    """
    c = num_classes
    if c < 2 or c > dim + 1:
        raise ValueError(f"simplex_etf: needs 2 ≤ C ≤ d + 1 (got C={c}, d={dim})")
    centred = torch.eye(c, dtype=torch.float64) - 1.0 / c
    _, vectors = torch.linalg.eigh(centred)  # eigenvalues ascending: 0, then 1 (C − 1 times)
    basis = vectors[:, 1:]
    gauss = torch.randn(dim, c - 1, generator=generator, dtype=torch.float64)
    rotation, _ = torch.linalg.qr(gauss)  # d × (C − 1), orthonormal columns
    return scale * math.sqrt(c / (c - 1)) * basis @ rotation.T


def readout_layer(model: nn.Module, num_classes: int) -> nn.Linear | None:
    """The final Linear: ``model.out`` / ``model.readout``, else the last Linear with C outputs."""
    for attr in ("out", "readout"):
        layer = getattr(model, attr, None)
        if isinstance(layer, nn.Linear) and layer.out_features == num_classes:
            return layer
    linears = [m for m in model.modules() if isinstance(m, nn.Linear) and m.out_features == num_classes]
    return linears[-1] if linears else None


@register
class ETFClassifier(Regularizer):
    """Fix the final Linear layer to a simplex equiangular tight frame (ETF) and never train it.

    *Inducing Neural Collapse in Imbalanced Learning: Do We Really Need a Learnable Classifier at
    the End of Deep Neural Network?* (Yang et al., NeurIPS 2022); also *Fix your classifier*
    (Hoffer et al., ICLR 2018). At build time the readout weight W (C × d)
    becomes a simplex ETF: rows of norm ``scale`` with pairwise cosine −1/(C − 1) (the geometry of
    neural collapse), embedded in a random (C − 1)-dimensional subspace of the d features (drawn
    from the technique's generator). Its bias is zeroed. Both get ``requires_grad`` False; the
    trainer builds techniques before the optimizer, so the optimizer never holds them. As a guard
    against techniques that write parameters directly, W and the bias are restored after every step.

    Needs classification with C ≤ d + 1 (d = model.width, the penultimate width). Refused for the
    transformer (its unembedding is a raw matrix, not a Linear) and with weight_norm (which
    reparametrises the same weight).
    """

    name = "etf_classifier"
    group = "repr"
    source = ("Inducing Neural Collapse in Imbalanced Learning: Do We Really Need a Learnable Classifier "
              "at the End of Deep Neural Network? (Yang et al., 2022)")
    tasks = ("classification",)
    refuses = frozenset({"reparametrizes"})
    requires = (Need(why="it replaces the readout Linear layer with a fixed simplex", fix="disable etf_classifier",
                     model_traits=frozenset({"linear_readout"})),)
    params = (
        Param("scale", float, 1.0, 0.1, 100.0, log=True, help="norm of every ETF row (a fixed logit scale)"),
    )

    @classmethod
    def check_config(cls, cfg: Any) -> None:
        classes = run_traits(cfg).num_classes
        if classes is not None and classes > cfg.model.width + 1:
            raise ValueError(f"regularizers.etf_classifier: a simplex ETF of {classes} classes needs at least "
                             f"{classes - 1} features; set model.width ≥ {classes - 1}")

    def __init__(self, setup: Setup, **values: Any) -> None:
        super().__init__(setup, **values)
        classes = class_count(setup, self.name)
        layer = readout_layer(setup.model, classes)
        if layer is None:
            raise ValueError(f"regularizers.etf_classifier: {type(setup.model).__name__} has no final Linear "
                             f"layer with {classes} outputs")
        if classes > layer.in_features + 1:
            raise ValueError(f"regularizers.etf_classifier: a simplex ETF of {classes} classes needs at least "
                             f"{classes - 1} features (the readout has {layer.in_features}); raise model.width")
        self.layer = layer
        etf = simplex_etf(classes, layer.in_features, self.generator, self["scale"])
        with torch.no_grad():
            layer.weight.copy_(etf.to(layer.weight.dtype))
            layer.weight.requires_grad_(False)
            if layer.bias is not None:
                layer.bias.zero_()
                layer.bias.requires_grad_(False)
        self.etf = layer.weight.detach().clone()

    @torch.no_grad()
    def after_step(self, step: int) -> None:
        if not torch.equal(self.layer.weight, self.etf):
            self.layer.weight.copy_(self.etf)
        if self.layer.bias is not None and bool(self.layer.bias.any()):
            self.layer.bias.zero_()
