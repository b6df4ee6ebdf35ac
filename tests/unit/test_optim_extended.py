"""Extended optimizer options: cosine power annealing and Muon (+ AdamW), and the optimizer/schedule/loss registries."""

from __future__ import annotations

import copy
import itertools
import math

import pytest
import torch

from engine.config import OptimConfig, validate
from engine.events import Step
from engine.optim import MuonAdamW, build_optimizer, schedule_factor, set_lr, set_weight_decay
from engine.trainer import Trainer

# ---- cosine power annealing ---------------------------------------------------------------------


@pytest.mark.parametrize("p, min_frac", [(10.0, 0.0), (10.0, 0.05), (2.0, 0.1), (1000.0, 0.001)])
def test_cosine_power_endpoints_and_monotone(p: float, min_frac: float) -> None:
    cfg = OptimConfig(schedule="cosine_power", power_p=p, min_lr_frac=min_frac)
    total = 200
    factors = [schedule_factor(cfg, t, total) for t in range(total + 1)]
    assert factors[0] == pytest.approx(1.0, abs=1e-12)
    assert factors[-1] == pytest.approx(min_frac, abs=1e-12)
    assert all(b <= a + 1e-15 for a, b in itertools.pairwise(factors))
    assert all(min_frac - 1e-12 <= f <= 1 + 1e-12 for f in factors)


def test_cosine_power_matches_formula() -> None:
    cfg = OptimConfig(schedule="cosine_power", power_p=10.0, min_lr_frac=0.1)
    total, t = 100, 30
    c = 0.5 * (1 + math.cos(math.pi * t / total))
    expected = 0.1 + 0.9 * (10.0**c - 1) / (10.0 - 1)
    assert schedule_factor(cfg, t, total) == pytest.approx(expected, rel=1e-12)
    # a large p front-loads the decay: below plain cosine everywhere inside the run
    cos_cfg = OptimConfig(schedule="cosine", min_lr_frac=0.1)
    assert schedule_factor(cfg, t, total) < schedule_factor(cos_cfg, t, total)


@pytest.mark.parametrize("min_frac", [0.0, 0.2])
def test_cosine_power_tends_to_cosine_as_p_to_1(min_frac: float) -> None:
    total = 120
    power = OptimConfig(schedule="cosine_power", power_p=1.0001, min_lr_frac=min_frac, warmup_steps=10)
    cosine = OptimConfig(schedule="cosine", min_lr_frac=min_frac, warmup_steps=10)
    gap = max(abs(schedule_factor(power, t, total) - schedule_factor(cosine, t, total)) for t in range(total + 1))
    assert gap < 1e-3


def test_cosine_power_honours_warmup() -> None:
    cfg = OptimConfig(schedule="cosine_power", warmup_steps=4)
    assert [schedule_factor(cfg, t, 50) for t in range(4)] == [0.25, 0.5, 0.75, 1.0]
    assert schedule_factor(cfg, 4, 50) == pytest.approx(1.0)


# ---- Muon + AdamW -------------------------------------------------------------------------------


def _net() -> torch.nn.Sequential:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(6, 6), torch.nn.Tanh(), torch.nn.Linear(6, 12),
                               torch.nn.Tanh(), torch.nn.Linear(12, 3), torch.nn.LayerNorm(3))


def _loss(net: torch.nn.Module, seed: int = 1) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(32, 6, generator=gen)
    y = torch.randint(0, 3, (32,), generator=gen)
    return torch.nn.functional.cross_entropy(net(x), y)


def test_build_optimizer_muon_splits_parameters() -> None:
    net = _net()
    opt = build_optimizer(OptimConfig(name="muon", lr=0.02, weight_decay=0.01), list(net.parameters()))
    assert isinstance(opt, MuonAdamW)
    parts = {g["part"]: g for g in opt.param_groups}
    assert {id(p) for p in parts["muon"]["params"]} == {id(p) for p in net.parameters() if p.ndim == 2}
    assert {id(p) for p in parts["adamw"]["params"]} == {id(p) for p in net.parameters() if p.ndim != 2}
    assert parts["muon"]["momentum"] == 0.95 and parts["muon"]["nesterov"]
    assert parts["muon"]["ns_coefficients"] == (3.4445, -4.775, 2.0315)
    assert all(g["lr"] == 0.02 and g["weight_decay"] == 0.01 for g in opt.param_groups)


