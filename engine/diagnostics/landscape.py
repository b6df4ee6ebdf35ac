"""Loss-landscape slices: filter-normalised random directions, eigenvector planes, trajectories.

After Li, Xu, Taylor, Studer & Goldstein 2018, *Visualizing the Loss Landscape of
Neural Nets*. Every evaluation goes through ``torch.func.functional_call`` with a perturbed
parameter dict, so the live model is never displaced — a known bug of landscape tools that mutate
weights in place and forget to restore them. Directions are zero-mean Gaussian,
filter-normalised per output unit with 1-D tensors zeroed once and never rescaled as a
whole afterwards. Loss and accuracy are those of ``DiagnosticContext``: mean data loss on
the fixed probe set; eval mode is the caller's job (the trainer measures inside
``preserved_state`` with the model in eval mode). Everything returned is NumPy.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Literal

import numpy as np
import torch
from torch import Tensor
from torch.func import functional_call

from engine.batch import Batch
from engine.diagnostics.base import CHUNK
from engine.diagnostics.hessian import flatten, lanczos_top_k, make_hvp, unflatten

if TYPE_CHECKING:
    from engine.diagnostics.base import DiagnosticContext

Params = Mapping[str, Tensor]
BiasMode = Literal["zero", "copy"]


# ---- directions -------------------------------------------------------------------------------


def filter_normalize(direction: Params, params: Params, bias_mode: BiasMode = "zero") -> dict[str, Tensor]:
    """Scale each output unit of ``direction`` to the norm of the same unit of ``params``.

    For tensors with ≥ 2 dims, row i along dim 0 (a Linear weight's output unit, a conv kernel's
    output channel): dᵢ ← dᵢ·‖θᵢ‖/(‖dᵢ‖ + 1e-10). 1-D tensors (biases, norm gains) are set to 0
    (``bias_mode="zero"``, the default) or copied from θ (``"copy"``) — handled once as a whole,
    never normalised per element as if each entry were a filter.
    """
    out = {}
    for name, d in direction.items():
        theta = params[name].detach()
        if d.dim() <= 1:
            out[name] = torch.zeros_like(theta) if bias_mode == "zero" else theta.clone()
            continue
        d_rows, t_rows = d.reshape(d.shape[0], -1), theta.reshape(theta.shape[0], -1)
        scale = t_rows.norm(dim=1, keepdim=True) / (d_rows.norm(dim=1, keepdim=True) + 1e-10)
        out[name] = (d_rows * scale).reshape(d.shape)
    return out


def random_direction(params: Params, generator: torch.Generator, bias_mode: BiasMode = "zero") -> dict[str, Tensor]:
    """One filter-normalised N(0, I) direction in parameter shapes, drawn on the CPU from ``generator``."""
    raw = {}
    for name, p in params.items():
        noise = torch.randn(p.shape, generator=generator, dtype=torch.float64)
        raw[name] = noise.to(device=p.device, dtype=p.dtype)
    return filter_normalize(raw, params, bias_mode)


def random_directions(params: Params, seed: int, n: int = 2, bias_mode: BiasMode = "zero",
                      orthogonalize: bool = False) -> list[dict[str, Tensor]]:
    """``n`` independent filter-normalised directions from one seed (stored with the artifact).

    The same seed gives the same raw noise for every run with the same architecture, so A/B runs
    are compared along the same directions while the normalisation uses each run's own θ.
    ``orthogonalize`` applies Gram–Schmidt to the later directions against the earlier ones
    (after normalisation; this changes their per-filter scale slightly, hence off by default).
    """
    generator = torch.Generator().manual_seed(seed)
    dirs = [random_direction(params, generator, bias_mode) for _ in range(n)]
    if orthogonalize:
        flats: list[Tensor] = []
        for i, d in enumerate(dirs):
            f = flatten(d.values())
            for prev in flats:
                f = f - torch.dot(f, prev) / torch.dot(prev, prev) * prev
            flats.append(f)
            dirs[i] = {k: v.clone() for k, v in unflatten(f, d).items()}
    return dirs


def eigen_directions(ctx: DiagnosticContext, k: int = 2, tol: float = 1e-6,
                     generator: torch.Generator | None = None) -> tuple[list[dict[str, Tensor]], np.ndarray]:
    """Top-k Hessian eigenvectors (unit norm in parameter space) as directions, with their eigenvalues."""
    params = ctx.named_params()
    hvp = make_hvp(ctx.objective, params)
    res = lanczos_top_k(hvp, hvp.dim, k, tol=tol, generator=generator)
    dirs = [{n: t.clone() for n, t in unflatten(res.eigenvectors[:, i].contiguous(), params).items()}
            for i in range(k)]
    return dirs, res.eigenvalues


# ---- evaluation -------------------------------------------------------------------------------


@torch.no_grad()
def evaluate_at(ctx: DiagnosticContext, params: Params) -> tuple[float, float]:
    """(mean data loss, accuracy) on the probe set at ``params`` via ``functional_call``.

    The loss uses the same chunked arithmetic as ``ctx.objective`` (each chunk's mean loss times
    its size, summed, divided by n), so at θ it equals the live objective exactly. Accuracy is
    argmax against the given labels for classification, NaN otherwise.
    """
    x, y = ctx.probe_x, ctx.probe_y
    n = x.shape[0]
    total, correct = None, 0
    classify = ctx.data.task == "classification"
    for start in range(0, n, CHUNK):
        xb, yb = x[start:start + CHUNK], y[start:start + CHUNK]
        out = functional_call(ctx.model, dict(params), (xb,))
        part = ctx.loss_fn(out, Batch(xb, yb, torch.arange(len(xb), device=xb.device))) * len(xb)
        total = part if total is None else total + part
        if classify:
            correct += int((out.argmax(-1) == yb).sum())
    assert total is not None
    return float(total / n), (correct / n if classify else math.nan)


def _point(params: Params, dirs: Sequence[Params], coeffs: Sequence[float]) -> dict[str, Tensor]:
    """θ + Σ cₖ dₖ as a new dict (the live tensors are only read)."""
    out = {}
    for name, p in params.items():
        value = p.detach()
        for d, c in zip(dirs, coeffs, strict=True):
            if c != 0.0:
                value = value + c * d[name]
        out[name] = value
    return out


def centered_grid(span: float, points: int) -> np.ndarray:
    """``points`` values on [−span, span] with the middle one exactly 0 (so the centre is θ itself)."""
    grid = np.linspace(-span, span, points)
    grid[np.abs(grid) < 1e-12 * max(span, 1.0)] = 0.0
    return grid


def slice_1d(ctx: DiagnosticContext, direction: Params, alphas: Sequence[float] | np.ndarray) -> dict[str, np.ndarray]:
    """L(θ + αd) and accuracy for each α (default grid: ``centered_grid(1, 51)``)."""
    params = ctx.named_params()
    alphas = np.asarray(alphas, dtype=np.float64)
    loss, acc = np.empty(alphas.size), np.empty(alphas.size)
    for i, a in enumerate(alphas):
        loss[i], acc[i] = evaluate_at(ctx, _point(params, [direction], [float(a)]))
    return {"alphas": alphas, "loss": loss, "acc": acc}


def slice_2d(ctx: DiagnosticContext, d1: Params, d2: Params, grid: Sequence[float] | np.ndarray,
             grid2: Sequence[float] | np.ndarray | None = None) -> dict[str, np.ndarray]:
    """L(θ + α d₁ + β d₂) on the grid α × β (``loss[i, j]`` at α = grid[i], β = grid2[j])."""
    params = ctx.named_params()
    alphas = np.asarray(grid, dtype=np.float64)
    betas = alphas if grid2 is None else np.asarray(grid2, dtype=np.float64)
    loss, acc = np.empty((alphas.size, betas.size)), np.empty((alphas.size, betas.size))
    for i, a in enumerate(alphas):
        for j, b in enumerate(betas):
            loss[i, j], acc[i, j] = evaluate_at(ctx, _point(params, [d1, d2], [float(a), float(b)]))
    return {"alphas": alphas, "betas": betas, "loss": loss, "acc": acc}


def interpolation(ctx: DiagnosticContext, theta_a: Params, theta_b: Params,
                  alphas: Sequence[float] | np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Linear path θ(α) = (1 − α)θ_a + αθ_b, default α ∈ [−0.5, 1.5] with 41 points."""
    alphas = np.linspace(-0.5, 1.5, 41) if alphas is None else np.asarray(alphas, dtype=np.float64)
    delta = {n: theta_b[n].detach() - theta_a[n].detach() for n in theta_a}
    loss, acc = np.empty(alphas.size), np.empty(alphas.size)
    for i, a in enumerate(alphas):
        loss[i], acc[i] = evaluate_at(ctx, _point(theta_a, [delta], [float(a)]))
    return {"alphas": alphas, "loss": loss, "acc": acc}


