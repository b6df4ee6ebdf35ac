"""Mechanism tests for the last extended techniques: center loss, alignment/uniformity, fixed
simplex-ETF classifier, Norm Loss, EWC and UDA.

Hand cases on tiny tensors, plus short runs through ``engine.trainer.Trainer``.
"""

from __future__ import annotations

import math
from types import SimpleNamespace
from typing import Any

import pytest
import torch
from torch import nn

from engine.config import ConfigError, validate
from engine.regularizers import Setup, get, normalize_regularizer_params
from engine.regularizers.align_uniform import align_loss, uniform_loss
from engine.regularizers.base import technique_generator
from engine.regularizers.center_loss import center_loss_value, ema_update
from engine.regularizers.etf_classifier import simplex_etf
from engine.regularizers.ewc import empirical_fisher, ewc_penalty
from engine.regularizers.norm_loss import norm_loss_penalty
from engine.regularizers.uda import sharpened_target, uda_loss
from engine.trainer import Trainer

NEW = ("center_loss", "align_uniform", "etf_classifier", "norm_loss", "ewc", "uda")


def tiny(data: str, model: str, extra: dict, regs: dict) -> Any:
    cfg: dict = {
        "seed": 0,
        "data": {"name": data, "n_train": 120, "n_test": 40},
        "model": {"name": model, "width": 16},
        "train": {"steps": 4, "batch_size": 32, "eval_every": 2},
        "regularizers": regs,
    }
    for key, value in extra.items():
        section, field = key.split(".")
        cfg.setdefault(section, {})[field] = value
    return validate(cfg)


DIGITS = {"optim.name": "sgd", "optim.lr": 0.05}
FEW_LABELS = {"data.n_labeled": 10}


def build(name: str, model: nn.Module, x: torch.Tensor, y: torch.Tensor, classes: int, **values: Any) -> Any:
    data = SimpleNamespace(x_train=x, y_train=y, labeled=None, num_classes=classes)
    setup = Setup(model=model, dataset=data, seed=0, total_steps=4, num_classes=classes, device=torch.device("cpu"))
    return get(name)(setup, **normalize_regularizer_params(name, values))


def test_registered_with_metadata() -> None:
    for name in NEW:
        cls = get(name)
        assert cls.name == name and cls.group and cls.source and cls.summary()
        for p in cls.params:
            assert p.help and (p.min is None or p.min <= p.default <= p.max)


# ---- center loss -----------------------------------------------------------------------------


def test_center_loss_value_and_ema_update() -> None:
    z = torch.tensor([[1.0, 0.0], [3.0, 0.0], [0.0, 2.0]])
    y = torch.tensor([0, 0, 1])
    centers = torch.zeros(3, 2)
    assert center_loss_value(z, y, centers).item() == pytest.approx(0.5 * (1 + 9 + 4) / 3)
    ema_update(centers, z, y, 0.5)
    assert torch.allclose(centers, torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, 0.0]]))  # class 2 absent: kept
    assert center_loss_value(z, y, centers).item() == pytest.approx(0.5 * (0 + 4 + 1) / 3)


def test_center_loss_gradient_and_trains() -> None:
    z = torch.randn(5, 3, requires_grad=True)
    y = torch.tensor([0, 1, 0, 2, 1])
    c = torch.randn(3, 3)
    center_loss_value(z, y, c).backward()
    assert torch.allclose(z.grad, (z.detach() - c[y]) / 5, atol=1e-6)
    trainer = Trainer(tiny("digits", "mlp", DIGITS, {"center_loss": {}}))
    trainer.run()
    tech = trainer.techniques["center_loss"]
    assert tech.centers is not None and tech.centers.shape == (10, 16) and tech.centers.abs().sum() > 0
    assert math.isfinite(trainer.final["train/loss"])


# ---- alignment / uniformity ------------------------------------------------------------------


def test_alignment_and_uniformity_values() -> None:
    z = torch.tensor([[1.0, 0.0], [-1.0, 0.0]])
    assert align_loss(z, z).item() == 0.0
    assert align_loss(z, torch.tensor([[0.0, 1.0], [-1.0, 0.0]])).item() == pytest.approx(1.0)  # (2 + 0)/2
    assert uniform_loss(z, 2.0).item() == pytest.approx(-8.0)  # log exp(−2·4)
    square = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [0.0, -1.0]])
    expected = math.log((4 * math.exp(-4.0) + 2 * math.exp(-8.0)) / 6)  # 4 pairs at d² = 2, 2 at d² = 4
    assert uniform_loss(square, 2.0).item() == pytest.approx(expected, rel=1e-6)
    # α = 1: mean distance
    assert align_loss(z, torch.tensor([[0.0, 1.0], [-1.0, 0.0]]), 1.0).item() == pytest.approx(math.sqrt(2) / 2)


