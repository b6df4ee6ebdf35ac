"""Curvature numerics (engine/diagnostics/hessian.py) and instruments (curvature.py) vs exact Hessians.

Exact references: a quadratic toy with a known symmetric A (negative eigenvalues included) and
a tiny float64 MLP (8-32-32-3 tanh, 1,443 parameters, 64 random examples) whose exact Hessian
comes from ``torch.autograd.functional.hessian`` of the very objective the instruments use.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from engine.config import validate
from engine.data import Dataset
from engine.diagnostics import DiagnosticContext, get
from engine.diagnostics.hessian import (
    adam_preconditioner,
    flatten,
    hutchinson,
    hutchpp,
    lanczos_top_k,
    make_hvp,
    power_iteration,
    slq_density,
    unflatten,
)
from engine.models import LabModel


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# ---- fixtures ---------------------------------------------------------------------------------


class TinyMLP(LabModel):
    def __init__(self) -> None:
        super().__init__()
        self.l1, self.l2, self.out = nn.Linear(8, 32), nn.Linear(32, 32), nn.Linear(32, 3)

    def features(self, x: Tensor) -> Tensor:
        return torch.tanh(self.l2(torch.tanh(self.l1(x))))

    def head(self, h: Tensor) -> Tensor:
        return self.out(h)


def tiny_context(optim: dict[str, Any] | None = None, regularizers: dict[str, Any] | None = None,
                 seed: int = 0) -> DiagnosticContext:
    torch.manual_seed(seed)
    model = TinyMLP().double().eval()
    x = torch.randn(64, 8, dtype=torch.float64)
    y = torch.randint(0, 3, (64,))
    data = Dataset("tiny", "classification", x, y, x[:8], y[:8], num_classes=3)
    cfg = validate({"optim": optim or {"name": "sgd", "lr": 0.1}, "regularizers": regularizers or {}})
    o = cfg.optim
    params = list(model.parameters())
    if o.name == "sgd":
        opt: torch.optim.Optimizer = torch.optim.SGD(params, lr=o.lr, momentum=o.momentum, weight_decay=o.weight_decay)
    elif o.name == "adam":
        opt = torch.optim.Adam(params, lr=o.lr, betas=(o.beta1, o.beta2), eps=o.eps, weight_decay=o.weight_decay)
    else:
        from engine.optim import build_optimizer

        opt = build_optimizer(o, params)
    return DiagnosticContext(model, data, cfg, torch.arange(64), lambda out, b: F.cross_entropy(out, b.y), opt,
                             lambda: o.lr)


def exact_hessian(ctx: DiagnosticContext) -> Tensor:
    params = {n: p.detach() for n, p in ctx.named_params().items()}
    flat = flatten(params.values())
    return torch.autograd.functional.hessian(lambda f: ctx.objective(unflatten(f, params)), flat, vectorize=True)


@pytest.fixture(scope="module")
def tiny() -> tuple[DiagnosticContext, Tensor, Tensor]:
    ctx = tiny_context()
    h = exact_hessian(ctx)
    return ctx, h, torch.linalg.eigvalsh(h)


def quadratic(eigs: list[float], dim: int = 40, seed: int = 0) -> tuple[Tensor, Tensor]:
    """A = Q diag(eigs ∪ small spectrum) Qᵀ with a random orthogonal Q."""
    rest = torch.linspace(-0.5, 0.5, dim - len(eigs), dtype=torch.float64)
    spectrum = torch.cat([torch.tensor(eigs, dtype=torch.float64), rest])
    q, _ = torch.linalg.qr(torch.randn(dim, dim, generator=gen(seed), dtype=torch.float64))
    return q @ torch.diag(spectrum) @ q.T, spectrum


# ---- quadratic toy ----------------------------------------------------------------------------


def test_hvp_of_a_quadratic_is_the_matrix() -> None:
    a, _ = quadratic([3.0, -2.0], dim=12)
    hvp = make_hvp(lambda p: 0.5 * p["t"] @ a @ p["t"], {"t": torch.randn(12, dtype=torch.float64)})
    v = torch.randn(12, dtype=torch.float64)
    torch.testing.assert_close(hvp(v), a @ v)
    torch.testing.assert_close(hvp(v), a @ v)  # the first-order graph survives repeated products
    assert hvp.calls == 2


def test_power_lanczos_trace_and_slq_recover_a_quadratic() -> None:
    a, spectrum = quadratic([5.0, 3.0, 2.0, -1.5], dim=40)
    exact = torch.sort(spectrum, descending=True).values
    hvp = lambda v: a @ v  # noqa: E731
    lam, vec, n = power_iteration(hvp, 40, tol=1e-10, max_iter=500, generator=gen(1))
    assert lam == pytest.approx(5.0, rel=1e-6) and n < 500
    assert float(torch.dot(vec, a @ vec)) == pytest.approx(5.0, rel=1e-6)
    top = lanczos_top_k(hvp, 40, 3, generator=gen(2))
    np.testing.assert_allclose(top.eigenvalues, exact[:3].numpy(), rtol=1e-8)
    trace = float(spectrum.sum())
    for estimator in (hutchinson, hutchpp):
        res = estimator(hvp, 40, 99, gen(3))
        assert abs(res.estimate - trace) <= 3 * res.se + 1e-9
    slq = slq_density(hvp, 40, m=40, generator=gen(4))
    assert slq.weights.sum() == pytest.approx(1.0, abs=1e-12)
    assert slq.nodes.max() == pytest.approx(5.0, rel=1e-8) and slq.nodes.min() == pytest.approx(-1.5, rel=1e-8)


@pytest.mark.parametrize("eigs,shift", [([-8.0, 3.0], 0.0), ([-8.0, -1.0], -1.0)])
def test_negative_dominant_spectrum_gives_the_algebraic_maximum(eigs: list[float], shift: float) -> None:
    """|λ_min| > λ_max: the shifted re-run returns λ_max (also when every eigenvalue is negative)."""
    a, spectrum = quadratic(eigs, dim=30)
    a, spectrum = a + shift * torch.eye(30, dtype=torch.float64), spectrum + shift
    assert abs(float(spectrum.min())) > abs(float(spectrum.max()))
    lam, _, _ = power_iteration(lambda v: a @ v, 30, tol=1e-10, max_iter=2000, generator=gen(0))
    assert lam == pytest.approx(float(spectrum.max()), rel=1e-5)


def test_hutchpp_is_exact_on_a_low_rank_matrix() -> None:
    """Hutch++'s sketch captures a rank-5 matrix completely: no stochastic error left."""
    u = torch.randn(60, 5, generator=gen(5), dtype=torch.float64)
    a = u @ u.T
    res = hutchpp(lambda v: a @ v, 60, 30, gen(6))
    assert res.estimate == pytest.approx(float(torch.trace(a)), rel=1e-10)
    assert res.hvps == 30


