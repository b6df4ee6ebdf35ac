"""Curvature instruments: sharpness with its stability line, trace, top-k, spectral density, landscape.

All of them measure the Hessian of the mean *data* loss on the run's fixed probe set
(``DiagnosticContext.objective``: the loss as optimised, with its target transform and output
function), in eval mode (the trainer calls ``measure`` with the model in eval mode inside
``preserved_state``). Parameter penalties, per-sample regularizers and decoupled weight decay are
excluded; coupled L2 can be added analytically where an instrument offers ``include_penalties``.
The numerics live in ``engine.diagnostics.hessian`` and
``engine.diagnostics.landscape``; costs below are measured ones.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor

from engine.diagnostics.base import (
    ArtifactSpec,
    Diagnostic,
    DiagnosticContext,
    Measurement,
    MetricSpec,
    PanelSpec,
    register,
)
from engine.diagnostics.hessian import (
    HVP,
    adam_preconditioner,
    hutchinson,
    hutchpp,
    lanczos_top_k,
    make_hvp,
    plus_diagonal,
    power_iteration,
    preconditioned,
    slq_density,
)
from engine.diagnostics.landscape import centered_grid, eigen_directions, random_directions, slice_1d, slice_2d
from engine.plugin import Param
from engine.traits import optimizer_family

# ---- shared helpers ---------------------------------------------------------------------------


def coupled_penalty(ctx: DiagnosticContext, params: dict[str, Tensor]) -> Tensor | None:
    """Per-parameter λ of the coupled L2 terms in the training loss, flat in ``params`` order.

    Coupled L2 is (λ/2)Σθ² in the loss, so its Hessian is λ on the parameters it covers: what
    every enabled technique declares through ``hessian_shift`` (the ``l2`` penalty: its λ on the
    weights it covers) and, for optimizers that declare ``coupled_decay`` (SGD, Adam, diffGrad),
    ``optim.weight_decay`` — added to the gradient, i.e. coupled, on every parameter (its current
    value, read from the optimizer). AdamW/Lion/Muon decay is decoupled: it is in no loss and
    shifts no eigenvalue. None when there is no such term.
    """
    shifts = [shift for technique in ctx.techniques if (shift := technique.hessian_shift(params))]
    wd = 0.0
    if optimizer_family(ctx.cfg).coupled_decay and ctx.optimizer.param_groups:
        wd = float(ctx.optimizer.param_groups[0].get("weight_decay", 0.0))
    if not shifts and wd == 0.0:
        return None
    parts = []
    for name, p in params.items():
        lam = wd
        for shift in shifts:
            lam += shift.get(name, 0.0)
        parts.append(torch.full((p.numel(),), lam, dtype=p.dtype, device=p.device))
    diag = torch.cat(parts)
    return diag if bool(diag.any()) else None


def stability_threshold(ctx: DiagnosticContext) -> float | None:
    """The optimizer's stability line at the current η, as its declaration gives it (``engine/optim.py``:
    2/η for GD, the momentum and Nesterov lines for SGD, (2 + 2β₁)/(η(1 − β₁)) for Adam/AdamW on the
    preconditioned sharpness); None when there is none (Lion's sign updates) or η ≤ 0."""
    if ctx.lr <= 0:
        return None
    return optimizer_family(ctx.cfg).stability_threshold(ctx.cfg.optim, ctx.lr)


def _hvp(ctx: DiagnosticContext) -> tuple[HVP, dict[str, Tensor]]:
    params = ctx.named_params()
    return make_hvp(ctx.objective, params), params


# ---- sharpness --------------------------------------------------------------------------------


class _Tracker:
    """Warm-started power iteration on one operator across calls (raw or preconditioned)."""

    def __init__(self) -> None:
        self.vector: Tensor | None = None
        self.value: float | None = None

    def estimate(self, op: Any, dim: int, cold: bool, values: dict[str, Any], generator: torch.Generator
                 ) -> tuple[float, int]:
        """λ and the HVPs used: cold (tol, max_iter) or ``warm_iters`` fixed products from the last vector,
        falling back to a cold start when the warm value dropped by more than half (eigenvector switch)."""
        hvps = 0
        if not cold and self.vector is not None and self.vector.numel() == dim:
            warm = power_iteration(op, dim, v0=self.vector, tol=0.0, max_iter=values["warm_iters"])
            hvps += warm.n_iters
            prev = self.value if self.value is not None else 0.0
            if not (prev > 0 and warm.eigenvalue < 0.5 * prev):
                self.vector, self.value = warm.eigenvector, warm.eigenvalue
                return warm.eigenvalue, hvps
        res = power_iteration(op, dim, tol=values["tol"], max_iter=values["max_iter"], generator=generator)
        self.vector, self.value = res.eigenvector, res.eigenvalue
        return res.eigenvalue, hvps + res.n_iters


@register
class Sharpness(Diagnostic):
    """Top Hessian eigenvalue (sharpness) against the optimizer's stability line 2/η.

    λ_max of the probe-set Hessian of the data loss (eval mode, fixed probe set — never the current
    mini-batch), by power iteration: a cold start (tol 1e-3, ≤ 100 HVPs) on the
    first call, every ``restart_every``-th call (default 100) and whenever the warm value falls below half the
    previous one (the top eigenvector switched); otherwise ``warm_iters`` products from the previous
    eigenvector. Uses the current learning rate (schedules included) for ``sharpness/threshold``:
    2/η for GD/SGD, (2 + 2β)/η with heavy-ball momentum, and for Adam/AdamW
    (2 + 2β₁)/(η(1 − β₁)) = 38/η, drawn against ``sharpness/precond_top_eig`` =
    λ_max(P^{-1/2} H P^{-1/2}), P = (1 − β₁ᵗ)(√v̂ + ε) from the optimizer state (Cohen et al. 2022) —
    never against raw λ_max. Lion has no line. With mini-batch SGD the line is a reference only
    (SGD settles below it). ``include_penalties`` adds coupled L2's λ to λ_max analytically (exact
    when it covers every parameter, an upper bound otherwise) and puts the penalty into the
    preconditioned operator, where no analytic shift exists.
    """

    name = "sharpness"
    group = "curvature"
    every = 50
    cost = "20–26 HVP cold (tol 1e-3), warm_iters (3) HVP warm; HVP ≈ 1.5–3× a gradient; ×2 for Adam"
    needs = frozenset({"hessian", "full_batch"})
    params = (
        Param("tol", float, 1e-3, 1e-8, 0.1, log=True, help="relative tolerance of a cold start"),
        Param("max_iter", int, 100, 2, 1000, help="HVP cap of a cold start"),
        Param("warm_iters", int, 3, 1, 100, help="power iterations from the previous eigenvector"),
        Param("restart_every", int, 100, 1, 10_000, help="cold start every n-th call"),
        Param("include_penalties", bool, False, help="add coupled L2 (l2, SGD/Adam weight_decay) to the Hessian"),
    )
    panels = (
        PanelSpec("sharpness", "Sharpness against the stability threshold", "eigenvalue of the loss Hessian",
                  note="Above the dashed line, full-batch gradient descent at this learning rate is unstable "
                       "(edge of stability: sharpness rises to the line and hovers there)."),
        PanelSpec("sharpness_cost", "Sharpness: cost per measurement", "Hessian-vector products"),
    )
    outputs = (
        MetricSpec("sharpness/top_eig", "λ_max (top Hessian eigenvalue)", "eigenvalue", "sharpness",
                   "largest eigenvalue of the probe-set data-loss Hessian, by power iteration"),
        MetricSpec("sharpness/precond_top_eig", "preconditioned λ_max (Adam)", "eigenvalue", "sharpness",
                   "λ_max of P^-1/2 H P^-1/2 with Adam's preconditioner P: what Adam's stability line bounds"),
        MetricSpec("sharpness/threshold", "stability threshold (2/η for GD)", "eigenvalue", "sharpness",
                   "the optimizer's stability line at the current learning rate", role="reference"),
        MetricSpec("sharpness/includes_penalty", "penalties", "included/excluded", "sharpness",
                   "1 when include_penalties added coupled L2 to the Hessian, 0 for the data loss only",
                   role="flag"),
        MetricSpec("sharpness/hvps", "HVPs used", "count", "sharpness_cost",
                   "Hessian-vector products spent on this estimate (cold starts cost more)"),
    )

    def __init__(self, ctx: DiagnosticContext, seed: int, **values: Any) -> None:
        super().__init__(ctx, seed, **values)
        self.calls = 0
        self.raw, self.pre = _Tracker(), _Tracker()

    def measure(self, ctx: DiagnosticContext, step: int) -> Measurement:
        hvp, params = _hvp(ctx)
        cold = self.calls % self["restart_every"] == 0
        self.calls += 1
        penalty = coupled_penalty(ctx, params) if self["include_penalties"] else None
        lam, used = self.raw.estimate(hvp, hvp.dim, cold, self.values, self.generator)
        metrics = {"sharpness/includes_penalty": float(penalty is not None)}
        if penalty is not None:
            lam += float(penalty.max())
        metrics["sharpness/top_eig"] = lam
        adaptive = optimizer_family(ctx.cfg).adam_preconditioned
        if adaptive:
            p_diag = adam_preconditioner(ctx.optimizer, params.values())
            if p_diag is not None:
                op = hvp if penalty is None else plus_diagonal(hvp, penalty)
                pre_lam, pre_used = self.pre.estimate(preconditioned(op, p_diag), hvp.dim, cold, self.values,
                                                      self.generator)
                metrics["sharpness/precond_top_eig"] = pre_lam
                used += pre_used
        threshold = stability_threshold(ctx)
        if threshold is not None and (not adaptive or "sharpness/precond_top_eig" in metrics):
            metrics["sharpness/threshold"] = threshold
        metrics["sharpness/hvps"] = float(used)
        return Measurement(metrics)


# ---- trace ------------------------------------------------------------------------------------


@register
class Trace(Diagnostic):
    """Hessian trace by Hutchinson or Hutch++ with a fixed probe budget and its standard error.

    Tr H of the probe-set data loss (eval mode) from m Rademacher probes: never
    stopped on the running mean; ``sharpness/trace_se`` = std/√m of the stochastic part.
    Hutch++ spends m/3 products on a sketch of the top of the spectrum and is much less noisy when
    it decays fast. Probes come from the instrument's own seeded generator (reproducible, no
    global RNG). ``include_penalties`` adds λ·(number of covered parameters) for coupled L2 — exact.
    """

    name = "trace"
    group = "curvature"
    every = 200
    cost = "m HVP (30): ≈ 120 ms each on a 26k-parameter MLP"
    needs = frozenset({"hessian"})
    params = (
        Param("method", str, "hutchinson", choices=("hutchinson", "hutchpp"), help="estimator"),
        Param("m", int, 30, 6, 10_000, help="HVPs (probes) per estimate"),
        Param("include_penalties", bool, False, help="add coupled L2's λ·P analytically"),
    )
    panels = (PanelSpec("trace", "Hessian trace (Hutchinson)", "trace of the loss Hessian"),)
    outputs = (
        MetricSpec("sharpness/trace", "Tr H (Hessian trace)", "sum of eigenvalues", "trace",
                   "sum of all Hessian eigenvalues: overall curvature, not just the sharpest direction"),
        MetricSpec("sharpness/trace_se", "standard error of Tr H", "sum of eigenvalues", "trace",
                   "std/√m of the stochastic estimate: how far to trust a change in the trace"),
    )

    def measure(self, ctx: DiagnosticContext, step: int) -> Measurement:
        hvp, params = _hvp(ctx)
        estimator = hutchpp if self["method"] == "hutchpp" else hutchinson
        res = estimator(hvp, hvp.dim, self["m"], self.generator)
        trace = res.estimate
        penalty = coupled_penalty(ctx, params) if self["include_penalties"] else None
        if penalty is not None:
            trace += float(penalty.sum())
        return Measurement({"sharpness/trace": trace, "sharpness/trace_se": res.se})


# ---- top-k ------------------------------------------------------------------------------------


@register
class TopK(Diagnostic):
    """Top-k Hessian eigenvalues by Lanczos (ARPACK), on demand.

    The k algebraically largest eigenvalues of the probe-set data-loss Hessian (eval mode) via
    ``scipy.sparse.linalg.eigsh(which="LA")`` from a seeded start; reported as
    ``sharpness/eig_1`` (largest) … ``sharpness/eig_k``.
    """

    name = "top_k"
    group = "curvature"
    every = 0
    cost = "≈ 21 HVP (k=1) to 34 HVP (k=5), Lanczos"
    needs = frozenset({"hessian"})
    params = (
        Param("k", int, 5, 1, 50, help="number of eigenvalues"),
        Param("tol", float, 1e-6, 0.0, 0.1, help="ARPACK relative accuracy (0 = machine precision)"),
    )
    panels = (PanelSpec("top_k", "Top Hessian eigenvalues (Lanczos)", "eigenvalue", x="index",
                        x_title="rank of the eigenvalue (1 = largest)"),)
    outputs = (MetricSpec("sharpness/eig_{i}", "eigenvalue {i}", "eigenvalue", "top_k",
                          "the i-th largest Hessian eigenvalue (1 = λ_max), on demand"),)

    def measure(self, ctx: DiagnosticContext, step: int) -> Measurement:
        hvp, _ = _hvp(ctx)
        res = lanczos_top_k(hvp, hvp.dim, min(self["k"], hvp.dim - 1), tol=self["tol"], generator=self.generator)
        return Measurement({f"sharpness/eig_{i + 1}": float(v) for i, v in enumerate(res.eigenvalues)})


# ---- spectral density -------------------------------------------------------------------------


@register
class Density(Diagnostic):
    """Hessian eigenvalue density by stochastic Lanczos quadrature, on demand.

    SLQ on the probe-set data-loss Hessian (eval mode): n_v runs of m Lanczos
    steps with full re-orthogonalisation (twice), ``eigh`` of the tridiagonal, weights = first row
    squared (each run's weights sum to 1). Artifact ``density``: ``grid`` and ``density`` (Gaussian
    broadening σ² = 1e-5·max(1, range), integrates to 1; plot on a log axis with floor 1e-8),
    ``nodes``/``weights``/``runs``. The extreme Ritz values are logged as estimates of λ_min/λ_max.
    """

    name = "density"
    group = "curvature"
    every = 0
    cost = "m·n_v HVP (80): ≈ 12.6 s on a 26k-parameter MLP"
    needs = frozenset({"hessian"})
    params = (
        Param("m", int, 80, 2, 1000, help="Lanczos steps per run (memory m × parameters)"),
        Param("n_v", int, 1, 1, 100, help="independent runs (10 for export quality)"),
    )
    panels = (PanelSpec("ritz", "Extreme Ritz values of the spectral density", "eigenvalue"),)
    outputs = (
        MetricSpec("sharpness/lambda_min_ritz", "λ_min estimate (smallest Ritz value)", "eigenvalue", "ritz",
                   "most negative curvature seen by SLQ: negative means a saddle direction"),
        MetricSpec("sharpness/lambda_max_ritz", "λ_max estimate (largest Ritz value)", "eigenvalue", "ritz",
                   "largest curvature seen by SLQ"),
    )
    artifacts = (ArtifactSpec("density", "Hessian spectral density (SLQ)",
                              "smoothed eigenvalue density; mass far right of the bulk = a few sharp directions"),)

    def measure(self, ctx: DiagnosticContext, step: int) -> Measurement:
        hvp, _ = _hvp(ctx)
        res = slq_density(hvp, hvp.dim, self["m"], self["n_v"], self.generator)
        artifact = {"grid": res.grid, "density": res.density, "nodes": res.nodes, "weights": res.weights,
                    "runs": res.runs}
        metrics = {"sharpness/lambda_min_ritz": float(res.nodes.min()),
                   "sharpness/lambda_max_ritz": float(res.nodes.max())}
        return Measurement(metrics, {"density": artifact})


# ---- landscape --------------------------------------------------------------------------------


@register
class Landscape(Diagnostic):
    """Loss and accuracy on a 1-D or 2-D slice through the weights, on demand.

    Li et al. 2018: ``1d``/``2d`` use zero-mean Gaussian directions drawn from
    ``directions_seed``, filter-normalised per output unit with biases set to 0 (same seed ⇒ same
    directions for A/B runs; normalisation uses each run's own θ), α ∈ [−1, 1] (51 points 1-D,
    21 × 21 2-D);
    ``eigen`` uses the top-2 Hessian eigenvectors (unit norm), ±0.5 with 21 × 21 points. Probe
    set, data loss, eval mode, evaluated with ``functional_call``: the live model is never moved.
    Artifact ``landscape``: ``alphas`` (and ``betas``), ``loss``, ``acc`` (NaN unless
    classification), ``seed`` = the directions' seed (and ``eigenvalues`` in eigen mode).
    """

    name = "landscape"
    group = "curvature"
    every = 0
    cost = "1 forward over the probe set per point: 51 (1-D), 441 (21×21) ≈ 18.5 s on 26k params"
    params = (
        Param("mode", str, "2d", choices=("1d", "2d", "eigen"), help="random 1-D/2-D slice or Hessian eigenvectors"),
        Param("points", int, 0, 0, 201, help="grid points per axis (0 = 51 for 1d, 21 for 2d/eigen)"),
        Param("span", float, 0.0, 0.0, 100.0, help="half-width of the grid (0 = 1 for random, 0.5 for eigen)"),
        # Not "seed": Diagnostic.__init__(ctx, seed, **values) already takes the run seed by that name.
        Param("directions_seed", int, 0, 0, 2**31 - 1, help="seed of the random directions (A/B runs: same seed)"),
    )
    artifacts = (ArtifactSpec("landscape", "Loss landscape",
                              "probe-set loss on a 1-D or 2-D slice around the weights (Li et al. 2018)"),)

    def measure(self, ctx: DiagnosticContext, step: int) -> Measurement:
        mode, seed = self["mode"], self["directions_seed"]
        points = self["points"] or (51 if mode == "1d" else 21)
        span = self["span"] or (0.5 if mode == "eigen" else 1.0)
        grid = centered_grid(span, points)
        extra: dict[str, np.ndarray] = {}
        if mode == "eigen":
            dirs, eigenvalues = eigen_directions(ctx, 2, generator=torch.Generator().manual_seed(seed))
            extra["eigenvalues"] = eigenvalues
        else:
            dirs = random_directions(ctx.named_params(), seed, n=1 if mode == "1d" else 2)
        result = slice_1d(ctx, dirs[0], grid) if mode == "1d" else slice_2d(ctx, dirs[0], dirs[1], grid)
        return Measurement(artifacts={"landscape": {**result, **extra, "seed": np.array([seed])}})
