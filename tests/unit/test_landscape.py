"""Loss-landscape slices (engine/diagnostics/landscape.py) and the ``landscape`` instrument.

Li et al. 2018: zero-mean filter-normalised directions with 1-D tensors zeroed, functional
evaluation that never moves the live weights, the slice centre equal to the live loss, and a PCA
trajectory projection that recovers the plane a path lies in.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from engine.config import validate
from engine.data import Dataset
from engine.diagnostics import DiagnosticContext, get
from engine.diagnostics.landscape import (
    centered_grid,
    filter_normalize,
    random_directions,
    slice_1d,
    slice_2d,
    trajectory_projection,
)
from engine.models import LabModel


class TinyMLP(LabModel):
    def __init__(self, d_in: int = 8, d_out: int = 3, activation: bool = True) -> None:
        super().__init__()
        self.l1, self.out = nn.Linear(d_in, 16), nn.Linear(16, d_out)
        self.act = nn.Tanh() if activation else nn.Identity()

    def features(self, x: Tensor) -> Tensor:
        return self.act(self.l1(x))

    def head(self, h: Tensor) -> Tensor:
        return self.out(h)


class Linear(LabModel):
    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(4, 2)

    def features(self, x: Tensor) -> Tensor:
        return x

    def head(self, h: Tensor) -> Tensor:
        return self.lin(h)


def classification_context() -> DiagnosticContext:
    torch.manual_seed(0)
    model = TinyMLP().double().eval()
    x, y = torch.randn(40, 8, dtype=torch.float64), torch.randint(0, 3, (40,))
    data = Dataset("tiny", "classification", x, y, x[:4], y[:4], num_classes=3)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    return DiagnosticContext(model, data, validate({}), torch.arange(40), lambda out, b: F.cross_entropy(out, b.y),
                             opt, lambda: 0.1)


def quadratic_context() -> DiagnosticContext:
    """Linear regression with ½‖f − y‖² at its least-squares minimum: the loss is exactly quadratic."""
    torch.manual_seed(1)
    x = torch.randn(50, 4, dtype=torch.float64)
    y = x @ torch.randn(4, 2, dtype=torch.float64) + 0.3 * torch.randn(50, 2, dtype=torch.float64)
    model = Linear().double().eval()
    design = torch.cat([x, torch.ones(50, 1, dtype=torch.float64)], dim=1)
    solution = torch.linalg.lstsq(design, y).solution
    with torch.no_grad():
        model.lin.weight.copy_(solution[:4].T)
        model.lin.bias.copy_(solution[4])
    data = Dataset("quad", "regression", x, y, x[:4], y[:4])
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    return DiagnosticContext(model, data, validate({}), torch.arange(50),
                             lambda out, b: 0.5 * (out - b.y).pow(2).sum(1).mean(), opt, lambda: 0.1)


def test_filter_normalized_rows_match_weight_rows_and_biases_are_zero() -> None:
    params = {"w": torch.randn(5, 3), "conv": torch.randn(4, 2, 3, 3), "b": torch.randn(5)}
    d = random_directions(params, seed=3, n=1)[0]
    for name in ("w", "conv"):
        rows_d = d[name].reshape(d[name].shape[0], -1).norm(dim=1)
        rows_t = params[name].reshape(params[name].shape[0], -1).norm(dim=1)
        torch.testing.assert_close(rows_d, rows_t)
    assert torch.equal(d["b"], torch.zeros(5))
    assert torch.equal(filter_normalize({"b": torch.ones(5)}, params | {"b": params["b"]}, "copy")["b"], params["b"])
    again = random_directions(params, seed=3, n=1)[0]
    assert all(torch.equal(d[k], again[k]) for k in d)  # seeded
    big = random_directions({"w": torch.ones(50, 200)}, seed=5, n=1)[0]["w"]
    assert abs(float(big.mean())) < 0.05 * float(big.std())  # zero-mean Gaussian, never U[0, 1] (§19.5)


def test_slice_centre_is_the_live_loss_and_weights_are_untouched() -> None:
    ctx = classification_context()
    before = [p.detach().clone() for p in ctx.model.parameters()]
    d1, d2 = random_directions(ctx.named_params(), seed=0)
    one = slice_1d(ctx, d1, centered_grid(1.0, 51))
    two = slice_2d(ctx, d1, d2, centered_grid(1.0, 5))
    live = float(ctx.objective().detach())
    assert one["loss"][25] == live and two["loss"][2, 2] == live
    with torch.no_grad():
        live_acc = float((ctx.model(ctx.probe_x).argmax(-1) == ctx.probe_y).double().mean())
    assert one["acc"][25] == live_acc and np.all((one["acc"] >= 0) & (one["acc"] <= 1))
    assert one["loss"].shape == (51,) and two["loss"].shape == (5, 5)
    for p, b in zip(ctx.model.parameters(), before, strict=True):
        assert torch.equal(p, b) and p.grad is None


def test_two_d_slice_of_a_quadratic_is_symmetric() -> None:
    ctx = quadratic_context()
    d1, d2 = random_directions(ctx.named_params(), seed=1, bias_mode="copy")
    grid = centered_grid(1.0, 7)
    res = slice_2d(ctx, d1, d2, grid)
    swapped = slice_2d(ctx, d2, d1, grid)
    np.testing.assert_allclose(res["loss"], swapped["loss"].T, rtol=1e-13)
    np.testing.assert_allclose(res["loss"], res["loss"][::-1, ::-1], rtol=1e-10)  # L*(α, β) = L*(−α, −β)
    assert np.all(res["loss"] >= res["loss"][3, 3]) and np.isnan(res["acc"]).all()


def test_trajectory_projection_recovers_the_plane() -> None:
    rng = np.random.default_rng(0)
    final = rng.normal(size=300)
    u, v = rng.normal(size=300), rng.normal(size=300)
    coeffs = rng.normal(size=(12, 2))
    snaps = [torch.as_tensor(final + a * u + b * v) for a, b in coeffs]
    res = trajectory_projection(snaps, final)
    basis = res["directions"]
    assert basis.shape == (2, 300)
    np.testing.assert_allclose(basis @ basis.T, np.eye(2), atol=1e-10)
    for w in (u, v):  # both plane vectors lie in the span of the two PCs
        np.testing.assert_allclose(basis.T @ (basis @ w), w, atol=1e-8)
    recon = final + res["coords"] @ basis
    np.testing.assert_allclose(recon, np.stack([s.numpy() for s in snaps]), atol=1e-8)
    assert res["explained"].sum() == pytest.approx(1.0)


def test_landscape_instrument_modes() -> None:
    ctx = classification_context()
    before = [p.detach().clone() for p in ctx.model.parameters()]
    one = get("landscape")(ctx, 0, mode="1d", points=11, directions_seed=4).measure(ctx, 0).artifacts["landscape"]
    assert one["loss"].shape == (11,) and one["seed"][0] == 4 and one["loss"][5] == float(ctx.objective().detach())
    eig = get("landscape")(ctx, 0, mode="eigen", points=5).measure(ctx, 0).artifacts["landscape"]
    assert eig["loss"].shape == (5, 5) and eig["alphas"][-1] == 0.5 and eig["eigenvalues"][0] >= eig["eigenvalues"][1]
    two = get("landscape")(ctx, 0, points=3).measure(ctx, 0).artifacts["landscape"]
    assert two["loss"].shape == (3, 3) and set(two) >= {"alphas", "betas", "loss", "acc", "seed"}
    for p, b in zip(ctx.model.parameters(), before, strict=True):
        assert torch.equal(p, b)