@pytest.mark.parametrize("shape, scale", [((8, 8), 1.0), ((12, 3), 2.0), ((3, 12), 1.0)])
def test_muon_update_is_orthogonalised_and_scaled(shape: tuple[int, int], scale: float) -> None:
    torch.manual_seed(0)
    w = torch.nn.Parameter(torch.randn(*shape))
    before = w.detach().clone()
    lr = 0.02
    opt = MuonAdamW([w], lr=lr)
    # an ill-conditioned gradient (singular values 0.03 … 3), inside NS5's working range: five
    # quintic steps lift σ/‖G‖_F above ~1/300 into the band, smaller ones stay small (by design)
    u, _ = torch.linalg.qr(torch.randn(shape[0], shape[0]))
    v, _ = torch.linalg.qr(torch.randn(shape[1], shape[1]))
    k = min(shape)
    grad = u[:, :k] @ torch.diag(torch.logspace(-1.5, 0.5, k)) @ v[:, :k].T
    w.grad = grad.clone()
    opt.step()
    update = (before - w.detach()) / (lr * scale)
    sv = torch.linalg.svdvals(update)
    raw = torch.linalg.svdvals(grad)
    assert raw.max() / raw.min() > 50  # the gradient itself is far from orthogonal ...
    assert sv.min() > 0.5 and sv.max() < 1.5, sv  # ... its NewtonSchulz5 image is near-orthogonal
    # same direction as the gradient (positive alignment), momentum buffer started from zero
    assert torch.sum(update * grad) > 0
    assert "momentum_buffer" in opt.state[w]


def test_muon_nesterov_momentum_matches_reference() -> None:
    """Two steps: the update must be NS5(G₂ + μB₂), B₂ = μG₁ + G₂ (sum form; NS normalises scale)."""
    torch.manual_seed(0)
    w = torch.nn.Parameter(torch.randn(5, 5))
    opt = MuonAdamW([w], lr=0.1)
    g1, g2 = torch.randn(5, 5), torch.randn(5, 5)
    w.grad = g1.clone()
    opt.step()
    before = w.detach().clone()
    w.grad = g2.clone()
    opt.step()
    mu = 0.95
    b2 = mu * g1 + g2
    x = (g2 + mu * b2)
    x = x / x.norm()
    a, b, c = (3.4445, -4.7750, 2.0315)
    for _ in range(5):
        gram = x @ x.T
        x = a * x + (b * gram + c * gram @ gram) @ x
    update = (before - w.detach()) / 0.1
    assert torch.allclose(update, x, atol=0.05)  # torch runs NS in bfloat16


def test_non_matrix_parameters_follow_adamw_exactly() -> None:
    net = _net()
    ref_net = copy.deepcopy(net)
    opt = MuonAdamW(net.parameters(), lr=0.01, weight_decay=0.1, betas=(0.8, 0.99), eps=1e-6)
    ref = torch.optim.AdamW([p for p in ref_net.parameters() if p.ndim != 2], lr=0.01, weight_decay=0.1,
                            betas=(0.8, 0.99), eps=1e-6)
    for step in range(5):
        for model, o in ((net, opt), (ref_net, ref)):
            o.zero_grad(set_to_none=True)
            _loss(model, seed=step).backward()
        # the 2-D weights differ after step 1 (Muon vs frozen), so hand the reference the same
        # gradients: what is compared is the update rule applied to the non-matrix parameters
        for p, q in zip(net.parameters(), ref_net.parameters(), strict=True):
            if p.ndim != 2:
                q.grad = p.grad.clone()
        opt.step()
        ref.step()
        for p, q in zip(net.parameters(), ref_net.parameters(), strict=True):
            if p.ndim != 2:
                assert torch.equal(p, q)
                assert torch.equal(opt.state[p]["exp_avg_sq"], ref.state[q]["exp_avg_sq"])


def test_live_lr_and_weight_decay_reach_both_parts() -> None:
    torch.manual_seed(0)
    w = torch.nn.Parameter(torch.randn(4, 4))
    bias = torch.nn.Parameter(torch.randn(4))
    opt = MuonAdamW([w, bias], lr=0.02)
    set_lr(opt, 0.0)
    set_weight_decay(opt, 0.0)
    w.grad, bias.grad = torch.randn(4, 4), torch.randn(4)
    w0, b0 = w.detach().clone(), bias.detach().clone()
    opt.step()
    assert torch.equal(w, w0) and torch.equal(bias, b0)  # lr 0 reached Muon and AdamW
    set_lr(opt, 0.05)
    opt.step()
    assert not torch.equal(w, w0) and not torch.equal(bias, b0)
    set_weight_decay(opt, 2.0)
    assert opt._muon.param_groups[0]["weight_decay"] == 2.0
    assert opt._adamw.param_groups[0]["weight_decay"] == 2.0
    assert opt._muon.param_groups[0]["lr"] == 0.05 and opt._adamw.param_groups[0]["lr"] == 0.05


