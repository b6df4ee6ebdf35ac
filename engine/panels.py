"""Panels built from declarations: every recorded metric in exactly one chart, labelled by its declarer.

``build_panels`` groups a run's metric names by the panel their declaration names
(``engine.metrics_catalog.declare``), in a stable order — training first, then instruments in
registry order, then techniques, then anything undeclared — and ``panel_figure`` draws one panel:
curves over steps titled with the declared label, dashed reference lines (the sharpness threshold),
an axis title with the unit, and for ``x = "index"`` panels (top-k eigenvalues) one curve per
measured step against the index. Flags (a 0/1 setting such as "penalties included") go into the
caption. ``artifact_figure`` draws an instrument's stored arrays under its declared label and step.
Nothing here imports Streamlit: the CLI export and the app share it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import plotly.graph_objects as go

from engine import figures
from engine.diagnostics import ArtifactSpec, PanelSpec, all_diagnostics
from engine.metrics_catalog import SECTIONS, TRAINER_METRICS, Declared, declare, undeclared

Series = Mapping[str, tuple[Sequence[int], Sequence[float]]]
# Instruments' panels by group, the headline first (the order a person reads them in); other groups follow.
GROUP_ORDER = ("curvature", "collapse", "representation", "dynamics", "grokking", "sae", "calibration")
COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf")


@dataclass
class Panel:
    """One chart to draw: its declaration and the recorded metrics on it, in declaration order."""

    spec: PanelSpec
    section: str
    source: str
    metrics: list[Declared] = field(default_factory=list)

    @property
    def key(self) -> str:
        return self.spec.key

    def names(self) -> list[str]:
        return [d.spec.name for d in self.metrics]


def build_panels(names: Iterable[str], techniques: Iterable[str] = ()) -> list[Panel]:
    """Every metric in ``names`` in exactly one panel; undeclared ones under "Other metrics"."""
    techniques = tuple(techniques)
    panels: dict[str, Panel] = {}
    order = _declaration_order()
    for name in sorted(set(names), key=lambda n: _sort_key(n, order)):
        found = declare(name, techniques) or undeclared(name)
        panel = panels.setdefault(found.panel.key, Panel(found.panel, found.section, found.source))
        panel.metrics.append(found)
    return sorted(panels.values(), key=lambda p: (SECTIONS.index(p.section), _panel_rank(p, order)))


def _declaration_order() -> dict[str, int]:
    """Position of every declared name pattern (trainer first, then instruments), for stable ordering."""
    instruments = sorted(all_diagnostics().values(),
                         key=lambda c: (GROUP_ORDER.index(c.group) if c.group in GROUP_ORDER else len(GROUP_ORDER),
                                        c.every == 0))
    specs = list(TRAINER_METRICS) + [s for cls in instruments for s in cls.outputs]
    return {s.name: i for i, s in enumerate(specs)}


def _sort_key(name: str, order: Mapping[str, int]) -> tuple[int, int, str]:
    for pattern, rank in order.items():
        if pattern == name:
            return rank, 0, name
        if "{i}" in pattern:
            head, tail = pattern.split("{i}", 1)
            middle = name[len(head):len(name) - len(tail)] if name.startswith(head) and name.endswith(tail) else ""
            if middle.isdigit():
                return rank, int(middle), name
    return len(order), 0, name


def _panel_rank(panel: Panel, order: Mapping[str, int]) -> tuple[int, str]:
    return min(_sort_key(n, order)[0] for n in panel.names()), panel.spec.title


def _axis_title(panel: Panel, curves: Sequence[Declared]) -> str:
    """The declared y title; else the single curve's label with its unit."""
    if panel.spec.y_title:
        return panel.spec.y_title
    if len(curves) == 1:
        spec = curves[0].spec
        return f"{spec.label} ({spec.unit})" if spec.unit else spec.label
    units = sorted({d.spec.unit for d in curves if d.spec.unit})
    return ", ".join(units) or "value"


def _finite(values: Sequence[float]) -> list[float | None]:
    return [float(v) if v is not None and math.isfinite(float(v)) else None for v in values]


def panel_figure(panel: Panel, series: Series) -> go.Figure:
    """The panel's chart from a run's ``{name: (steps, values)}``."""
    curves = [d for d in panel.metrics if d.spec.role != "flag" and d.spec.name in series]
    fig = go.Figure()
    if panel.spec.x == "index":
        _index_traces(fig, [d for d in curves if d.index is not None], series)
        x_title = panel.spec.x_title or "index"
    else:
        _step_traces(fig, curves, series)
        x_title = panel.spec.x_title or "training step"
    # The legend sits at the bottom of the figure, below the x-axis title, in a margin sized for its
    # lines (entries wrap about two to a line in a half-width chart), so it never covers the title.
    rows = math.ceil(len(fig.data) / 2)
    fig.update_layout(title=panel.spec.title, template="plotly_white", height=330 + 22 * rows,
                      margin={"l": 60, "r": 20, "t": 50, "b": 64 + 22 * rows}, showlegend=True,
                      legend={"orientation": "h", "yref": "container", "yanchor": "bottom", "y": 0.01, "x": 0})
    fig.update_xaxes(title=x_title, type="linear")
    decades = _decades(curves, series) if panel.spec.log_y else None
    fig.update_yaxes(title=_axis_title(panel, curves), type="linear" if decades is None else "log")
    if decades is not None and decades > 1.5:
        fig.update_yaxes(dtick=1, exponentformat="power")  # label powers of ten only, not "2, 5" between them
    values = {v for d in curves for v in _finite(series[d.spec.name][1]) if v is not None}
    if decades is None and len(values) == 1:  # a constant (a fixed lr): from 0, not Plotly's ±0.5 around it
        (v,) = values
        fig.update_yaxes(range=sorted([0.0, 1.25 * v]) if v else [-1.0, 1.0])
    return fig


