"""Gradient coherence, calibration, grokking progress measures and the run-outcome rule.

Hand-built cases with known answers: identical per-example gradients give
α_m = m and orthogonal ones 1; per-example gradients agree with a loop of ``autograd.grad``;
perfectly calibrated bins give ECE 0; a loss that only scales the logits gives NLM cosine 1; a pure
Fourier neuron has IPR 1 and a delta exactly 1/⌊p/2⌋; and each outcome class.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest
import torch
from torch import Tensor, nn
from torch.func import functional_call

from engine.config import LossConfig, RunConfig, validate
from engine.data import Dataset
from engine.diagnostics import DiagnosticContext, get
from engine.diagnostics.dynamics import (
    aurc,
    calibration,
    coherence_from_grads,
    expected_calibration_error,
    fourier_ipr,
    grad_coherence,
    modular_input_weights,
    nll,
    nlm_cosine,
    per_example_grads,
    probabilities,
    softmax_collapse_fraction,
)
from engine.losses import data_loss, log_softmax
from engine.models.mlp import MLP, QuadraticMLP
from engine.regularizers.base import Batch
from engine.regularizers.stablemax import log_stablemax

# ---- helpers -------------------------------------------------------------------------------


def loss_for(cfg: LossConfig, task: str = "classification",
             output_fn: Callable[[Tensor], Tensor] = log_softmax) -> Callable[[Tensor, Batch], Tensor]:
    def loss_fn(out: Tensor, batch: Batch) -> Tensor:
        return data_loss(out, batch, cfg, task, output_fn)[0]

    return loss_fn


def make_ctx(model: nn.Module, data: Dataset, cfg: RunConfig | None = None) -> DiagnosticContext:
    cfg = cfg or RunConfig()
    output_fn = log_stablemax if "stablemax" in cfg.enabled_regularizers() else None
    loss_fn = loss_for(cfg.loss, data.task, output_fn or log_softmax)
    model.eval()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    return DiagnosticContext(model, data, cfg, torch.arange(data.n_train), loss_fn, optimizer, lambda: 0.1,
                             output_fn=output_fn)


def random_data(n: int = 40, d: int = 5, c: int = 3, seed: int = 0) -> Dataset:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g)
    y = torch.randint(0, c, (n,), generator=g)
    xt = torch.randn(n // 2, d, generator=g)
    yt = torch.randint(0, c, (n // 2,), generator=g)
    return Dataset("blobs", "classification", x, y, xt, yt, num_classes=c)


def sum_loss(out: Tensor, batch: Batch) -> Tensor:
    """ℓ = f(x): with a bias-free linear f, ∇_w ℓ(x) = x exactly."""
    return out.sum()


# ---- per-example gradients and coherence ---------------------------------------------------


def test_coherence_identical_gradients_is_m_and_orthogonal_is_one() -> None:
    model = nn.Linear(8, 1, bias=False)
    same = torch.ones(16, 8)
    y = torch.zeros(16, dtype=torch.long)
    out = grad_coherence(model, sum_loss, same, y, m=16, generator=torch.Generator().manual_seed(0), k_batches=8)
    assert out["grad/coherence"] == pytest.approx(16.0)
    assert out["grad/dir_var"] == pytest.approx(0.0, abs=1e-12)  # identical mini-batch gradients
    orthogonal = torch.eye(8) * torch.arange(1.0, 9.0)[:, None]  # g_i = i·e_i: orthogonal, unequal norms
    out = grad_coherence(model, sum_loss, orthogonal, y[:8], m=8)
    assert out["grad/coherence"] == pytest.approx(1.0)
    assert "grad/dir_var" not in out  # m < 2·k_batches: no mini-batch split
    assert coherence_from_grads(torch.cat([torch.ones(2, 3), -torch.ones(2, 3)])) == 0.0  # cancelling


def test_per_example_grads_match_autograd_loop() -> None:
    torch.manual_seed(0)
    model = MLP(4, 3, width=6, depth=2)
    x, y = torch.randn(5, 4), torch.tensor([0, 2, 1, 1, 0])
    loss_fn = loss_for(LossConfig())
    grads = per_example_grads(model, loss_fn, x, y)
    names = [n for n, _ in model.named_parameters()]
    for i in range(5):
        loss = loss_fn(model(x[i:i + 1]), Batch(x[i:i + 1], y[i:i + 1], torch.tensor([i])))
        expected = torch.autograd.grad(loss, list(model.parameters()))
        for name, e in zip(names, expected, strict=True):
            assert torch.allclose(grads[name][i], e, atol=1e-6), name


def test_per_example_grads_fall_back_to_a_loop_when_vmap_cannot_batch() -> None:
    torch.manual_seed(0)
    model = MLP(4, 3, width=6, depth=1)
    x, y = torch.randn(4, 4), torch.tensor([0, 2, 1, 1])
    mse = loss_for(LossConfig(name="mse"))  # F.one_hot inside: vmap refuses, the loop takes over
    looped = per_example_grads(model, mse, x, y)
    soft = per_example_grads(model, mse, x, y, y_soft=nn.functional.one_hot(y, 3).float())  # vmap path
    for name in looped:
        assert torch.allclose(looped[name], soft[name], atol=1e-6)


def test_coherence_instrument_end_to_end() -> None:
    torch.manual_seed(0)
    data = random_data()
    for cfg in (RunConfig(), validate({"loss": {"name": "mse"}})):
        ctx = make_ctx(MLP(5, 3, width=8, depth=1), data, cfg)
        instrument = get("coherence")(ctx, seed=0, m=16, k_batches=4)
        out = instrument.measure(ctx, 0).metrics
        assert 0.0 <= out["grad/coherence"] <= 16.0
        assert 0.0 <= out["grad/dir_var"] <= 2.0
    assert get("coherence").needs == frozenset({"per_example"}) and not get("coherence").default_on


# ---- calibration ---------------------------------------------------------------------------


def test_ece_zero_for_perfectly_calibrated_bins() -> None:
    probs = torch.tensor([[0.75, 0.25]] * 4 + [[0.5, 0.5]] * 2, dtype=torch.float64)
    labels = torch.tensor([0, 0, 0, 1, 0, 1])  # 3/4 right at conf 0.75, 1/2 right at conf 0.5
    assert expected_calibration_error(probs, labels) == pytest.approx(0.0, abs=1e-15)


def test_ece_hand_case() -> None:
    probs = torch.tensor([[0.9, 0.1], [0.9, 0.1], [0.4, 0.6]], dtype=torch.float64)
    labels = torch.tensor([0, 0, 0])
    # bin (13/15, 14/15]: acc 1, conf 0.9, weight 2/3; bin (8/15, 9/15]: acc 0, conf 0.6, weight 1/3
    assert expected_calibration_error(probs, labels) == pytest.approx(2 / 3 * 0.1 + 1 / 3 * 0.6)


def test_ece_bin_edges() -> None:
    # conf just below and just above 6/15 fall in different bins: ECE = (|1 − 0.4| + |0 − 0.4|)/2,
    # whereas one shared bin would give |1 − 0.8|/2 = 0.1
    probs = torch.tensor([[0.4 - 1e-6, 0.3, 0.3 + 1e-6], [0.4 + 1e-6, 0.3, 0.3 - 1e-6]], dtype=torch.float64)
    assert expected_calibration_error(probs, torch.tensor([0, 1])) == pytest.approx(0.5, abs=1e-5)
    # confidence exactly 1 lands in the last bin (14/15, 1]
    certain = torch.tensor([[1.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
    assert expected_calibration_error(certain, torch.tensor([0, 0])) == pytest.approx(0.5)


def test_aurc_and_nll_hand_cases() -> None:
    probs = torch.tensor([[0.9, 0.1], [0.2, 0.8], [0.7, 0.3]], dtype=torch.float64)
    labels = torch.tensor([0, 0, 0])  # by confidence: right, wrong, right
    assert aurc(probs, labels) == pytest.approx((0 + 1 / 2 + 1 / 3) / 3)
    assert nll(probs, labels) == pytest.approx(-(math.log(0.9) + math.log(0.2) + math.log(0.7)) / 3)


def test_stablemax_probabilities() -> None:
    z = torch.tensor([[1.0, 0.0, -1.0]])
    assert probabilities(z, log_stablemax) == pytest.approx(torch.tensor([[2 / 3.5, 1 / 3.5, 0.5 / 3.5]]))
    assert probabilities(z) == pytest.approx(torch.softmax(z.double(), -1))


def test_calibration_instrument_end_to_end() -> None:
    torch.manual_seed(0)
    data = random_data()
    for cfg, output_fn in ((RunConfig(), None), (validate({"regularizers": {"stablemax": {}}}), log_stablemax)):
        model = MLP(5, 3, width=8, depth=1)
        ctx = make_ctx(model, data, cfg)
        out = get("calibration")(ctx, seed=0).measure(ctx, 0).metrics
        with torch.no_grad():
            expected = calibration(model(data.x_test), data.y_test, output_fn)
        assert out == pytest.approx(expected)
        assert 0.0 <= out["calib/ece"] <= 1.0
    assert not get("calibration").applies(validate({"data": {"name": "teacher_student"}, "loss": {"name": "mse"}}))


# ---- grokking progress measures ------------------------------------------------------------


def test_nlm_cosine_is_one_when_the_loss_only_scales_the_logits() -> None:
    x, y = torch.eye(2), torch.tensor([0, 1])
    model = nn.Linear(2, 2, bias=False)
    pattern = torch.tensor([[1.0, -1.0], [-1.0, 1.0]])

    def loss(params: dict[str, Tensor]) -> Tensor:
        return nn.functional.cross_entropy(functional_call(model, params, (x,)), y)

    # −∇L ∝ [[1, −1], [−1, 1]]: parallel to θ when it classifies right, antiparallel when wrong
    assert nlm_cosine(loss, {"weight": 3.0 * pattern}) == pytest.approx(1.0, abs=1e-6)  # float32 gradient
    assert nlm_cosine(loss, {"weight": -3.0 * pattern}) == pytest.approx(-1.0, abs=1e-6)
    assert nlm_cosine(loss, {"weight": torch.zeros(2, 2)}) is None


def test_softmax_collapse_fraction_float32_hand_case() -> None:
    # exp(−200) underflows, exp(−20) ≈ 2e-9 < float32 ulp/2 at 1, exp(−10) ≈ 4.5e-5 survives, a tie sums to 2
    logits = torch.tensor([[0.0, -200.0], [0.0, -10.0], [0.0, -20.0], [5.0, 5.0]], dtype=torch.float64)
    assert softmax_collapse_fraction(logits) == 0.5  # in float64 the −20 row would not collapse


def test_fourier_ipr_pure_frequency_and_delta() -> None:
    for p in (11, 10):
        n = torch.arange(p, dtype=torch.float64)
        pure = torch.cos(2 * math.pi * 3 * n / p + 0.4)
        delta = torch.zeros(p, dtype=torch.float64)
        delta[4] = 1.0
        two = torch.cos(2 * math.pi * n / p) + torch.sin(2 * math.pi * 2 * n / p)
        ipr = fourier_ipr(torch.stack([pure, delta, two, torch.ones(p, dtype=torch.float64)]))
        assert ipr.shape == (3,)  # the constant row has no non-DC power and is dropped
        assert ipr[0] == pytest.approx(1.0)
        assert ipr[1] == pytest.approx(1 / (p // 2))  # flat spectrum: P_k = 1 for k = 1..⌊p/2⌋
        assert ipr[2] == pytest.approx(0.5)  # two frequencies of equal power


def fourier_quadratic_mlp(p: int, width: int) -> QuadraticMLP:
    model = QuadraticMLP(2 * p, p, width)
    n = torch.arange(p, dtype=torch.float32)
    with torch.no_grad():
        for j in range(width):
            k = 1 + j % (p // 2)
            model.hidden.weight[j, :p] = torch.cos(2 * math.pi * k * n / p)
            model.hidden.weight[j, p:] = torch.sin(2 * math.pi * k * n / p)
    return model


def test_modular_input_weights_split_operands() -> None:
    model = fourier_quadratic_mlp(7, 5)
    a, b = modular_input_weights(model, 7)
    assert a.shape == b.shape == (5, 7)
    assert modular_input_weights(nn.Linear(3, 2), 7) == []


def test_grokking_instrument_end_to_end() -> None:
    p, width = 7, 6
    a, b = torch.meshgrid(torch.arange(p), torch.arange(p), indexing="ij")
    a, b = a.flatten(), b.flatten()
    x = torch.cat([nn.functional.one_hot(a, p), nn.functional.one_hot(b, p)], 1).float()
    y = (a + b) % p
    data = Dataset("modular", "classification", x, y, x[:5], y[:5], num_classes=p, meta={"p": p})
    cfg = validate({"data": {"name": "modular", "p": p}, "model": {"name": "quadratic_mlp"}, "loss": {"name": "mse"}})
    model = fourier_quadratic_mlp(p, width)
    ctx = make_ctx(model, data, cfg)
    measurement = get("grokking")(ctx, seed=0).measure(ctx, 0)
    out = measurement.metrics
    assert out["grok/ipr"] == pytest.approx(1.0, abs=1e-5)
    assert measurement.artifacts["grok/ipr"]["ipr"].shape == (2 * width,)
    assert 0.0 <= out["grok/sc_frac"] <= 1.0
    assert -1.0 <= out["grok/nlm_cos"] <= 1.0
    assert nlm_cosine(ctx.objective, ctx.named_params()) == pytest.approx(out["grok/nlm_cos"])
    assert not get("grokking").default_on and get("grokking").applies(cfg)
