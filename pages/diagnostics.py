"""Diagnostics page: every metric the run recorded, in the panels its declarers (trainer, instruments,
techniques) ask for, plus the on-demand measurements.

Nothing here names a metric: ``engine.panels`` groups the recorded names by their declarations
(``engine.metrics_catalog``), so a new instrument file brings its panel with it. The page shows the
session's live run (with the on-demand buttons) or any stored run read back from the store.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import streamlit as st

from engine import panels as P
from engine.jobs import Job
from engine.listing import run_label, techniques
from engine.metrics_catalog import SECTIONS
from engine.store import RunStore
from pages.common import STORE_ERRORS, active, job_holder, open_store, plot_panel, poll_interval, run_picker

WAIT_S = 600.0  # poll for an on-demand result at most this long after the request

st.title("Diagnostics")
st.caption("Instruments run in eval mode on a fixed probe set of training examples. Curvature is of the data "
           "loss: penalties (L2, weight decay) are excluded unless the instrument's include_penalties is on.")

state = st.session_state
job: Job | None = job_holder().job


@dataclass
class RunData:
    """What the panels draw, from the live job or from the store: one shape for both."""

    run_id: str | None
    label: str
    status: str
    series: Mapping[str, tuple[Any, Any]]
    techniques: list[str]
    artifacts: dict[str, list[tuple[int | None, Any]]] = field(default_factory=dict)  # kind → [(step, arrays)]


def live_data(live: Job) -> RunData:
    view = live.view()
    status = f"{view.state} — step {view.step}/{view.total_steps}" + (f" · outcome: {view.outcome}"
                                                                         if view.outcome else "")
    arts = {kind: [(a.step, a.arrays)] for kind, a in view.artifacts.items()}
    config = live.cfg.model_dump()
    label = run_label({"name": live.cfg.name, "preset": live.cfg.preset, "config": config})
    return RunData(view.run_id, label, status, view.series, list(techniques(config)), arts)


def stored_data(store: RunStore, run_id: str) -> RunData | None:
    run = store.get_run(run_id)
    if run is None:
        return None
    arts: dict[str, list[tuple[int | None, Any]]] = {}
    for row in store.artifacts(run["id"]):
        if P.artifact_spec(row["kind"]) is None:
            continue
        try:
            with np.load(row["path"], allow_pickle=False) as npz:
                arrays = {k: npz[k] for k in npz.files}
        except (OSError, ValueError):
            continue  # a file removed or unreadable: the others still show
        arts.setdefault(row["kind"], []).append((row["step"], arrays))
    status = f"{run['status']}" + (f" — {run['message']}" if run.get("message") else "")
    return RunData(run["id"], run_label(run), status, store.metrics(run["id"]), list(techniques(run["config"])),
                   arts)


store = open_store()
# Default: the session's Lab run, else the newest stored one; ``?run=ID`` links here.
run_id = run_picker(store, "diag:run", empty="No stored runs yet: start one on the Lab page (or "
                    "`python -m engine run --preset edge-of-stability`); its diagnostics appear here.")
# the Lab's run before its first record reaches the store is still shown, live
is_live = job is not None and (run_id == job.run_id or (run_id is None and job.run_id is None))
if run_id is None and not is_live:
    st.stop()

pending: dict[str, tuple[object, float]] = state.setdefault("diag:pending", {})
if is_live:
    assert job is not None
    on_demand = P.on_demand()
    cols = st.columns(len(on_demand))
    for col, (name, summary) in zip(cols, on_demand.items(), strict=True):
        if col.button(f"Compute {name.replace('_', '-')} now", key=f"measure:{name}", help=summary):
            view = job.view()
            pending[name] = (P.instrument_fingerprint(name, view.series, view.artifacts), time.monotonic() + WAIT_S)
            job.measure(name)
else:
    pending.clear()
    st.caption("On-demand measurements (density, landscape, top-k) run on the session's live run; "
               "this stored run shows what it recorded.")
live = is_live and (active([job]) or bool(pending))


def draw_artifacts(data: RunData, stem: str) -> None:
    for kind, results in data.artifacts.items():
        steps = [s for s, _ in results]
        index = len(results) - 1
        spec = P.artifact_spec(kind)
        if len(results) > 1 and spec is not None:
            index = st.selectbox(f"{spec.label}: measured at step", range(len(results)), index=index,
                                 format_func=lambda i, steps=steps: f"step {steps[i]}", key=f"art:{kind}")
        step, arrays = results[index]
        fig = P.artifact_figure(kind, arrays, step)
        if fig is not None:
            plot_panel(fig, f"{stem}_{kind}", key=f"art:{kind}")
            if spec is not None and spec.meaning:
                st.caption(spec.meaning[0].upper() + spec.meaning[1:] + ".")


@st.fragment(run_every=poll_interval(live))
def panels() -> None:
    if is_live:
        assert job is not None
        data = live_data(job)
        view = job.view()
        for name, (before, until) in list(pending.items()):
            if P.instrument_fingerprint(name, view.series, view.artifacts) != before or time.monotonic() > until:
                del pending[name]
    else:
        try:
            found = None if store is None else stored_data(store, str(run_id))
        except STORE_ERRORS as err:
            st.error(str(err))
            return
        if found is None:
            st.warning(f"Run {run_id} is not in the store.")
            return
        data = found
    stem = data.run_id or "run"
    st.caption(f"**{data.label}** · {data.status}" + (f" · computing {', '.join(pending)}…" if pending else ""))
    built = P.build_panels(data.series, data.techniques)
    if not built:
        st.info("Nothing recorded yet.")
    for section in SECTIONS:
        group = [p for p in built if p.section == section]
        if not group:
            continue
        st.subheader(section)
        cols = st.columns(2)
        for k, panel in enumerate(group):
            with cols[k % 2]:
                plot_panel(P.panel_figure(panel, data.series), f"{stem}_{panel.key}", key=panel.key)
                caption = P.panel_caption(panel, data.series)
                if caption:
                    st.caption(caption)
    if data.series and (off := P.not_recorded(data.series)):
        st.caption(f"Not recorded in this run: {', '.join(off)}. Turn one on for a run with "
                   "`--set diagnostics.<name>.enabled=true` (cadence: `diagnostics.<name>.every`); the "
                   "edge-of-stability preset turns sharpness on.")
    if data.artifacts:
        st.subheader("On-demand results")
        draw_artifacts(data, stem)
    if live and not active([job]) and not pending:
        st.rerun()  # full rerun: nothing left to wait for, stop polling


panels()
