"""Neural collapse, feature ranks, dead units and SAE metrics on constructed features and tiny models.

Exact cases (Papyan, Han & Donoho 2020's definitions): a simplex ETF with no within-class spread and W ∝ M̃ᵀ gives
0 for every NC metric; NC1 is checked against hand computations and a direct NumPy pseudo-inverse
with the rank-min(d, C − 1) clamp (also for d < C − 1).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import Tensor, nn

from engine.config import RunConfig, validate
from engine.data import Dataset
from engine.diagnostics import DiagnosticContext, get
from engine.diagnostics.collapse import between_class_eig, classifier_of, neural_collapse
from engine.diagnostics.representation import (
    act_sparsity,
    dead_units,
    effective_rank,
    rank_metrics,
    sae_metrics,
    srank,
    stable_rank,
)
from engine.losses import data_loss, log_softmax
from engine.models.cnn import CNN
from engine.models.mlp import MLP
from engine.models.sae import SparseAutoencoder
from engine.models.transformer import Transformer
from engine.regularizers.base import Batch

# ---- helpers -------------------------------------------------------------------------------


def simplex_etf(c: int, d: int, generator: torch.Generator) -> Tensor:
    """C×d centred class means on a simplex ETF (unit norms, cos = −1/(C − 1)) in a random C-dim subspace."""
    m = math.sqrt(c / (c - 1)) * (torch.eye(c, dtype=torch.float64) - 1.0 / c)
    basis, _ = torch.linalg.qr(torch.randn(d, c, dtype=torch.float64, generator=generator))
    return m @ basis.T


def numpy_nc1(h: np.ndarray, y: np.ndarray) -> float:
    """Direct §8 NC1: d×d Σ_W, Σ_B, eigh pseudo-inverse of rank min(d, C − 1)."""
    classes = np.unique(y)
    c, (n, d) = len(classes), h.shape
    means = np.stack([h[y == k].mean(0) for k in classes])
    mu_g = means.mean(0)
    within = h - means[np.searchsorted(classes, y)]
    sigma_w = within.T @ within / n
    sigma_b = (means - mu_g).T @ (means - mu_g) / c
    lam, u = np.linalg.eigh(sigma_b)
    lam, u = lam[::-1][: min(d, c - 1)], u[:, ::-1][:, : min(d, c - 1)]
    keep = lam > 1e-12 * lam[0]
    pinv = u[:, keep] @ np.diag(1 / lam[keep]) @ u[:, keep].T
    return float(np.trace(sigma_w @ pinv) / c)


def orthonormal_columns(n: int, r: int, generator: torch.Generator) -> Tensor:
    """N×r orthonormal columns that are also zero-mean (so centring leaves them unchanged)."""
    a = torch.randn(n, r, dtype=torch.float64, generator=generator)
    q, _ = torch.linalg.qr(a - a.mean(0))
    return q


def make_ctx(model: nn.Module, data: Dataset, cfg: RunConfig | None = None) -> DiagnosticContext:
    cfg = cfg or RunConfig()

    def loss_fn(out: Tensor, batch: Batch) -> Tensor:
        return data_loss(out, batch, cfg.loss, data.task, log_softmax)[0]

    model.eval()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    return DiagnosticContext(model, data, cfg, torch.arange(data.n_train), loss_fn, optimizer, lambda: 0.1)


def classification_data(n: int = 60, d: int = 5, c: int = 3, seed: int = 0) -> Dataset:
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % c
    x = torch.randn(n, d, generator=g) + 2.0 * nn.functional.one_hot(y, d).float()
    return Dataset("blobs", "classification", x, y, x[:10].clone(), y[:10].clone(), num_classes=c)


@pytest.fixture
def gen() -> torch.Generator:
    return torch.Generator().manual_seed(1234)


# ---- neural collapse -----------------------------------------------------------------------


def test_exact_simplex_etf_gives_zero_for_every_nc_metric(gen: torch.Generator) -> None:
    c, d, per_class = 4, 7, 5
    centered = simplex_etf(c, d, gen)
    offset = torch.zeros(d, dtype=torch.float64)
    offset[-1] = 3.0  # μ_G outside the means' span: W μ_G = 0, so b = 0 still classifies exactly
    offset -= centered.T @ torch.linalg.lstsq(centered.T, offset[:, None]).solution.squeeze(1)
    h = (centered + offset).repeat_interleave(per_class, 0)
    y = torch.arange(c).repeat_interleave(per_class)
    w = 2.5 * centered  # W = M̃ᵀ scaled (rows = classes)
    out = neural_collapse(h, y, w, torch.zeros(c))
    assert set(out) == {"nc/nc1", "nc/equinorm", "nc/equinorm_w", "nc/equiangular", "nc/max_angle",
                        "nc/nc3", "nc/nc4"}
    for key, value in out.items():
        assert value == pytest.approx(0.0, abs=1e-10), key


def test_etf_with_tiny_noise_is_nearly_collapsed(gen: torch.Generator) -> None:
    c, d, per_class = 5, 8, 40
    centered = simplex_etf(c, d, gen)
    y = torch.arange(c).repeat_interleave(per_class)
    h = centered[y] + 1e-4 * torch.randn(len(y), d, dtype=torch.float64, generator=gen)
    out = neural_collapse(h, y, centered, torch.zeros(c))
    assert out["nc/nc1"] < 1e-6
    assert out["nc/max_angle"] < 1e-3 and out["nc/equiangular"] < 1e-3 and out["nc/equinorm"] < 1e-3
    assert out["nc/nc3"] < 1e-6 and out["nc/nc4"] == 0.0


def test_random_features_are_far_from_collapse(gen: torch.Generator) -> None:
    c, d, n = 5, 16, 200
    h = torch.randn(n, d, generator=gen)
    y = torch.randint(0, c, (n,), generator=gen)
    out = neural_collapse(h, y, torch.randn(c, d, generator=gen), torch.randn(c, generator=gen))
    assert out["nc/nc1"] > 1.0
    assert out["nc/nc3"] > 0.5
    assert out["nc/nc4"] > 0.3
    assert out["nc/max_angle"] > 0.05


def test_nc1_two_class_hand_computation() -> None:
    # class 0: 0, 2, 1 (mean 1); class 1: 4, 6 (mean 5). μ_G = 3 (mean of means, not the sample mean 2.6)
    h = torch.tensor([[0.0], [2.0], [1.0], [4.0], [6.0]])
    y = torch.tensor([0, 0, 0, 1, 1])
    # Σ_B = ((1 − 3)² + (5 − 3)²)/2 = 4; Σ_W = (1 + 1 + 0 + 1 + 1)/5 = 0.8; NC1 = 0.8/4/2 = 0.1
    out = neural_collapse(h, y)
    assert out["nc/nc1"] == pytest.approx(0.1, rel=1e-12)
    assert out["nc/equinorm"] == pytest.approx(0.0, abs=1e-12)
    assert out["nc/equiangular"] == 0.0  # a single pair is trivially equiangular
    assert out["nc/max_angle"] == pytest.approx(0.0, abs=1e-12)  # cos = −1 = −1/(C − 1)
    assert "nc/nc3" not in out and "nc/nc4" not in out  # no classifier given


@pytest.mark.parametrize(("c", "d"), [(6, 2), (6, 4), (4, 10), (3, 3)])
def test_nc1_matches_numpy_with_rank_clamp(gen: torch.Generator, c: int, d: int) -> None:
    n = 30 * c
    y = torch.arange(n) % c
    h = torch.randn(n, d, dtype=torch.float64, generator=gen) + 3 * torch.randn(c, d, dtype=torch.float64,
                                                                              generator=gen)[y]
    expected = numpy_nc1(h.numpy(), y.numpy())
    assert neural_collapse(h, y)["nc/nc1"] == pytest.approx(expected, rel=1e-8)


def test_pseudo_inverse_rank_is_min_d_and_c_minus_one(gen: torch.Generator) -> None:
    for c, d, rank in ((6, 2, 2), (4, 10, 3), (5, 4, 4)):
        means = torch.randn(c, d, dtype=torch.float64, generator=gen)
        lam, u = between_class_eig(means - means.mean(0))
        assert lam.shape == (rank,) and u.shape == (d, rank)
        assert torch.allclose(u.T @ u, torch.eye(rank, dtype=torch.float64), atol=1e-10)
    collinear = torch.tensor([[0.0, 0.0, 0.0], [1.0, 2.0, 3.0], [3.0, 6.0, 9.0]], dtype=torch.float64)
    lam, _ = between_class_eig(collinear - collinear.mean(0))
    assert lam.shape == (1,)  # rank 1 < min(d, C − 1) = 2: the zero eigenvalue is dropped, not inverted


def test_nc1_scale_invariant_and_nc3_invariant_to_scaling_w(gen: torch.Generator) -> None:
    c, d, n = 4, 6, 80
    y = torch.arange(n) % c
    h = (torch.randn(n, d, generator=gen) + torch.randn(c, d, generator=gen)[y]).double()  # 7·h exact
    w, b = torch.randn(c, d, generator=gen).double(), torch.zeros(c)
    base = neural_collapse(h, y, w, b)
    assert neural_collapse(7.0 * h, y, w, b)["nc/nc1"] == pytest.approx(base["nc/nc1"], rel=1e-9)
    assert neural_collapse(h, y, 0.01 * w, b)["nc/nc3"] == pytest.approx(base["nc/nc3"], rel=1e-9)


def test_nc4_uses_argmax_with_bias() -> None:
    h = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    y = torch.tensor([0, 1])
    w = torch.eye(2)
    assert neural_collapse(h, y, w, torch.zeros(2))["nc/nc4"] == 0.0
    assert neural_collapse(h, y, w, torch.tensor([0.0, 5.0]))["nc/nc4"] == 0.5  # bias flips sample 0


def test_classifier_of_finds_the_head_linear() -> None:
    mlp = MLP(4, 3, width=8, depth=2)  # hidden layer 2 is also Linear(8, 8): must not be picked
    mlp.train()
    assert classifier_of(mlp, 8) is mlp.out
    assert mlp.training and all(m.training for m in mlp.modules())  # modes restored
    transformer = Transformer(vocab=6, n_ctx=3, out_dim=5, d_model=8, depth=1, heads=2, d_mlp=16)
    assert classifier_of(transformer, 8) is None  # head is ln_final(h) @ W_U: no Linear
    plain = nn.Sequential(nn.Linear(3, 8), nn.ReLU(), nn.Linear(8, 2))
    assert classifier_of(plain, 8) is plain[2]


def test_collapse_instrument_end_to_end() -> None:
    torch.manual_seed(0)
    data = classification_data()
    model = MLP(5, 3, width=8, depth=2)
    ctx = make_ctx(model, data)
    out = get("collapse")(ctx, seed=0).measure(ctx, 0).metrics
    _, feats = model.forward_with_features(data.x_train)
    assert out == pytest.approx(neural_collapse(feats, data.y_train, model.out.weight, model.out.bias))
    assert {"nc/nc1", "nc/nc3", "nc/nc4", "nc/equinorm_w"} <= set(out)
    transformer_like = Transformer(vocab=6, n_ctx=3, out_dim=3, d_model=8, depth=1, heads=2, d_mlp=16)
    tokens = torch.randint(0, 5, (30, 3)).float()
    tdata = Dataset("modular", "classification", tokens, torch.arange(30) % 3, tokens[:5], torch.zeros(5).long(),
                    num_classes=3)
    tctx = make_ctx(transformer_like, tdata)
    tout = get("collapse")(tctx, seed=0).measure(tctx, 0).metrics
    assert "nc/nc1" in tout and "nc/nc3" not in tout and "nc/nc4" not in tout


# ---- ranks ---------------------------------------------------------------------------------


@pytest.mark.parametrize("r", [1, 3, 5])
def test_effective_rank_of_equal_singular_values_is_exactly_r(gen: torch.Generator, r: int) -> None:
    q = orthonormal_columns(40, r, gen)
    v, _ = torch.linalg.qr(torch.randn(12, r, dtype=torch.float64, generator=gen))
    h = 2.0 * q @ v.T
    assert effective_rank(h) == pytest.approx(r, rel=1e-9)
    assert stable_rank(h) == pytest.approx(r, rel=1e-9)
    assert srank(h) == r


def test_effective_rank_of_rank_r_matrix_is_at_most_r(gen: torch.Generator) -> None:
    h = torch.randn(50, 3, generator=gen) @ torch.randn(3, 20, generator=gen)
    assert 1.0 < effective_rank(h) <= 3.0 + 1e-6


def test_stable_rank_and_srank_hand_cases(gen: torch.Generator) -> None:
    q = orthonormal_columns(30, 4, gen)
    sigma = torch.tensor([4.0, 3.0, 2.0, 1.0], dtype=torch.float64)
    h = q * sigma  # singular values exactly 4, 3, 2, 1 (d = 4)
    assert stable_rank(h) == pytest.approx(30 / 16)
    assert srank(h, delta=0.01) == 4  # needs ≥ 9.9 of 10
    assert srank(h, delta=0.1) == 3  # exactly 9 of 10 counts
    assert srank(h, delta=0.35) == 2  # ≥ 6.5
    p = sigma / sigma.sum()
    assert effective_rank(h) == pytest.approx(float(torch.exp(-(p * p.log()).sum())))
    assert rank_metrics(h) == pytest.approx({"rank/effective": effective_rank(h), "rank/stable": 30 / 16,
                                             "rank/srank": 4.0})


def test_rank_uses_centred_features() -> None:
    h = torch.ones(10, 3) * torch.tensor([1.0, 2.0, 3.0])  # constant rows: centred matrix is 0
    assert effective_rank(h) == 0.0 and effective_rank(h, center=False) == pytest.approx(1.0)


def test_rank_instrument_end_to_end() -> None:
    torch.manual_seed(0)
    data = classification_data()
    model = MLP(5, 3, width=8, depth=1)
    ctx = make_ctx(model, data)
    out = get("rank")(ctx, seed=0).measure(ctx, 0).metrics
    assert out == pytest.approx(rank_metrics(model.features(data.x_train)))
    assert 1.0 <= out["rank/effective"] <= 8.0


# ---- dead units ----------------------------------------------------------------------------


def hand_relu_mlp() -> MLP:
    model = MLP(2, 2, width=3, depth=2, activation="relu")
    with torch.no_grad():
        model.layers[0].weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]))
        model.layers[0].bias.copy_(torch.tensor([0.0, 0.0, -100.0]))  # unit 2 of layer 0 is dead
        model.layers[1].weight.copy_(torch.eye(3))
        model.layers[1].bias.copy_(torch.tensor([0.0, -100.0, 0.0]))  # unit 1 dead; unit 2 gets only zeros
    return model


HAND_X = torch.tensor([[1.0, 2.0], [3.0, 1.0], [-1.0, 1.0]])


def test_dead_units_exact_fraction() -> None:
    result = dead_units(hand_relu_mlp(), HAND_X)
    assert result is not None
    dead, per_layer = result
    assert dead == pytest.approx(3 / 6)
    assert list(per_layer.values()) == pytest.approx([1 / 3, 2 / 3])
    # layer 0 zeros: unit 0 on x3, unit 2 always → 4; layer 1: 1 + 3 + 3 = 7; of 2·3·3 = 18
    assert act_sparsity(hand_relu_mlp(), HAND_X) == pytest.approx(11 / 18)


def test_dead_units_not_applicable_without_relu() -> None:
    model = MLP(2, 2, width=3, depth=2, activation="tanh")
    assert dead_units(model, HAND_X) is None and act_sparsity(model, HAND_X) is None
    assert not get("units").applies(validate({"model": {"activation": "tanh"}}))
    assert get("units").applies(validate({}))


def test_dead_conv_channel_counts_as_one_unit() -> None:
    model = CNN((1, 4, 4), 3, width=5, channels=2)
    with torch.no_grad():
        model.conv[0].weight[0].zero_()
        model.conv[0].bias[0] = -1.0  # channel 0 of the first conv: 0 everywhere
        model.conv[0].bias[1] = 10.0  # channel 1: positive everywhere
        model.conv[0].weight[1].zero_()
    x = torch.randn(6, 16)
    result = dead_units(model, x)
    assert result is not None
    assert next(iter(result[1].values())) == pytest.approx(1 / 2)


def test_units_instrument_end_to_end() -> None:
    data = Dataset("blobs", "classification", HAND_X, torch.tensor([0, 1, 0]), HAND_X, torch.tensor([0, 1, 0]),
                   num_classes=2)
    ctx = make_ctx(hand_relu_mlp(), data)
    out = get("units")(ctx, seed=0).measure(ctx, 0).metrics
    assert out == pytest.approx({"units/dead_frac": 0.5, "units/act_sparsity": 11 / 18,
                                 "units/dead_frac_l0": 1 / 3, "units/dead_frac_l1": 2 / 3})


# ---- sparse autoencoder --------------------------------------------------------------------


def hand_sae(decoder_scale: float = 1.0) -> SparseAutoencoder:
    sae = SparseAutoencoder(d=2, n_latents=3)
    with torch.no_grad():
        sae.encoder.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, -1.0]]))
        sae.encoder.bias.copy_(torch.tensor([0.0, 0.0, -10.0]))  # latent 2 never fires
        sae.decoder.weight.copy_(decoder_scale * torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]))
    return sae


SAE_X = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])


def test_sae_metrics_hand_case() -> None:
    sae = hand_sae()
    x_hat, z = sae.forward_with_features(SAE_X)
    out = sae_metrics(SAE_X, x_hat, z)
    assert out["sae/dead_frac"] == pytest.approx(1 / 3)
    assert out["sae/l0_mean"] == pytest.approx(4 / 3)  # active latents 1, 1, 2
    assert out["sae/fvu"] == pytest.approx(0.0)
    x_hat, z = hand_sae(0.5).forward_with_features(SAE_X)
    # ‖x − x̂‖² = ¼·(1 + 1 + 2) = 1; ‖x − x̄‖² = 4/3 with x̄ = (2/3, 2/3)
    assert sae_metrics(SAE_X, x_hat, z)["sae/fvu"] == pytest.approx(0.75)


def test_sae_metrics_count_negative_latents_as_active() -> None:
    """abs-TopK keeps the k largest |z|, so a negative latent fires; z > 0 would miss it."""
    z = torch.tensor([[-2.0, 0.0, 1.0], [0.0, 0.0, -0.5]])
    out = sae_metrics(SAE_X[:2], SAE_X[:2], z)
    assert out["sae/l0_mean"] == pytest.approx(1.5)   # active latents 2, 1
    assert out["sae/dead_frac"] == pytest.approx(1 / 3)  # only the middle latent never fires


def test_sae_instrument_end_to_end() -> None:
    cfg = validate({"data": {"name": "sparse_features"}, "model": {"name": "sae"}, "loss": {"name": "mse"}})
    assert get("sae").applies(cfg) and not get("units").applies(cfg) and not get("sae").applies(RunConfig())
    data = Dataset("sparse_features", "reconstruction", SAE_X, SAE_X, SAE_X, SAE_X)
    ctx = make_ctx(hand_sae(0.5), data, cfg)
    out = get("sae")(ctx, seed=0).measure(ctx, 0).metrics
    assert out["sae/fvu"] == pytest.approx(0.75) and out["sae/dead_frac"] == pytest.approx(1 / 3)
