"""Co-teaching: two networks each train on the small-loss samples picked by the other."""

from __future__ import annotations

import copy
import inspect
import math
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from engine.regularizers._common import class_count, elapsed_steps
from engine.regularizers.base import Batch, Param, Regularizer, Setup, register


def keep_rate(epoch: float, tau: float, t_k: float) -> float:
    """R(T) = 1 − min(τ·T/T_k, τ): the fraction of each batch kept as small-loss samples."""
    return 1.0 - min(tau * epoch / t_k, tau)


def per_sample_ce(logits: Tensor, batch: Batch) -> Tensor:
    """Cross-entropy per example on the batch's current target (soft if ``y_soft`` is set)."""
    log_probs = logits.log_softmax(-1)
    if batch.y_soft is not None:
        return -(batch.y_soft.to(log_probs.dtype) * log_probs).sum(-1)
    return F.nll_loss(log_probs, batch.y, reduction="none")


def small_loss_mask(losses: Tensor, eligible: Tensor, k: int) -> Tensor:
    """Boolean mask of the k smallest losses among the eligible rows (ties: lowest index first)."""
    ranked = torch.where(eligible, losses, torch.full_like(losses, math.inf))
    order = torch.sort(ranked, stable=True).indices[:k]
    mask = torch.zeros_like(eligible)
    mask[order] = True
    return mask


def optimizer_like(optimizer: torch.optim.Optimizer, params: list[nn.Parameter]) -> torch.optim.Optimizer:
    """A fresh optimizer of ``optimizer``'s class and default settings over ``params`` (a peer's own)."""
    accepted = inspect.signature(type(optimizer).__init__).parameters
    return type(optimizer)(params, **{k: v for k, v in optimizer.defaults.items() if k in accepted})


def follow_schedule(peer_optimizer: torch.optim.Optimizer, optimizer: torch.optim.Optimizer) -> None:
    """Copy the run's current lr and weight decay into the peer's optimizer, so schedules and live
    changes apply to both networks."""
    source = optimizer.param_groups[0]
    for group in peer_optimizer.param_groups:
        for key in ("lr", "weight_decay"):
            if key in group and key in source:
                group[key] = source[key]


def peer_copy(model: nn.Module, generator: torch.Generator) -> nn.Module:
    """An independent re-draw of ``model``'s initialisation: a deep copy with every parameter
    tensor's entries randomly permuted (the technique's generator).

    Parameters are initialised i.i.d. within each tensor by every lab model (PyTorch's default,
    ``init_std`` or Gromov's normal init, times ``init_scale``), so a permutation is a fresh draw
    from exactly the configured distribution — without needing the RunConfig or touching the
    global RNG. Constant tensors (zero biases, LayerNorm gains) stay constant, as they should.
    """
    peer = copy.deepcopy(model)
    with torch.no_grad():
        for param in peer.parameters():
            perm = torch.randperm(param.numel(), generator=generator).to(param.device)
            param.copy_(param.flatten()[perm].view_as(param))
    return peer