def test_align_uniform_trains_and_refuses_tokens() -> None:
    trainer = Trainer(tiny("digits", "mlp", DIGITS, {"align_uniform": {}}))
    trainer.run()
    align, uniform = trainer.techniques["align_uniform"].last_terms
    assert align >= 0 and -8.0 <= uniform <= 0.0
    with pytest.raises(ConfigError, match=r"regularizers\.align_uniform"):
        tiny("modular", "transformer", {"data.p": 13, "data.encoding": "tokens", "model.heads": 4},
             {"align_uniform": {}})


# ---- simplex ETF -----------------------------------------------------------------------------


@pytest.mark.parametrize(("c", "d"), [(2, 1), (4, 3), (10, 16)])
def test_simplex_etf_geometry(c: int, d: int) -> None:
    w = simplex_etf(c, d, technique_generator(0, "etf"), scale=2.0)
    assert w.shape == (c, d)
    gram = w @ w.T
    assert torch.allclose(torch.diagonal(gram), torch.full((c,), 4.0, dtype=w.dtype), atol=1e-10)
    cos = gram / 4.0
    off = cos[~torch.eye(c, dtype=torch.bool)]
    assert torch.allclose(off, torch.full_like(off, -1.0 / (c - 1)), atol=1e-10)
    assert torch.allclose(w.sum(dim=0), torch.zeros(d, dtype=w.dtype), atol=1e-10)  # centred


def test_etf_classifier_stays_fixed_through_training() -> None:
    trainer = Trainer(tiny("digits", "mlp", DIGITS, {"etf_classifier": {}}))
    out = trainer.model.out
    before = out.weight.detach().clone()
    assert not out.weight.requires_grad and not out.bias.requires_grad
    assert all(p is not out.weight for p in trainer.params)
    trainer.run()
    assert torch.equal(out.weight, before) and not out.bias.any()
    gram = before.double() @ before.double().T
    assert torch.allclose(torch.diagonal(gram), torch.ones(10, dtype=torch.float64), atol=1e-5)
    off = gram[~torch.eye(10, dtype=torch.bool)]
    assert torch.allclose(off, torch.full_like(off, -1.0 / 9), atol=1e-5)
    assert math.isfinite(trainer.final["train/loss"])


def test_etf_classifier_refusals() -> None:
    with pytest.raises(ConfigError, match=r"regularizers\.etf_classifier"):
        tiny("digits", "mlp", {"model.width": 4}, {"etf_classifier": {}})  # 10 classes need ≥ 9 features
    with pytest.raises(ConfigError, match=r"regularizers\.etf_classifier"):
        tiny("sparse_features", "sae", {"loss.name": "mse"}, {"etf_classifier": {}})
    with pytest.raises(ConfigError, match="cannot be combined"):
        tiny("moons", "mlp", {}, {"etf_classifier": {}, "weight_norm": {}})


# ---- Norm Loss -------------------------------------------------------------------------------


def test_norm_loss_zero_on_unit_rows_and_gradient() -> None:
    unit = torch.nn.functional.normalize(torch.randn(4, 3, dtype=torch.float64), dim=1)
    assert norm_loss_penalty([unit], 0.5).item() == pytest.approx(0.0, abs=1e-12)
    w = torch.randn(4, 2, 3, dtype=torch.float64, requires_grad=True)  # a kernel: rows flatten to 6
    lam = 0.3
    penalty = norm_loss_penalty([w], lam)
    norms = w.detach().flatten(1).norm(dim=1)
    assert penalty.item() == pytest.approx(lam * (1 - norms).pow(2).sum().item())
    penalty.backward()
    expected = -2 * lam * ((1 - norms) / norms).view(4, 1, 1) * w.detach()
    assert torch.allclose(w.grad, expected, atol=1e-12)


def test_norm_loss_trains() -> None:
    trainer = Trainer(tiny("digits", "mlp", DIGITS, {"norm_loss": {}}))
    trainer.run()
    assert math.isfinite(trainer.final["train/loss"])