# ---- tiny network: exact Hessian --------------------------------------------------------------


def test_top_eigenvalue_within_one_percent(tiny: tuple[DiagnosticContext, Tensor, Tensor]) -> None:
    ctx, _, eig = tiny
    hvp = make_hvp(ctx.objective, ctx.named_params())
    res = power_iteration(hvp, hvp.dim, tol=1e-4, generator=gen(0))
    assert res.eigenvalue == pytest.approx(float(eig[-1]), rel=0.01)
    lz = lanczos_top_k(hvp, hvp.dim, 3, generator=gen(1))
    np.testing.assert_allclose(lz.eigenvalues, eig[-3:].flip(0).numpy(), rtol=0.02)
    np.testing.assert_allclose(lz.eigenvalues[0], float(eig[-1]), rtol=1e-6)


def test_trace_estimators_within_three_standard_errors(tiny: tuple[DiagnosticContext, Tensor, Tensor]) -> None:
    ctx, h, _ = tiny
    hvp = make_hvp(ctx.objective, ctx.named_params())
    exact = float(torch.trace(h))
    for estimator, m in ((hutchinson, 100), (hutchpp, 99)):
        res = estimator(hvp, hvp.dim, m, gen(7))
        assert abs(res.estimate - exact) <= 3 * res.se, (estimator.__name__, res, exact)


