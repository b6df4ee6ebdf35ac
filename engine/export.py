"""Headless export of a stored run: figures (png, svg, pdf, html), metrics.csv, or a zip bundle.

Shares the figure builders of :mod:`engine.figures` with the app (no Streamlit import here).
Static images go through kaleido, which drives a headless Chromium, in a renderer process of
our own (:mod:`engine.renderer`); the first export in a process starts it (a few seconds), later
ones reuse it. A render that does not answer within ``RENDER_TIMEOUT_S`` (Chromium crashed or
hung: kaleido's own wait has no timeout) or that fails fails with a one-line error; the renderer
is killed and the next export starts a fresh one.
HTML is self-contained (plotly.js embedded), so nothing is fetched when the file is opened.
"""

from __future__ import annotations

import csv
import io
import json
import math
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import plotly.graph_objects as go

from engine import figures
from engine.browser import MISSING, browser_path
from engine.config import ConfigError
from engine.renderer import RenderTimeout, default_renderer
from engine.runner import metrics_csv, write_metrics_csv
from engine.store import RunStore

IMAGE_FORMATS = ("png", "svg", "pdf")
FIGURE_FORMATS = (*IMAGE_FORMATS, "html")
FORMATS = (*FIGURE_FORMATS, "csv", "zip")
MIME_TYPES = {"png": "image/png", "svg": "image/svg+xml", "pdf": "application/pdf", "html": "text/html",
              "csv": "text/csv", "zip": "application/zip"}
CHROMIUM_FIX = "install a browser with `python scripts/install_browser.py`; html and csv export work without it"

_NC = ("nc/nc1", "nc/equinorm", "nc/equiangular", "nc/max_angle", "nc/nc3", "nc/nc4")
_ACCURACY = ("train/acc", "test/acc", "train/acc_clean", "train/acc_noisy", "noisy/memorized_frac")
_OTHER = ("rank/effective", "units/dead_frac", "calib/ece")


class ExportError(RuntimeError):
    """An export that could not be produced (e.g. no Chromium for kaleido); one-line message."""


# -- figures ------------------------------------------------------------------------------------


def _clean(series: Mapping[str, tuple[np.ndarray, np.ndarray]]) -> dict[str, tuple[list[int], list[float | None]]]:
    """Metric arrays as plain lists with NaN/inf as None (a gap), so every renderer accepts them."""
    return {name: ([int(s) for s in steps], [float(v) if math.isfinite(v) else None for v in values.tolist()])
            for name, (steps, values) in series.items()}


def _positive(series: Mapping[str, tuple[Any, list[float | None]]], names: tuple[str, ...]) -> bool:
    values = [v for n in names if n in series for v in series[n][1] if v is not None]
    return bool(values) and min(values) > 0


def run_figures(store: RunStore, run_id: str) -> dict[str, go.Figure]:
    """The standard figures of a run, from its stored metrics and latest artifacts.

    Keys (only those with data): loss, accuracy, sharpness, trace, collapse, rank, density,
    boundary (2-D classification runs with snapshots), landscape. Raises ConfigError for an
    unknown run id (a unique prefix is accepted).
    """
    run = store.get_run(run_id)
    if run is None:
        raise ConfigError(f"RUN_ID {run_id!r}: no such run in {store.path}; see `python -m engine list`")
    run_id = run["id"]
    series = _clean(store.metrics(run_id))
    out: dict[str, go.Figure] = {}
    loss = ("train/loss", "test/loss")
    if any(n in series for n in loss):
        out["loss"] = figures.curves(series, loss, "Loss", log_y=_positive(series, loss), y_title="loss")
    if any(n in series for n in _ACCURACY):
        out["accuracy"] = figures.curves(series, _ACCURACY, "Accuracy", y_title="accuracy")
    if "sharpness/top_eig" in series:
        out["sharpness"] = figures.sharpness(series)
    if "sharpness/trace" in series:
        out["trace"] = figures.curves(series, ["sharpness/trace"], "Hessian trace (Hutchinson)")
    nc = tuple(n for n in _NC if n in series)
    if nc:
        out["collapse"] = figures.curves(series, nc, "Neural collapse", log_y=_positive(series, nc))
    other = [n for n in _OTHER if n in series]
    if other:
        out["rank"] = figures.curves(series, other, "Rank, dead units, calibration")
    density = _latest_artifact(store, run_id, "density")
    if density is not None and {"grid", "density"} <= density.keys():
        out["density"] = figures.density(density["grid"].tolist(), density["density"].tolist())
    boundary = _latest_artifact(store, run_id, "boundary")
    if boundary is not None and {"x", "y", "pred", "conf"} <= boundary.keys():
        out["boundary"] = _boundary_figure(run["config"], boundary)
    land = _latest_artifact(store, run_id, "landscape")
    if land is not None and {"alphas", "loss"} <= land.keys():
        betas = land.get("betas")
        out["landscape"] = figures.landscape(land["alphas"].tolist(), None if betas is None else betas.tolist(),
                                             land["loss"].tolist())
    for name, fig in out.items():
        fig.update_layout(title={"text": f"{fig.layout.title.text or name} — {run.get('name') or run_id}"})
    return out


