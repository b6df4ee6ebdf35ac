"""Optimizers and learning-rate schedules.

torch ships SGD, Adam and AdamW; Lion and diffGrad are not in ``torch.optim`` (2.13), so they are
written here (a dozen lines each, following the papers' updates). Muon is ``torch.optim.Muon`` for
the 2-D weights combined with AdamW for everything else (:class:`MuonAdamW`). Weight-decay semantics
follow torch and are stated in the UI: coupled L2 for SGD/Adam/diffGrad, decoupled for
AdamW/Lion/Muon.

The learning rate is computed each step as ``base_lr × schedule_factor(step)`` and written into
the optimizer's param groups, which is what makes a live change of ``optim.lr`` take effect at the
very next step without rebuilding the scheduler.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import Tensor

from engine.config import OptimConfig


class Lion(torch.optim.Optimizer):
    """Lion (Chen et al. 2023, *Symbolic Discovery of Optimization Algorithms*).

    c = β₁m + (1−β₁)g;  θ ← θ − η(sign(c) + λθ);  m ← β₂m + (1−β₂)g. One state buffer.
    """

    def __init__(self, params: Iterable[Tensor], lr: float = 1e-4, betas: tuple[float, float] = (0.9, 0.99),
                 weight_decay: float = 0.0) -> None:
        super().__init__(params, {"lr": lr, "betas": betas, "weight_decay": weight_decay})

    @torch.no_grad()
    def step(self, closure: Callable[[], Tensor] | None = None) -> Tensor | None:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            lr, (beta1, beta2), wd = group["lr"], group["betas"], group["weight_decay"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:
                    state["exp_avg"] = torch.zeros_like(p)
                m = state["exp_avg"]
                update = (beta1 * m + (1 - beta1) * p.grad).sign_()
                if wd:
                    p.mul_(1 - lr * wd)
                p.add_(update, alpha=-lr)
                m.mul_(beta2).add_(p.grad, alpha=1 - beta2)
        return loss


class DiffGrad(torch.optim.Optimizer):
    """diffGrad, fixed (Dubey et al. 2019, *diffGrad: An Optimization Method for Convolutional Neural Networks*).

    Adam whose step is damped per coordinate by the friction ξ = sigmoid(|g_t − g_{t−1}|) ∈ [0.5, 1):

        m ← β₁m + (1−β₁)g;  v ← β₂v + (1−β₂)g²;  ξ = sigmoid(|g − g_prev|)   (g_prev = 0 at t = 1)
        θ ← θ − η·ξ·m̂/(√v̂ + ε)            (m̂, v̂ bias-corrected, as torch's Adam)
        g_prev ← g.clone()

    The clone is the fix: the original release stored the previous gradient *by reference*, so
    the difference was always 0, ξ ≡ 0.5 and the optimizer silently became Adam at half the
    learning rate (techniques §12.2). Weight decay is coupled L2 as in the paper's code
    (g ← g + λθ before everything, so ξ sees the decayed gradient). The last ξ of each tensor is
    kept in ``state[p]["xi"]`` for a histogram.
    """

    def __init__(self, params: Iterable[Tensor], lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 0.0) -> None:
        super().__init__(params, {"lr": lr, "betas": betas, "eps": eps, "weight_decay": weight_decay})

    @torch.no_grad()
    def step(self, closure: Callable[[], Tensor] | None = None) -> Tensor | None:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            lr, (beta1, beta2), eps, wd = group["lr"], group["betas"], group["eps"], group["weight_decay"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                grad = p.grad.add(p, alpha=wd) if wd else p.grad
                state = self.state[p]
                if not state:
                    state["step"] = 0
                    state["exp_avg"] = torch.zeros_like(p)
                    state["exp_avg_sq"] = torch.zeros_like(p)
                    state["prev_grad"] = torch.zeros_like(p)
                state["step"] += 1
                t = state["step"]
                m, v = state["exp_avg"], state["exp_avg_sq"]
                m.mul_(beta1).add_(grad, alpha=1 - beta1)
                v.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
                xi = torch.sigmoid((state["prev_grad"] - grad).abs_())
                state["prev_grad"] = grad.clone()  # a copy, never a reference (the fix)
                state["xi"] = xi
                denom = (v.sqrt() / math.sqrt(1 - beta2**t)).add_(eps)  # torch Adam's form
                p.addcdiv_(m * xi, denom, value=-lr / (1 - beta1**t))
        return loss


class MuonAdamW(torch.optim.Optimizer):
    """Muon for 2-D weights, AdamW for every other parameter, as one optimizer (techniques §12.5).

    2-D parameters (``p.ndim == 2``: linear weights, including the output layer) go to
    ``torch.optim.Muon``:  B ← μB + G;  B̃ = G + μB (Nesterov);  O = NewtonSchulz5(B̃) with
    (a, b, c) = (3.4445, −4.7750, 2.0315);  W ← W(1 − ηλ) − η·√max(1, rows/cols)·O
    (torch's ``adjust_lr_fn="original"``, Keller Jordan's scaling). torch keeps B as an EMA
    (``lerp``), i.e. (1 − μ)× the sum above; NewtonSchulz5 first divides by ‖B̃‖_F, so O is the
    same. NS runs in bfloat16 and gives singular values ≈ 0.7–1.2, not exactly 1. Every other parameter (biases,
    norm gains, conv kernels and other ≥3-D tensors) goes to ``torch.optim.AdamW`` unchanged.

    **How the lr maps.** There is one learning rate: every param group, Muon's and AdamW's, holds
    the same ``lr`` (and the same decoupled ``weight_decay``). ``param_groups`` is the two inner
    optimizers' own group dicts (Muon's first, each tagged ``group["part"]`` = "muon" | "adamw"),
    so ``set_lr``/``set_weight_decay`` — and anything else that writes ``group["lr"]`` — reach both
    parts at the next step. Muon's effective step on a W of shape rows×cols is
    lr·√max(1, rows/cols) per (approximately orthonormal) direction; AdamW's is ≈ lr per coordinate.
    The reference lr is 0.02 (Muon's); AdamW on the few non-matrix parameters shares it. ``state``
    is one dict shared with both inner optimizers (Muon: ``momentum_buffer``; AdamW: ``exp_avg``,
    ``exp_avg_sq``, ``step``), so per-parameter inspection works as for any torch optimizer.
    """

    def __init__(self, params: Iterable[Tensor], lr: float = 0.02, weight_decay: float = 0.0,
                 momentum: float = 0.95, nesterov: bool = True, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, ns_steps: int = 5) -> None:
        params = list(params)
        if any(isinstance(p, dict) for p in params):
            raise TypeError("MuonAdamW takes a flat list of parameters (it forms the groups itself)")
        matrices = [p for p in params if p.ndim == 2]
        others = [p for p in params if p.ndim != 2]
        self._muon = torch.optim.Muon(matrices, lr=lr, weight_decay=weight_decay, momentum=momentum,
                                      nesterov=nesterov, ns_steps=ns_steps) if matrices else None
        self._adamw = torch.optim.AdamW(others, lr=lr, betas=betas, eps=eps,
                                        weight_decay=weight_decay) if others else None
        groups: list[dict[str, Any]] = []
        for part, inner in (("muon", self._muon), ("adamw", self._adamw)):
            if inner is not None:
                for group in inner.param_groups:
                    group["part"] = part
                groups.extend(inner.param_groups)
        super().__init__(groups, {})  # keeps the inner optimizers' group dicts (shared, not copied)
        self.defaults = {"lr": lr, "weight_decay": weight_decay, "momentum": momentum, "nesterov": nesterov,
                         "betas": betas, "eps": eps, "ns_steps": ns_steps}
        self._link()

    def _link(self) -> None:
        """Point the inner optimizers at this optimizer's group dicts and state (after init or load)."""
        n_muon = len(self._muon.param_groups) if self._muon is not None else 0
        if self._muon is not None:
            self._muon.param_groups = self.param_groups[:n_muon]
            self._muon.state = self.state
        if self._adamw is not None:
            self._adamw.param_groups = self.param_groups[n_muon:]
            self._adamw.state = self.state

    @torch.no_grad()
    def step(self, closure: Callable[[], Tensor] | None = None) -> Tensor | None:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for inner in (self._muon, self._adamw):
            if inner is not None:
                inner.step()
        return loss

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict)  # rebuilds param_groups and state: re-share them
        self._link()


