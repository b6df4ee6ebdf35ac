"""Lab page: pick a preset (or build a run from it), toggle regularizers, train live, change knobs while it runs.

The sidebar widgets are generated from ``engine.labstate`` (and the regularizer registry). The values
that differ from the preset's variant are the view's overrides; they are mirrored in the URL
(``?preset=…&variant=…&set=key=value``) so a view can be shared and reloaded. A bad value is refused
with its message right under the widget it names.
"""

from __future__ import annotations

import json
import logging
from functools import partial
from typing import Any

import streamlit as st

from engine import labstate
from engine.config import ConfigError, apply_overrides, validate
from engine.export import boundary_csv
from engine.figures import curves, decision_boundary
from engine.jobs import Job, JobView, one_line
from engine.presets import get_preset, preset_config, preset_ids
from engine.regularizers import all_techniques
from engine.store import StoreError
from pages.common import active, job_holder, outcome_badge, plot_panel, poll_interval, run_bundle, run_store

DEFAULT_PRESET = "grokking-quadratic"
LOSS = ["train/loss", "test/loss"]
ACCURACY = ["train/acc", "test/acc", "train/acc_clean", "train/acc_noisy", "noisy/memorized_frac"]

holder = job_holder()
state = st.session_state
ids = preset_ids()
default_preset = DEFAULT_PRESET if DEFAULT_PRESET in ids else ids[0]
knob_table = labstate.all_knobs()


# ---- view ⇄ widget state ⇄ URL ---------------------------------------------------------------------

def default_variant(preset_id: str) -> str | None:
    names = labstate.variants(preset_id)
    return "baseline" if "baseline" in names else (names[0] if names else None)


def clear_knobs() -> None:
    for key in [k for k in state if str(k).startswith("k:")]:
        del state[key]
    state["lab:extra"] = []


def on_preset_change() -> None:
    clear_knobs()
    state["lab:variant"] = default_variant(state["lab:preset"])


def apply_view(preset_id: str, variant: str | None, assignments: list[tuple[str, Any]]) -> None:
    """Set the widgets' state to a view (before they are drawn); keys without a widget stay as extras."""
    clear_knobs()
    state["lab:preset"], state["lab:variant"] = preset_id, variant
    state["lab:extra"] = [(k, v) for k, v in assignments if k not in knob_table]
    for key, value in assignments:
        if key in knob_table:
            state[f"k:{key}"] = value


def current_query() -> dict[str, list[str]]:
    return {k: st.query_params.get_all(k) for k in st.query_params}


def signature(query: dict[str, Any]) -> str:
    return json.dumps({k: v if isinstance(v, list) else [v] for k, v in sorted(query.items())})


query = current_query()
if query and signature(query) != state.get("lab:url"):  # a shared link, a reload, or switch_page(query_params=…)
    view = labstate.from_query(query, default_preset)
    apply_view(view.preset, view.variant, view.assignments)
    state["lab:problems"], state["lab:problems_for"] = view.problems, None
elif "lab:preset" not in state and "lab:view" in state:  # back from another page: its widgets were dropped
    apply_view(*state["lab:view"])


# ---- sidebar: preset, knobs, regularizers ---------------------------------------------------------

slots: dict[str, Any] = {}  # dotted key → placeholder under its widget, for that key's error message
values: dict[str, Any] = {}


def typed(knob: labstate.Knob, value: Any) -> Any:
    return knob.type(value) if knob.type in (int, float) and not isinstance(value, bool) else value


def knob_widget(knob: labstate.Knob, full: dict[str, Any], label: str, slot: str | None = None) -> Any:
    """One widget bound to a dotted key; its state starts at the preset's value (never passed as
    ``value=`` so a view restored from the URL wins). Numbers have no min/max: out-of-range values are
    refused by validation, with the message under the widget, instead of being silently clamped."""
    key = f"k:{knob.key}"
    base = typed(knob, labstate.base_value(full, knob.key))
    if key not in state:
        state[key] = base
    if knob.type is bool:
        value = st.toggle(label, key=key, help=knob.help)
    elif knob.type is str:
        value = st.selectbox(label, knob.choices or [state[key]], key=key, help=knob.help)
    elif knob.type is int:
        value = st.number_input(label, step=1, format="%d", key=key, help=knob.help)
    else:
        value = st.number_input(label, step=abs(base) / 10 or 1e-3, format="%g", key=key, help=knob.help)
    slots[slot or knob.key] = st.empty()
    values[knob.key] = value
    return value


