"""Mechanism tests for the extended techniques: Manifold Mixup, robust gradient averaging,
output scale, ReDo and Wasserstein-to-init, AbsTopK SAE.

Hand-checkable formulas on tiny tensors and models; techniques are built as the trainer builds
them (defaults filled, values validated) from a fake ``Setup``, and a few short Trainer runs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest
import torch
from torch import Tensor, nn
from torch.nn import functional as F

from engine.config import validate
from engine.models.mlp import MLP
from engine.models.sae import SparseAutoencoder
from engine.regularizers import Batch, LossContext, Regularizer, Setup, get, normalize_regularizer_params
from engine.regularizers.robust_avg import median_of_means, winsorized_mean
from engine.regularizers.sae_abs_topk import abs_topk
from engine.regularizers.w2_init import w2_term
from engine.trainer import Trainer

NEW = ("manifold_mixup", "robust_avg", "output_scale", "sae_abs_topk", "redo", "w2_init")


@dataclass
class FakeData:
    x_train: Tensor
    n_train: int = 16
    num_classes: int | None = 3
    task: str = "classification"
    labeled: Tensor | None = None


def make_setup(model: nn.Module, x: Tensor | None = None) -> Setup:
    x = x if x is not None else torch.randn(16, 4)
    return Setup(model=model, dataset=FakeData(x_train=x, n_train=len(x)), seed=0,  # type: ignore[arg-type]
                 total_steps=100, num_classes=3, device=torch.device("cpu"), lr=lambda: 0.1)


def build(name: str, setup: Setup, **values: Any) -> Regularizer:
    params = normalize_regularizer_params(name, values)
    params.pop("enabled")
    return get(name)(setup, **params)


def tiny(data: str, model: str, regs: dict, **extra: Any) -> dict:
    cfg: dict = {"seed": 0, "data": {"name": data, "n_train": 120, "n_test": 40},
                 "model": {"name": model, "width": 16},
                 "train": {"steps": 4, "batch_size": 32, "eval_every": 2},
                 "optim": {"name": "sgd", "lr": 0.05}, "regularizers": regs}
    for key, value in extra.items():
        section, field = key.split("__")
        cfg.setdefault(section, {})[field] = value
    return cfg


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


# ---- plugin contract and refusals ------------------------------------------------------------


@pytest.mark.parametrize("name", NEW)
def test_plugin_contract(name: str) -> None:
    cls = get(name)
    assert cls.group and cls.source.strip() and cls.summary().strip()
    assert cls.__doc__ is not None and len(cls.__doc__.strip().splitlines()) > 2
    assert name not in cls.refuses and not (cls.refuses & cls.properties())
    for spec in cls.params:
        assert spec.help and spec.coerce(spec.default, name) == spec.default
        assert spec.min is None or spec.default >= spec.min
        assert spec.max is None or spec.default <= spec.max


@pytest.mark.parametrize(("cfg", "name"), [
    (tiny("digits", "mlp", {"sae_abs_topk": {}}), "sae_abs_topk"),
    (tiny("digits", "cnn", {"manifold_mixup": {}}), "manifold_mixup"),
    (tiny("moons", "mlp", {"manifold_mixup": {}}, data__n_labeled=10), "manifold_mixup"),
    (tiny("digits", "mlp", {"robust_avg": {}}, loss__name="mse"), "robust_avg"),
    (tiny("digits", "mlp", {"robust_avg": {}}, model__dropout=0.1), "robust_avg"),
    (tiny("digits", "cnn", {"redo": {}}), "redo"),
])
def test_unsupported_configs_are_refused(cfg: dict, name: str) -> None:
    with pytest.raises(ValueError, match=rf"^regularizers\.{name}:"):
        validate(cfg)


def test_conflicts_are_refused() -> None:
    assert get("sae_abs_topk").exclusive == get("sae_topk").exclusive == "sae_sparsity"
    assert get("manifold_mixup").exclusive == get("mixup").exclusive == "batch_mixing"
    assert "mixes_rows" in get("manifold_mixup").properties() and "mixes_rows" in get("elr").refuses
    sae = tiny("sparse_features", "sae", {"sae_abs_topk": {}, "sae_topk": {}}, loss__name="mse", data__dim=16)
    with pytest.raises(ValueError, match="cannot be combined"):
        validate(sae)
    with pytest.raises(ValueError, match="cannot be combined"):
        validate(tiny("digits", "mlp", {"manifold_mixup": {}, "mixup": {}}))


# ---- AbsTopK -------------------------------------------------------------------------


def test_abs_topk_keeps_k_largest_magnitudes_with_sign() -> None:
    pre = torch.tensor([[3.0, -5.0, 1.0, -0.5, 2.0], [-1.0, -2.0, -3.0, 0.1, 0.2]])
    z = abs_topk(pre, 2)
    assert torch.equal(z, torch.tensor([[3.0, -5.0, 0.0, 0.0, 0.0], [0.0, -2.0, -3.0, 0.0, 0.0]]))
    sae = SparseAutoencoder(8, 16)
    tech = build("sae_abs_topk", make_setup(sae, torch.randn(32, 8)), k=3)
    x = torch.randn(32, 8)
    feats = sae.features(x)
    assert ((feats != 0).sum(1) == 3).all() and (feats < 0).any()
    tech.set("k", 5)
    assert ((sae.features(x) != 0).sum(1) == 5).all()


# ---- Wasserstein-to-init --------------------------------------------------------------


def test_w2_init_is_zero_for_permuted_init_and_has_sorted_gradient() -> None:
    model = nn.Linear(3, 2, bias=False)
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]))
    tech = build("w2_init", make_setup(model), **{"lambda": 0.1})
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[6.0, 5.0, 4.0], [3.0, 2.0, 1.0]]))  # a permutation of θ₀
    ctx = LossContext(Batch(torch.zeros(1, 3), torch.zeros(1), torch.zeros(1)), torch.zeros(1), None,
                      model, 1, 10, torch.tensor(0.0))
    assert tech.extra_loss(ctx).item() == 0.0
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[0.0, 2.0, 3.0], [4.0, 5.0, 9.0]]))
    term = tech.extra_loss(ctx)
    assert term.item() == pytest.approx(0.1 * (1.0 + 9.0))  # sorted diffs: −1 and +3
    term.backward()
    expected = 2 * 0.1 * torch.tensor([[-1.0, 0.0, 0.0], [0.0, 0.0, 3.0]])
    assert torch.allclose(model.weight.grad, expected)
    assert w2_term(torch.tensor([2.0, 1.0]), torch.tensor([1.0, 2.0])).item() == 0.0


# ---- ReDo -----------------------------------------------------------------------------


def test_redo_recycles_only_dormant_units_and_keeps_the_function() -> None:
    model = MLP(4, 3, 6, 1)
    tech = build("redo", make_setup(model), tau=0.0, every=1)
    with torch.no_grad():  # unit 2 dead (ReLU(−10) = 0), every other unit alive (bias +10)
        model.layers[0].weight[2] = 0.0
        model.layers[0].bias.fill_(10.0)
        model.layers[0].bias[2] = -10.0
    x = torch.randn(16, 4)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    out_before = model(x).detach()  # training forward: captures the activity
    tech.after_step(1)
    assert tech.last_recycled == 1
    w0 = model.layers[0].weight
    assert not torch.equal(w0[2], before["layers.0.weight"][2]) and w0[2].abs().max() <= 0.5
    assert torch.equal(torch.cat([w0[:2], w0[3:]]), torch.cat([before["layers.0.weight"][:2],
                                                                 before["layers.0.weight"][3:]]))
    assert (model.out.weight[:, 2] == 0).all()
    assert torch.equal(model.out.weight[:, [0, 1, 3, 4, 5]], before["out.weight"][:, [0, 1, 3, 4, 5]])
    assert torch.allclose(model(x), out_before, atol=1e-6)
    tech.after_step(2)  # unit 2 is alive now (zero outgoing weight, but activity > 0)
    assert tech.last_recycled == 0


# ---- Manifold Mixup -------------------------------------------------------------------


def test_manifold_mixup_mixes_the_chosen_hidden_layer_and_targets() -> None:
    model = MLP(4, 3, 5, 2)
    tech = build("manifold_mixup", make_setup(model))
    x, y = torch.randn(8, 4), torch.randint(0, 3, (8,))
    batch = tech.transform_batch(Batch(x, y, torch.arange(8)), 1)
    assert torch.allclose(batch.y_soft.sum(1), torch.ones(8))
    lam, perm = float(tech.last_lam), tech.last_perm
    assert torch.allclose(batch.y_soft, lam * F.one_hot(y, 3) + (1 - lam) * F.one_hot(y, 3)[perm])
    linears = [*model.layers, model.out]
    for k in range(3):  # by hand (F.linear: calling the modules would fire the hooks): mix the input of Linear k
        tech.last_layer = k
        h = x
        for i, lin in enumerate(linears):
            if i == k:
                h = lam * h + (1 - lam) * h[perm]
            h = F.linear(h, lin.weight, lin.bias)
            h = torch.relu(h) if i < 2 else h
        assert torch.allclose(model(x), h, atol=1e-6)
    tech.after_step(1)
    plain = model.out(torch.relu(model.layers[1](torch.relu(model.layers[0](x)))))
    assert torch.equal(model(x), plain)  # no mixing after the update (evaluation, diagnostics)


def test_manifold_mixup_with_tiny_alpha_is_plain_ce() -> None:
    model = MLP(4, 3, 5, 2)
    tech = build("manifold_mixup", make_setup(model), alpha=0.05)
    x, y = torch.randn(8, 4), torch.randint(0, 3, (8,))
    hits = 0
    for step in range(20):
        batch = tech.transform_batch(Batch(x, y, torch.arange(8)), step + 1)
        lam = float(tech.last_lam)
        if lam in (0.0, 1.0):
            hits += 1
            perm = tech.last_perm if lam == 0.0 else torch.arange(8)
            ce = F.cross_entropy(model(x), batch.y_soft)
            ref = F.cross_entropy(model(x)[perm] if tech.last_layer == 0 else model(x[perm]), y[perm])
            assert torch.allclose(ce, ref, atol=1e-6)
        tech.after_step(step + 1)
    assert hits > 0


# ---- robust gradient averaging --------------------------------------------------------


def test_wgd_and_m3_aggregates_by_hand() -> None:
    g = torch.tensor([[1.0], [2.0], [3.0], [100.0], [-50.0]])
    assert winsorized_mean(g, 0).item() == pytest.approx(56 / 5)
    assert winsorized_mean(g, 1).item() == pytest.approx((1 + 2 + 3 + 3 + 1) / 5)
    assert winsorized_mean(g, 8).item() == pytest.approx(2.0)  # c capped at (N−1)//2: the median
    g6 = torch.tensor([[1.0], [3.0], [10.0], [20.0], [5.0], [7.0]])
    assert median_of_means(g6).item() == pytest.approx(6.0)  # means 2, 15, 6


def test_per_example_gradients_average_to_the_batch_gradient() -> None:
    model = MLP(4, 3, 5, 1)
    tech = build("robust_avg", make_setup(model))
    x, y = torch.randn(6, 4), torch.randint(0, 3, (6,))
    grads = tech.per_example_grads(Batch(x, y, torch.arange(6)))
    F.cross_entropy(model(x), y).backward()
    for name, p in model.named_parameters():
        assert grads[name].shape == (6, *p.shape)
        assert torch.allclose(grads[name].mean(0), p.grad, atol=1e-6)


def _final_weights(regs: dict) -> list[Tensor]:
    trainer = Trainer(validate(tiny("digits", "mlp", regs)))
    list(trainer.events())
    return [p.detach().clone() for p in trainer.model.parameters()]


def test_robust_avg_c0_is_bit_identical_to_sgd_and_c2_differs() -> None:
    plain = _final_weights({})
    same = _final_weights({"robust_avg": {"c": 0}})
    assert all(torch.equal(a, b) for a, b in zip(plain, same, strict=True))
    robust = _final_weights({"robust_avg": {"c": 2}})
    assert not all(torch.equal(a, b) for a, b in zip(plain, robust, strict=True))
    m3 = _final_weights({"robust_avg": {"mode": "m3"}})
    assert all(torch.isfinite(w).all() for w in m3)


# ---- output scale ---------------------------------------------------------------------


def test_output_scale_is_centred_and_scaled() -> None:
    model = MLP(4, 3, 8, 1)
    x = torch.randn(5, 4)
    raw = model(x).detach()
    tech = build("output_scale", make_setup(model), alpha=3.0)
    assert torch.equal(model(x), torch.zeros(5, 3))  # f ≡ 0 at init
    assert sum(1 for _ in model.parameters()) == 4  # θ₀ is not part of the model
    with torch.no_grad():
        model.out.bias.add_(1.0)
    assert torch.allclose(model(x), torch.full((5, 3), 3.0))
    out, h = model.forward_with_features(x)
    assert torch.allclose(out, model(x)) and torch.allclose(h, model.features(x))
    assert torch.equal(tech.reference(x), raw)


def test_output_scale_larger_alpha_moves_weights_less() -> None:
    ratios = []
    for alpha in (1.0, 10.0, 100.0):
        torch.manual_seed(0)
        model = MLP(4, 3, 16, 1)
        build("output_scale", make_setup(model), alpha=alpha)
        theta0 = torch.cat([p.detach().flatten().clone() for p in model.parameters()])
        opt = torch.optim.SGD(model.parameters(), lr=0.5 / alpha**2)  # the paper's loss / α², as lr / α²
        gen = torch.Generator().manual_seed(1)
        x, y = torch.randn(64, 4, generator=gen), torch.randint(0, 3, (64,), generator=gen)
        for _ in range(30):
            opt.zero_grad()
            F.cross_entropy(model(x), y).backward()
            opt.step()
        theta = torch.cat([p.detach().flatten() for p in model.parameters()])
        ratios.append(float((theta - theta0).norm() / theta0.norm()))
    assert ratios[0] > ratios[1] > ratios[2] > 0
    assert ratios[2] < 0.05 * ratios[0]


# ---- a short Trainer run each -----------------------------------------------------------------


@pytest.mark.parametrize(("name", "cfg"), [
    ("manifold_mixup", tiny("digits", "mlp", {"manifold_mixup": {}})),
    ("redo", tiny("digits", "mlp", {"redo": {"every": 2, "tau": 0.5}})),
    ("w2_init", tiny("digits", "mlp", {"w2_init": {"lambda": 0.01}})),
    ("output_scale", tiny("digits", "mlp", {"output_scale": {"alpha": 2.0}})),
    ("sae_abs_topk", tiny("sparse_features", "sae", {"sae_abs_topk": {"k": 4}}, loss__name="mse", data__dim=16)),
])
def test_trains_four_steps(name: str, cfg: dict) -> None:
    trainer = Trainer(validate(cfg))
    events = list(trainer.events())
    assert events[-1].state == "completed", events[-1].message
    assert torch.isfinite(torch.tensor(trainer.final["train/loss"]))
