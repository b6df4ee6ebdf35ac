"""Unit tests for engine/models: shapes, the features/head contract, dropout slots and inits.

Datasets are tiny hand-built ``Dataset`` objects, so these tests do not depend on engine/data's
generators.
"""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch
from torch import nn

from engine.config import ModelConfig
from engine.data import Dataset
from engine.models import REGISTRY, LabModel, build_model
from engine.models.mlp import gromov_std
from engine.models.random_features import RandomFeatures
from engine.models.sae import SparseAutoencoder

N = 6


def vec_data(in_dim: int = 5, classes: int = 3, n: int = N) -> Dataset:
    x = torch.randn(n, in_dim)
    y = torch.randint(0, classes, (n,))
    return Dataset("fake", "classification", x, y, x.clone(), y.clone(), num_classes=classes)


def digits_data(meta: dict[str, Any] | None = None) -> Dataset:
    x = torch.rand(N, 64)
    y = torch.randint(0, 10, (N,))
    return Dataset("fake_digits", "classification", x, y, x.clone(), y.clone(), num_classes=10, meta=meta or {})


def token_data(p: int = 7, n: int = N) -> Dataset:
    a, b = torch.randint(0, p, (n,)), torch.randint(0, p, (n,))
    x = torch.stack([a, b, torch.full((n,), p)], dim=1).float()  # (a, b, "=") as float token ids
    y = (a + b) % p
    return Dataset("fake_modular", "classification", x, y, x.clone(), y.clone(), num_classes=p,
                   meta={"vocab": p + 1})


def recon_data(d: int = 8) -> Dataset:
    x = torch.randn(N, d)
    return Dataset("fake_sparse", "reconstruction", x, x.clone(), x.clone(), x.clone())


def build(name: str, data: Dataset, seed: int = 0, **kw: Any) -> LabModel:
    torch.manual_seed(seed)
    return build_model(ModelConfig(name=name, **kw), data)


# name → (dataset factory, config overrides, expected features dim, expected dropout slots at default depth)
CASES: dict[str, tuple[Any, dict[str, Any], int, int]] = {
    "mlp": (vec_data, {"width": 7, "depth": 3}, 7, 3),
    "quadratic_mlp": (vec_data, {"width": 9, "bias": False}, 9, 1),
    "cnn": (digits_data, {"width": 11}, 11, 1),
    "transformer": (token_data, {"width": 16, "heads": 4, "d_mlp": 12, "depth": 2}, 16, 4),
    "random_features": (vec_data, {"width": 13}, 13, 1),
    "sae": (recon_data, {"width": 10}, 10, 0),
}


def test_every_model_is_registered() -> None:
    build("mlp", vec_data())  # triggers loading of all model modules
    assert set(CASES) <= set(REGISTRY)


@pytest.mark.parametrize("name", CASES)
def test_shapes_and_head_of_features(name: str) -> None:
    make, kw, feat_dim, _ = CASES[name]
    data = make()
    model = build(name, data, **kw).eval()
    x = data.x_train
    out, h = model.forward_with_features(x)
    assert h.shape == (N, feat_dim)
    assert out.shape == (N, data.output_dim)
    assert torch.equal(model(x), out)
    assert torch.equal(model.head(model.features(x)), out)
    assert all(p.dtype == torch.float32 for p in model.parameters())


