"""Representation health: feature ranks, dead ReLU units, activation sparsity, SAE metrics.

- **Effective rank** (Roy & Vetterli 2007, *The effective rank: a measure of effective
  dimensionality*): on the column-centred N×d feature matrix, p_i = σ_i/Σσ_j and
  erank = exp(−Σ p_i log p_i) — singular values σ, not σ². Exactly r for r equal non-zero σ.
- **Stable rank** Σσ_i²/σ_max², and **srank_δ** (Kumar et al. 2021, *Implicit
  under-parameterization*; the plasticity literature) = smallest k with
  Σ_{i≤k} σ_i ≥ (1 − δ) Σ σ_i, δ = 0.01. All three use the same centred singular values.
- **Dead units** (`units/dead_frac`): hidden ReLU-family units whose output is exactly 0 for
  *every* probe input, pooled over layers (per layer as `units/dead_frac_l<i>`), and
  **activation sparsity** (`units/act_sparsity`): the fraction of exact zeros over probe × units
  (the ProSparse target). Found with forward hooks on the activation *modules* — the models build
  activations as modules (``engine.models.mlp.make_activation``) precisely so they can be hooked.
  Defined for ReLU-family activations only; for tanh/GELU/x² the metrics are omitted (n/a).
- **SAE** (Gao et al. 2024, *Scaling and evaluating sparse autoencoders*): `sae/fvu`
  = Σ‖x − x̂‖²/Σ‖x − x̄‖², `sae/dead_frac` = latents that never fire (z ≠ 0: abs-TopK keeps negative latents) on
  the probe set, `sae/l0_mean`/`sae/l0_std` = active latents per sample.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

from engine.capabilities import has_relu_modules
from engine.diagnostics.base import (
    CHUNK,
    Diagnostic,
    DiagnosticContext,
    Measurement,
    MetricSpec,
    PanelSpec,
    register,
)
from engine.traits import run_traits

if TYPE_CHECKING:
    from engine.config import RunConfig

# Activations whose output is exactly 0 on a whole half-line, so "dead" is well defined.
RELU_FAMILY: tuple[type[nn.Module], ...] = (nn.ReLU, nn.ReLU6, nn.Threshold)


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[None]:
    """Put every submodule in eval mode for the block and restore each one's own mode afterwards."""
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for m, training in modes:
            m.training = training


# ---- ranks ---------------------------------------------------------------------------------

def singular_values(features: Tensor, center: bool = True) -> Tensor:
    """Singular values (descending, float64) of the N×d feature matrix, column-centred by default.

    Computed as √eig of the smaller Gram matrix (d×d or N×N) in float64: 3–5× cheaper than an
    SVD of the tall matrix, singular values below 1e-6·σ_max (numerically zero in a Gram matrix) count as 0.
    """
    h = features.detach().flatten(1).double()
    if center:
        h = h - h.mean(0, keepdim=True)
    gram = h.T @ h if h.shape[0] >= h.shape[1] else h @ h.T
    eig = torch.linalg.eigvalsh(gram).flip(0)
    # rounding leaves "zero" eigenvalues at ~1e-16·λ_max; treat σ < 1e-6·σ_max as exactly 0
    eig = torch.where(eig > eig[0] * 1e-12, eig, torch.zeros_like(eig)) if eig.numel() else eig
    return eig.clamp_min(0).sqrt()


def _erank(sv: Tensor) -> float:
    total = sv.sum()
    if total <= 0:
        return 0.0  # the zero matrix: no dimension carries anything
    p = sv[sv > 0] / total
    return float(torch.exp(-(p * p.log()).sum()))


def _stable_rank(sv: Tensor) -> float:
    return float(sv.pow(2).sum() / sv[0].pow(2)) if sv.numel() and sv[0] > 0 else 0.0


def _srank(sv: Tensor, delta: float) -> int:
    total = sv.sum()
    if total <= 0:
        return 0
    cumulative = torch.cumsum(sv, 0)
    # small tolerance so that an exact (1 − δ) share is not lost to rounding in the cumulative sum
    return int(torch.searchsorted(cumulative, (1 - delta) * total * (1 - 1e-12)).item()) + 1


def effective_rank(features: Tensor, center: bool = True) -> float:
    """Roy & Vetterli effective rank exp(H(σ/Σσ)) of the (column-centred) features."""
    return _erank(singular_values(features, center))


def stable_rank(features: Tensor, center: bool = True) -> float:
    """Σσ_i²/σ_max² of the (column-centred) features; 0 for the zero matrix."""
    return _stable_rank(singular_values(features, center))


