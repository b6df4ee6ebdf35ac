"""Exact least-squares solve of a random-features readout (min-norm or ridge), replacing the step."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from engine.regularizers.base import Need, Param, Regularizer, Setup, register

WHERE = "regularizers.lstsq_readout"


def ridge_solve(features: Tensor, targets: Tensor, ridge: float) -> tuple[Tensor, Tensor]:
    """β = argmin ‖Fβ − Y‖² + λ‖β‖² (the minimum-norm least-squares β = pinv(F)Y at λ = 0).

    One thin SVD F = U S Vᵀ serves both regimes and both shapes (the primal (FᵀF + λI)⁻¹FᵀY and
    the dual Fᵀ(FFᵀ + λI)⁻¹Y of N > n are the same V·diag(s/(s² + λ))·UᵀY). Singular values at or
    below ``torch.linalg.pinv``'s default cutoff (max(n, N)·eps·s_max) are dropped, so λ = 0 is
    exactly pinv's solution even when dead ReLU features make F rank-deficient; for λ > 0 those
    directions would contribute at most s/λ ≈ 0 anyway. Returns β (N × outputs) and the kept
    singular values (descending), from which the condition number of F is read.
    """
    u, s, vh = torch.linalg.svd(features, full_matrices=False)
    cutoff = (s[0] if s.numel() else 0.0) * max(features.shape) * torch.finfo(s.dtype).eps
    keep = s > cutoff
    u, s, vh = u[:, keep], s[keep], vh[keep]
    gain = 1.0 / s if ridge == 0.0 else s / (s * s + ridge)
    return vh.T @ (gain[:, None] * (u.T @ targets)), s


@register
class LstsqReadout(Regularizer):
    """Solve the random-features readout exactly (min-norm pinv, or ridge λ) instead of taking gradient steps.

    Double descent (Belkin et al. 2019) is a property of the minimum-norm
    interpolant, and near N ≈ n the feature matrix is so ill-conditioned (cond ≈ 1e5 on digits)
    that gradient descent would need ~cond² steps to reach it: it under-fits and the peak
    vanishes (Liu & Flanigan 2023). This technique wraps the optimizer step: it sets
    β = argmin ‖Fβ − Y‖² + λ‖β‖² on the whole training set (F the frozen features, Y one-hot
    labels as given, noisy ones included, or the regression targets) and never calls the
    optimizer. λ uses the unnormalised convention of scikit-learn's ``Ridge(alpha)``, so it does
    not depend on the loss reduction; it equals coupled weight decay λ/n on the ½-sum mean MSE.
    The solve is computed once (features, data and λ are fixed) and re-applied each step; the
    step's loss is the training loss at the solution. Logs ``readout/cond`` (σ_max/σ_min of F
    over its numerical rank) and ``readout/rank``.
    """

    name = "lstsq_readout"
    group = "optimizer"
    source = ("Reconciling modern machine-learning practice and the classical bias–variance trade-off "
              "(Belkin et al., 2019); Optimal Regularization Can Mitigate Double Descent (Nakkiran et al., 2021)")
    tasks = ("classification", "regression")
    requires = (Need(why="it solves the trainable linear readout over fixed random features",
                     fix="use a random-features model (e.g. model.name=random_features) or disable it",
                     model_traits=frozenset({"fixed_features"})),)
    params = (
        Param("ridge", float, 0.0, 0.0, 1e4, log=True, help="λ of ‖Fβ − Y‖² + λ‖β‖² (0 = minimum-norm interpolant)"),
    )

    @classmethod
    def check_config(cls, cfg: Any) -> None:
        if cfg.loss.name != "mse":
            raise ValueError(f"{WHERE}: the exact solve is least squares; set loss.name=mse")
        if 0 < cfg.train.batch_size < cfg.data.n_train:
            raise ValueError(f"{WHERE}: solves on the whole training set; set train.batch_size=0 (full batch)")
        if cfg.model.dropout:
            raise ValueError(f"{WHERE}: the solve has no dropout; set model.dropout=0")
        if cfg.optim.weight_decay:
            raise ValueError(f"{WHERE}: the solve ignores optim.weight_decay; set it to 0 and use {WHERE}.ridge")
        others = sorted(n for n in cfg.enabled_regularizers() if n != cls.name)
        if others:
            raise ValueError(f"{WHERE}: the exact solve would ignore {', '.join(others)}; disable them")

    def __init__(self, setup: Setup, **values: Any) -> None:
        super().__init__(setup, **values)
        readout = getattr(setup.model, "readout", None)
        if not isinstance(readout, nn.Linear) or not hasattr(setup.model, "rf_weight"):
            raise ValueError(f"{WHERE}: needs the random_features model (a frozen feature map + linear readout)")
        self.readout = readout
        self.solution: Tensor | None = None
        self.last: dict[str, float] = {}

    def _solve(self) -> Tensor:
        data, model = self.setup.dataset, self.setup.model
        rows = slice(None) if data.labeled is None else data.labeled
        with torch.no_grad():
            features = model.features(data.x_train[rows]).double()
            y = data.y_train[rows]
            targets = F.one_hot(y.long(), data.output_dim) if data.task == "classification" else y.flatten(1)
            beta, s = ridge_solve(features, targets.double(), self["ridge"])
        self.last = {"readout/rank": float(s.numel()),
                        "readout/cond": float(s[0] / s[-1]) if s.numel() else float("nan")}
        return beta.T.to(self.readout.weight.dtype)

    def step(self, closure: Callable[[bool], Tensor], optimizer: torch.optim.Optimizer) -> Tensor:
        if self.solution is None:
            self.solution = self._solve()
        with torch.no_grad():
            self.readout.weight.copy_(self.solution)
        return closure(True)

    def metrics(self) -> dict[str, float]:
        return dict(self.last)