def test_slq_density_integrates_to_one_with_mass_at_the_extremes(
        tiny: tuple[DiagnosticContext, Tensor, Tensor]) -> None:
    ctx, _, eig = tiny
    hvp = make_hvp(ctx.objective, ctx.named_params())
    res = slq_density(hvp, hvp.dim, m=80, generator=gen(8))
    assert np.trapezoid(res.density, res.grid) == pytest.approx(1.0, abs=1e-9)
    assert res.weights.sum() == pytest.approx(1.0, abs=1e-9) and np.all(res.weights >= 0)
    assert res.nodes.max() == pytest.approx(float(eig[-1]), rel=1e-3)
    assert res.nodes.min() == pytest.approx(float(eig[0]), rel=1e-3)
    assert res.grid[0] < float(eig[0]) and res.grid[-1] > float(eig[-1])


def test_warm_start_needs_fewer_products_than_cold() -> None:
    ctx = tiny_context()
    hvp = make_hvp(ctx.objective, ctx.named_params())
    before = power_iteration(hvp, hvp.dim, tol=1e-4, generator=gen(0))
    grads = torch.autograd.grad(ctx.objective(), list(ctx.model.parameters()))
    with torch.no_grad():  # a small training-like move of the weights
        for p, g in zip(ctx.model.parameters(), grads, strict=True):
            p.sub_(0.05 * g)
    moved = make_hvp(ctx.objective, ctx.named_params())
    cold = power_iteration(moved, moved.dim, tol=1e-4, generator=gen(1))
    warm = power_iteration(moved, moved.dim, v0=before.eigenvector, tol=1e-4)
    assert warm.n_iters < cold.n_iters
    assert warm.eigenvalue == pytest.approx(cold.eigenvalue, rel=0.01)


def test_adam_preconditioner_reproduces_torchs_update() -> None:
    """θ_{t+1} − θ_t = −η P⁻¹ m_t with P = (1 − β₁ᵗ)(√v̂ + ε): the P of Cohen et al. 2022."""
    ctx = tiny_context({"name": "adam", "lr": 0.01})
    params = list(ctx.model.parameters())
    for _ in range(3):
        ctx.optimizer.zero_grad()
        ctx.objective().backward()
        before = flatten(p.detach().clone() for p in params)
        ctx.optimizer.step()
    p_diag = adam_preconditioner(ctx.optimizer, params)
    assert p_diag is not None
    m = flatten(ctx.optimizer.state[p]["exp_avg"] for p in params)
    torch.testing.assert_close(flatten(p.detach() for p in params) - before, -0.01 * m / p_diag)


# ---- instruments ------------------------------------------------------------------------------


def test_sharpness_cold_then_warm_with_threshold(tiny: tuple[DiagnosticContext, Tensor, Tensor]) -> None:
    ctx, _, eig = tiny
    inst = get("sharpness")(ctx, seed=0)
    first = inst.measure(ctx, 0).metrics
    assert first["sharpness/top_eig"] == pytest.approx(float(eig[-1]), rel=0.02)
    assert first["sharpness/threshold"] == pytest.approx(2 / 0.1)
    assert first["sharpness/includes_penalty"] == 0.0 and first["sharpness/hvps"] > 5
    second = inst.measure(ctx, 50).metrics
    assert second["sharpness/hvps"] == 3  # warm: warm_iters products from the previous eigenvector
    assert second["sharpness/top_eig"] == pytest.approx(float(eig[-1]), rel=0.02)


def test_sharpness_restarts_cold_on_schedule_and_on_a_halved_value() -> None:
    ctx = tiny_context()
    inst = get("sharpness")(ctx, 0, restart_every=3)
    hvps = [inst.measure(ctx, s).metrics["sharpness/hvps"] for s in range(4)]
    assert hvps[1] == hvps[2] == 3 and hvps[0] > 3 and hvps[3] > 3  # cold at calls 0 and 3
    inst.raw.value = 100.0  # pretend λ was 100: a warm value below 50 means the eigenvector switched
    assert inst.measure(ctx, 4).metrics["sharpness/hvps"] > 5 + 5


