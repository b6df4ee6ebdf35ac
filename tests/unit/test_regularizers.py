"""Mechanism tests for the regularizer plugins, on tiny hand-made models and tensors.

Deliberately independent of the trainer, datasets and model registries: each technique is built
from a fake ``Setup`` and its hooks are called directly, following the trainer's calling
convention (engine/regularizers/base.py).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import torch
from torch import Tensor, nn
from torch.nn import functional as F

from engine.regularizers import (
    REGISTRY,
    Batch,
    LossContext,
    Regularizer,
    Setup,
    all_techniques,
    get,
    normalize_regularizer_params,
)
from engine.regularizers.base import register
from engine.regularizers.elr import elr_penalty
from engine.regularizers.l1 import soft_threshold_
from engine.regularizers.stablemax import log_stablemax, stablemax_s

# ---- fakes -----------------------------------------------------------------------------------


@dataclass
class FakeData:
    n_train: int = 16
    num_classes: int | None = 3
    task: str = "classification"
    x_train: Tensor | None = None
    labeled: Tensor | None = None


class TinyNet(nn.Module):
    """Linear → ReLU → Dropout → Linear, with the LabModel ``dropout_slots`` convention."""

    def __init__(self, d_in: int = 4, width: int = 8, d_out: int = 3, p: float = 0.0) -> None:
        super().__init__()
        self.fc1 = nn.Linear(d_in, width)
        self.drop = nn.Dropout(p)
        self.fc2 = nn.Linear(width, d_out)
        self.dropout_slots: list[nn.Dropout] = [self.drop]

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.drop(torch.relu(self.fc1(x))))


def make_setup(model: nn.Module | None = None, *, lr: float = 0.1, total_steps: int = 100,
               n_train: int = 16, num_classes: int = 3) -> Setup:
    model = model if model is not None else TinyNet(d_out=num_classes)
    data = FakeData(n_train=n_train, num_classes=num_classes, x_train=torch.zeros(n_train, 4))
    return Setup(model=model, dataset=data, seed=0, total_steps=total_steps, num_classes=num_classes,  # type: ignore[arg-type]
                 device=torch.device("cpu"), lr=lambda: lr, steps_per_epoch=1)


def build(name: str, setup: Setup | None = None, **values: Any) -> Regularizer:
    """A technique with defaults filled and ``values`` validated, as the trainer builds it."""
    params = normalize_regularizer_params(name, values)
    params.pop("enabled")
    return get(name)(setup or make_setup(), **params)


def ctx_for(model: nn.Module, x: Tensor, y: Tensor, idx: Tensor | None = None) -> LossContext:
    logits = model(x)
    log_probs = F.log_softmax(logits, dim=1)
    batch = Batch(x, y, idx if idx is not None else torch.arange(len(y)))
    return LossContext(batch=batch, logits=logits, log_probs=log_probs, model=model, step=0, total_steps=100,
                       data_loss=F.nll_loss(log_probs, y))


def grads(model: nn.Module, loss: Tensor) -> list[Tensor]:
    return [g.detach().clone() for g in torch.autograd.grad(loss, list(model.parameters()))]


def cosine(a: Tensor, b: Tensor) -> float:
    return float((a.flatten() @ b.flatten()) / (a.norm() * b.norm()))


def soft_ce(log_probs: Tensor, batch: Batch) -> Tensor:
    """The trainer's CE: −Σ y_soft·log p (mean over batch) once y_soft is set, else plain NLL."""
    if batch.y_soft is None:
        return F.nll_loss(log_probs, batch.y)
    return -(batch.y_soft * log_probs).sum(dim=1).mean()


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


# ---- norm penalties -------------------------------------------------------------------------


def test_l2_gradient_gains_exactly_lambda_w() -> None:
    model = TinyNet().double()
    reg = build("l2", make_setup(model), **{"lambda": 0.01})
    x, y = torch.randn(5, 4, dtype=torch.float64), torch.tensor([0, 1, 2, 0, 1])
    ctx = ctx_for(model, x, y)
    plain = grads(model, ctx.data_loss)
    ctx = ctx_for(model, x, y)
    total = grads(model, ctx.data_loss + reg.extra_loss(ctx))
    for (name, p), g0, g1 in zip(model.named_parameters(), plain, total, strict=True):
        expected = 0.01 * p.detach() if p.dim() >= 2 else torch.zeros_like(p)  # biases excluded by default
        torch.testing.assert_close(g1 - g0, expected, rtol=1e-12, atol=1e-15, msg=name)


