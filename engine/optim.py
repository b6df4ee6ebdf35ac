"""Optimizers and learning-rate schedules.

torch ships SGD, Adam and AdamW; Lion is not in ``torch.optim`` (2.13), so it is written here
(a dozen lines, following the paper's update). Weight-decay semantics follow torch and are stated
in the UI: coupled L2 for SGD/Adam, decoupled for AdamW/Lion.

The learning rate is computed each step as ``base_lr × schedule_factor(step)`` and written into
the optimizer's param groups, which is what makes a live change of ``optim.lr`` take effect at the
very next step without rebuilding the scheduler.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable

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
    if cfg.schedule == "step":
        return cfg.step_gamma ** ((step - warm) // cfg.step_every)
    return 1.0  # constant, and "warmup" after its warm-up


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr


def set_weight_decay(optimizer: torch.optim.Optimizer, weight_decay: float) -> None:
    for group in optimizer.param_groups:
        group["weight_decay"] = weight_decay
