"""Lab page: pick a preset, toggle regularizers, train live, change knobs while it runs."""

from __future__ import annotations

import streamlit as st

from engine.config import ConfigError, apply_overrides, validate
from engine.figures import curves
from engine.jobs import Job
from engine.presets import get_preset, preset_config, preset_ids
from engine.regularizers import all_techniques
from engine.store import StoreError
from pages.common import job_holder, run_store


def regularizer_widgets() -> dict[str, dict]:
    """One toggle per registered technique, with widgets generated from its typed params."""
    chosen: dict[str, dict] = {}
    for name, cls in all_techniques().items():
        on = st.toggle(name, key=f"reg:{name}", help=cls.summary())
        if not on:
            continue
        values: dict = {}
        for p in cls.params:
            key = f"reg:{name}:{p.name}"
            if p.type is bool:
                values[p.name] = st.checkbox(p.name, value=p.default, key=key, help=p.help)
            elif p.type is str:
                values[p.name] = st.selectbox(p.name, p.choices or [p.default], key=key, help=p.help)
            else:
                values[p.name] = st.number_input(
                    p.name, min_value=p.type(p.min) if p.min is not None else None,
                    max_value=p.type(p.max) if p.max is not None else None, value=p.type(p.default),
                    key=key, help=p.help, format="%g" if p.type is float else "%d")
        chosen[name] = values
    return chosen


holder = job_holder()
st.title("Regularization Lab")
with st.sidebar:
    preset_id = st.selectbox("Preset", preset_ids(), index=preset_ids().index("grokking-quadratic"))
    preset = get_preset(preset_id)
    st.caption(preset["description"])
    steps = st.number_input("train.steps", min_value=1, value=int(preset["config"]["train"]["steps"]))
    with st.expander("Regularizers", expanded=False):
        regs = regularizer_widgets()

try:
    data = apply_overrides(preset_config(preset_id), [f"train.steps={steps}"])
    if not data["train"].get("snapshot_every"):  # feed the Embeddings page: ~20 snapshots a run
        data["train"]["snapshot_every"] = max(1, int(steps) // 20)
    data["regularizers"] = regs
    cfg = validate(data)
    config_error = None
except ConfigError as err:
    cfg, config_error = None, str(err)

cols = st.columns(4)
job = holder.job
if cols[0].button("Start", type="primary", disabled=cfg is None or (job is not None and not job.done)):
    try:
        holder.job = Job(cfg, run_store()).start()
    except (ConfigError, StoreError) as err:
        config_error = str(err)
job = holder.job
if cols[1].button("Pause", disabled=job is None or job.done):
    job.pause()
if cols[2].button("Resume", disabled=job is None or job.done):
    job.resume()
if cols[3].button("Stop", disabled=job is None or job.done):
    job.stop()
if config_error:
    st.error(config_error)
if job is not None and not job.done:
    with st.form("live"):
        st.caption("Change while training (applied at the next step)")
        live_cols = st.columns(2)
        live_lr = live_cols[0].number_input("optim.lr", value=float(job.trainer.base_lr), format="%g", key="live:lr")
        live_wd = live_cols[1].number_input("optim.weight_decay", value=float(job.cfg.optim.weight_decay),
                                            format="%g", key="live:wd")
        if st.form_submit_button("Apply"):
            try:
                job.set("optim.lr", live_lr)
                if live_wd != job.cfg.optim.weight_decay:
                    job.set("optim.weight_decay", live_wd)
            except ConfigError as err:
                st.error(str(err))


@st.fragment(run_every=0.5)
def live_panel() -> None:
    job = holder.job
    if job is None:
        st.info("Pick a preset and press Start.")
        return
    view = job.view()
    st.progress(min(1.0, view.step / max(1, view.total_steps)),
                text=f"{view.state} — step {view.step}/{view.total_steps} · {view.steps_per_s:.0f} steps/s")
    if view.message and view.state in ("diverged", "failed"):
        st.error(view.message)
    if view.outcome:
        st.success(f"Outcome: {view.outcome}")
    log_y = st.toggle("log y", key="log_y")
    left, right = st.columns(2)
    left.plotly_chart(curves(view.series, ["train/loss", "test/loss"], "Loss", log_y=log_y), key="loss")
    right.plotly_chart(curves(view.series, ["train/acc", "test/acc", "train/acc_clean", "noisy/memorized_frac"],
                              "Accuracy"), key="acc")


live_panel()
