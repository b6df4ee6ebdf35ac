"""Plotly figure builders shared by the app and headless export (no Streamlit import here)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

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
