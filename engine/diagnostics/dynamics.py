"""Training-dynamics instruments: gradient coherence, calibration, grokking progress measures.

- **m-coherence** (`grad/coherence`; Chatterjee 2020, *Coherent gradients*, and Chatterjee &
  Zielinski 2022, *On the generalization mystery in deep learning*): α_m = ‖Σ_i g_i‖² / Σ_i ‖g_i‖²
  over m per-example gradients — m when they are identical, 1 when mutually orthogonal
  (memorisation), 0 when they cancel. O(m·P), no pairwise products. Per-example gradients come from
  ``torch.func.vmap(grad(...))`` over ``functional_call`` (≈ 4× one gradient), so the live
  module is never touched. `grad/dir_var` (*Dropout reduces underfitting*, Liu et al. 2023) is
  the mean pairwise cosine distance among K = 8 mini-batch gradients at fixed θ, here the K
  disjoint mini-batches of m/K examples the per-example gradients already give for free.
- **Calibration** (Guo et al. 2017, *On calibration of modern neural networks*): `calib/ece`
  with 15 equal-width bins ((k−1)/15, k/15] of the top-label confidence, empty bins skipped;
  `calib/aurc` (risk–coverage, Geifman et al. 2019); `calib/nll`. Probabilities come from the
  run's output function: softmax, or the one a technique installed (e.g. StableMax).
- **Grokking** (Prieto et al. 2025, *Grokking at the edge of numerical stability*):
  `grok/sc_frac`, the fraction of samples whose Σ_j exp(z_j − max z) is exactly 1 in float32
  (softmax collapse); `grok/nlm_cos` = cos(−∇_θL, θ), → 1 when the gradient only scales the
  weights (naive loss minimisation); `grok/ipr`, the mean Fourier inverse participation ratio of
  the first-layer weights on one-hot modular inputs (Doshi, He, Gromov, *To grok or not to grok*):
  P_k = |rfft(w)_k|², k = 1..⌊p/2⌋ (DC excluded), IPR = ΣP_k²/(ΣP_k)² ∈ [1/⌊p/2⌋, 1].
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call, grad, vmap

from engine.batch import Batch
from engine.diagnostics.base import (
    CHUNK,
    ArtifactSpec,
    Diagnostic,
    DiagnosticContext,
    Measurement,
    MetricSpec,
    PanelSpec,
    register,
)
from engine.diagnostics.representation import eval_mode
from engine.plugin import Param

if TYPE_CHECKING:
    from engine.config import RunConfig
    from engine.data import Dataset

LossFn = Callable[[Tensor, Batch], Tensor]
ECE_BINS = 15
IPR_RTOL = 1e-12  # a row whose non-DC power is below this share of its total power counts as constant

# ---- per-example gradients and coherence ---------------------------------------------------


def _params_and_buffers(model: nn.Module) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    params = {n: p.detach() for n, p in model.named_parameters() if p.requires_grad}
    buffers = {n: b.detach() for n, b in model.named_buffers()}
    return params, buffers


def _example_loss(model: nn.Module, loss_fn: LossFn) -> Callable[..., Tensor]:
    """Loss of one example (a batch of one) as a function of the parameters, for torch.func."""

    def loss(params: dict[str, Tensor], buffers: dict[str, Tensor], x: Tensor, y: Tensor, idx: Tensor,
             y_soft: Tensor | None) -> Tensor:
        out = functional_call(model, (params, buffers), (x[None],))
        soft = None if y_soft is None else y_soft[None]
        return loss_fn(out, Batch(x[None], y[None], idx[None], y_soft=soft))

    return loss


def per_example_grads(model: nn.Module, loss_fn: LossFn, x: Tensor, y: Tensor, idx: Tensor | None = None,
                      y_soft: Tensor | None = None) -> dict[str, Tensor]:
    """∇_θ ℓ(x_i, y_i) for every row, each tensor with a leading example axis (trainable params only).

    ``vmap(grad(...))`` over ``functional_call``; a loss that vmap cannot batch (data-dependent
    control flow such as ``F.one_hot`` on labels — pass one-hot ``y_soft`` to avoid it) falls back
    to an exact loop of single-example gradients. ``idx`` are the examples' training-set positions.
    """
    params, buffers = _params_and_buffers(model)
    idx = torch.arange(x.shape[0], device=x.device) if idx is None else idx
    loss = _example_loss(model, loss_fn)
    try:
        in_dims = (None, None, 0, 0, 0, None if y_soft is None else 0)
        return vmap(grad(loss), in_dims=in_dims)(params, buffers, x, y, idx, y_soft)
    except RuntimeError:
        rows = [grad(loss)(params, buffers, x[i], y[i], idx[i], None if y_soft is None else y_soft[i])
                for i in range(x.shape[0])]
        return {name: torch.stack([r[name] for r in rows]) for name in params}


def _flat(grads: dict[str, Tensor]) -> Tensor:
    """(n, P) matrix of per-example gradients, float64."""
    return torch.cat([g.flatten(1).double() for g in grads.values()], dim=1)


def _alpha(total: Tensor, sq_norms: Tensor) -> float:
    return float(total.pow(2).sum() / sq_norms) if sq_norms > 0 else 0.0


def coherence_from_grads(g: Tensor) -> float:
    """α_m = ‖Σ_i g_i‖² / Σ_i ‖g_i‖² of an (m, P) gradient matrix; 0 when every gradient is 0."""
    return _alpha(g.sum(0), g.pow(2).sum())


def direction_variance(batch_grads: Tensor) -> float:
    """Mean pairwise cosine distance 1 − cos(g_a, g_b) among K mini-batch gradients (K×P)."""
    unit = batch_grads / batch_grads.norm(dim=1, keepdim=True).clamp_min(1e-300)
    k = unit.shape[0]
    i, j = torch.triu_indices(k, k, offset=1)
    return float((1 - (unit @ unit.T)[i, j]).mean())


def grad_coherence(model: nn.Module, loss_fn: LossFn, x: Tensor, y: Tensor, m: int = 128,
                   generator: torch.Generator | None = None, k_batches: int = 8,
                   y_soft: Tensor | None = None) -> dict[str, float]:
    """``grad/coherence`` (α_m over m examples drawn without replacement) and ``grad/dir_var``.

    The m examples are split into ``k_batches`` disjoint mini-batches (when m ≥ 2·k_batches); the
    per-example gradients are computed one mini-batch at a time, so memory stays at m/K × P and
    each mini-batch's mean gradient is one of the K gradients of ``grad/dir_var``.
    """
    n = x.shape[0]
    m = min(m, n)
    chosen = torch.randperm(n, generator=generator)[:m].to(x.device)
    k = k_batches if k_batches >= 2 and m >= 2 * k_batches else 1
    total: Tensor | None = None
    sq_norms = torch.zeros((), dtype=torch.float64)
    batch_means = []
    for part in torch.tensor_split(chosen, k):
        soft = None if y_soft is None else y_soft[part]
        g = _flat(per_example_grads(model, loss_fn, x[part], y[part], part, soft))
        total = g.sum(0) if total is None else total + g.sum(0)
        sq_norms = sq_norms + g.pow(2).sum()
        batch_means.append(g.mean(0))
    assert total is not None
    out = {"grad/coherence": _alpha(total, sq_norms)}
    if k > 1:
        out["grad/dir_var"] = direction_variance(torch.stack(batch_means))
    return out


# ---- calibration ---------------------------------------------------------------------------

def probabilities(logits: Tensor, output_fn: Callable[[Tensor], Tensor] | None = None) -> Tensor:
    """Class probabilities (float64) from the run's output function: softmax, or exp of the
    log-probabilities of the one a technique installed (e.g. StableMax)."""
    z = logits.detach().double()
    return output_fn(z).exp() if output_fn is not None else F.softmax(z, dim=-1)


def expected_calibration_error(probs: Tensor, labels: Tensor, n_bins: int = ECE_BINS) -> float:
    """Σ_b (n_b/n)·|acc_b − conf_b| over equal-width bins ((k−1)/B, k/B] of the top-label confidence."""
    conf, pred = probs.max(-1)
    correct = (pred == labels).double()
    inner_edges = torch.linspace(0, 1, n_bins + 1, dtype=conf.dtype, device=conf.device)[1:-1]
    bins = torch.bucketize(conf, inner_edges, right=False)  # edges[k−1] < conf ≤ edges[k]
    count = torch.bincount(bins, minlength=n_bins).double()
    gap = (torch.bincount(bins, weights=correct, minlength=n_bins)
           - torch.bincount(bins, weights=conf.double(), minlength=n_bins))
    return float(gap.abs().sum() / count.sum())  # |Σacc − Σconf| = n_b·|acc_b − conf_b|; empty bins add 0


def aurc(probs: Tensor, labels: Tensor) -> float:
    """Area under the risk–coverage curve: (1/n) Σ_k errors among the k most confident / k."""
    conf, pred = probs.max(-1)
    order = torch.sort(conf, descending=True, stable=True).indices
    errors = (pred[order] != labels[order]).double()
    k = torch.arange(1, len(errors) + 1, dtype=torch.float64, device=errors.device)
    return float((torch.cumsum(errors, 0) / k).mean())


def nll(probs: Tensor, labels: Tensor) -> float:
    """Mean −log p_y (the +1e-300 keeps a probability that underflowed to 0 finite)."""
    picked = probs.gather(-1, labels[:, None]).squeeze(-1)
    return float(-(picked + 1e-300).log().mean())


def calibration(logits: Tensor, labels: Tensor,
                output_fn: Callable[[Tensor], Tensor] | None = None) -> dict[str, float]:
    """``calib/ece``, ``calib/aurc``, ``calib/nll`` of logits against labels."""
    probs = probabilities(logits, output_fn)
    return {"calib/ece": expected_calibration_error(probs, labels), "calib/aurc": aurc(probs, labels),
            "calib/nll": nll(probs, labels)}


# ---- grokking progress measures ------------------------------------------------------------

def softmax_collapse_fraction(logits: Tensor) -> float:
    """Fraction of rows whose Σ_j exp(z_j − max z) equals exactly 1 in float32.

    Always float32, the model's precision, even when the loss is computed in float64: that is
    where the non-max terms get absorbed and the gradient of the loss vanishes.
    """
    z = logits.detach().float()
    total = torch.exp(z - z.max(-1, keepdim=True).values).sum(-1)
    return float((total == 1.0).double().mean())


def nlm_cosine(loss: Callable[[dict[str, Tensor]], Tensor], params: dict[str, Tensor]) -> float | None:
    """cos(−∇_θL, θ) over all parameters at ``params``; None when undefined (‖∇L‖ or ‖θ‖ is 0, or not finite)."""
    leaves = {n: p.detach().clone().requires_grad_(True) for n, p in params.items()}
    grads = torch.autograd.grad(loss(leaves), list(leaves.values()), allow_unused=True)
    g = torch.cat([(torch.zeros_like(p) if gi is None else gi).flatten().double()
                   for gi, p in zip(grads, leaves.values(), strict=True)])
    theta = torch.cat([p.detach().flatten().double() for p in leaves.values()])
    norms = g.norm() * theta.norm()
    cos = float(-(g @ theta) / norms) if norms > 0 else math.nan
    return cos if math.isfinite(cos) else None


def fourier_ipr(weights: Tensor) -> Tensor:
    """Per-row Fourier IPR of (n, p) weights over residues: P_k = |rfft|², k = 1..⌊p/2⌋ (DC excluded).

    IPR = ΣP_k²/(ΣP_k)² ∈ [1/⌊p/2⌋, 1]: 1 for a single frequency, 1/⌊p/2⌋ for a delta. Rows with
    (numerically) no non-DC power — zero or constant rows, where the IPR is undefined — are dropped.
    """
    w = weights.detach().double().reshape(-1, weights.shape[-1])
    p = w.shape[-1]
    spectrum = torch.fft.rfft(w, dim=-1).abs().pow(2)
    power = spectrum[:, 1:p // 2 + 1]
    total = power.sum(-1)
    keep = total > IPR_RTOL * spectrum.sum(-1)
    return power[keep].pow(2).sum(-1) / total[keep].pow(2)


def modular_input_weights(model: nn.Module, p: int) -> list[Tensor]:
    """Per-operand weight blocks (neurons × p) of the first layer reading modular inputs.

    One-hot inputs: the first ``nn.Linear`` with 2p inputs, split into its a- and b-blocks. Token
    inputs (transformer): the residue rows of the embedding ``W_E`` transposed, so each embedding
    dimension is a function of the residue (Nanda et al. 2023). Empty when neither is found.
    """
    first = next((m for m in model.modules() if isinstance(m, nn.Linear) and m.in_features == 2 * p), None)
    if first is not None:
        w = first.weight.detach()
        return [w[:, :p], w[:, p:]]
    embed = getattr(model, "W_E", None)
    if isinstance(embed, Tensor) and embed.dim() == 2 and embed.shape[0] >= p:
        return [embed.detach()[:p].T]
    return []


def modular_ipr(model: nn.Module, data: Dataset) -> Tensor | None:
    """Fourier IPR of every (first-layer neuron, operand) on modular data; None when not applicable.

    A dataset over residues mod p says so by putting its modulus in ``meta["p"]``.
    """
    p = data.meta.get("p")
    blocks = modular_input_weights(model, int(p)) if p else []
    values = torch.cat([fourier_ipr(block) for block in blocks]) if blocks else None
    return values if values is not None and values.numel() else None


# ---- instruments ---------------------------------------------------------------------------

def _soft_targets(ctx: DiagnosticContext, y: Tensor) -> Tensor | None:
    """One-hot targets for an MSE classification loss, so vmap never meets ``F.one_hot``."""
    if ctx.data.task == "classification" and ctx.cfg.loss.name == "mse":
        return F.one_hot(y, ctx.data.num_classes).to(torch.get_default_dtype())
    return None


@register
class Coherence(Diagnostic):
    """Gradient m-coherence of per-example gradients (≈ 1 memorisation, m identical) and direction variance."""

    name = "coherence"
    group = "dynamics"
    every = 100
    cost = "per-example gradients of m probe examples ≈ 4× a gradient"
    needs = frozenset({"per_example"})
    params = (
        Param("m", int, 128, 2, 4096, help="examples whose per-example gradients are compared"),
        Param("k_batches", int, 8, 2, 64, help="disjoint mini-batches for grad/dir_var"),
    )
    panels = (
        PanelSpec("coherence", "Gradient coherence", "α_m (1 = orthogonal, m = identical)", log_y=True,
                  note="Near 1: per-example gradients are orthogonal, each example is fitted on its own "
                       "(memorisation); well above 1: examples pull the same way (Chatterjee 2020)."),
        PanelSpec("dir_var", "Mini-batch gradient direction variance", "1 − cosine"),
    )
    outputs = (
        MetricSpec("grad/coherence", "m-coherence α_m", "ratio", "coherence",
                   "‖Σ g_i‖² / Σ ‖g_i‖² over m per-example gradients"),
        MetricSpec("grad/dir_var", "direction variance", "1 − cosine", "dir_var",
                   "mean pairwise cosine distance between K mini-batch gradients at fixed weights"),
    )
    default_on = False

    def measure(self, ctx: DiagnosticContext, step: int) -> Measurement:
        x, y = ctx.probe_x, ctx.probe_y
        with eval_mode(ctx.model):
            metrics = grad_coherence(ctx.model, ctx.loss_fn, x, y, self["m"], self.generator, self["k_batches"],
                                     _soft_targets(ctx, y))
        return Measurement(metrics=metrics)


@register
class Calibration(Diagnostic):
    """ECE (15 bins), AURC and NLL on the test set, with the run's softmax or StableMax probabilities."""

    name = "calibration"
    group = "calibration"
    every = 200
    cost = "1 forward over the test set"
    tasks = ("classification",)
    default_on = True
    panels = (
        PanelSpec("calibration", "Calibration error (test set)", "fraction of examples"),
        PanelSpec("calib_nll", "Test negative log-likelihood", "nats per example", log_y=True),
    )
    outputs = (
        MetricSpec("calib/ece", "ECE (15 bins)", "fraction", "calibration",
                   "expected calibration error: mean |accuracy − confidence| over confidence bins"),
        MetricSpec("calib/aurc", "AURC (risk–coverage)", "fraction", "calibration",
                   "area under the risk–coverage curve: low when confident predictions are right"),
        MetricSpec("calib/nll", "NLL", "nats", "calib_nll", "mean −log p(label) on the test set"),
    )

    @classmethod
    def applies(cls, cfg: RunConfig) -> bool:
        # the spherical Z-loss is not a probability model: ECE/NLL of softmax(z) mean nothing
        return super().applies(cfg) and cfg.loss.name != "z_spherical"

    def measure(self, ctx: DiagnosticContext, step: int) -> Measurement:
        x, y = ctx.data.x_test, ctx.data.y_test
        if x.shape[0] == 0:  # no held-out set: fall back to the training probe set
            x, y = ctx.probe_x, ctx.probe_y
        with eval_mode(ctx.model), torch.no_grad():
            logits = torch.cat([ctx.model(x[s:s + CHUNK]) for s in range(0, x.shape[0], CHUNK)])
        return Measurement(metrics=calibration(logits, y, ctx.output_fn))