def _boundary_figure(config: Mapping[str, Any], boundary: Mapping[str, np.ndarray]) -> go.Figure:
    """The stored decision-boundary grid with the run's points on top. The points are regenerated
    from the stored config (datasets are seeded, so they are the ones the run trained on) rather
    than stored beside every snapshot."""
    from engine.config import validate
    from engine.data import build_dataset

    cfg = validate(dict(config))
    data = build_dataset(cfg.data, cfg.seed)
    arrays = {name: None if value is None else value.numpy()
              for name, value in (("is_noisy", data.is_noisy), ("labeled", data.labeled))}
    return figures.decision_boundary(boundary, data.x_train.numpy(), data.y_train.numpy(),
                                     is_noisy=arrays["is_noisy"], labeled=arrays["labeled"],
                                     x_test=data.x_test.numpy(), y_test=data.y_test.numpy(),
                                     title="Decision boundary (latest snapshot)")


def _latest_artifact(store: RunStore, run_id: str, kind: str) -> dict[str, np.ndarray] | None:
    arts = store.artifacts(run_id, kind)
    for art in reversed(arts):
        try:
            return RunStore.load_snapshot(art["path"])
        except (OSError, ValueError):
            continue  # a missing/unreadable file: fall back to an older one
    return None


# -- rendering ----------------------------------------------------------------------------------

RENDER_TIMEOUT_S = 60.0  # the first export also starts Chromium: ~3 s idle, ~15 s on a busy 2-core box


def _one_line(err: BaseException) -> str:
    text = " ".join(str(err).split())
    return (text[:200] + "…") if len(text) > 200 else (text or type(err).__name__)


def figure_bytes(fig: go.Figure, fmt: str) -> bytes:
    """Render one figure: png/svg/pdf through kaleido, html self-contained (plotly.js inline)."""
    if fmt == "html":
        return fig.to_html(include_plotlyjs=True, full_html=True).encode("utf-8")
    if fmt not in IMAGE_FORMATS:
        raise ConfigError(f"--format {fmt!r}: choose one of {', '.join(FORMATS)}")
    if browser_path() is None:
        raise ExportError(MISSING)
    try:
        return default_renderer().render(fig.to_json(validate=False).encode(), fmt, RENDER_TIMEOUT_S)
    except RenderTimeout as err:
        raise ExportError(f"{fmt} export failed ({_one_line(err)}); the next export restarts the "
                          "renderer, or use html/csv") from err
    except Exception as err:  # the renderer has been restarted: the next export gets a fresh one
        raise ExportError(f"{fmt} export failed ({_one_line(err)}); {CHROMIUM_FIX}") from err


def figure_csv(fig: go.Figure) -> str:
    """The data behind a figure as long-format CSV: one row per point, ``trace,x,y`` (+ ``z`` for grids).

    Works for any Plotly figure the app draws (curves, scatter, contour), so every panel's download
    menu offers its data without a per-panel exporter. Grid traces (contour/heatmap) are flattened
    to one row per cell; non-finite values are written as ``nan``/``inf`` (a diverged loss stays visible).
    """
    rows: list[tuple[Any, ...]] = []
    has_z = False
    for i, trace in enumerate(fig.data):
        name = trace.name if getattr(trace, "name", None) else f"trace {i}"
        x = _values(getattr(trace, "x", None))
        y = _values(getattr(trace, "y", None))
        z = getattr(trace, "z", None)
        if z is not None:
            has_z = True
            grid = np.asarray(z, dtype=float)
            grid = grid.reshape(1, -1) if grid.ndim == 1 else grid
            xs = x if len(x) == grid.shape[1] else list(range(grid.shape[1]))
            ys = y if len(y) == grid.shape[0] else list(range(grid.shape[0]))
            rows.extend((name, xs[c], ys[r], grid[r, c]) for r in range(grid.shape[0]) for c in range(grid.shape[1]))
            continue
        if not y:
            continue
        xs = x if len(x) == len(y) else list(range(len(y)))
        rows.extend((name, a, b) for a, b in zip(xs, y, strict=True))
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["trace", "x", "y", "z"] if has_z else ["trace", "x", "y"])
    writer.writerows(rows)
    return buf.getvalue()