def regularizer_widgets(full: dict[str, Any]) -> None:
    """One toggle per registered technique, grouped, with its typed parameters while it is on."""
    techniques = sorted(all_techniques().items(), key=lambda item: (item[1].group, item[0]))
    group = None
    for name, cls in techniques:
        if cls.group != group:
            group = cls.group
            st.caption(str(group))
        on = knob_widget(knob_table[f"regularizers.{name}.enabled"], full, name, slot=f"regularizers.{name}")
        if on:
            for p in cls.params:
                knob_widget(knob_table[f"regularizers.{name}.{p.name}"], full, f"{name}.{p.name}")


with st.sidebar:
    if state.get("lab:preset") not in ids:
        state["lab:preset"] = default_preset
    preset_id = st.selectbox("Preset", ids, key="lab:preset", on_change=on_preset_change)
    preset = get_preset(preset_id)
    st.caption(preset["description"])
    variant_names = labstate.variants(preset_id)
    variant = None
    if variant_names:
        if state.get("lab:variant") not in variant_names:
            state["lab:variant"] = default_variant(preset_id)
        variant = st.radio("Variant", variant_names, key="lab:variant", horizontal=True, on_change=clear_knobs,
                           help=f"Toggle: {preset['toggle']}" if preset.get("toggle") else None)
    base = preset_config(preset_id, variant)
    try:
        full = labstate.resolved(base)
    except ConfigError as err:  # a preset file that no longer validates: say so instead of crashing
        st.error(f"preset {preset_id}: {err}")
        st.stop()
    for knob in labstate.knobs():
        knob_widget(knob, full, knob.key)
    slots["regularizers"] = st.empty()
    with st.expander("Regularizers", expanded=False):
        regularizer_widgets(full)
    extra = state.get("lab:extra") or []
    if extra:
        st.caption("Also set by the URL: " + ", ".join(labstate.assignment(k, v) for k, v in extra))
        if st.button("Clear these", key="lab:clear_extra"):
            state["lab:extra"] = []
            st.rerun()