# ---- trajectories -----------------------------------------------------------------------------


def trajectory_projection(snapshots: Sequence[Tensor | np.ndarray], final: Tensor | np.ndarray,
                          n_components: int = 2) -> dict[str, np.ndarray]:
    """Top PCA directions of the path θ_t − θ_final and the path projected on them.

    As in Li et al. 2018: PCA (centred) of the matrix of differences to the final weights gives the
    directions; the projection uses the uncentred differences, so θ_final sits at the origin of
    the plane the loss surface is drawn in. Returns ``directions`` (n_components × P, orthonormal),
    ``coords`` (T × n_components) and ``explained`` (explained-variance ratio per direction).
    """
    diffs = np.stack([_numpy(s) - _numpy(final) for s in snapshots]).astype(np.float64)
    if diffs.shape[0] < 2:
        raise ValueError("trajectory_projection: need at least two snapshots")
    centered = diffs - diffs.mean(axis=0, keepdims=True)
    _, sing, vt = np.linalg.svd(centered, full_matrices=False)
    k = min(n_components, vt.shape[0])
    directions = vt[:k]
    total = float((sing**2).sum())
    explained = sing[:k] ** 2 / total if total > 0 else np.zeros(k)
    return {"directions": directions, "coords": diffs @ directions.T, "explained": explained}


def _numpy(x: Tensor | np.ndarray) -> np.ndarray:
    return x.detach().cpu().double().numpy().reshape(-1) if isinstance(x, Tensor) else np.asarray(x).reshape(-1)