@pytest.mark.parametrize("name", CASES)
def test_forward_with_features_is_one_pass(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    make, kw, _, _ = CASES[name]
    data = make()
    model = build(name, data, **kw)
    calls = []
    original = model.features
    monkeypatch.setattr(model, "features", lambda x: calls.append(1) or original(x))
    model.forward_with_features(data.x_train)
    assert len(calls) == 1


@pytest.mark.parametrize("name", [n for n in CASES if n != "sae"])
def test_dropout_slots(name: str) -> None:
    make, kw, _, n_slots = CASES[name]
    data = make()
    model = build(name, data, **kw, dropout=0.5)
    assert len(model.dropout_slots) == n_slots
    assert all(isinstance(s, nn.Dropout) and s.p == 0.5 for s in model.dropout_slots)
    registered = {id(m) for m in model.modules()}
    assert all(id(s) in registered for s in model.dropout_slots)  # so train()/eval() reach them
    x = data.x_train
    if name == "random_features":  # zero-initialised readout: give it weights so dropout is visible
        nn.init.normal_(model.readout.weight)
    model.eval()
    assert torch.equal(model(x), model(x))
    assert torch.equal(model.features(x), model.features(x))
    model.train()
    torch.manual_seed(1)
    assert not torch.equal(model(x), model(x))
    for slot in model.dropout_slots:  # the dropout regularizer sets p live
        slot.p = 0.0
    assert torch.equal(model(x), model(x))


def test_sae_rejects_dropout() -> None:
    with pytest.raises(ValueError, match=r"model\.dropout"):
        build("sae", recon_data(), dropout=0.1)


@pytest.mark.parametrize("name", ["mlp", "quadratic_mlp", "cnn", "transformer"])
def test_init_scale_multiplies_every_parameter(name: str) -> None:
    make, kw, _, _ = CASES[name]
    data = make()
    base = dict(build(name, data, seed=3, **kw).named_parameters())
    scaled = dict(build(name, data, seed=3, **kw, init_scale=2.5).named_parameters())
    assert base.keys() == scaled.keys()
    for key, p in base.items():
        torch.testing.assert_close(scaled[key], 2.5 * p)


def test_init_std_gives_normal_weights_and_zero_biases() -> None:
    model = build("mlp", vec_data(in_dim=200), width=400, depth=2, init_std=0.1)
    for layer in model.layers:
        assert layer.weight.std().item() == pytest.approx(0.1, rel=0.05)
        assert torch.count_nonzero(layer.bias) == 0


def test_mlp_depth_width_bias_flags() -> None:
    data = vec_data(in_dim=5, classes=2)
    model = build("mlp", data, width=7, depth=3)
    assert len(model.layers) == 3 and all(layer.out_features == 7 for layer in model.layers)
    # (5·7 + 7) + 2·(7·7 + 7) + (7·2 + 2)
    assert sum(p.numel() for p in model.parameters()) == 42 + 112 + 16
    no_bias = build("mlp", data, width=7, depth=3, bias=False)
    assert sum(p.numel() for p in no_bias.parameters()) == 35 + 98 + 14
    assert all(m.bias is None for m in no_bias.modules() if isinstance(m, nn.Linear))


@pytest.mark.parametrize("activation,expected", [
    ("relu", torch.relu), ("tanh", torch.tanh), ("quadratic", lambda t: t * t), ("identity", lambda t: t),
    ("gelu", nn.functional.gelu), ("silu", nn.functional.silu),
])
def test_mlp_activation(activation: str, expected: Any) -> None:
    data = vec_data()
    model = build("mlp", data, width=4, depth=1, activation=activation)
    x = data.x_train
    torch.testing.assert_close(model.features(x), expected(model.layers[0](x)))


def test_quadratic_mlp_gromov_init() -> None:
    assert gromov_std(500) == pytest.approx(0.05)
    model = build("quadratic_mlp", vec_data(in_dim=194, classes=97), width=500, bias=False)
    assert model.hidden.weight.std().item() == pytest.approx(0.05, rel=0.03)
    assert model.out.weight.std().item() == pytest.approx(0.05, rel=0.03)
    assert model.hidden.bias is None and model.out.bias is None
    x = torch.randn(3, 194)
    torch.testing.assert_close(model.features(x), model.hidden(x) ** 2)
    custom = build("quadratic_mlp", vec_data(in_dim=194, classes=97), width=500, init_std=0.2)
    assert custom.hidden.weight.std().item() == pytest.approx(0.2, rel=0.03)


def test_cnn_reshapes_with_or_without_meta() -> None:
    x = torch.rand(N, 64)
    plain = build("cnn", digits_data(), width=8)
    for meta in ({"image_shape": (8, 8)}, {"image_shape": [1, 8, 8]}):
        torch.testing.assert_close(build("cnn", digits_data(meta), width=8)(x), plain(x))
    assert plain.shape == (1, 8, 8)
    with pytest.raises(ValueError, match="cnn"):
        build("cnn", vec_data(in_dim=10))


def test_random_features_first_layer_is_frozen() -> None:
    data = vec_data(in_dim=400, classes=3)
    model = build("random_features", data, width=300)
    assert isinstance(model, RandomFeatures)
    names = [n for n, _ in model.named_parameters()]
    assert names == ["readout.weight"]  # the only trainable parameters
    assert {"rf_weight", "rf_bias"} <= set(model.state_dict())  # buffers: saved and moved with the model
    assert not model.rf_weight.requires_grad
    assert model.rf_weight.var().item() == pytest.approx(1 / 400, rel=0.05)
    assert model.rf_bias.std().item() == pytest.approx(0.5, rel=0.15)
    assert torch.count_nonzero(model.readout.weight) == 0  # GD from 0 → the min-norm solution
    nn.init.normal_(model.readout.weight)
    model(data.x_train).square().sum().backward()
    assert model.rf_weight.grad is None and model.readout.weight.grad is not None
    feats = model.features(data.x_train)
    torch.testing.assert_close(feats, torch.relu(data.x_train @ model.rf_weight + model.rf_bias))
    no_bias = build("random_features", data, width=30, bias=False)
    assert torch.count_nonzero(no_bias.rf_bias) == 0
    scaled = build("random_features", data, width=30, init_std=0.1, init_scale=2.0)
    assert scaled.readout.weight.std().item() == pytest.approx(0.2, rel=0.2)


@pytest.mark.parametrize("depth", [1, 2])
def test_transformer_depths(depth: int) -> None:
    data = token_data()
    model = build("transformer", data, width=16, heads=4, d_mlp=12, depth=depth)
    assert len(model.blocks) == depth
    assert model(data.x_train).shape == (N, 7)
    torch.testing.assert_close(model(data.x_train.long()), model(data.x_train))  # float ids are cast
    # features() runs the last block at the read-out position only; it must match the full stream
    torch.testing.assert_close(model.features(data.x_train), model.residual(data.x_train)[:, -1])


def test_transformer_rejects_bad_depth_and_heads() -> None:
    with pytest.raises(ValueError, match=r"model\.depth: the transformer supports 1–2 layers"):
        build("transformer", token_data(), width=16, heads=4, depth=3)
    with pytest.raises(ValueError, match=r"model\.heads"):
        build("transformer", token_data(), width=18, heads=4, depth=1)


def test_transformer_nanda_init_and_structure() -> None:
    p, d_model = 53, 128
    model = build("transformer", token_data(p=p), width=d_model, heads=4, d_mlp=512, depth=1)
    std = 1 / math.sqrt(d_model)
    assert model.W_E.shape == (p + 1, d_model)
    assert model.W_E.std().item() == pytest.approx(std, rel=0.05)
    attn = model.blocks[0].attn
    assert attn.W_Q.shape == (4, 32, d_model) and attn.W_O.shape == (d_model, 128)
    for w in (attn.W_Q, attn.W_K, attn.W_V, attn.W_O, model.blocks[0].mlp_in.weight):
        assert w.std().item() == pytest.approx(std, rel=0.05)
    assert model.W_U.shape == (d_model, p)
    assert model.W_U.std().item() == pytest.approx(1 / math.sqrt(p + 1), rel=0.05)
    assert not any(isinstance(m, nn.LayerNorm) for m in model.modules())
    with_ln = build("transformer", token_data(p=p), width=32, heads=4, d_mlp=16, depth=2, layernorm=True)
    assert sum(isinstance(m, nn.LayerNorm) for m in with_ln.modules()) == 5  # 2 per block + final


def test_transformer_attention_is_causal_and_features_are_last_position() -> None:
    data = token_data()
    model = build("transformer", data, width=16, heads=2, d_mlp=8, depth=2).eval()
    x = data.x_train
    changed = x.clone()
    changed[:, 1:] = (changed[:, 1:] + 1) % 7
    torch.testing.assert_close(model.residual(changed)[:, 0], model.residual(x)[:, 0])
    torch.testing.assert_close(model.features(x), model.residual(x)[:, -1])
    pattern = model.blocks[0].attn.pattern(model.W_E[x.long()])
    assert torch.all(pattern[..., 0, 1:] == 0)  # first position attends only to itself
    torch.testing.assert_close(pattern.sum(-1), torch.ones_like(pattern.sum(-1)))


def test_sae_tied_unit_norm_and_renormalisation() -> None:
    data = recon_data(d=8)
    model = build("sae", data, width=32)
    assert isinstance(model, SparseAutoencoder)
    w_dec = model.decoder.weight
    assert w_dec.shape == (8, 32)  # column j = latent j's direction
    torch.testing.assert_close(w_dec.norm(dim=0), torch.ones(32))
    torch.testing.assert_close(model.encoder.weight, w_dec.T)  # tied init (Gao et al. 2024)
    with torch.no_grad():
        w_dec.mul_(torch.rand(1, 32) * 5 + 0.1)
    model.normalize_decoder_()
    torch.testing.assert_close(w_dec.norm(dim=0), torch.ones(32))


def test_sae_encode_activation_and_decode() -> None:
    data = recon_data(d=8)
    model = build("sae", data, width=32)
    with torch.no_grad():
        model.b_dec.normal_()
    x = data.x_train
    pre = model.encode_pre(x)
    torch.testing.assert_close(pre, (x - model.b_dec) @ model.encoder.weight.T + model.encoder.bias)
    torch.testing.assert_close(model.features(x), torch.relu(pre))
    model.activation = lambda t: t  # what the TopK-style techniques do
    torch.testing.assert_close(model.features(x), pre)
    torch.testing.assert_close(model(x), pre @ model.decoder.weight.T + model.b_dec)


def test_sae_parallel_gradient_projection() -> None:
    data = recon_data(d=8)
    model = build("sae", data, width=16)
    (model(data.x_train) - data.x_train).square().sum().backward()
    model.project_decoder_grad_()
    w, g = model.decoder.weight, model.decoder.weight.grad
    assert g is not None
    torch.testing.assert_close((g * w).sum(dim=0), torch.zeros(16), atol=1e-5, rtol=0)


def test_sae_untied_init_and_scale() -> None:
    data = recon_data(d=8)
    untied = build("sae", data, width=32, init_std=0.3)
    assert not torch.allclose(untied.encoder.weight, untied.decoder.weight.T)
    tied = build("sae", data, seed=5, width=32)
    scaled = build("sae", data, seed=5, width=32, init_scale=2.0)
    torch.testing.assert_close(scaled.encoder.weight, 2.0 * tied.encoder.weight)
    torch.testing.assert_close(scaled.decoder.weight.norm(dim=0), torch.ones(32))


# ---- declarations: what each model accepts and can do, checked against the module it builds ------

KIND_OF = {vec_data: "vector", digits_data: "image", token_data: "tokens", recon_data: "vector"}


@pytest.mark.parametrize("name", CASES)
def test_declared_traits_match_the_built_module(name: str) -> None:
    factory, kw, _, _ = CASES[name]
    family = REGISTRY.lookup(name)
    data = factory()
    assert data.task in family.tasks and KIND_OF[factory] in family.inputs
    model = build(name, data, **kw)
    modules = list(model.modules())
    assert ("dropout_slots" in family.traits) == bool(model.dropout_slots)
    assert ("conv" in family.traits) == any(isinstance(m, nn.Conv2d) for m in modules)
    assert ("relu_units" in family.traits) == any(isinstance(m, nn.ReLU) for m in modules)  # default activation
    trainable = {id(p) for p in model.parameters() if p.requires_grad}
    readout_only = any(isinstance(m, nn.Linear) and {id(p) for p in m.parameters()} == trainable for m in modules)
    assert ("fixed_features" in family.traits) == readout_only


def test_models_declare_what_they_accept() -> None:
    assert REGISTRY.lookup("cnn").inputs == {"image"} and REGISTRY.lookup("transformer").inputs == {"tokens"}
    assert REGISTRY.lookup("sae").tasks == {"reconstruction"}
    assert {"points2d", "vector", "image"} <= REGISTRY.lookup("mlp").inputs