@register
class Grokking(Diagnostic):
    """Grokking progress: NLM cosine cos(−∇L, θ), softmax-collapse fraction (float32) and Fourier IPR."""

    name = "grokking"
    group = "grokking"
    every = 100
    cost = "1 forward + 1 backward over the probe set + rfft of the first layer"
    tasks = ("classification",)
    default_on = False
    panels = (
        PanelSpec("grokking", "Grokking progress measures", "fraction / cosine",
                  note="Softmax collapse and an NLM cosine near 1 mean the gradient only scales the weights "
                       "(Prieto et al. 2025); a rising Fourier IPR means the first layer is concentrating on a "
                       "few frequencies (the generalising circuit)."),
    )
    outputs = (
        MetricSpec("grok/sc_frac", "softmax-collapse fraction", "fraction", "grokking",
                   "share of samples whose float32 softmax sum is exactly 1 (gradient vanishes)"),
        MetricSpec("grok/nlm_cos", "NLM cosine cos(−∇L, θ)", "cosine", "grokking",
                   "→ 1 when the gradient only scales the weights (naive loss minimisation)"),
        MetricSpec("grok/ipr", "Fourier IPR of the first layer", "fraction", "grokking",
                   "mean inverse participation ratio of the first-layer weights over residue frequencies"),
    )
    artifacts = (ArtifactSpec("grok/ipr", "Fourier IPR per neuron",
                              "per neuron and operand: a histogram shows how many neurons use one frequency"),)

    def measure(self, ctx: DiagnosticContext, step: int) -> Measurement:
        metrics: dict[str, float] = {}
        artifacts: dict[str, dict[str, np.ndarray]] = {}
        with eval_mode(ctx.model):
            logits, _ = ctx.features()
            metrics["grok/sc_frac"] = softmax_collapse_fraction(logits)
            cos = nlm_cosine(ctx.objective, ctx.named_params())
        if cos is not None:
            metrics["grok/nlm_cos"] = cos
        ipr = modular_ipr(ctx.model, ctx.data)
        if ipr is not None:
            metrics["grok/ipr"] = float(ipr.mean())
            artifacts["grok/ipr"] = {"ipr": ipr.float().cpu().numpy()}  # per neuron and operand: histogram
        return Measurement(metrics=metrics, artifacts=artifacts)