def test_weight_decay_multiplies_by_one_minus_lr_lambda() -> None:
    model = TinyNet()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    reg = build("weight_decay", make_setup(model, lr=0.05), **{"lambda": 2.0})
    reg.after_step(1)  # g = 0: the optimizer moved nothing, only the decay acts
    for n, p in model.named_parameters():
        expected = before[n] * (1 - 0.05 * 2.0) if p.dim() >= 2 else before[n]
        assert torch.equal(p.detach(), expected), n


def test_l1_proximal_matches_soft_threshold_with_exact_zeros() -> None:
    model = TinyNet()
    w0 = model.fc1.weight.detach().clone()
    reg = build("l1", make_setup(model, lr=0.5), **{"lambda": 0.01, "mode": "proximal"})
    reg.after_step(1)
    thr = 0.5 * 0.01
    expected = torch.sign(w0) * torch.clamp(w0.abs() - thr, min=0)
    assert torch.equal(model.fc1.weight.detach(), expected)
    assert int((model.fc1.weight == 0).sum()) == int((w0.abs() <= thr).sum()) > 0
    w = torch.tensor([-1.0, -0.001, 0.0, 0.002, 3.0], dtype=torch.float64)
    soft_threshold_(w, 0.002)
    assert w.tolist() == [-0.998, 0.0, 0.0, 0.0, 2.998]


def _sparse_regression(mode: str | None) -> float:
    """Full-batch GD on a sparse linear regression; returns the fraction of |w| < 1e-3."""
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(200, 40, generator=gen)
    w_true = torch.zeros(40)
    w_true[:4] = torch.tensor([2.0, -1.5, 1.0, 0.5])
    y = x @ w_true + 0.05 * torch.randn(200, generator=gen)
    model = nn.Linear(40, 1, bias=False)
    nn.init.normal_(model.weight, 0.0, 0.1, generator=gen)
    lr = 0.05
    reg = None if mode is None else build("l1", make_setup(model, lr=lr), **{"lambda": 1e-2, "mode": mode})
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    for step in range(1, 401):  # the trainer numbers updates 1..T
        opt.zero_grad()
        loss = 0.5 * (model(x).squeeze(1) - y).pow(2).mean()
        if reg is not None:
            extra = reg.extra_loss(ctx_for_regression(model, x, y, loss))
            loss = loss + (extra if extra is not None else 0.0)
        loss.backward()
        opt.step()
        if reg is not None:
            reg.after_step(step)
    return float((model.weight.abs() < 1e-3).float().mean())


def ctx_for_regression(model: nn.Module, x: Tensor, y: Tensor, loss: Tensor) -> LossContext:
    return LossContext(batch=Batch(x, y, torch.arange(len(y))), logits=model(x), log_probs=None, model=model,
                       step=0, total_steps=400, data_loss=loss)


def test_l1_drives_small_weights_to_zero_faster_than_none() -> None:
    plain = _sparse_regression(None)
    assert _sparse_regression("proximal") > plain + 0.5
    assert _sparse_regression("subgradient") > plain


def test_l2_init_gradient_is_two_lambda_times_displacement() -> None:
    model = TinyNet().double()
    reg = build("l2_init", make_setup(model), **{"lambda": 0.01})
    init = [p.detach().clone() for p in model.parameters()]
    x, y = torch.randn(5, 4, dtype=torch.float64), torch.tensor([0, 1, 2, 0, 1])
    assert all(g.abs().max() == 0 for g in grads(model, reg.extra_loss(ctx_for(model, x, y))))  # 0 at θ₀
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p))
    for g, p, p0 in zip(grads(model, reg.extra_loss(ctx_for(model, x, y))), model.parameters(), init, strict=True):
        torch.testing.assert_close(g, 2 * 0.01 * (p.detach() - p0), rtol=1e-12, atol=1e-15)


# ---- dropout --------------------------------------------------------------------------------