def test_state_dict_round_trip_keeps_parts_linked() -> None:
    net = _net()
    opt = MuonAdamW(net.parameters(), lr=0.02)
    _loss(net).backward()
    opt.step()
    other = MuonAdamW(net.parameters(), lr=0.5)
    other.load_state_dict(opt.state_dict())
    set_lr(other, 0.003)
    assert other._muon.param_groups[0] is other.param_groups[0]
    assert other._adamw.param_groups[0]["lr"] == 0.003
    assert other._muon.state is other.state and other._adamw.state is other.state
    first = next(p for p in net.parameters() if p.ndim == 2)
    assert torch.equal(other.state[first]["momentum_buffer"], opt.state[first]["momentum_buffer"])


def test_trainer_runs_muon_on_moons() -> None:
    cfg = validate({
        "seed": 3,
        "data": {"name": "moons", "n_train": 200, "n_test": 100},
        "model": {"name": "mlp", "width": 16, "depth": 2},
        "optim": {"name": "muon", "lr": 0.02, "schedule": "cosine_power", "power_p": 10.0},
        "train": {"steps": 20, "batch_size": 32, "eval_every": 10, "log_every": 1},
    })
    trainer = Trainer(cfg)
    assert isinstance(trainer.optimizer, MuonAdamW)
    events = list(trainer.events())
    assert trainer.state == "completed"
    losses = [e.metrics["train/loss"] for e in events if isinstance(e, Step) and "train/loss" in e.metrics]
    assert len(losses) >= 10 and all(math.isfinite(v) for v in losses)
    k = len(losses) // 4
    assert sum(losses[-k:]) / k < 0.95 * sum(losses[:k]) / k  # 20 steps on moons: ≈ 0.69 → 0.62


# ---- registries: one declaration per optimizer / schedule / loss -----------------------------------

def test_every_registered_optimizer_builds_and_steps() -> None:
    from engine.optim import OPTIMIZERS

    assert {"sgd", "adam", "adamw", "lion", "diffgrad", "muon"} <= set(OPTIMIZERS.load())
    for name in OPTIMIZERS.names():
        torch.manual_seed(0)
        layer = torch.nn.Linear(4, 3)
        before = layer.weight.detach().clone()
        opt = build_optimizer(OptimConfig(name=name, lr=0.01), list(layer.parameters()))
        layer(torch.randn(8, 4)).pow(2).sum().backward()
        opt.step()
        assert not torch.equal(before, layer.weight.detach()), name


def test_schedules_are_registered_with_their_own_parameters() -> None:
    from engine.optim import SCHEDULES

    assert {"constant", "cosine", "step", "warmup", "cosine_power"} <= set(SCHEDULES.load())
    assert [p.name for p in SCHEDULES["step"].params] == ["step_every", "step_gamma"]
    cfg = OptimConfig(schedule="step", step_every=3, step_gamma=0.5)
    assert [schedule_factor(cfg, t, 10) for t in (0, 2, 3, 6)] == [1.0, 1.0, 0.5, 0.25]


def test_losses_declare_their_tasks_and_parameters() -> None:
    from engine.losses import LOSSES

    assert LOSSES.lookup("mse").tasks >= {"classification", "regression", "reconstruction"}
    assert LOSSES.lookup("ce").tasks == {"classification"}
    assert [p.name for p in LOSSES.lookup("gce").params] == ["q"]


def test_optimizers_declare_what_the_curvature_instruments_need() -> None:
    from engine.optim import OPTIMIZERS

    cfg = validate({"optim": {"name": "sgd", "momentum": 0.9}}).optim
    assert OPTIMIZERS["sgd"].stability_threshold(cfg, 0.1) == pytest.approx((2 + 1.8) / 0.1)
    nesterov = validate({"optim": {"name": "sgd", "momentum": 0.9, "nesterov": True}}).optim
    assert OPTIMIZERS["sgd"].stability_threshold(nesterov, 0.1) == pytest.approx(3.8 / (0.1 * 2.8))
    adam = validate({"optim": {"name": "adam"}}).optim
    assert OPTIMIZERS["adam"].stability_threshold(adam, 0.01) == pytest.approx(3.8 / (0.01 * 0.1))
    assert OPTIMIZERS["lion"].stability_threshold(adam, 0.01) is None
    assert {n for n, o in OPTIMIZERS.load().items() if o.coupled_decay} == {"sgd", "adam", "diffgrad"}
    assert {n for n, o in OPTIMIZERS.load().items() if o.adam_preconditioned} == {"adam", "adamw"}