def srank(features: Tensor, delta: float = 0.01, center: bool = True) -> int:
    """Smallest k with Σ_{i≤k} σ_i ≥ (1 − δ) Σ σ_i (Kumar et al. 2021); 0 for the zero matrix."""
    return _srank(singular_values(features, center), delta)


def rank_metrics(features: Tensor, delta: float = 0.01) -> dict[str, float]:
    """``rank/effective``, ``rank/stable``, ``rank/srank`` from one SVD of the centred features."""
    sv = singular_values(features)
    return {"rank/effective": _erank(sv), "rank/stable": _stable_rank(sv), "rank/srank": float(_srank(sv, delta))}


# ---- dead units and activation sparsity ----------------------------------------------------

@dataclass
class UnitStats:
    """Per activation module: which units ever fired, and how many exact zeros were seen."""

    name: str
    alive: Tensor | None = None  # bool per unit: non-zero for at least one input
    zeros: int = 0
    total: int = 0

    def add(self, out: Tensor) -> None:
        """Accumulate one batch of outputs. Units: dim 1 of (N, d) and conv (N, C, H, W) outputs
        (a channel is one unit), the last dim of sequence outputs (N, T, d)."""
        out = out.detach()
        units = out.movedim(-1, 1) if out.dim() == 3 else out
        fired = (units != 0).transpose(0, 1).flatten(1).any(1)
        self.alive = fired if self.alive is None else self.alive | fired
        self.zeros += int((out == 0).sum())
        self.total += out.numel()


def relu_unit_stats(model: nn.Module, x: Tensor, chunk: int = CHUNK) -> list[UnitStats]:
    """Run ``x`` through ``model`` (eval mode, no grad, in chunks) recording every ReLU-family module.

    Returns one entry per activation module that ran, in registration order; empty when the model
    has no ReLU-family activation modules (n/a).
    """
    stats = {m: UnitStats(name) for name, m in model.named_modules() if isinstance(m, RELU_FAMILY)}
    if not stats:
        return []
    handles = [m.register_forward_hook(lambda mod, _in, out: stats[mod].add(out)) for m in stats]
    try:
        with eval_mode(model), torch.no_grad():
            for start in range(0, x.shape[0], chunk):
                model(x[start:start + chunk])
    finally:
        for h in handles:
            h.remove()
    return [s for s in stats.values() if s.alive is not None]


def dead_units(model: nn.Module, x: Tensor) -> tuple[float, dict[str, float]] | None:
    """(pooled dead fraction, {module name: its dead fraction}); None without ReLU-family units.

    A unit is dead when its activation is exactly 0 for every input in ``x``.
    """
    stats = relu_unit_stats(model, x)
    return _dead_from_stats(stats) if stats else None


def _dead_from_stats(stats: list[UnitStats]) -> tuple[float, dict[str, float]]:
    per_layer = {s.name: float((~s.alive).double().mean()) for s in stats if s.alive is not None}
    dead = sum(int((~s.alive).sum()) for s in stats if s.alive is not None)
    units = sum(s.alive.numel() for s in stats if s.alive is not None)
    return dead / units, per_layer


def act_sparsity(model: nn.Module, x: Tensor) -> float | None:
    """Fraction of exact zeros among all post-ReLU activations over ``x`` × units; None if n/a."""
    stats = relu_unit_stats(model, x)
    return _sparsity_from_stats(stats) if stats else None


def _sparsity_from_stats(stats: list[UnitStats]) -> float:
    return sum(s.zeros for s in stats) / sum(s.total for s in stats)


# ---- sparse autoencoder --------------------------------------------------------------------

def fvu(x: Tensor, x_hat: Tensor) -> float:
    """Fraction of variance unexplained Σ‖x − x̂‖² / Σ‖x − x̄‖² over the whole set (x̄ its mean)."""
    x, x_hat = x.detach().flatten(1).double(), x_hat.detach().flatten(1).double()
    denominator = (x - x.mean(0)).pow(2).sum()
    return float((x - x_hat).pow(2).sum() / denominator) if denominator > 0 else float("inf")


def sae_metrics(x: Tensor, x_hat: Tensor, z: Tensor) -> dict[str, float]:
    """``sae/fvu``, ``sae/dead_frac`` (latents never non-zero on this set), ``sae/l0_mean``, ``sae/l0_std``."""
    active = z.detach() != 0  # abs-TopK latents may be negative
    l0 = active.sum(1).double()
    out = {
        "sae/dead_frac": float((~active.any(0)).double().mean()),
        "sae/l0_mean": float(l0.mean()),
        "sae/l0_std": float(l0.std(unbiased=True)) if l0.numel() > 1 else 0.0,
    }
    value = fvu(x, x_hat)
    if value != float("inf"):
        out["sae/fvu"] = value
    return out