def test_dropout_is_unbiased_in_training_and_identity_in_eval() -> None:
    model = TinyNet()
    reg = build("dropout", make_setup(model), p=0.3)
    assert model.drop.p == 0.3
    h = torch.linspace(0.5, 2.0, 8).expand(20_000, 8)
    model.train()
    mean = model.drop(h).mean(dim=0)
    torch.testing.assert_close(mean, h[0], rtol=0.01, atol=0.0)
    model.eval()
    x = torch.randn(6, 4)
    out = model(x)
    assert torch.equal(out, model(x))
    assert torch.equal(model.drop(h), h)
    reg.set("p", 0.5)  # live change applies at once
    assert model.drop.p == 0.5
    with pytest.raises(ValueError, match=r"^regularizers\.dropout\.schedule"):
        reg.set("schedule", "late")


@pytest.mark.parametrize(("schedule", "before", "after"), [("constant", 0.2, 0.2), ("early", 0.2, 0.0),
                                                           ("late", 0.0, 0.2)])
def test_dropout_schedules_switch_at_t_s(schedule: str, before: float, after: float) -> None:
    model = TinyNet()
    reg = build("dropout", make_setup(model, total_steps=100), p=0.2, schedule=schedule, t_s=0.3)
    used = []
    for step in range(1, 101):  # the trainer numbers updates 1..T and calls after_step(step)
        used.append(model.drop.p)
        reg.after_step(step)
    assert used == [before] * 30 + [after] * 70  # switch once t_s·T = 30 updates are done


def test_dropout_penultimate_only_sets_last_slot() -> None:
    model = TinyNet()
    first = nn.Dropout(0.7)
    model.dropout_slots.insert(0, first)
    build("dropout", make_setup(model), p=0.4, where="penultimate")
    assert (first.p, model.drop.p) == (0.0, 0.4)


def test_dropout_refuses_a_model_without_slots() -> None:
    model = TinyNet()
    model.dropout_slots = []
    with pytest.raises(ValueError, match=r"^regularizers\.dropout: model TinyNet has no dropout slots"):
        build("dropout", make_setup(model))


# ---- label techniques -----------------------------------------------------------------------


def test_label_smoothing_targets_follow_the_formula() -> None:
    reg = build("label_smoothing", make_setup(num_classes=4), eps=0.2)
    y = torch.tensor([0, 3, 1])
    out = reg.transform_targets(Batch(torch.zeros(3, 4), y, torch.arange(3)), step=1)
    expected = 0.8 * F.one_hot(y, 4).float() + 0.2 / 4
    assert torch.equal(out.y_soft, expected)
    torch.testing.assert_close(out.y_soft.sum(1), torch.ones(3))
    mixed = torch.tensor([[0.25, 0.75, 0.0, 0.0]])  # smoothing composes with an earlier soft target
    out = reg.transform_targets(Batch(torch.zeros(1, 4), y[:1], torch.arange(1), mixed), step=1)
    torch.testing.assert_close(out.y_soft, 0.8 * mixed + 0.05)


def test_label_smoothing_switches_off_at_t_off() -> None:
    reg = build("label_smoothing", make_setup(total_steps=100), eps=0.1, t_off=0.5)
    batch = Batch(torch.zeros(2, 4), torch.tensor([0, 1]), torch.arange(2))
    on = [reg.transform_targets(batch, step) is not batch for step in range(1, 101)]  # updates 1..T
    assert on == [True] * 50 + [False] * 50
    never_off = build("label_smoothing", make_setup(total_steps=100), eps=0.1, t_off=1.0)
    assert never_off.transform_targets(batch, step=100).y_soft is not None


def test_mixup_refuses_few_label_runs() -> None:
    setup = make_setup()
    setup.dataset.labeled = torch.ones(16, dtype=torch.bool)
    with pytest.raises(ValueError, match=r"^regularizers\.mixup: a few-label run"):
        build("mixup", setup)


