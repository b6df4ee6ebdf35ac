"""Plotly figure builders shared by the app and headless export (no Streamlit import here)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import plotly.graph_objects as go
from plotly.colors import hex_to_rgb, qualitative

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


def overlay(runs: Mapping[str, Series], names: Sequence[str], title: str, log_y: bool = False,
            y_title: str = "") -> go.Figure:
    """Several runs' metrics on one plot: colour per metric, dash per run (e.g. baseline vs regularized)."""
    colours = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b")
    dashes = ("solid", "dash", "dot", "dashdot")
    fig = go.Figure()
    for r, (label, series) in enumerate(runs.items()):
        for m, name in enumerate(names):
            if name not in series:
                continue
            steps, values = series[name]
            fig.add_trace(go.Scatter(x=list(steps), y=list(values), mode="lines", name=f"{label} · {name}",
                                     line={"color": colours[m % len(colours)], "dash": dashes[r % len(dashes)]}))
    fig.update_layout(title=title, xaxis_title="step", yaxis_title=y_title, template="plotly_white",
                      margin={"l": 50, "r": 20, "t": 50, "b": 40}, legend={"orientation": "h", "y": -0.2})
    if log_y:
        fig.update_yaxes(type="log")
    return fig


OUTCOME_COLOURS = {"generalized": "#2ca02c", "grokked": "#1f77b4", "memorized": "#ff7f0e", "partial": "#e5c100",
                   "no_learning": "#9e9e9e", "diverged": "#d62728", "stopped": "#6b6b6b"}


def sweep_heatmap(points: Sequence[Mapping[str, Any]], x_key: str, x_values: Sequence[Any],
                  y_key: str | None = None, y_values: Sequence[Any] = (), metric: str | None = None,
                  title: str = "") -> go.Figure:
    """Phase diagram of a sweep: one tile per grid point, seeds aggregated.

    ``points`` are ``PointSummary.to_json()`` dicts. With a ``metric`` a tile shows the mean over
    seeds and its spread (± sample std); without one it shows the majority outcome class with how
    many seeds agree, the fractions in the hover. Grid points with no finished run yet (missing
    from ``points`` or all seeds pending) are left blank and say so on hover — the figure is drawn
    while a sweep fills in. Axes are categorical, so 1e-4, 1e-3, 1e-2 sit evenly. Transparent
    markers on the tile centres make tiles clickable (Streamlit's plotly selection events).
    """
    from engine.sweeps.aggregate import OUTCOMES
    from engine.sweeps.grid import format_value

    xs = [format_value(v) for v in x_values]
    ys = [format_value(v) for v in y_values] if y_key else [""]
    by_tile = {(format_value(p["params"][x_key]), format_value(p["params"][y_key]) if y_key else ""): p
               for p in points if x_key in p["params"] and (y_key is None or y_key in p["params"])}
    z: list[list[float | None]] = [[None] * len(xs) for _ in ys]
    text = [[""] * len(xs) for _ in ys]
    hover = [[""] * len(xs) for _ in ys]
    for i, y in enumerate(ys):
        for j, x in enumerate(xs):
            where = f"{x_key}={x}" + (f"<br>{y_key}={y}" if y_key else "")
            p = by_tile.get((x, y))
            if p is None or not p["finished"]:
                text[i][j], hover[i][j] = "…", f"{where}<br>no finished run yet"
                continue
            seeds = f"{p['finished']}/{p['seeds']} seeds finished"
            if metric is not None:
                if p["mean"] is None:
                    text[i][j], hover[i][j] = "n/a", f"{where}<br>{metric}: no finite value<br>{seeds}"
                    continue
                z[i][j] = p["mean"]
                spread = f"±{p['std']:.2g}" if p["std"] is not None else ""
                text[i][j] = f"{p['mean']:.3g}" + (f"<br>{spread}" if spread else "")
                nonfinite = f"<br>{p['nonfinite']} non-finite" if p["nonfinite"] else ""
                hover[i][j] = f"{where}<br>{metric}: {p['mean']:.4g} {spread} (n={p['n']}){nonfinite}<br>{seeds}"
            elif p["majority"] is not None:
                z[i][j] = OUTCOMES.index(p["majority"])
                counts = p["outcomes"]
                text[i][j] = f"{p['majority']}<br>{counts[p['majority']]}/{sum(counts.values())}"
                shares = "<br>".join(f"{k}: {v:.0%}" for k, v in p["fractions"].items())
                hover[i][j] = f"{where}<br>{shares}<br>{seeds}"
            else:
                text[i][j], hover[i][j] = "n/a", f"{where}<br>no outcome class (not a classification run)<br>{seeds}"
    if metric is not None:
        colour: dict[str, Any] = {"colorscale": "Viridis", "colorbar": {"title": {"text": metric}}}
    else:
        n = len(OUTCOMES)
        scale = [step for k, name in enumerate(OUTCOMES)
                 for step in ((k / n, OUTCOME_COLOURS[name]), ((k + 1) / n, OUTCOME_COLOURS[name]))]
        colour = {"colorscale": scale, "zmin": -0.5, "zmax": n - 0.5,
                  "colorbar": {"tickvals": list(range(n)), "ticktext": list(OUTCOMES)}}
    fig = go.Figure(go.Heatmap(x=xs, y=ys, z=z, text=text, texttemplate="%{text}", customdata=hover,
                               hovertemplate="%{customdata}<extra></extra>", xgap=2, ygap=2, **colour))
    tiles = [(x, y, hover[i][j]) for i, y in enumerate(ys) for j, x in enumerate(xs)]
    fig.add_trace(go.Scatter(x=[t[0] for t in tiles], y=[t[1] for t in tiles], customdata=[t[2] for t in tiles],
                             mode="markers", marker={"symbol": "square", "size": 30, "opacity": 0},
                             hovertemplate="%{customdata}<extra></extra>", showlegend=False, name="tiles"))
    fig.update_layout(title=title or (metric or "outcome"), template="plotly_white", clickmode="event+select",
                      margin={"l": 70, "r": 20, "t": 50, "b": 50})
    fig.update_xaxes(title=x_key, type="category")
    fig.update_yaxes(title=y_key or "", type="category", showticklabels=bool(y_key))
    return fig


