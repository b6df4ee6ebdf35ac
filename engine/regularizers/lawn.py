"""LAWN: after a free warm-up, hold the weight norms of the last layer(s) fixed so the logits stay tame."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from engine.regularizers.base import Param, Regularizer, Setup, register, weight_matrices


@register
class LAWN(Regularizer):
    """After warm-up, project the readout's (or every layer's) weight matrix back to its warm-up norm.

    *Logit Attenuating Weight Normalization* (Gupta et al., 2021). Unconstrained
    training lets the logits and weights grow, the loss collapses toward 0 and the network stops
    moving; LAWN trains freely for a warm-up, records the norms, then keeps them constant, so the
    logit scale stays bounded while the directions keep learning. Conventions:

    * Norm: the Frobenius norm of each constrained weight matrix (biases free), recorded after the
      update where ``warmup``·T updates are complete; from the next update on, after every
      optimizer step W ← W·c/‖W‖ (a projection onto the sphere of radius c).
    * ``layers``: ``final`` = the readout matrix only (the lab's reading of the paper's "final
      homogeneous sub-network"); ``all`` = every weight matrix (the whole net is homogeneous for a
      bias-free ReLU MLP).
    * Not implemented: the paper also removes the gradient's radial component before the
      optimizer step (a tangent-space step); only the projection is applied here.

    ``norms`` holds the recorded c per matrix (empty during warm-up).
    """

    name = "lawn"
    group = "norm"
    source = "Logit Attenuating Weight Normalization (Gupta et al., 2021)"
    tasks = ("classification",)
    refuses = frozenset({"reparametrizes"})
    params = (
        Param("warmup", float, 0.2, 0.0, 1.0, help="fraction of the run trained freely before norms are frozen"),
        Param("layers", str, "final", choices=("final", "all"), help="constrain the readout only, or every matrix"),
    )

    def __init__(self, setup: Setup, **values: Any) -> None:
        super().__init__(setup, **values)
        matrices = list(weight_matrices(setup.model))
        if not matrices:
            raise ValueError("regularizers.lawn: the model has no weight matrix to constrain")
        self.matrices: list[nn.Parameter] = matrices[-1:] if self["layers"] == "final" else matrices
        self.norms: list[Tensor] = []

    @torch.no_grad()
    def after_step(self, step: int) -> None:
        if not self.norms:
            if step >= self["warmup"] * self.setup.total_steps:  # ``step`` updates are now complete
                self.norms = [torch.linalg.matrix_norm(w) for w in self.matrices]
            return
        for w, norm in zip(self.matrices, self.norms, strict=True):
            w.mul_(norm / torch.linalg.matrix_norm(w).clamp_min(1e-12))