def test_sharpness_thresholds_per_optimizer() -> None:
    ctx = tiny_context({"name": "sgd", "lr": 0.1, "momentum": 0.9})
    assert get("sharpness")(ctx, 0).measure(ctx, 0).metrics["sharpness/threshold"] == pytest.approx(38.0)
    ctx = tiny_context({"name": "lion", "lr": 1e-3})
    assert "sharpness/threshold" not in get("sharpness")(ctx, 0).measure(ctx, 0).metrics


def test_adam_threshold_only_with_preconditioned_sharpness() -> None:
    ctx = tiny_context({"name": "adam", "lr": 0.01})
    inst = get("sharpness")(ctx, 0, tol=1e-6, max_iter=1000)
    before = inst.measure(ctx, 0).metrics  # no optimizer state yet: no 38/η line against raw λ_max
    assert "sharpness/threshold" not in before and "sharpness/precond_top_eig" not in before
    for _ in range(2):
        ctx.optimizer.zero_grad()
        ctx.objective().backward()
        ctx.optimizer.step()
    params = list(ctx.model.parameters())
    p_diag = adam_preconditioner(ctx.optimizer, params)
    assert p_diag is not None
    metrics = get("sharpness")(ctx, 0, tol=1e-6, max_iter=1000).measure(ctx, 2).metrics
    assert metrics["sharpness/threshold"] == pytest.approx((2 + 2 * 0.9) / (0.01 * 0.1))
    d = p_diag.rsqrt()
    exact = torch.linalg.eigvalsh(d[:, None] * exact_hessian(ctx) * d[None, :])[-1]
    assert metrics["sharpness/precond_top_eig"] == pytest.approx(float(exact), rel=0.01)


def test_sharpness_includes_coupled_penalty_analytically(tiny: tuple[DiagnosticContext, Tensor, Tensor]) -> None:
    _, _, eig = tiny
    ctx = tiny_context({"name": "sgd", "lr": 0.1, "weight_decay": 0.05})
    metrics = get("sharpness")(ctx, 0, tol=1e-6, include_penalties=True).measure(ctx, 0).metrics
    assert metrics["sharpness/includes_penalty"] == 1.0
    assert metrics["sharpness/top_eig"] == pytest.approx(float(eig[-1]) + 0.05, rel=1e-3)
    trace = get("trace")(ctx, 0, include_penalties=True).measure(ctx, 0).metrics["sharpness/trace"]
    plain = get("trace")(ctx, 0).measure(ctx, 0).metrics["sharpness/trace"]
    assert trace - plain == pytest.approx(0.05 * 1443)


def test_trace_top_k_density_instruments(tiny: tuple[DiagnosticContext, Tensor, Tensor]) -> None:
    ctx, h, eig = tiny
    a = get("trace")(ctx, 3, method="hutchpp", m=30).measure(ctx, 0).metrics
    b = get("trace")(ctx, 3, method="hutchpp", m=30).measure(ctx, 0).metrics
    assert a == b  # own seeded generator: reproducible
    assert math.isfinite(a["sharpness/trace_se"]) and abs(a["sharpness/trace"] - float(torch.trace(h))) < 5 * a[
        "sharpness/trace_se"]
    top = get("top_k")(ctx, 0, k=3).measure(ctx, 0).metrics
    assert list(top) == ["sharpness/eig_1", "sharpness/eig_2", "sharpness/eig_3"]
    assert top["sharpness/eig_1"] == pytest.approx(float(eig[-1]), rel=1e-6)
    dens = get("density")(ctx, 0, m=40).measure(ctx, 0)
    art = dens.artifacts["density"]
    assert {"grid", "density", "nodes", "weights"} <= set(art)
    assert dens.metrics["sharpness/lambda_max_ritz"] == pytest.approx(float(eig[-1]), rel=1e-3)


def test_instruments_leave_the_model_untouched() -> None:
    ctx = tiny_context()
    before = [p.detach().clone() for p in ctx.model.parameters()]
    for name in ("sharpness", "trace", "top_k"):  # no preserved_state: they must not need it
        get(name)(ctx, 0).measure(ctx, 0)
    for p, b in zip(ctx.model.parameters(), before, strict=True):
        assert torch.equal(p, b) and p.grad is None and p.requires_grad
