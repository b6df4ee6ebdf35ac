"""Plotly figure builders shared by the app and headless export (no Streamlit import here)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import plotly.graph_objects as go

Series = Mapping[str, tuple[Sequence[int], Sequence[float]]]


def ema(values: Sequence[float], smoothing: float) -> list[float]:
    """Exponential moving average for display only (the stored metric is never smoothed)."""
    if smoothing <= 0 or not values:
        return list(values)
    out, acc = [], values[0]
    for v in values:
        acc = smoothing * acc + (1 - smoothing) * v
        out.append(acc)
    return out


def curves(series: Series, names: Sequence[str], title: str, log_y: bool = False, log_x: bool = False,
           smoothing: float = 0.0, y_title: str = "") -> go.Figure:
    """Overlay of several metrics over steps, e.g. train/loss vs test/loss."""
    fig = go.Figure()
    for name in names:
        if name not in series:
            continue
        steps, values = series[name]
        shown = ema(values, smoothing) if name == "train/loss" else list(values)
        fig.add_trace(go.Scatter(x=list(steps), y=shown, mode="lines", name=name))
    fig.update_layout(title=title, xaxis_title="step", yaxis_title=y_title, template="plotly_white",
                      margin={"l": 50, "r": 20, "t": 50, "b": 40}, legend={"orientation": "h", "y": -0.2})
    if log_y:
        fig.update_yaxes(type="log")
    if log_x:
        fig.update_xaxes(type="log")
    return fig


def sharpness(series: Series, title: str = "Sharpness (top Hessian eigenvalue)") -> go.Figure:
    """λ_max over steps with its stability line (2/η, (2+2β)/η, or 38/η against the
    preconditioned λ for Adam — the instrument only reports a threshold that matches)."""
    fig = curves(series, ["sharpness/top_eig", "sharpness/precond_top_eig"], title, y_title="eigenvalue")
    if "sharpness/threshold" in series:
        steps, values = series["sharpness/threshold"]
        fig.add_trace(go.Scatter(x=list(steps), y=list(values), mode="lines", name="stability threshold",
                                 line={"dash": "dash", "color": "black"}))
    return fig


def density(grid: Sequence[float], values: Sequence[float], title: str = "Hessian spectral density (SLQ)"
            ) -> go.Figure:
    fig = go.Figure(go.Scatter(x=list(grid), y=[max(v, 1e-8) for v in values], mode="lines", name="density"))
    fig.update_layout(title=title, xaxis_title="eigenvalue", yaxis_title="density", template="plotly_white")
    fig.update_yaxes(type="log")
    return fig


def landscape(alphas: Sequence[float], betas: Sequence[float] | None, loss: Sequence, title: str = "Loss landscape"
              ) -> go.Figure:
    """1-D curve or 2-D contour of the loss along filter-normalised directions."""
    if betas is None or len(betas) == 0:
        fig = go.Figure(go.Scatter(x=list(alphas), y=list(loss), mode="lines+markers", name="loss"))
        fig.update_layout(xaxis_title="α")
    else:
        fig = go.Figure(go.Contour(x=list(alphas), y=list(betas), z=loss, colorscale="Viridis"))
        fig.update_layout(xaxis_title="α", yaxis_title="β")
    fig.update_layout(title=title, template="plotly_white")
    return fig


def embedding(coords: np.ndarray, snapshot: dict[str, np.ndarray], index: np.ndarray, colour: str, title: str
              ) -> go.Figure:
    """2-D projection of a snapshot, one trace per colour group, hover = index/label/given/prediction."""
    labels = snapshot["labels"]
    given = labels
    true = snapshot.get("flag_true_label", labels)
    pred = snapshot.get("flag_pred", np.full(len(labels), -1))
    if colour == "noisy / clean label" and "flag_is_noisy" in snapshot:
        groups = np.where(snapshot["flag_is_noisy"], "noisy label", "clean label")
    elif colour == "correct / wrong" and "flag_correct" in snapshot:
        groups = np.where(snapshot["flag_correct"], "correct", "wrong")
    else:
        groups = np.asarray([f"class {c}" for c in true])
    hover = [f"index {i}<br>label {t}<br>given label {g}<br>prediction {p}"
             for i, t, g, p in zip(index, true, given, pred, strict=True)]
    fig = go.Figure()
    for group in sorted(set(groups.tolist())):
        rows = groups == group
        fig.add_trace(go.Scattergl(x=coords[rows, 0], y=coords[rows, 1], mode="markers", name=group,
                                   marker={"size": 5}, text=[h for h, r in zip(hover, rows, strict=True) if r],
                                   hoverinfo="text"))
    fig.update_layout(title=title, template="plotly_white", height=560, xaxis_title="dim 1", yaxis_title="dim 2")
    return fig
