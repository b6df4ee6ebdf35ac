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
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import Tensor

from engine.plugin import Param, Plugin
from engine.registry import Registry

if TYPE_CHECKING:
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
    learning rate. Weight decay is coupled L2 as in the paper's code
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
    """Muon for 2-D weights, AdamW for every other parameter, as one optimizer (Jordan et al. 2024, *Muon*).

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


class OptimizerFamily(Plugin):
    """Base of an optimizer declaration: its own ``optim.<param>`` keys, how it is built, and what the
    curvature instruments need to know about its dynamics (so they name no optimizer).

    ``coupled_decay``: ``optim.weight_decay`` enters the gradient, i.e. it is (λ/2)‖θ‖² in the loss
    and shifts the Hessian by λ. ``adam_preconditioned``: updates divide by Adam's √v̂ + ε, so the
    stability line bounds the preconditioned sharpness. ``stability_threshold``: the sharpness at
    which full-batch training at ``lr`` turns unstable (None when the optimizer has no such line).
    """

    coupled_decay: ClassVar[bool] = False
    adam_preconditioned: ClassVar[bool] = False

    @classmethod
    def stability_threshold(cls, cfg: OptimConfig, lr: float) -> float | None:
        return None

    @classmethod
    def build(cls, cfg: OptimConfig, params: list[torch.nn.Parameter]) -> torch.optim.Optimizer:
        raise NotImplementedError


class ScheduleFamily(Plugin):
    """Base of a learning-rate schedule: ``factor`` multiplies the base lr after the warm-up."""

    @classmethod
    def factor(cls, cfg: OptimConfig, step: int, total_steps: int) -> float:
        """Multiplier for 0-based update ``step`` ≥ ``cfg.warmup_steps``."""
        raise NotImplementedError


OPTIMIZERS: Registry[type[OptimizerFamily]] = Registry(__name__, "optim.name", default="adam")
SCHEDULES: Registry[type[ScheduleFamily]] = Registry(__name__, "optim.schedule", default="constant")

# Parameters several optimizers read; each optimizer lists the ones it uses.
MOMENTUM = Param("momentum", float, 0.0, 0, 1, max_open=True, help="heavy-ball momentum (muon: 0 = its own 0.95)")
NESTEROV = Param("nesterov", bool, False, help="Nesterov momentum (sgd with optim.momentum > 0)")
BETA1 = Param("beta1", float, 0.9, 0, 1, max_open=True, help="first-moment decay")
BETA2 = Param("beta2", float, 0.999, 0, 1, max_open=True, help="second-moment decay")
EPS = Param("eps", float, 1e-8, 0, 1, min_open=True, help="denominator floor")
MIN_LR_FRAC = Param("min_lr_frac", float, 0.0, 0, 1, help="cosine: final lr as a fraction of lr")


def register_optimizer(name: str, *params: Param, check: Callable[[Any], None] | None = None,
                       coupled_decay: bool = False, adam_preconditioned: bool = False,
                       stability: Callable[[Any, float], float | None] | None = None
                       ) -> Callable[[Builder], Builder]:
    """Decorator registering an optimizer builder ``(cfg, params) -> Optimizer`` with its parameters.

    ``check`` refuses an optim section this optimizer cannot run with (ValueError naming the key);
    ``coupled_decay``, ``adam_preconditioned`` and ``stability`` fill the ``OptimizerFamily``
    declarations of the same names.
    """
    def wrap(builder: Builder) -> Builder:
        OPTIMIZERS.add(name, type(f"{name}_optimizer", (OptimizerFamily,), {
            "__doc__": builder.__doc__, "__module__": builder.__module__, "name": name, "params": params,
            "coupled_decay": coupled_decay, "adam_preconditioned": adam_preconditioned,
            "build": classmethod(lambda _cls, cfg, ps: builder(cfg, ps)),
            "stability_threshold": classmethod(lambda _cls, cfg, lr: stability(cfg, lr) if stability else None),
            "check_config": classmethod(lambda _cls, cfg: check(cfg) if check else None)}))
        return builder
    return wrap


def register_schedule(name: str, *params: Param) -> Callable[[Factor], Factor]:
    """Decorator registering a schedule ``(cfg, step, total_steps) -> factor`` with its parameters."""
    def wrap(factor: Factor) -> Factor:
        SCHEDULES.add(name, type(f"{name}_schedule", (ScheduleFamily,), {
            "__doc__": factor.__doc__, "__module__": factor.__module__, "name": name, "params": params,
            "factor": classmethod(lambda _cls, cfg, step, total: factor(cfg, step, total))}))
        return factor
    return wrap


Builder = Callable[["OptimConfig", list[torch.nn.Parameter]], torch.optim.Optimizer]
Factor = Callable[["OptimConfig", int, int], float]


def _nesterov_needs_momentum(cfg: Any) -> None:
    if cfg.nesterov and cfg.momentum <= 0:
        raise ValueError("optim.nesterov needs optim.name=sgd and optim.momentum > 0")


def _momentum_line(cfg: Any, lr: float) -> float:
    """GD/SGD: 2/η; heavy-ball momentum β (torch's SGD, no dampening): (2 + 2β)/η; Nesterov:
    (2 + 2β)/(η(1 + 2β)) (Cohen et al. 2022, Table 1; both checked on the linearised update of a
    1-D quadratic)."""
    beta = cfg.momentum
    return (2 + 2 * beta) / (lr * (1 + 2 * beta)) if cfg.nesterov else (2 + 2 * beta) / lr


def _adaptive_line(cfg: Any, lr: float) -> float:
    """Adam/AdamW: (2 + 2β₁)/(η(1 − β₁)) = 38/η at β₁ = 0.9, a bound on the *preconditioned*
    sharpness only (Cohen et al. 2022)."""
    return (2 + 2 * cfg.beta1) / (lr * (1 - cfg.beta1))


@register_optimizer("sgd", MOMENTUM, NESTEROV, check=_nesterov_needs_momentum, coupled_decay=True,
                    stability=_momentum_line)
def _sgd(cfg: OptimConfig, params: list[torch.nn.Parameter]) -> torch.optim.Optimizer:
    """SGD (coupled weight decay), optionally with (Nesterov) momentum."""
    return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov,
                           weight_decay=cfg.weight_decay)


@register_optimizer("adam", BETA1, BETA2, EPS, coupled_decay=True, adam_preconditioned=True,
                    stability=_adaptive_line)
def _adam(cfg: OptimConfig, params: list[torch.nn.Parameter]) -> torch.optim.Optimizer:
    """Adam (coupled weight decay)."""
    return torch.optim.Adam(params, lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), eps=cfg.eps,
                            weight_decay=cfg.weight_decay)


@register_optimizer("adamw", BETA1, BETA2, EPS, adam_preconditioned=True, stability=_adaptive_line)
def _adamw(cfg: OptimConfig, params: list[torch.nn.Parameter]) -> torch.optim.Optimizer:
    """AdamW (decoupled weight decay)."""
    return torch.optim.AdamW(params, lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), eps=cfg.eps,
                             weight_decay=cfg.weight_decay)


@register_optimizer("lion", BETA1, BETA2)
def _lion(cfg: OptimConfig, params: list[torch.nn.Parameter]) -> torch.optim.Optimizer:
    """Lion (decoupled weight decay)."""
    return Lion(params, lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), weight_decay=cfg.weight_decay)


@register_optimizer("diffgrad", BETA1, BETA2, EPS, coupled_decay=True)
def _diffgrad(cfg: OptimConfig, params: list[torch.nn.Parameter]) -> torch.optim.Optimizer:
    """diffGrad (coupled weight decay)."""
    return DiffGrad(params, lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), eps=cfg.eps, weight_decay=cfg.weight_decay)


@register_optimizer("muon", MOMENTUM, BETA1, BETA2, EPS)
def _muon(cfg: OptimConfig, params: list[torch.nn.Parameter]) -> torch.optim.Optimizer:
    """Muon on the 2-D weights, AdamW on everything else (decoupled weight decay)."""
    # μ: optim.momentum when set (> 0), else Muon's 0.95; always Nesterov (Jordan et al. 2024, the Muon write-up).
    return MuonAdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay, momentum=cfg.momentum or 0.95,
                     betas=(cfg.beta1, cfg.beta2), eps=cfg.eps)


def build_optimizer(cfg: OptimConfig, params: list[torch.nn.Parameter]) -> torch.optim.Optimizer:
    """The configured optimizer over ``params`` (``ValueError`` naming ``optim.name`` if unknown)."""
    return OPTIMIZERS.lookup(cfg.name).build(cfg, params)


@register_schedule("constant")
def _constant(cfg: OptimConfig, step: int, total_steps: int) -> float:
    """Constant learning rate."""
    return 1.0


@register_schedule("warmup")
def _warmup(cfg: OptimConfig, step: int, total_steps: int) -> float:
    """Linear warm-up (optim.warmup_steps), then constant."""
    return 1.0


@register_schedule("cosine", MIN_LR_FRAC)
def _cosine(cfg: OptimConfig, step: int, total_steps: int) -> float:
    """Cosine decay from lr to min_lr_frac · lr over the steps after the warm-up."""
    warm = cfg.warmup_steps
    span = max(1, total_steps - warm)
    progress = min(1.0, (step - warm) / span)
    return cfg.min_lr_frac + (1 - cfg.min_lr_frac) * 0.5 * (1 + math.cos(math.pi * progress))


@register_schedule("cosine_power", Param("power_p", float, 10.0, 1, 1000, min_open=True,
                                         help="cosine_power schedule: base p (p → 1 is cosine)"), MIN_LR_FRAC)
def _cosine_power(cfg: OptimConfig, step: int, total_steps: int) -> float:
    """Cosine power annealing (sharpDARTS): a sharper cosine, base power_p."""
    # c = (1 + cos πt/T)/2, factor = min + (1 − min)(p^c − 1)/(p − 1);
    # expm1 keeps (p^c − 1)/(p − 1) accurate as p → 1, where it tends to c (plain cosine).
    warm = cfg.warmup_steps
    span = max(1, total_steps - warm)
    c = 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warm) / span)))
    log_p = math.log(cfg.power_p)
    return cfg.min_lr_frac + (1 - cfg.min_lr_frac) * math.expm1(c * log_p) / math.expm1(log_p)


@register_schedule("step", Param("step_every", int, 1000, 1, help="step schedule: decay period in steps"),
                   Param("step_gamma", float, 0.1, 0, 1, min_open=True, help="step schedule: decay factor"))
def _step(cfg: OptimConfig, step: int, total_steps: int) -> float:
    """Multiply the lr by step_gamma every step_every steps."""
    return cfg.step_gamma ** ((step - cfg.warmup_steps) // cfg.step_every)


def schedule_factor(cfg: OptimConfig, step: int, total_steps: int) -> float:
    """Multiplier of the base lr for 0-based update ``step`` (warm-up applies to every schedule)."""
    warm = cfg.warmup_steps
    if warm and step < warm:
        return (step + 1) / warm
    return SCHEDULES.lookup(cfg.schedule).factor(cfg, step, total_steps)


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr


def set_weight_decay(optimizer: torch.optim.Optimizer, weight_decay: float) -> None:
    for group in optimizer.param_groups:
        group["weight_decay"] = weight_decay
