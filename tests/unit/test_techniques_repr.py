"""Mechanism tests for the continual, representation and SAE techniques: hand-checkable formulas
on tiny tensors and models, plus one short end-to-end SAE run.

Techniques are built as the trainer builds them (defaults filled, values validated) from a fake
``Setup``; their hooks are called directly in the trainer's order (engine/regularizers/base.py).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import pytest
import torch
from torch import Tensor, nn
from torch.nn import functional as F

from engine.models.mlp import MLP
from engine.models.sae import SparseAutoencoder
from engine.regularizers import (
    Batch,
    LossContext,
    Regularizer,
    Setup,
    all_techniques,
    get,
    normalize_regularizer_params,
)
from engine.regularizers.base import technique_generator
from engine.regularizers.nested_dropout import sample_truncated_geometric, truncated_geometric_pmf
from engine.regularizers.nuclear_norm import nuclear_penalty
from engine.regularizers.orthogonality import orthogonality_penalty
from engine.regularizers.sae_batch_topk import batch_topk_relu
from engine.regularizers.sae_feature_choice import capacity, feature_choice_relu
from engine.regularizers.sae_topk import topk_relu
from engine.regularizers.spectral import power_step_
from engine.regularizers.vicreg import covariance_term, variance_term

NEW = ("spectral", "shrink_perturb", "activation_l1", "nuclear_norm", "orthogonality", "nested_dropout", "vicreg",
       "sae_topk", "sae_batch_topk", "sae_feature_choice", "sae_aux_k", "sae_l1")
SAE_ONLY = ("sae_topk", "sae_batch_topk", "sae_feature_choice", "sae_aux_k", "sae_l1")


# ---- fakes -----------------------------------------------------------------------------------


@dataclass
class FakeData:
    x_train: Tensor
    n_train: int = 16
    num_classes: int | None = 3
    task: str = "classification"


def make_setup(model: nn.Module, x: Tensor | None = None, total_steps: int = 100) -> Setup:
    x = x if x is not None else torch.randn(16, 4)
    return Setup(model=model, dataset=FakeData(x_train=x, n_train=len(x)), seed=0,  # type: ignore[arg-type]
                 total_steps=total_steps, num_classes=3, device=torch.device("cpu"), lr=lambda: 0.1)


def build(name: str, setup: Setup, **values: Any) -> Regularizer:
    params = normalize_regularizer_params(name, values)
    params.pop("enabled")
    return get(name)(setup, **params)


def ctx_for(model: nn.Module, x: Tensor, step: int = 1, y: Tensor | None = None) -> LossContext:
    out = model(x)
    y = y if y is not None else torch.zeros(len(x), dtype=torch.long)
    loss = out.pow(2).mean()
    return LossContext(Batch(x, y, torch.arange(len(x))), out, None, model, step, 100, loss)


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def sae_config(**regularizers: Any) -> dict[str, Any]:
    return {"data": {"name": "sparse_features", "dim": 16, "n_latents": 32, "n_train": 256, "n_test": 64},
            "model": {"name": "sae", "width": 64}, "loss": {"name": "mse"}, "regularizers": regularizers}


# ---- plugin contract and compatibility -------------------------------------------------------


@pytest.mark.parametrize("name", NEW)
def test_new_techniques_honour_the_plugin_contract(name: str) -> None:
    cls = get(name)
    assert cls.group in ("continual", "repr", "sae") and cls.source.strip() and cls.summary().strip()
    assert cls.__doc__ is not None and len(cls.__doc__.strip().splitlines()) > 2
    assert name not in cls.refuses and not (cls.refuses & cls.properties())
    for spec in cls.params:
        assert spec.help and spec.coerce(spec.default, name) == spec.default
        assert spec.min is None or spec.default >= spec.min
        assert spec.max is None or spec.default <= spec.max


@pytest.mark.parametrize("name", SAE_ONLY)
def test_sae_techniques_refuse_other_models(name: str) -> None:
    config = pytest.importorskip("engine.config")
    with pytest.raises(ValueError, match=rf"^regularizers\.{name}:"):
        config.validate({"data": {"name": "sparse_features"}, "loss": {"name": "mse"}, "regularizers": {name: {}}})
    with pytest.raises(ValueError, match=rf"^regularizers\.{name}:"):
        get(name)(make_setup(MLP(4, 3, 8, 1)))
    config.validate(sae_config(**{name: {}}))


def test_at_most_one_sae_sparsity_mechanism() -> None:
    config = pytest.importorskip("engine.config")
    sparsity = {name for name, cls in all_techniques().items() if cls.exclusive == "sae_sparsity"}
    assert sparsity == {"sae_topk", "sae_batch_topk", "sae_feature_choice", "sae_l1", "sae_abs_topk"}
    with pytest.raises(ValueError, match="cannot be combined"):
        config.validate(sae_config(sae_topk={}, sae_batch_topk={}))
    config.validate(sae_config(sae_topk={}, sae_aux_k={}))


# ---- spectral regularization ----------------------------------------------------------


def test_spectral_power_iteration_finds_sigma_max_within_one_percent() -> None:
    w = torch.randn(30, 20, dtype=torch.float64)
    u, v = torch.randn(30, dtype=torch.float64), torch.randn(20, dtype=torch.float64)
    u /= u.norm()
    for _ in range(50):
        power_step_(w, u, v)
    assert abs(float(u @ w @ v) / float(torch.linalg.svdvals(w).max()) - 1) < 0.01

    layer = nn.Linear(12, 9)  # through the technique: bias appended as a column
    reg = build("spectral", make_setup(nn.Sequential(layer)))
    sigma = reg.estimate(steps=50)[0]
    w_tilde = torch.cat([layer.weight, layer.bias[:, None]], 1).detach()
    assert abs(float(sigma.detach()) / float(torch.linalg.svdvals(w_tilde).max()) - 1) < 0.01


@pytest.mark.parametrize("k", [1, 2, 3])
def test_spectral_gradient_is_two_sigma_k_minus_one_k_sigma_uvT(k: int) -> None:
    layer = nn.Linear(6, 5)
    reg = build("spectral", make_setup(nn.Sequential(layer)), k=k, **{"lambda": 0.1})
    reg.estimate(steps=30)
    loss = reg.extra_loss(ctx_for(layer, torch.randn(3, 6)))  # one more power step, then σ = uᵀW̃v
    loss.backward()
    u, v = reg.vectors[0]
    w_tilde = torch.cat([layer.weight, layer.bias[:, None]], 1).detach()
    sigma = u @ w_tilde @ v
    expected = 0.1 * 2 * (sigma**k - 1) * k * sigma ** (k - 1) * torch.outer(u, v)
    assert torch.allclose(layer.weight.grad, expected[:, :-1], atol=1e-6)
    assert torch.allclose(layer.bias.grad, expected[:, -1], atol=1e-6)
    assert float(loss.detach()) == pytest.approx(0.1 * float((sigma**k - 1) ** 2), rel=1e-5)


# ---- shrink & perturb -----------------------------------------------------------------


def test_shrink_perturb_follows_the_formula_at_boundaries_only() -> None:
    model = nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 3))
    reg = build("shrink_perturb", make_setup(model, total_steps=20), shrink=0.7, sigma=0.05, every=5)
    before = [p.detach().clone() for p in model.parameters()]
    reg.after_step(4)
    assert all(torch.equal(p, b) for p, b in zip(model.parameters(), before, strict=True))
    reg.after_step(5)
    twin = technique_generator(0, "shrink_perturb")
    for p, b in zip(model.parameters(), before, strict=True):
        assert torch.allclose(p, 0.7 * b + 0.05 * torch.randn(b.shape, generator=twin), atol=1e-7)
    after = [p.detach().clone() for p in model.parameters()]
    reg.after_step(20)  # the run's last update: never followed by a shrink
    assert all(torch.equal(p, a) for p, a in zip(model.parameters(), after, strict=True))

    sae = SparseAutoencoder(8, 16)  # the model's own constraint is re-applied after perturbing
    build("shrink_perturb", make_setup(sae, torch.randn(4, 8)), every=1).after_step(1)
    assert torch.allclose(sae.decoder.weight.norm(dim=0), torch.ones(16), atol=1e-6)


# ---- activation L1 -------------------------------------------------------------------


def test_activation_l1_gradient_is_lambda_sign_over_batch_times_width() -> None:
    model = nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 3))
    acts: list[Tensor] = []

    def as_leaf(_m: nn.Module, _i: Any, out: Tensor) -> Tensor:  # registered first: the penalty sees leaves,
        acts.append(out.detach().requires_grad_(True))  # so each layer's gradient is its own partial
        return acts[-1]

    for m in (model[1], model[3]):
        m.register_forward_hook(as_leaf)
    reg = build("activation_l1", make_setup(model), schedule="constant", **{"lambda": 0.01})
    x = torch.randn(8, 4)
    penalty = reg.extra_loss(ctx_for(model, x))
    grads = torch.autograd.grad(penalty, acts)
    for a, g in zip(acts, grads, strict=True):
        assert torch.allclose(g, 0.01 * torch.sign(a) / (a.shape[0] * a.shape[1]))
    assert float(penalty.detach()) == pytest.approx(0.01 * sum(float(a.detach().abs().mean()) for a in acts), rel=1e-6)
    with torch.no_grad():  # evaluation forwards are not recorded
        model.eval()
        model(x)
    assert reg.extra_loss(ctx_for(model, x)) is None


def test_activation_l1_progressive_schedule_is_continuous_and_non_decreasing() -> None:
    model = nn.Sequential(nn.Linear(4, 6), nn.ReLU())
    reg = build("activation_l1", make_setup(model, total_steps=1000), stages=3, **{"lambda": 0.01})
    t = torch.linspace(0, 1000, 20001).tolist()
    lam = torch.tensor([reg.lambda_at(s) for s in t], dtype=torch.float64)
    steps = lam.diff()
    assert float(steps.min()) >= -1e-15  # non-decreasing
    assert float(steps.max()) < 1e-5  # no jumps: the steepest quarter-sine slope × dt is ≈ 2.4e-6
    assert lam[0] == pytest.approx(0.1 * 0.01 / 3) and lam[-1] == pytest.approx(0.01)
    assert reg.lambda_at(800) == pytest.approx(0.01)  # reached at end = 0.8·T


def test_activation_l1_refuses_models_without_relu_modules() -> None:
    config = pytest.importorskip("engine.config")
    with pytest.raises(ValueError, match=r"^regularizers\.activation_l1:"):
        config.validate(sae_config(activation_l1={}))
    with pytest.raises(ValueError, match=r"^regularizers\.activation_l1:"):
        config.validate({"model": {"activation": "tanh"}, "regularizers": {"activation_l1": {}}})


# ---- nuclear norm --------------------------------------------------------------------


def test_nuclear_norm_gradient_is_uvT_for_distinct_singular_values() -> None:
    layer = nn.Linear(5, 7)
    reg = build("nuclear_norm", make_setup(nn.Sequential(layer), torch.randn(2, 5)), layers="all",
                **{"lambda": 0.01})
    penalty = reg.extra_loss(ctx_for(layer, torch.randn(2, 5)))
    penalty.backward()
    w = layer.weight.detach()
    u, s, vh = torch.linalg.svd(w, full_matrices=False)
    assert float(s.diff().abs().min()) > 1e-3  # distinct
    assert torch.allclose(layer.weight.grad, 0.01 * u @ vh, atol=1e-6)
    assert float(penalty.detach()) == pytest.approx(0.01 * float(s.sum()), rel=1e-5)
    w_auto = w.clone().requires_grad_(True)  # the SVD's own backward agrees where it is stable
    torch.linalg.svdvals(w_auto).sum().backward()
    assert torch.allclose(w_auto.grad, u @ vh, atol=1e-5)


def test_nuclear_norm_hidden_excludes_the_readout() -> None:
    model = MLP(4, 3, 8, 2)
    reg = build("nuclear_norm", make_setup(model))
    assert reg.layers == list(model.layers)


def _train_nuclear(enabled: bool) -> float:
    torch.manual_seed(1)
    model = MLP(6, 4, 16, 2)
    x, y = torch.randn(64, 6), torch.randn(64, 4)
    reg = build("nuclear_norm", make_setup(model, x), enabled=enabled, **{"lambda": 1e-2})
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    for step in range(1, 151):
        opt.zero_grad()
        out = model(x)
        loss = F.mse_loss(out, y)
        if enabled:
            loss = loss + reg.extra_loss(LossContext(Batch(x, y, torch.arange(64)), out, None, model, step, 150, loss))
        loss.backward()
        opt.step()
    with torch.no_grad():
        return sum(float(nuclear_penalty(m.weight)) for m in model.layers)


def test_training_with_nuclear_norm_lowers_the_nuclear_norm() -> None:
    assert _train_nuclear(True) < _train_nuclear(False) - 0.5


# ---- soft orthogonality --------------------------------------------------------------


def test_orthogonality_penalty_is_zero_for_orthonormal_rows() -> None:
    q, _ = torch.linalg.qr(torch.randn(8, 5, dtype=torch.float64))  # 8×5, orthonormal columns
    for variant in ("full", "offdiag"):
        assert float(orthogonality_penalty(q.T, variant)) < 1e-20  # 5×8 with orthonormal rows: WWᵀ = I
        assert float(orthogonality_penalty(q, variant)) < 1e-20  # tall: WᵀW is used
    assert float(orthogonality_penalty(torch.randn(5, 8), "full")) > 1.0
    layer = nn.Linear(8, 5)
    with torch.no_grad():
        layer.weight.copy_(q.T)
    reg = build("orthogonality", make_setup(nn.Sequential(layer), torch.randn(2, 8)), **{"lambda": 0.1})
    assert float(reg.extra_loss(ctx_for(layer, torch.randn(2, 8))).detach()) < 1e-10
    diag = torch.diag(torch.tensor([1.0, 2.0, 3.0]))  # offdiag ignores row norms, full does not
    assert float(orthogonality_penalty(diag, "offdiag")) == 0.0
    assert float(orthogonality_penalty(diag, "full")) == pytest.approx(3.0**2 + 8.0**2)


# ---- nested dropout ------------------------------------------------------------------


def test_nested_dropout_zeroes_units_beyond_b_and_keeps_the_rest() -> None:
    model, x = MLP(4, 3, 32, 2), torch.randn(64, 4)
    reg = build("nested_dropout", make_setup(model, x), rho=0.1)
    seen: list[Tensor] = []
    model.out.register_forward_pre_hook(lambda _m, inputs: seen.append(inputs[0]))
    model.train()
    model(x)
    clean = model.features(x)
    h, b = seen[-1], reg.last_b
    assert b is not None and b.shape == (64,) and int(b.min()) >= 1 and int(b.max()) <= 32
    keep = torch.arange(32).unsqueeze(0) < b.unsqueeze(1)
    assert bool((h[~keep] == 0).all())  # exactly zero beyond b
    assert torch.equal(h[keep], clean[keep])  # no rescaling
    model.eval()
    model(x)
    assert torch.equal(seen[-1], model.features(x))  # evaluation uses every unit


def test_nested_dropout_b_follows_the_truncated_geometric() -> None:
    gen = torch.Generator().manual_seed(0)
    rho, k, n = 0.1, 20, 200_000
    b = sample_truncated_geometric(n, rho, k, gen)
    empirical = torch.bincount(b, minlength=k + 1)[1:].double() / n
    pmf = truncated_geometric_pmf(rho, k)
    assert float(pmf.sum()) == pytest.approx(1.0)
    assert float((empirical - pmf).abs().max()) < 0.004  # ≈ 5 binomial standard errors at p = 0.11
    chi2 = float(((empirical - pmf) ** 2 / pmf).sum() * n)
    assert chi2 < 45.3  # χ²(19) 99.9th percentile


def test_nested_dropout_refuses_models_without_a_readout_slot() -> None:
    config = pytest.importorskip("engine.config")
    with pytest.raises(ValueError, match=r"^regularizers\.nested_dropout:"):
        config.validate(sae_config(nested_dropout={}))


# ---- VICReg --------------------------------------------------------------------------


def test_vicreg_variance_term_is_zero_when_every_std_reaches_gamma() -> None:
    z = torch.randn(64, 8, dtype=torch.float64)
    z = (z - z.mean(0)) / z.std(0) * torch.linspace(1.0, 3.0, 8, dtype=torch.float64)
    assert float(variance_term(z, gamma=1.0)) == 0.0
    assert float(variance_term(0.5 * z, gamma=1.0)) > 0.0


def test_vicreg_covariance_term_is_zero_for_diagonal_covariance() -> None:
    h = torch.ones(1, 1, dtype=torch.float64)
    for _ in range(3):  # 8×8 Sylvester Hadamard: columns 1..7 are centred and mutually orthogonal
        h = torch.cat([torch.cat([h, h], 1), torch.cat([h, -h], 1)], 0)
    z = h[:, 1:5] * torch.tensor([1.0, 2.0, 3.0, 4.0], dtype=torch.float64)
    assert float(covariance_term(z)) == pytest.approx(0.0, abs=1e-24)
    assert float(covariance_term(z + z[:, :1])) > 0.1


def test_vicreg_penalises_the_captured_penultimate_features() -> None:
    model, x = MLP(4, 3, 8, 2), torch.randn(32, 4)
    reg = build("vicreg", make_setup(model, x), w=0.5)
    assert reg.slot is model.drops[-1]
    model.train()
    penalty = reg.extra_loss(ctx_for(model, x))
    z = model.features(x)
    expected = 0.5 * (25.0 * variance_term(z, 1.0) + 1.0 * covariance_term(z))
    assert float(penalty.detach()) == pytest.approx(float(expected.detach()), rel=1e-6)


# ---- SAE activations -------------------------------------------------------------------


def make_sae(name: str, **values: Any) -> tuple[SparseAutoencoder, Regularizer]:
    sae = SparseAutoencoder(16, 64)
    return sae, build(name, make_setup(sae, torch.randn(32, 16)), **values)


def test_topk_keeps_exactly_k_per_row_or_fewer_when_fewer_are_positive() -> None:
    pre = torch.randn(32, 64)
    z = topk_relu(pre, 8)
    assert torch.equal((z != 0).sum(1), torch.full((32,), 8))
    assert torch.equal(z[z != 0], pre[z != 0])  # kept values are unchanged
    pre[0] = -1.0
    pre[0, :3] = torch.tensor([0.5, 1.0, 2.0])
    assert int((topk_relu(pre, 8)[0] != 0).sum()) == 3
    sae, reg = make_sae("sae_topk", k=5)
    assert not isinstance(sae.activation, nn.Module)
    assert int((sae.features(torch.randn(16, 16)) != 0).sum(1).max()) <= 5
    reg.set("k", 3)  # live
    assert int((sae.features(torch.randn(16, 16)) != 0).sum(1).max()) <= 3


def test_batch_topk_keeps_k_times_b_nonzeros_per_batch() -> None:
    pre = torch.randn(32, 64) + 1.0
    z = batch_topk_relu(pre, 8)
    per_sample = (z != 0).sum(1).double()
    assert int((z != 0).sum()) == 8 * 32 and float(per_sample.mean()) == 8.0 and float(per_sample.std()) > 0
    sae, reg = make_sae("sae_batch_topk", k=4)
    x = torch.randn(32, 16)
    sae.train()
    z_train = sae.features(x).detach()
    assert int((z_train != 0).sum()) <= 4 * 32
    theta = reg.activation.threshold
    assert theta is not None and float(theta) == pytest.approx(float(z_train[z_train > 0].min()))
    sae.eval()
    with torch.no_grad():
        pre_eval = sae.encode_pre(x)
        assert torch.equal(sae.features(x), torch.where(pre_eval > theta, pre_eval, torch.zeros_like(pre_eval)))
    assert float(reg.activation.threshold) == float(theta)  # eval forwards leave θ alone


def test_feature_choice_fires_each_latent_at_most_m_times() -> None:
    pre = torch.randn(32, 64)
    m = capacity(8, 32, 64)
    assert m == 4
    z, _ = feature_choice_relu(pre, m)
    per_latent = (z != 0).sum(0)
    assert int(per_latent.max()) <= m and int((z != 0).sum()) > 0
    sae, _ = make_sae("sae_feature_choice", k=8)
    sae.train()
    assert int((sae.features(torch.randn(32, 16)) != 0).sum(0).max()) <= capacity(8, 32, 64)


def test_aux_k_is_zero_without_dead_latents() -> None:
    sae = SparseAutoencoder(16, 64)
    build("sae_topk", make_setup(sae, torch.randn(8, 16)), k=4)
    aux = build("sae_aux_k", make_setup(sae, torch.randn(8, 16)))
    sae.train()
    loss = aux.extra_loss(ctx_for(sae, torch.randn(8, 16)))  # counters start at 0: nothing is dead
    assert float(loss) == 0.0 and not loss.requires_grad and not bool(aux.dead.any())


def test_aux_k_gradient_reaches_only_dead_latents() -> None:
    sae = SparseAutoencoder(16, 64)
    build("sae_topk", make_setup(sae, torch.randn(8, 16)), k=4)
    aux = build("sae_aux_k", make_setup(sae, torch.randn(8, 16)), window=100, k_aux=8, alpha=1.0)
    aux.since_fired.fill_(10**6)  # every latent that does not fire in this batch is dead
    sae.train()
    x = torch.randn(8, 16)
    ctx = ctx_for(sae, x)
    loss = aux.extra_loss(ctx)
    dead = aux.dead
    assert 0 < int(dead.sum()) < 64 and float(loss.detach()) > 0
    fired = (sae.features(x) > 0).any(0)
    assert torch.equal(dead, ~fired)
    sae.zero_grad()
    loss.backward()
    alive = ~dead
    assert float(sae.encoder.weight.grad[alive].abs().max()) == 0.0
    assert float(sae.encoder.bias.grad[alive].abs().max()) == 0.0
    assert float(sae.decoder.weight.grad[:, alive].abs().max()) == 0.0
    assert float(sae.encoder.weight.grad[dead].abs().max()) > 0.0
    assert float(sae.decoder.weight.grad[:, dead].abs().max()) > 0.0
    residual = (x - ctx.logits).detach()  # and the value is ‖e − W_dec ẑ‖² / ‖e − ē‖²
    pre = sae.encode_pre(x).detach().masked_fill(~dead, float("-inf"))
    values, idx = pre.topk(8, dim=1)
    z_aux = torch.zeros(8, 64).scatter(1, idx, values.relu())
    expected = (residual - sae.decoder(z_aux)).pow(2).sum() / (residual - residual.mean(0)).pow(2).sum()
    assert float(loss.detach()) == pytest.approx(float(expected.detach()), rel=1e-5)


def test_l1_sae_is_invariant_to_scaling_a_decoder_column_up_and_its_latent_down() -> None:
    sae, reg = make_sae("sae_l1", **{"lambda": 0.1})
    x = torch.randn(32, 16)
    sae.train()

    def total() -> float:
        ctx = ctx_for(sae, x)
        return float((F.mse_loss(ctx.logits, x) + reg.extra_loss(ctx)).detach())

    with torch.no_grad():  # make latent 3 active somewhere, so the check is not vacuous
        sae.encoder.bias[3] = 1.0
    before = total()
    with torch.no_grad():
        sae.decoder.weight[:, 3] *= 4.0
        sae.encoder.weight[3] /= 4.0
        sae.encoder.bias[3] /= 4.0
    assert total() == pytest.approx(before, rel=1e-5)
    assert sae.activation is torch.relu


# ---- end to end --------------------------------------------------------------------------------


def test_topk_with_aux_k_end_to_end_keeps_unit_decoder_columns_and_l0_at_most_k() -> None:
    from engine.config import validate
    from engine.events import Step
    from engine.trainer import Trainer

    data = sae_config(sae_topk={"k": 4}, sae_aux_k={"window": 64})
    data.update(seed=0, device="cpu", optim={"name": "adam", "lr": 1e-3},
                train={"steps": 20, "batch_size": 64, "eval_every": 10})
    data["diagnostics"] = {name: {"enabled": False} for name in ("rank", "collapse", "calibration", "units")}
    trainer = Trainer(validate(data))
    norms: list[float] = []
    aux: list[float] = []

    def watch(event: Any) -> None:
        if isinstance(event, Step):
            col = trainer.model.decoder.weight.detach().norm(dim=0)
            norms.append(float((col - 1).abs().max()))
            aux.append(event.metrics.get("reg/sae_aux_k", math.nan))

    result = trainer.run(watch)
    assert result.status == "completed", result.message
    assert len(norms) == 20 and max(norms) < 1e-5
    assert all(math.isfinite(a) for a in aux) and max(aux) > 0  # some latents died and AuxK acted
    with torch.no_grad():
        trainer.model.eval()
        z = trainer.model.features(trainer.data.x_train)
    assert int((z > 0).sum(1).max()) <= 4