# Binary boundary: p(class 1) on a diverging scale, white at 0.5 (the boundary itself); the points use
# the two end colours, so a point sitting in the wrong colour is visibly misclassified.
BINARY_COLOURS = ("#2166ac", "#b2182b")
BOUNDARY_POINTS = 1500  # training points drawn at most (evenly thinned; labelled few-label points always kept)


def _class_colours(n: int) -> list[str]:
    if n == 2:
        return list(BINARY_COLOURS)
    palette = qualitative.D3 if n <= len(qualitative.D3) else qualitative.Alphabet
    return [palette[k % len(palette)] for k in range(n)]


def _tint(colour: str, white: float) -> str:
    """``colour`` mixed with ``white`` parts of white (0 = the colour, 1 = white)."""
    r, g, b = hex_to_rgb(colour)
    return "rgb({:.0f},{:.0f},{:.0f})".format(*(c + (255 - c) * white for c in (r, g, b)))


def _thin(rows: np.ndarray, cap: int) -> np.ndarray:
    """At most ``cap`` of ``rows``, evenly spaced: the same subset every frame, no RNG."""
    if len(rows) <= cap:
        return rows
    return rows[np.linspace(0, len(rows) - 1, cap).round().astype(int)]


def decision_boundary(boundary: Mapping[str, np.ndarray], x_train: np.ndarray, y_train: np.ndarray,
                      is_noisy: np.ndarray | None = None, labeled: np.ndarray | None = None,
                      x_test: np.ndarray | None = None, y_test: np.ndarray | None = None,
                      title: str = "Decision boundary", max_points: int = BOUNDARY_POINTS) -> go.Figure:
    """The model's decision over the input plane of a 2-D classification run, training points on top.

    ``boundary`` is a Snapshot's grid (``x``, ``y``, ``pred``, ``conf``, ``num_classes``). Binary: one
    heatmap of p(class 1) on a diverging scale, so the white band is the boundary and paleness is
    uncertainty. More classes: one heatmap whose value is ``class + confidence`` on a banded scale —
    each class its own hue, paler where the model is less sure (Plotly has no per-cell opacity).
    Points are coloured by their *given* label; noisy labels are drawn as crosses, unlabelled points of
    a few-label run as small grey dots, test points as hollow circles (hidden until shown in the legend).
    """
    xs, ys = np.asarray(boundary["x"]), np.asarray(boundary["y"])
    pred = np.asarray(boundary["pred"])
    n = int(boundary.get("num_classes", int(pred.max()) + 1))
    colours = _class_colours(n)
    fig = go.Figure(_boundary_heatmap(xs, ys, pred, np.asarray(boundary["conf"], dtype=float), colours))
    x_train, y_train = np.asarray(x_train), np.asarray(y_train)
    rows = np.arange(len(y_train))
    if labeled is not None:  # few-label run: every labelled point, the unlabelled ones thinned, in grey
        mask = np.asarray(labeled, bool)
        grey = _thin(rows[~mask], max_points)
        fig.add_trace(go.Scatter(x=x_train[grey, 0], y=x_train[grey, 1], mode="markers", name="unlabelled",
                                 marker={"size": 4, "color": "rgba(90,90,90,0.45)"}, hoverinfo="skip"))
        shown, size = rows[mask], 9
    else:
        shown, size = _thin(rows, max_points), 6
    noisy = np.zeros(len(y_train), bool) if is_noisy is None else np.asarray(is_noisy, bool)
    for k in range(n):
        for flagged, suffix, symbol in ((False, "", "circle"), (True, " (noisy label)", "x")):
            pick = shown[(y_train[shown] == k) & (noisy[shown] == flagged)]
            if len(pick):
                fig.add_trace(go.Scatter(
                    x=x_train[pick, 0], y=x_train[pick, 1], mode="markers", name=f"class {k}{suffix}",
                    marker={"size": size, "color": colours[k], "symbol": symbol,
                            "line": {"width": 1, "color": "white" if symbol == "circle" else colours[k]}},
                    hovertemplate=f"train #%{{customdata}}<br>given label {k}<extra></extra>", customdata=pick))
    if x_test is not None and y_test is not None:
        x_test, y_test = np.asarray(x_test), np.asarray(y_test)
        test_rows = _thin(np.arange(len(y_test)), max_points)
        for k in range(n):
            pick = test_rows[y_test[test_rows] == k]
            if len(pick):
                fig.add_trace(go.Scatter(x=x_test[pick, 0], y=x_test[pick, 1], mode="markers",
                                         name=f"test, class {k}", visible="legendonly", hoverinfo="skip",
                                         marker={"size": 6, "color": "rgba(0,0,0,0)",
                                                 "line": {"width": 1.2, "color": colours[k]}}))
    fig.update_layout(title=title, template="plotly_white", height=520, xaxis_title="x₁", yaxis_title="x₂",
                      margin={"l": 50, "r": 20, "t": 50, "b": 40}, legend={"orientation": "h", "y": -0.15})
    fig.update_xaxes(range=[float(xs[0]), float(xs[-1])], constrain="domain")
    fig.update_yaxes(range=[float(ys[0]), float(ys[-1])], scaleanchor="x", scaleratio=1, constrain="domain")
    return fig