changes = labstate.overrides(full, values) + [tuple(e) for e in extra]
assignments = [labstate.assignment(k, v) for k, v in changes]
config_error: str | None = None
try:
    data = apply_overrides(base, assignments)
    if not data.get("train", {}).get("snapshot_every"):  # feed the Embeddings page: ~20 snapshots a run
        data.setdefault("train", {})["snapshot_every"] = max(1, int(data["train"].get("steps", 1000)) // 20)
    cfg = validate(data)
except ConfigError as err:
    cfg, config_error = None, str(err)

# URL: written only when it changes, and remembered so that our own write is not read back as a new view.
new_query = labstate.to_query(preset_id, variant, assignments)
if signature(new_query) != signature(query):
    st.query_params.from_dict(new_query)
state["lab:url"] = signature(new_query)
state["lab:view"] = (preset_id, variant, changes)


def show_error(message: str) -> None:
    """Under the widget the message names (its nearest named parent), else in the main area."""
    slot = labstate.slot_for(message, slots)
    (slots[slot] if slot else st).error(message)


# ---- main area: controls, live changes, dashboard ---------------------------------------------------

st.title("Regularization Lab")
problems = state.get("lab:problems") or []
if problems:
    if state.get("lab:problems_for") is None:
        state["lab:problems_for"] = state["lab:url"]
    if state["lab:problems_for"] == state["lab:url"]:  # until the view changes
        for problem in problems:
            st.warning(problem)
    else:
        state["lab:problems"] = []

cols = st.columns(5)
job = holder.job
if cols[0].button("Start", type="primary", disabled=cfg is None or (job is not None and not job.done)):
    try:
        holder.job = Job(cfg, run_store()).start()
    except (ConfigError, StoreError) as err:
        config_error = str(err)
    except Exception as err:  # a technique or model failing while it is built: say so, keep the page usable
        logging.getLogger(__name__).exception("building the run failed")
        st.error(f"could not start the run: {one_line(f'{type(err).__name__}: {err}')}")
job = holder.job
if cols[1].button("Pause", disabled=job is None or job.done):
    job.pause()
if cols[2].button("Resume", disabled=job is None or job.done):
    job.resume()
if cols[3].button("Stop", disabled=job is None or job.done):
    job.stop()
if cols[4].button("Reset", disabled=job is None, help="Stop the run and clear the dashboard (the run stays stored)"):
    job.stop(wait=2.0)
    holder.job = job = None
if config_error:
    show_error(config_error)


def live_form(job: Job) -> None:
    """lr, weight decay and the live parameters of the run's techniques, applied at the next step."""
    live_slots: dict[str, Any] = {}
    with st.form("live"):
        st.caption("Change while training (applied at the next step)")
        fields: dict[str, float] = {}
        live_cols = st.columns(2)
        with live_cols[0]:
            fields["optim.lr"] = st.number_input("live lr", value=float(job.trainer.base_lr), format="%g",
                                                 key="live:lr", help="optim.lr")
            live_slots["optim.lr"] = st.empty()
        with live_cols[1]:
            fields["optim.weight_decay"] = st.number_input("live weight decay",
                                                           value=float(job.cfg.optim.weight_decay), format="%g",
                                                           key="live:wd", help="optim.weight_decay")
            live_slots["optim.weight_decay"] = st.empty()
        for name, technique in job.trainer.techniques.items():
            for p in technique.params:
                if p.live and p.type in (int, float):
                    key = f"regularizers.{name}.{p.name}"
                    fields[key] = st.number_input(f"live {name}.{p.name}", value=p.type(technique.values[p.name]),
                                                  key=f"live:{key}", help=p.help,
                                                  format="%g" if p.type is float else "%d")
                    live_slots[key] = st.empty()
        if st.form_submit_button("Apply"):
            current = {"optim.lr": job.trainer.base_lr, "optim.weight_decay": job.cfg.optim.weight_decay}
            for key, value in fields.items():
                if key == "optim.lr" or value != current.get(key, object()):
                    try:
                        job.set(key, value)
                    except ConfigError as err:
                        slot = labstate.slot_for(str(err), live_slots)
                        (live_slots[slot] if slot else st).error(str(err))


if job is not None and not job.done:
    live_form(job)

live = active([job])


def boundary_panel(view: JobView, stem: str) -> None:
    """2-D classification runs: the model's decision over the input plane, redrawn at every snapshot."""
    assert view.boundary is not None and view.points is not None
    pts = view.points
    fig = decision_boundary(view.boundary, pts["x_train"], pts["y_train"], pts.get("is_noisy"), pts.get("labeled"),
                            pts["x_test"], pts["y_test"], title=f"Decision boundary — step {view.boundary_step}")
    left, right = st.columns(2)
    with left:
        plot_panel(fig, f"{stem}_boundary", key="boundary", data=partial(boundary_csv, view.boundary))
    right.caption("Eval-mode prediction on a fixed grid over the training inputs, redrawn at every snapshot. "
                  "Colour: predicted class, paler where the model is less sure. Points: training inputs by "
                  "given label (× = noisy label, grey = unlabelled); test points can be shown from the legend.")


@st.fragment(run_every=poll_interval(live))
def live_panel() -> None:
    job = holder.job
    if job is None:
        st.info("Pick a preset and press Start.")
        return
    view = job.view()
    lr = view.series.get("lr")
    lr_text = f" · lr {lr[1][-1]:.4g}" if lr and lr[1] else ""
    st.progress(min(1.0, view.step / max(1, view.total_steps)),
                text=f"{view.state} — step {view.step}/{view.total_steps} · {view.steps_per_s:.0f} steps/s{lr_text}")
    run_text = f"run `{view.run_id}`" if view.run_id else "run starting"
    running_note = view.message if view.message and not view.outcome and view.state != "failed" else ""
    st.caption(run_text + (f" · {running_note}" if running_note else ""))
    if view.outcome:
        outcome_badge(view.outcome, view.message)
    elif view.message and view.state in ("diverged", "failed"):
        st.error(view.message)
    opts = st.columns([1, 2, 2])
    log_y = opts[0].toggle("log y", key="log_y")
    smoothing = opts[1].slider("EMA smoothing (train loss)", 0.0, 0.99, 0.0, 0.01, key="ema")
    if view.run_id:
        opts[2].download_button("Run bundle (zip)", data=partial(run_bundle, view.run_id),
                                file_name=f"{view.run_id}.zip", mime="application/zip", key="lab:bundle",
                                on_click="ignore",
                                help="config, metrics CSV, summary and every figure (PNG + HTML)")
    stem = view.run_id or "run"
    left, right = st.columns(2)
    with left:
        plot_panel(curves(view.series, LOSS, "Loss", log_y=log_y, smoothing=smoothing), f"{stem}_loss", key="loss")
    with right:
        plot_panel(curves(view.series, ACCURACY, "Accuracy"), f"{stem}_accuracy", key="acc")
    if view.boundary is not None:
        boundary_panel(view, stem)
    if live and job.done:
        st.rerun()  # full rerun: buttons update and polling stops


live_panel()