def boundary_csv(boundary: Mapping[str, np.ndarray]) -> str:
    """A decision-boundary grid as ``x1,x2,predicted_class,confidence``, one row per grid point (the
    figure's own heatmap value is a colour encoding, not something to analyse)."""
    xs, ys = np.asarray(boundary["x"]), np.asarray(boundary["y"])
    pred, conf = np.asarray(boundary["pred"]), np.asarray(boundary["conf"])
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["x1", "x2", "predicted_class", "confidence"])
    writer.writerows((float(xs[c]), float(ys[r]), int(pred[r, c]), float(conf[r, c]))
                     for r in range(len(ys)) for c in range(len(xs)))
    return buf.getvalue()


def _values(array: Any) -> list[Any]:
    """Plain Python values of a trace's x/y (tuples, lists or numpy arrays; None → empty)."""
    if array is None:
        return []
    return np.asarray(array).tolist() if not isinstance(array, list | tuple) else list(array)


# -- export -------------------------------------------------------------------------------------


def _json_safe(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    return value


def bundle_figures(figs: Mapping[str, go.Figure]) -> dict[str, bytes]:
    """A bundle's ``figures/`` folder: each figure as HTML and PNG, and one ``plotly.min.js`` beside them.

    The HTML files load plotly.js from that one file (Plotly's ``include_plotlyjs="directory"``)
    instead of each embedding its own ~4.6 MB copy, so the bundle still opens offline and weighs
    about what its data weighs. Without a browser for PNG the bundle keeps its HTML and data and
    says why the PNGs are missing in ``figures/NO_PNG.txt``.
    """
    from plotly.offline import get_plotlyjs

    files = {f"figures/{name}.html": fig.to_html(include_plotlyjs="directory", full_html=True).encode("utf-8")
             for name, fig in figs.items()}
    files["figures/plotly.min.js"] = get_plotlyjs().encode("utf-8")
    if browser_path() is None:
        files["figures/NO_PNG.txt"] = (MISSING + "\n").encode("utf-8")
    else:
        files.update({f"figures/{name}.png": figure_bytes(fig, "png") for name, fig in figs.items()})
    return files


def export_run(store: RunStore, run_id: str, fmt: str, out_dir: str | Path) -> list[Path]:
    """Write a run's export into ``out_dir``; returns the written paths.

    png|svg|pdf|html: one ``<run_id>_<figure>.<fmt>`` per figure; csv: ``<run_id>_metrics.csv``
    (``step,name,value``); zip: ``<run_id>.zip`` with config.json, metrics.csv, summary.json
    (the run row plus final metrics) and every figure as PNG and HTML under ``figures/``
    (see :func:`bundle_figures`).
    """
    if fmt not in FORMATS:
        raise ConfigError(f"--format {fmt!r}: choose one of {', '.join(FORMATS)}")
    run = store.get_run(run_id)
    if run is None:
        raise ConfigError(f"RUN_ID {run_id!r}: no such run in {store.path}; see `python -m engine list`")
    run_id = run["id"]
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if fmt == "csv":
        return [write_metrics_csv(store, run_id, out / f"{run_id}_metrics.csv")]
    figs = run_figures(store, run_id)
    if fmt in FIGURE_FORMATS:
        rendered = {name: figure_bytes(fig, fmt) for name, fig in figs.items()}  # render all before writing
        paths = []
        for name, data in rendered.items():
            path = out / f"{run_id}_{name}.{fmt}"
            path.write_bytes(data)
            paths.append(path)
        return paths
    # zip bundle: render everything first so a failure leaves no half-written archive
    files = bundle_figures(figs)
    csv_bytes = metrics_csv(store, run_id).encode("utf-8")
    summary = _json_safe({**run, "final": store.final_metrics(run_id)})
    path = out / f"{run_id}.zip"
    partial = path.with_suffix(".zip.part")
    with zipfile.ZipFile(partial, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("config.json", json.dumps(run["config"], indent=2))
        zf.writestr("metrics.csv", csv_bytes)
        zf.writestr("summary.json", json.dumps(summary, indent=2, default=str))
        for arcname, data in files.items():
            zf.writestr(arcname, data)
    partial.replace(path)
    return [path]