def build_optimizer(cfg: OptimConfig, params: list[torch.nn.Parameter]) -> torch.optim.Optimizer:
    betas = (cfg.beta1, cfg.beta2)
    if cfg.name == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov,
                               weight_decay=cfg.weight_decay)
    if cfg.name == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, betas=betas, eps=cfg.eps, weight_decay=cfg.weight_decay)
    if cfg.name == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, betas=betas, eps=cfg.eps, weight_decay=cfg.weight_decay)
    if cfg.name == "lion":
        return Lion(params, lr=cfg.lr, betas=betas, weight_decay=cfg.weight_decay)
    if cfg.name == "diffgrad":
        return DiffGrad(params, lr=cfg.lr, betas=betas, eps=cfg.eps, weight_decay=cfg.weight_decay)
    if cfg.name == "muon":
        # μ: optim.momentum when set (> 0), else Muon's 0.95; always Nesterov (techniques §12.5).
        return MuonAdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay, momentum=cfg.momentum or 0.95,
                         betas=betas, eps=cfg.eps)
    raise ValueError(f"optim.name: unknown optimizer {cfg.name!r}")


def schedule_factor(cfg: OptimConfig, step: int, total_steps: int) -> float:
    """Multiplier of the base lr for 0-based update ``step`` (warm-up applies to every schedule)."""
    warm = cfg.warmup_steps
    if warm and step < warm:
        return (step + 1) / warm
    if cfg.schedule == "cosine":
        span = max(1, total_steps - warm)
        progress = min(1.0, (step - warm) / span)
        return cfg.min_lr_frac + (1 - cfg.min_lr_frac) * 0.5 * (1 + math.cos(math.pi * progress))
    if cfg.schedule == "cosine_power":
        # sharpDARTS cosine power annealing: c = (1 + cos πt/T)/2, factor = min + (1 − min)(p^c − 1)/(p − 1);
        # expm1 keeps (p^c − 1)/(p − 1) accurate as p → 1, where it tends to c (plain cosine).
        span = max(1, total_steps - warm)
        c = 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warm) / span)))
        log_p = math.log(cfg.power_p)
        return cfg.min_lr_frac + (1 - cfg.min_lr_frac) * math.expm1(c * log_p) / math.expm1(log_p)
    if cfg.schedule == "step":
        return cfg.step_gamma ** ((step - warm) // cfg.step_every)
    return 1.0  # constant, and "warmup" after its warm-up


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr


def set_weight_decay(optimizer: torch.optim.Optimizer, weight_decay: float) -> None:
    for group in optimizer.param_groups:
        group["weight_decay"] = weight_decay