@register
class CoTeaching(Regularizer):
    """Train two networks that each learn only from the small-loss samples chosen by the other, dropping noisy labels.

    *Co-teaching: Robust Training of Deep Neural Networks with Extremely Noisy Labels* (Han et
    al., NeurIPS 2018), as used in *Compressing Features for Learning with Noisy Labels*
    (Chen et al., 2022):

        R(T) = 1 − min(τ·T/T_k, τ)        T = epochs done (fractional: updates / steps_per_epoch)
        per batch: S_A = the ⌈R·B⌉ smallest per-sample CE under A; S_B likewise under B
                   update A on S_B and B on S_A

    A is the run's model (every reported metric is A's, never an ensemble); B is a private peer
    built from A's architecture with an independent initialisation (A's parameters randomly
    permuted within each tensor with the technique's generator: the same init distribution,
    whatever ``model.init_*`` says). Each update: ``transform_targets`` ranks the batch under both
    nets (no_grad, eval mode: no dropout, no global-RNG draws) and sets ``batch.labeled`` to S_B,
    so the trainer's masked-mean data loss trains A on S_B only; the wrapped step then takes A's
    optimizer step and one step of B on S_A, with its own optimizer of A's class and settings (lr
    and weight decay copied from A's optimizer every step, so schedules and live changes apply).
    B trains with plain softmax CE on the same (possibly smoothed) targets; its dropout masks use
    a forked global RNG seeded from the technique's generator, so A's masks are unchanged. In a
    few-label run only labelled rows are ranked and B = the labelled count.

    τ defaults to the dataset's realised label-noise rate (``data.noise``; 0 on clean data,
    where co-teaching keeps everything); ``tau_from_data=false`` uses ``tau``. Costs ≈ 2× a step.
    Wraps the optimizer step, so it cannot be combined with SAM. Metrics: ``coteach/kept_frac``
    (= ⌈R·B⌉/B), ``coteach/R``, ``coteach/overlap`` (|S_A ∩ S_B|/⌈R·B⌉: how much the peers agree).
    """

    name = "coteaching"
    group = "label"
    source = ("Co-teaching: Robust Training of Deep Neural Networks with Extremely Noisy Labels (Han et al., 2018); "
              "Compressing Features for Learning with Noisy Labels (Chen et al., 2022)")
    order = 95  # last among the target transforms: rank on the targets the nets actually train on
    tasks = ("classification",)
    params = (
        Param("tau", float, 0.4, 0.0, 0.8, help="forget rate τ (used when tau_from_data is false)"),
        Param("tau_from_data", bool, True, help="τ = the dataset's label-noise rate (data.noise) instead of tau"),
        Param("T_k", float, 10.0, 1.0, 50.0, help="epochs over which the forget rate ramps from 0 to τ"),
    )

    def __init__(self, setup: Setup, **values: Any) -> None:
        super().__init__(setup, **values)
        class_count(setup, self.name)
        noisy = getattr(setup.dataset, "is_noisy", None)
        data_rate = float(noisy.float().mean()) if noisy is not None and noisy.numel() else 0.0
        self.tau = data_rate if self["tau_from_data"] else self["tau"]
        self.steps_per_epoch = max(1, int(setup.steps_per_epoch))
        self.peer = peer_copy(setup.model, self.generator)
        self.peer.train()
        self.peer_optimizer: torch.optim.Optimizer | None = None
        self._pending: tuple[Batch, Tensor] | None = None  # (batch, S_A) for B's update
        self.last: dict[str, float] = {}
        self.last_peer_loss = float("nan")  # B's masked-mean CE on S_A at its latest update

    def rate_at(self, step: int) -> float:
        """R(T) for the update the trainer numbers ``step``, T = completed updates / steps_per_epoch."""
        return keep_rate(elapsed_steps(step) / self.steps_per_epoch, self.tau, self["T_k"])

    def _losses(self, model: nn.Module, batch: Batch) -> Tensor:
        was_training = model.training
        model.eval()
        try:
            with torch.no_grad():
                return per_sample_ce(model(batch.x), batch)
        finally:
            model.train(was_training)

    def transform_targets(self, batch: Batch, step: int) -> Batch:
        n = batch.x.shape[0]
        eligible = (batch.labeled.bool() if batch.labeled is not None
                    else torch.ones(n, dtype=torch.bool, device=batch.x.device))
        n_eligible = int(eligible.sum())
        rate = self.rate_at(step)
        k = math.ceil(rate * n_eligible)
        loss_a, loss_b = self._losses(self.setup.model, batch), self._losses(self.peer, batch)
        pick_a, pick_b = small_loss_mask(loss_a, eligible, k), small_loss_mask(loss_b, eligible, k)
        self._pending = (batch, pick_a)
        self.last = {"coteach/kept_frac": k / max(n_eligible, 1), "coteach/R": rate,
                     "coteach/overlap": float((pick_a & pick_b).sum()) / max(k, 1)}
        return replace(batch, labeled=pick_b)

    def metrics(self) -> dict[str, float]:
        return dict(self.last)

    def _peer_optimizer(self, optimizer: torch.optim.Optimizer) -> torch.optim.Optimizer:
        if self.peer_optimizer is None:
            self.peer_optimizer = optimizer_like(optimizer, [p for p in self.peer.parameters() if p.requires_grad])
        follow_schedule(self.peer_optimizer, optimizer)
        return self.peer_optimizer

    def _step_peer(self, optimizer: torch.optim.Optimizer) -> None:
        if self._pending is None:
            return
        batch, pick = self._pending
        self._pending = None
        peer_optimizer = self._peer_optimizer(optimizer)
        peer_optimizer.zero_grad(set_to_none=True)
        devices = [batch.x.device] if batch.x.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(int(torch.randint(2**62, (), generator=self.generator)))
            losses = per_sample_ce(self.peer(batch.x), batch)
        weight = pick.to(losses.dtype)
        loss = (losses * weight).sum() / weight.sum().clamp_min(1.0)
        loss.backward()
        peer_optimizer.step()
        self.last_peer_loss = float(loss.detach())

    def step(self, closure: Callable[[bool], Tensor], optimizer: torch.optim.Optimizer) -> Tensor:
        loss = closure(True)
        optimizer.step()
        self._step_peer(optimizer)
        return loss