# ---- instruments ---------------------------------------------------------------------------

@register
class Rank(Diagnostic):
    """Effective, stable and srank of the penultimate features on the probe set (collapse of dimensions)."""

    name = "rank"
    group = "representation"
    every = 200
    cost = "1 forward over the probe set + SVD of N×d"
    needs = frozenset({"features"})
    default_on = True
    panels = (PanelSpec("rank", "Rank of the penultimate features", "dimensions",
                        note="A falling rank means the features use fewer directions (collapse of "
                             "dimensions; in continual learning, a sign of lost plasticity)."),)
    outputs = (
        MetricSpec("rank/effective", "effective rank", "dimensions", "rank",
                   "exp(entropy of the normalised singular values) of the centred features"),
        MetricSpec("rank/stable", "stable rank", "dimensions", "rank", "Σσ²/σ_max² of the centred features"),
        MetricSpec("rank/srank", "srank (99 % of Σσ)", "dimensions", "rank",
                   "fewest singular values that hold 99 % of their sum"),
    )

    def measure(self, ctx: DiagnosticContext, step: int) -> Measurement:
        with eval_mode(ctx.model):
            _, features = ctx.features()
        return Measurement(metrics=rank_metrics(features))


@register
class Units(Diagnostic):
    """Dead ReLU units (zero on every probe input) and activation sparsity, pooled and per layer."""

    name = "units"
    group = "representation"
    every = 200
    cost = "1 forward over the probe set"
    default_on = True
    panels = (PanelSpec("units", "Dead ReLU units and activation sparsity", "fraction of units / activations"),)
    outputs = (
        MetricSpec("units/dead_frac", "dead units (all layers)", "fraction", "units",
                   "hidden ReLU units that output 0 on every probe input"),
        MetricSpec("units/act_sparsity", "activation sparsity", "fraction", "units",
                   "share of exact zeros over probe inputs × units"),
        MetricSpec("units/dead_frac_l{i}", "dead units, hidden layer {i}", "fraction", "units",
                   "dead-unit fraction of one hidden layer (0 = first)"),
    )

    @classmethod
    def applies(cls, cfg: RunConfig) -> bool:
        # dead units are only defined for ReLU-family activation modules (SAE latents: the sae instrument)
        return super().applies(cfg) and has_relu_modules(cfg)

    def measure(self, ctx: DiagnosticContext, step: int) -> Measurement:
        stats = relu_unit_stats(ctx.model, ctx.probe_x)
        if not stats:
            return Measurement()
        dead, per_layer = _dead_from_stats(stats)
        metrics = {"units/dead_frac": dead, "units/act_sparsity": _sparsity_from_stats(stats)}
        metrics.update({f"units/dead_frac_l{i}": frac for i, frac in enumerate(per_layer.values())})
        return Measurement(metrics=metrics)


@register
class SAE(Diagnostic):
    """Sparse-autoencoder health on the probe set: FVU, never-firing latents and mean L0."""

    name = "sae"
    group = "sae"
    every = 200
    cost = "1 forward over the probe set"
    needs = frozenset({"features"})
    default_on = True
    panels = (
        PanelSpec("sae", "Sparse autoencoder: reconstruction and dead latents", "fraction"),
        PanelSpec("sae_l0", "Sparse autoencoder: active latents per sample", "latents"),
    )
    outputs = (
        MetricSpec("sae/fvu", "FVU (fraction of variance unexplained)", "fraction", "sae",
                   "reconstruction error relative to the data's variance: 0 = perfect"),
        MetricSpec("sae/dead_frac", "dead latents", "fraction", "sae", "latents that never fire on the probe set"),
        MetricSpec("sae/l0_mean", "mean L0", "latents", "sae_l0", "active latents per sample, averaged"),
        MetricSpec("sae/l0_std", "std of L0", "latents", "sae_l0", "spread of the active-latent count"),
    )

    @classmethod
    def applies(cls, cfg: RunConfig) -> bool:
        return run_traits(cfg).has("sae_latents")

    def measure(self, ctx: DiagnosticContext, step: int) -> Measurement:
        with eval_mode(ctx.model):
            x_hat, z = ctx.features()  # the SAE's (reconstruction, latents)
        return Measurement(metrics=sae_metrics(ctx.probe_x, x_hat, z))