# ---- EWC -------------------------------------------------------------------------------------


def test_ewc_fisher_matches_per_example_loop() -> None:
    torch.manual_seed(0)
    model = nn.Linear(2, 3).double()
    x, y = torch.randn(7, 2, dtype=torch.float64), torch.tensor([0, 1, 2, 0, 1, 2, 0])
    names = [k for k, _ in model.named_parameters()]
    fisher = empirical_fisher(model, names, x, y)
    manual = {k: torch.zeros_like(p) for k, p in model.named_parameters()}
    for xi, yi in zip(x, y, strict=True):
        model.zero_grad()
        (-torch.log_softmax(model(xi.unsqueeze(0)), dim=1)[0, yi]).backward()
        for k, p in model.named_parameters():
            manual[k] += p.grad.pow(2) / len(x)
    for k in names:
        assert torch.allclose(fisher[k], manual[k], atol=1e-12)


def test_ewc_penalty_zero_at_anchor_and_gradient() -> None:
    torch.manual_seed(0)
    model = nn.Linear(2, 3).double()
    x, y = torch.randn(20, 2, dtype=torch.float64), torch.randint(0, 3, (20,))
    lam = 2.5
    tech = build("ewc", model, x, y, 3, **{"lambda": lam, "fisher_samples": 16})
    assert len(tech.sample) == 16
    assert tech.extra_loss(None).item() == 0.0  # θ = θ*
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p))
    penalty = tech.extra_loss(None)
    penalty.backward()
    for p, anchor, f in zip(model.parameters(), tech.anchors, tech.fishers, strict=True):
        assert torch.allclose(p.grad, 2 * lam * f * (p.detach() - anchor), atol=1e-12)  # no ½
    assert penalty.item() == pytest.approx(ewc_penalty(list(model.parameters()), tech.anchors, tech.fishers,
                                                       lam).item())


def test_ewc_trains_and_reanchors() -> None:
    trainer = Trainer(tiny("digits", "mlp", DIGITS, {"ewc": {"every": 2}}))
    tech = trainer.techniques["ewc"]
    trainer.run()
    for p, anchor in zip(tech._tensors, tech.anchors, strict=True):
        assert torch.equal(p.detach(), anchor)  # re-anchored after update 4
    assert math.isfinite(trainer.final["train/loss"])


# ---- UDA -------------------------------------------------------------------------------------


def test_uda_hand_case() -> None:
    target = torch.tensor([[math.log(9.0), 0.0], [0.0, 0.0]], dtype=torch.float64)  # confidences 0.9, 0.5
    student = torch.zeros(2, 2, dtype=torch.float64)
    loss, mask, pseudo = uda_loss(target, student, 0.5, 0.8)
    assert mask.tolist() == [True, False] and pseudo.tolist() == [0, 0]
    q = torch.tensor([81 / 82, 1 / 82], dtype=torch.float64)  # softmax([2 ln 9, 0])
    assert torch.allclose(sharpened_target(target, 0.5)[0], q)
    kl = (q * (q / 0.5).log()).sum().item()
    assert loss.item() == pytest.approx(kl / 2)  # divided by |U| = 2, not by the mask count


def test_uda_mask_is_confidence_threshold() -> None:
    gen = torch.Generator().manual_seed(0)
    target = 3 * torch.randn(50, 4, generator=gen)
    _, mask, _ = uda_loss(target, torch.randn(50, 4, generator=gen), 0.4, 0.8)
    assert torch.equal(mask, target.softmax(dim=1).max(dim=1).values >= 0.8)
    loss0, mask0, _ = uda_loss(target, target, 1.0, 0.0)  # T = 1, student = target: KL 0, mask all
    assert bool(mask0.all()) and loss0.item() == pytest.approx(0.0, abs=1e-6)


def test_uda_trains_and_refusals() -> None:
    trainer = Trainer(tiny("moons", "mlp", FEW_LABELS, {"uda": {}}))
    trainer.run()
    assert trainer.techniques["uda"].last_loss_u is not None
    assert math.isfinite(trainer.final["train/loss"])
    with pytest.raises(ConfigError, match=r"regularizers\.uda"):
        tiny("moons", "mlp", {}, {"uda": {}})  # no unlabelled examples
    with pytest.raises(ConfigError, match="cannot be combined"):
        tiny("moons", "mlp", FEW_LABELS, {"uda": {}, "fixmatch": {}})