def _boundary_heatmap(xs: np.ndarray, ys: np.ndarray, pred: np.ndarray, conf: np.ndarray, colours: list[str]
                      ) -> go.Heatmap:
    """p(class 1) on a diverging scale (binary), or ``class + confidence`` on per-class bands."""
    n = len(colours)
    hover = "x₁ %{x:.3g}, x₂ %{y:.3g}<br>class %{customdata[0]:d} (p %{customdata[1]:.3f})<extra></extra>"
    custom = np.stack([pred, conf], axis=-1).astype(np.float32)  # float32 halves what each poll sends
    if n == 2:
        z = np.where(pred == 1, conf, 1.0 - conf).astype(np.float32)
        return go.Heatmap(x=xs, y=ys, z=z, zmin=0.0, zmax=1.0, name="p(class 1)", customdata=custom,
                          zsmooth="best", hovertemplate=hover, colorbar={"title": {"text": "p(class 1)"}},
                          colorscale=[[0.0, _tint(colours[0], 0.25)], [0.5, "rgb(255,255,255)"],
                                      [1.0, _tint(colours[1], 0.25)]])
    sure = np.clip((conf - 1.0 / n) / (1.0 - 1.0 / n), 0.0, 1.0) * 0.999  # stays inside its class band
    scale = [stop for k in range(n)
             for stop in ((k / n, _tint(colours[k], 0.9)), ((k + 1) / n, _tint(colours[k], 0.35)))]
    return go.Heatmap(x=xs, y=ys, z=(pred + sure).astype(np.float32), zmin=0.0, zmax=float(n),
                      name="class + confidence", customdata=custom, colorscale=scale, hovertemplate=hover,
                      colorbar={"title": {"text": "class"}, "tickvals": [k + 0.5 for k in range(n)],
                                "ticktext": [str(k) for k in range(n)]})
