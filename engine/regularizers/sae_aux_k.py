"""AuxK: an auxiliary loss that makes dead SAE latents reconstruct the residual."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from engine.regularizers.base import LossContext, Param, Regularizer, Setup, register
from engine.regularizers.sae_topk import SAE_ONLY, sae_model

LOG_TOLERANCE = 1e-6  # aux-Zipf: a log-density shortfall below this counts as on the fit


def aux_k_latents(pre: Tensor, dead: Tensor, k_aux: int) -> Tensor:
    """ẑ = ReLU(TopK_{k_aux}(pre restricted to the dead latents)); zero outside the dead set.

    ``k_aux`` is capped at the number of dead latents, so only dead latents are ever selected."""
    k = min(k_aux, int(dead.sum()))
    if k == 0:
        return torch.zeros_like(pre)
    masked = pre.masked_fill(~dead, float("-inf"))
    values, indices = masked.topk(k, dim=-1)
    return torch.zeros_like(pre).scatter(-1, indices, torch.relu(values))


def zipf_fit(density: Tensor) -> Tensor:
    """Each latent's Zipf-law density for its rank: ρ̂_j = exp(a − s·log r_j).

    r_j is latent j's rank by density (1 = densest; ties by index); a and s are the least-squares
    fit of log ρ against log r over the latents with ρ > 0. With fewer than two such latents
    there is no law to fit and ρ̂ = ρ (no latent counts as under-used)."""
    order = torch.argsort(density, descending=True, stable=True)
    ranks = torch.empty_like(density)
    ranks[order] = torch.arange(1, len(density) + 1, dtype=density.dtype, device=density.device)
    alive = density > 0
    if int(alive.sum()) < 2:
        return density.clone()
    x, y = ranks[alive].log(), density[alive].log()
    slope = ((x - x.mean()) * (y - y.mean())).sum() / (x - x.mean()).pow(2).sum()
    return torch.exp(y.mean() + slope * (ranks.log() - x.mean()))


def zipf_shortfall(density: Tensor, floor: float) -> Tensor:
    """w_j = max(0, log ρ̂_j − log max(ρ_j, floor)), divided by max_j w_j (0 everywhere when no
    latent falls below its fit). ``floor`` keeps never-fired latents finite (the EMA's resolution);
    shortfalls under ``LOG_TOLERANCE`` are rounding in the fit, not under-use."""
    gap = zipf_fit(density).log() - density.clamp_min(floor).log()
    gap = torch.where(gap > LOG_TOLERANCE, gap, torch.zeros_like(gap))
    top = gap.max()
    return gap / top if top > 0 else gap


def weight_grad(x: Tensor, w: Tensor) -> Tensor:
    """x in the forward pass; w·∂ in the backward (w broadcast along x's last dimension)."""
    return w * x + (1.0 - w) * x.detach()


def aux_k_loss(residual: Tensor, reconstruction: Tensor) -> Tensor:
    """‖e − ê‖² / ‖e − ē‖² summed over the batch (ē: the batch mean of e)."""
    denominator = (residual - residual.mean(dim=0, keepdim=True)).pow(2).sum()
    return (residual - reconstruction).pow(2).sum() / denominator.clamp_min(torch.finfo(residual.dtype).tiny)


@register
class SAEAuxK(Regularizer):
    """Add α·‖e − W_dec ẑ‖²/‖e − ē‖², ẑ = the top k_aux *dead* latents, so dead latents learn the residual and revive.

    *Scaling and evaluating sparse autoencoders* (Gao et al., 2024). Per latent
    the technique counts the training samples since it last fired (z > 0 in the training
    forward; the counter is reset to 0 by a batch in which it fires and grows by B otherwise,
    updated once per update even under SAM); latent j is dead when its count exceeds
    ``window`` samples. Then, with e = (x − x̂).detach() the main reconstruction's residual and
    ẑ = ReLU(TopK_{k_aux}(pre restricted to dead latents)):
    L_aux = ‖e − W_dec ẑ‖² / ‖e − ē‖² (sums over the batch; no decoder bias, since e is a
    residual), added as α·L_aux; exactly 0 — and no gradient — when no latent is dead.
    Gradients of L_aux reach only the dead latents' encoder rows and biases and decoder columns
    — and b_dec, through pre = W_enc(x − b_dec) + b_enc, as in Gao et al.'s code.

    The pre-activations (with their graph) and the latents are captured by forward hooks on the
    SAE's encoder and decoder during the training forward; if none was captured they are
    recomputed from ``batch.x`` (``model.encode_pre``: one extra encoder matmul). ``k_aux`` 0
    means d/2. Works with any SAE activation (TopK, BatchTopK, Feature Choice or plain ReLU).
    ``dead`` holds the current dead mask.

    ``mode=zipf`` — aux-Zipf, a *provisional approximation*: the paper above's successor, *Adaptive
    Sparse Allocation with Mutual Choice & Feature Choice Sparse Autoencoders* (Ayonrinde, 2024),
    introduces aux_zipf_loss, generalising AuxK to under-used latents, but the exact formula is not
    public in the abstract. The lab's reading: track each latent's firing density ρ_j (EMA,
    ``density_decay``, of the fraction of batch rows where it fires; first batch as is), fit a Zipf
    law log ρ̂ = a − s·log rank by least squares over latents with ρ > 0, and call latent j
    under-used when ρ_j < ρ̂_j, with shortfall w_j = max(0, log ρ̂_j − log ρ_j) normalised to max 1
    (ρ floored at (1 − decay)/B, the EMA's resolution). The AuxK loss above is then computed with
    ẑ = the top k_aux *under-used* latents, and the gradient reaching latent j (its ẑ_j and its
    decoder column) is scaled by w_j — the loss value is AuxK's, the pull is weighted by the
    shortfall. 0 when every latent is at or above its fit. ``dead`` then holds the under-used mask
    and ``weights`` the w_j.
    """

    name = "sae_aux_k"
    group = "sae"
    requires = (SAE_ONLY,)
    source = "Scaling and evaluating sparse autoencoders (Gao et al., 2024)"
    params = (
        Param("alpha", float, 1 / 32, 0.0, 1.0, live=True, help="weight α of the auxiliary loss"),
        Param("k_aux", int, 0, 0, 4096, help="dead latents used per sample (0 = d/2)"),
        Param("window", int, 500, 1, 1_000_000_000,
              help="a latent is dead after this many training samples without firing (mode=dead)"),
        Param("mode", str, "dead", choices=("dead", "zipf"),
              help="dead: AuxK on dead latents; zipf: aux-Zipf, a provisional approximation (the exact "
                   "formula is not public): latents below their Zipf-fit density, weighted by the shortfall"),
        Param("density_decay", float, 0.99, 0.9, 0.9999, log=True,
              help="EMA decay of each latent's firing density (mode=zipf)"),
    )

    def __init__(self, setup: Setup, **values: Any) -> None:
        super().__init__(setup, **values)
        self.model = sae_model(setup, self.name)
        decoder: nn.Linear = self.model.decoder
        d, n_latents = decoder.weight.shape
        self.k_aux = self["k_aux"] or max(1, d // 2)
        self.since_fired = torch.zeros(n_latents, dtype=torch.long, device=decoder.weight.device)
        self.dead = torch.zeros(n_latents, dtype=torch.bool, device=decoder.weight.device)
        self.density: Tensor | None = None  # mode=zipf: EMA firing density per latent
        self.weights = torch.zeros(n_latents, device=decoder.weight.device)  # mode=zipf: shortfall w_j
        self._pre: Tensor | None = None
        self._z: Tensor | None = None
        self._last_step: int | None = None
        self.handles = [
            self.model.encoder.register_forward_hook(self._capture_pre),
            decoder.register_forward_pre_hook(self._capture_z),
        ]

    def _capture_pre(self, module: nn.Module, _inputs: Any, output: Tensor) -> None:
        if self.model.training and torch.is_grad_enabled():
            self._pre = output

    def _capture_z(self, module: nn.Module, inputs: tuple[Tensor, ...]) -> None:
        if self.model.training and torch.is_grad_enabled():
            self._z = inputs[0].detach()

    def update_counts(self, z: Tensor) -> None:
        """One batch of bookkeeping: latents that fired → 0, the others += B; refresh ``dead``
        (mode=zipf: the density EMA, the shortfall weights, and ``dead`` = under-used)."""
        if self["mode"] == "zipf":
            self.update_density(z)
            return
        fired = (z > 0).flatten(0, -2).any(dim=0)
        batch = z.flatten(0, -2).shape[0]
        self.since_fired = torch.where(fired, torch.zeros_like(self.since_fired), self.since_fired + batch)
        self.dead = self.since_fired > self["window"]

    def update_density(self, z: Tensor) -> None:
        rows = z.flatten(0, -2)
        rate = (rows > 0).to(self.weights.dtype).mean(dim=0)
        decay = self["density_decay"]
        self.density = rate if self.density is None else torch.lerp(self.density, rate, 1.0 - decay)
        self.weights = zipf_shortfall(self.density, (1.0 - decay) / rows.shape[0])
        self.dead = self.weights > 0

    def extra_loss(self, ctx: LossContext) -> Tensor | None:
        pre, z = self._pre, self._z
        self._pre = self._z = None
        if pre is None:
            pre = self.model.encode_pre(ctx.batch.x)
        if z is None:
            with torch.no_grad():
                z = self.model.activation(pre.detach())
        if ctx.step != self._last_step:  # once per update (SAM runs the closure twice)
            self.update_counts(z)
            self._last_step = ctx.step
        if not bool(self.dead.any()):
            return torch.zeros((), device=pre.device, dtype=pre.dtype)
        z_aux = aux_k_latents(pre, self.dead, self.k_aux)
        residual = (ctx.batch.x.flatten(1) - ctx.logits.flatten(1)).detach()
        if self["mode"] == "zipf":
            w = self.weights.to(pre.dtype)
            decoded = nn.functional.linear(weight_grad(z_aux, w), weight_grad(self.model.decoder.weight, w))
            return self["alpha"] * aux_k_loss(residual, decoded)
        return self["alpha"] * aux_k_loss(residual, self.model.decoder(z_aux))