def _step_traces(fig: go.Figure, curves: Sequence[Declared], series: Series) -> None:
    for k, d in enumerate(curves):
        steps, values = series[d.spec.name]
        spec = d.spec
        unit = f" {spec.unit}" if spec.unit and spec.unit not in ("fraction", "ratio") else ""
        few = len(steps) <= 3  # an on-demand measurement: a marker, not an invisible one-point line
        if spec.role == "reference":
            line = {"dash": "dash", "color": "black", "width": 1.5}
        else:
            line = {"color": COLOURS[k % len(COLOURS)]}
        fig.add_trace(go.Scatter(x=[int(s) for s in steps], y=_finite(values), name=spec.label,
                                 mode="lines+markers" if few else "lines", line=line,
                                 hovertemplate=f"{spec.label}: %{{y:.4g}}{unit}<br>step %{{x}}<extra></extra>"))


def _index_traces(fig: go.Figure, curves: Sequence[Declared], series: Series) -> None:
    """One curve per measured step: value against the declared index (a spectrum)."""
    by_step: dict[int, list[tuple[int, float]]] = {}
    for d in curves:
        assert d.index is not None
        for step, value in zip(*series[d.spec.name], strict=True):
            by_step.setdefault(int(step), []).append((d.index, float(value)))
    for k, (step, points) in enumerate(sorted(by_step.items())):
        points.sort()
        fig.add_trace(go.Scatter(x=[i for i, _ in points], y=_finite([v for _, v in points]),
                                 mode="lines+markers", name=f"step {step}",
                                 line={"color": COLOURS[k % len(COLOURS)]},
                                 hovertemplate=f"step {step}: #%{{x}} = %{{y:.4g}}<extra></extra>"))
    fig.update_xaxes(dtick=1)


def _decades(curves: Sequence[Declared], series: Series) -> float | None:
    """Decades the values span, or None when a log axis cannot show them (a value ≤ 0, which a log
    axis silently drops, or nothing finite)."""
    values = [float(v) for d in curves for v in series[d.spec.name][1] if v is not None and math.isfinite(float(v))]
    if not values or min(values) <= 0:
        return None
    return math.log10(max(values) / min(values))


def panel_caption(panel: Panel, series: Series) -> str:
    """The panel's declared note plus its flags' last values ("penalties excluded", "task number: 3")."""
    parts = [panel.spec.note] if panel.spec.note else []
    for d in panel.metrics:
        if d.spec.role == "flag" and d.spec.name in series and len(series[d.spec.name][1]):
            value = float(series[d.spec.name][1][-1])
            words = d.spec.unit.split("/")
            if len(words) == 2:  # a 0/1 flag with its two readings, e.g. "included/excluded"
                parts.append(f"{d.spec.label} {words[0] if value else words[1]}")
            else:
                parts.append(f"{d.spec.label}: {value:.4g}" + (f" {d.spec.unit}" if d.spec.unit else ""))
    return " · ".join(parts)


# ---- on-demand instruments and their artifacts ----------------------------------------------

def not_recorded(names: Iterable[str]) -> list[str]:
    """Opt-in scheduled instruments (``every`` > 0, off by default) of which the run recorded nothing:
    the page says how to turn them on. A default-on instrument that recorded nothing does not apply to
    the run (dead units of a tanh network), so it is not listed."""
    names = list(names)
    return [name for name, cls in all_diagnostics().items() if cls.every > 0 and cls.outputs and not cls.default_on
            and not any(s.matches(n) is not None for s in cls.outputs for n in names)]


def on_demand() -> dict[str, str]:
    """Instruments that run only when asked (``every = 0``): name → one-line summary."""
    return {name: cls.summary() for name, cls in all_diagnostics().items() if cls.every == 0}


def instrument_fingerprint(name: str, series: Series, artifacts: Mapping[str, Any]) -> tuple[int, int]:
    """Changes when a new result of instrument ``name`` arrives: the number of points of its
    declared metrics, and the step of its latest declared artifact."""
    cls = all_diagnostics()[name]
    points = sum(len(series[m][0]) for m in series if any(s.matches(m) is not None for s in cls.outputs))
    steps = [int(getattr(artifacts[a.kind], "step", 0)) + 1 for a in cls.artifacts if a.kind in artifacts]
    return points, max(steps, default=0)


def artifact_spec(kind: str) -> ArtifactSpec | None:
    for cls in all_diagnostics().values():
        for spec in cls.artifacts:
            if spec.kind == kind:
                return spec
    return None


def artifact_figure(kind: str, arrays: Mapping[str, np.ndarray], step: int | None) -> go.Figure | None:
    """An instrument's stored arrays drawn under their declared label and the step they were measured at;
    None for a kind no instrument declares (snapshots, decision-boundary grids)."""
    spec = artifact_spec(kind)
    if spec is None:
        return None
    title = spec.label + ("" if step is None else f" — step {step}")
    if "grid" in arrays and "density" in arrays:
        return figures.density(arrays["grid"], arrays["density"], title=title)
    if "alphas" in arrays and "loss" in arrays:
        betas = arrays.get("betas")
        return figures.landscape(arrays["alphas"], betas, arrays["loss"], title=title)
    values = next((np.asarray(v).ravel() for v in arrays.values() if np.asarray(v).size > 1), None)
    if values is None:
        return None
    fig = go.Figure(go.Histogram(x=values, name=spec.label))
    fig.update_layout(title=title, template="plotly_white", xaxis_title=spec.label, yaxis_title="count")
    return fig