def test_mixup_tiny_alpha_reduces_to_plain_ce() -> None:
    model = TinyNet()
    reg = get("mixup")(make_setup(model), alpha=1e-6, per_sample=False)  # below the UI range, as a limit test
    x, y = torch.randn(12, 4), torch.randint(0, 3, (12,))
    plain = F.nll_loss(F.log_softmax(model(x), 1), y)
    for step in range(5):
        batch = reg.transform_batch(Batch(x, y, torch.arange(12)), step)
        assert float(reg.last_lam) in (0.0, 1.0)
        mixed = soft_ce(F.log_softmax(model(batch.x), 1), batch)
        torch.testing.assert_close(mixed, plain, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("per_sample", [False, True])
def test_mixup_mixes_inputs_and_targets_with_the_same_lambda(per_sample: bool) -> None:
    reg = build("mixup", alpha=1.0, per_sample=per_sample)
    x, y = torch.randn(10, 4), torch.randint(0, 3, (10,))
    out = reg.transform_batch(Batch(x, y, torch.arange(10)), 0)
    torch.testing.assert_close(out.y_soft.sum(1), torch.ones(10))
    lam, perm = reg.last_lam.view(-1, 1), reg.last_perm
    assert lam.numel() == (10 if per_sample else 1)
    assert sorted(perm.tolist()) == list(range(10))
    onehot = F.one_hot(y, 3).float()
    torch.testing.assert_close(out.x, lam * x + (1 - lam) * x[perm])
    torch.testing.assert_close(out.y_soft, lam * onehot + (1 - lam) * onehot[perm])


def test_elr_buffer_rows_sum_to_one_minus_beta_power_k() -> None:
    model = TinyNet()
    reg = build("elr", make_setup(model, n_train=16), **{"lambda": 3.0, "beta": 0.7})
    x, y, idx = torch.randn(4, 4), torch.tensor([0, 1, 2, 0]), torch.tensor([3, 7, 11, 15])
    for k in range(1, 6):
        loss = reg.extra_loss(ctx_for(model, x, y, idx))
        assert loss.requires_grad and math.isfinite(loss.item())
        torch.testing.assert_close(reg.targets[idx].sum(1), torch.full((4,), 1 - 0.7**k), rtol=1e-6, atol=1e-6)
    untouched = torch.ones(16, dtype=torch.bool)
    untouched[idx] = False
    assert reg.targets[untouched].abs().max() == 0


def test_elr_gradient_wrt_p_matches_the_formula() -> None:
    gen = torch.Generator().manual_seed(0)
    b, c, lam = 6, 5, 3.0
    p = torch.softmax(torch.randn(b, c, generator=gen, dtype=torch.float64), 1).requires_grad_(True)
    t = torch.softmax(torch.randn(b, c, generator=gen, dtype=torch.float64), 1) * 0.8
    (grad,) = torch.autograd.grad(elr_penalty(p, t, lam), p)
    inner = (t * p.detach()).sum(1, keepdim=True)
    torch.testing.assert_close(grad, -lam * t / ((1 - inner) * b), rtol=1e-12, atol=1e-15)


# ---- SAM ------------------------------------------------------------------------------------


class SpyOptimizer(torch.optim.SGD):
    """SGD that records the parameters it was asked to step from."""

    seen: list[Tensor]

    def step(self, closure: Callable[[], float] | None = None) -> None:  # type: ignore[override]
        self.seen = [p.detach().clone() for g in self.param_groups for p in g["params"]]
        super().step()


def _closure(model: nn.Module, opt: torch.optim.Optimizer, x: Tensor, y: Tensor,
             chain: list[Regularizer] = (), record: list[list[Tensor]] | None = None) -> Callable[[bool], Tensor]:
    def closure(apply_after_backward: bool) -> Tensor:
        if record is not None:
            record.append([p.detach().clone() for p in model.parameters()])
        opt.zero_grad()
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        if apply_after_backward:
            for reg in sorted(chain, key=lambda r: r.order):
                reg.after_backward(list(model.parameters()), 0)
        return loss.detach()

    return closure


@pytest.mark.parametrize("adaptive", [False, True])
def test_sam_perturbation_has_norm_rho_and_theta_is_restored_exactly(adaptive: bool) -> None:
    model = TinyNet().double()
    x, y = torch.randn(8, 4, dtype=torch.float64), torch.randint(0, 3, (8,))
    reg = build("sam", make_setup(model), rho=0.05, adaptive=adaptive)
    opt = SpyOptimizer(model.parameters(), lr=0.1)
    theta = [p.detach().clone() for p in model.parameters()]
    loss_at_theta = F.cross_entropy(model(x), y).detach()
    seen: list[list[Tensor]] = []
    loss = reg.step(_closure(model, opt, x, y, record=seen), opt)
    assert len(seen) == 2 and torch.equal(seen[0][0], theta[0])
    eps = [a - b for a, b in zip(seen[1], theta, strict=True)]
    moved = torch.sqrt(sum(e.pow(2).sum() for e in eps))
    assert reg.last_perturbation_norm == pytest.approx(float(moved), rel=1e-9)
    # SAM's ball is Euclidean; ASAM's is Euclidean after rescaling by T⁻¹ = 1/|θ|
    radius = torch.sqrt(sum((e / t.abs()).pow(2).sum() for e, t in zip(eps, theta, strict=True))) if adaptive else moved
    assert abs(float(radius) - 0.05) <= 1e-6 * 0.05
    assert all(torch.equal(a, b) for a, b in zip(opt.seen, theta, strict=True))  # restored before the step
    assert torch.equal(loss, loss_at_theta)  # SAM reports the loss at θ, not at θ + e


def test_sam_rho_zero_is_the_plain_optimizer_bit_for_bit() -> None:
    x, y = torch.randn(8, 4), torch.randint(0, 3, (8,))
    plain, wrapped = TinyNet(), TinyNet()
    wrapped.load_state_dict(plain.state_dict())
    opt_a = torch.optim.Adam(plain.parameters(), lr=0.01)
    opt_b = torch.optim.Adam(wrapped.parameters(), lr=0.01)
    reg = build("sam", make_setup(wrapped), rho=0.0)
    for _ in range(3):
        opt_a.zero_grad()
        F.cross_entropy(plain(x), y).backward()
        opt_a.step()
        reg.step(_closure(wrapped, opt_b, x, y), opt_b)
    assert all(torch.equal(a, b) for a, b in zip(plain.parameters(), wrapped.parameters(), strict=True))


def test_sam_runs_the_after_backward_chain_only_at_the_perturbed_point() -> None:
    model = TinyNet()
    x, y = torch.randn(8, 4), torch.randint(0, 3, (8,))
    calls: list[int] = []

    class Counter(Regularizer):
        name, group, source = "counter", "test", "test"

        def after_backward(self, params: list[nn.Parameter], step: int) -> dict[str, float]:
            calls.append(step)
            return {}

    reg = build("sam", make_setup(model), rho=0.05)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    reg.step(_closure(model, opt, x, y, chain=[Counter(make_setup(model))]), opt)
    assert calls == [0]


# ---- gradient surgery -----------------------------------------------------------------------


def _set_grads(model: nn.Module, gen: torch.Generator) -> list[Tensor]:
    for p in model.parameters():
        p.grad = torch.randn(p.shape, generator=gen)
    return [p.grad.clone() for p in model.parameters()]


def test_orthograd_per_tensor_removes_the_radial_component_and_keeps_the_norm() -> None:
    model = nn.Sequential(nn.Linear(64, 128), nn.Linear(128, 3, bias=False))
    with torch.no_grad():
        model[0].bias.zero_()  # a zero tensor passes through unchanged
    before = _set_grads(model, torch.Generator().manual_seed(0))
    build("orthograd", make_setup(model)).after_backward(list(model.parameters()), 0)
    for p, g in zip(model.parameters(), before, strict=True):
        if p.detach().abs().max() == 0:
            assert torch.equal(p.grad, g)
            continue
        assert abs(cosine(p.grad, p.detach())) < 1e-6
        torch.testing.assert_close(p.grad.norm(), g.norm(), rtol=1e-6, atol=0)


def test_orthograd_global_scope_is_orthogonal_to_the_whole_parameter_vector() -> None:
    model = TinyNet()
    before = _set_grads(model, torch.Generator().manual_seed(1))
    build("orthograd", make_setup(model), scope="global").after_backward(list(model.parameters()), 0)
    g = torch.cat([p.grad.flatten() for p in model.parameters()])
    w = torch.cat([p.detach().flatten() for p in model.parameters()])
    assert abs(cosine(g, w)) < 1e-6
    torch.testing.assert_close(g.norm(), torch.cat([b.flatten() for b in before]).norm(), rtol=1e-6, atol=0)


def test_grad_clip_bounds_the_norm_and_keeps_the_direction() -> None:
    model = TinyNet()
    before = torch.cat([g.flatten() for g in _set_grads(model, torch.Generator().manual_seed(2))])
    reg = build("grad_clip", make_setup(model), c=0.5)
    metrics = reg.after_backward(list(model.parameters()), 0)
    after = torch.cat([p.grad.flatten() for p in model.parameters()])
    assert float(after.norm()) <= 0.5 * (1 + 1e-6)
    assert cosine(after, before) == pytest.approx(1.0, abs=1e-6)
    assert metrics["grad/clipped_frac"] == 1.0
    assert metrics["grad/norm_clipped"] == pytest.approx(float(after.norm()))
    reg.set("c", 100.0)  # within the bound: untouched bit-for-bit
    kept = [p.grad.clone() for p in model.parameters()]
    assert reg.after_backward(list(model.parameters()), 1)["grad/clipped_frac"] == 0.0
    assert all(torch.equal(p.grad, k) for p, k in zip(model.parameters(), kept, strict=True))


def test_grad_clip_per_tensor_bounds_every_tensor() -> None:
    model = TinyNet()
    _set_grads(model, torch.Generator().manual_seed(3))
    metrics = build("grad_clip", make_setup(model), c=0.5, mode="per_tensor").after_backward(
        list(model.parameters()), 0)
    assert all(float(p.grad.norm()) <= 0.5 * (1 + 1e-6) for p in model.parameters())
    assert 0.0 < metrics["grad/clipped_frac"] <= 1.0


def test_grad_noise_std_matches_the_annealing_schedule() -> None:
    param = nn.Parameter(torch.zeros(200_000))
    reg = build("grad_noise", make_setup(), eta=0.3, gamma=0.55)
    for t in (0, 10):
        param.grad = torch.zeros_like(param)
        metrics = reg.after_backward([param], t + 1)  # the trainer numbers updates from 1; t from 0
        expected = math.sqrt(0.3 / (1 + t) ** 0.55)
        assert metrics["grad/noise_std"] == pytest.approx(expected)
        assert float(param.grad.std()) == pytest.approx(expected, rel=0.02)


def test_grad_noise_eta_zero_is_bit_identical_and_uses_its_own_generator() -> None:
    param = nn.Parameter(torch.zeros(10))
    param.grad = torch.randn(10)
    kept = param.grad.clone()
    reg, noisy = build("grad_noise", make_setup(), eta=0.0), build("grad_noise", make_setup(), eta=0.5)
    state = torch.get_rng_state()
    assert reg.after_backward([param], 1) == {"grad/noise_std": 0.0}
    assert torch.equal(param.grad, kept)
    noisy.after_backward([param], 1)
    assert torch.equal(torch.get_rng_state(), state)  # the global stream is never touched


# ---- StableMax ------------------------------------------------------------------------------


def test_stablemax_probabilities_are_a_distribution_with_the_same_argmax() -> None:
    logits = torch.randn(32, 7) * 5
    reg = build("stablemax")
    log_p = reg.output_fn(logits)
    p = log_p.exp()
    assert log_p.dtype == torch.float64
    assert bool((p > 0).all())
    torch.testing.assert_close(p.sum(1), torch.ones(32, dtype=torch.float64), rtol=1e-12, atol=1e-12)
    assert torch.equal(p.argmax(1), logits.argmax(1))


def test_stablemax_s_is_continuous_with_slope_one_at_zero() -> None:
    assert float(stablemax_s(torch.tensor(0.0, dtype=torch.float64))) == 1.0
    for x0 in (-1e-9, 1e-9):
        x = torch.tensor(x0, dtype=torch.float64, requires_grad=True)
        (slope,) = torch.autograd.grad(stablemax_s(x), x)
        assert stablemax_s(x).item() == pytest.approx(1.0, abs=1e-8)
        assert float(slope) == pytest.approx(1.0, abs=1e-8)
    xs = torch.linspace(-50, 50, 1001, dtype=torch.float64)
    assert bool((stablemax_s(xs).diff() > 0).all())


def test_stablemax_does_not_collapse_where_softmax_does() -> None:
    logits = torch.tensor([[100.0, 0.0, 0.0]])
    assert float(torch.softmax(logits.double(), 1)[0, 0]) == 1.0
    p = log_stablemax(logits).exp()
    assert float(p[0, 0]) < 1.0
    assert float(p[0, 0]) == pytest.approx(101 / 103)


# ---- catalog-wide contract -----------------------------------------------------------------


EXPECTED = {"l2", "weight_decay", "l1", "l2_init", "dropout", "label_smoothing", "mixup", "elr", "sam",
            "orthograd", "stablemax", "grad_clip", "grad_noise"}


def test_catalog_contains_the_first_techniques() -> None:
    assert set(all_techniques()) >= EXPECTED


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_every_technique_honours_the_plugin_contract(name: str) -> None:
    cls = get(name)
    assert cls.summary().strip() and cls.source.strip() and cls.group.strip()
    assert cls.__doc__ is not None and len(cls.__doc__.strip().splitlines()) > 2  # idea line + paper/conventions
    for spec in cls.params:
        where = f"regularizers.{name}.{spec.name}"
        assert spec.coerce(spec.default, where) == spec.default
        if spec.min is not None:
            assert spec.default >= spec.min
        if spec.max is not None:
            assert spec.default <= spec.max
        assert spec.help
    with pytest.raises(ValueError, match=rf"^regularizers\.{name}\.bogus"):
        normalize_regularizer_params(name, {"bogus": 1})
    for spec in cls.params:
        for bad in ([spec.min - 1] if spec.min is not None else []) + ([spec.max + 1] if spec.max is not None else []):
            with pytest.raises(ValueError, match=rf"^regularizers\.{name}\.{spec.name}"):
                normalize_regularizer_params(name, {spec.name: bad})
        if spec.choices:
            with pytest.raises(ValueError, match=rf"^regularizers\.{name}\.{spec.name}"):
                normalize_regularizer_params(name, {spec.name: "no-such-choice"})
    reg = build(name)
    for spec in cls.params:
        if spec.live:
            reg.set(spec.name, spec.default)
        else:
            with pytest.raises(ValueError, match=rf"^regularizers\.{name}\.{spec.name}"):
                reg.set(spec.name, spec.default)


# ---- compatibility --------------------------------------------------------------------------


@pytest.fixture
def twins() -> Iterator[None]:
    """Temporarily register a second output replacement and a second step wrapper."""

    class OtherOutput(Regularizer):
        """Test double: found as an output function by overriding ``output_fn``."""

        name, group, source = "zz_output", "test", "test"

        def output_fn(self, logits: Tensor) -> Tensor:
            return logits.log_softmax(-1)

    class OtherStep(Regularizer):
        """Test double: found as a step wrapper by overriding ``step``."""

        name, group, source = "zz_step", "test", "test"

        def step(self, closure: Callable[[bool], Tensor], optimizer: torch.optim.Optimizer) -> Tensor:
            return closure(True)

    added = [register(OtherOutput).name, register(OtherStep).name]
    try:
        yield
    finally:
        for name in added:
            REGISTRY.pop(name, None)


@pytest.mark.usefixtures("twins")
@pytest.mark.parametrize(("pair", "message"), [
    (("stablemax", "zz_output"), "replace the output function"),
    (("sam", "zz_step"), "wrap the optimizer step"),
    (("elr", "mixup"), "cannot be combined"),
])
def test_compat_refuses_clashing_techniques(pair: tuple[str, str], message: str) -> None:
    config = pytest.importorskip("engine.config")
    with pytest.raises(ValueError, match=message):
        config.validate({"regularizers": {pair[0]: {}, pair[1]: {}}})
    config.validate({"regularizers": {pair[0]: {}, pair[1]: {"enabled": False}}})  # one alone is fine


def test_compat_refuses_classification_techniques_on_regression() -> None:
    config = pytest.importorskip("engine.config")
    with pytest.raises(ValueError, match=r"^regularizers\.elr: works on classification"):
        config.validate({"data": {"name": "teacher_student"}, "loss": {"name": "mse"}, "regularizers": {"elr": {}}})
