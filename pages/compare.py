"""Compare page: overlay one metric across stored runs, and A/B one technique toggle live.

``?runs=ID,ID`` preselects runs (the Gallery and Sweeps pages link here that way); the selection is
written back to the URL so the view can be shared.
"""

from __future__ import annotations

import copy

import streamlit as st

from engine.config import ConfigError, validate
from engine.figures import curves
from engine.jobs import Job
from engine.listing import local_time, run_label
from engine.regularizers import all_techniques
from engine.store import StoreError
from pages.common import active, job_holder, open_store, plot_panel, poll_interval, run_picker

store = open_store()
holder = job_holder()
state = st.session_state
st.title("Compare")

# ---- overlay of stored runs ------------------------------------------------------------------
chosen: list[str] = run_picker(store, "cmp:runs", multiple=True)
by_id = {rid: run for rid in chosen if store is not None and (run := store.get_run(rid)) is not None}
chosen = [rid for rid in chosen if rid in by_id]  # a run deleted since the picker listed it


def legend_names(runs: list[dict]) -> dict[str, str]:
    """Run id → its name in the legend: what a person calls it, plus its local start time (then its id)
    only where two chosen runs would read the same (two unnamed runs of one preset)."""
    names = {run["id"]: run_label(run) for run in runs}
    for extra in (lambda run: local_time(run.get("created_at")), lambda run: run["id"]):
        counts = {name: list(names.values()).count(name) for name in names.values()}
        names = {run["id"]: f"{names[run['id']]} · {extra(run)}" if counts[names[run["id"]]] > 1 else names[run["id"]]
                 for run in runs}
    return names


if chosen:
    assert store is not None  # chosen is empty without a readable store
    names = sorted({n for rid in chosen for n in store.metric_names(rid)})
    if names:
        default = names.index("test/loss") if "test/loss" in names else 0
        cols = st.columns([3, 1])
        metric = cols[0].selectbox("Metric", names, index=default, key="cmp:metric")
        log_y = cols[1].toggle("log y", key="cmp:log_y")
        series: dict[str, tuple[list[int], list[float]]] = {}
        legend = legend_names([by_id[rid] for rid in chosen])
        for rid in chosen:
            data = store.metrics(rid, [metric]).get(metric)
            if data is not None:
                series[legend[rid]] = (data[0].tolist(), data[1].tolist())
        plot_panel(curves(series, list(series), metric, log_y=log_y), f"compare_{metric}", key="cmp:overlay")
    else:
        st.caption("The selected runs have no metrics yet.")

# ---- A/B: flip one technique ------------------------------------------------------------------
st.header("A/B")
job = holder.job
if job is not None:
    base = job.cfg.to_dict()
    st.caption("Base config: the current Lab job.")
elif chosen:
    base = copy.deepcopy(by_id[chosen[0]]["config"])
    st.caption(f"Base config: run {run_label(by_id[chosen[0]])} (the first selected run).")
else:
    base = None
    st.info("Start a job on the Lab page or select a run above to A/B one of its techniques.")


def ab_configs(base: dict, technique: str, steps: int) -> tuple:
    """(A, B): the base with ``technique`` as it is, and with its enabled flag flipped; same seed."""
    current = dict(base.get("regularizers", {}).get(technique) or {"enabled": False})
    enabled = bool(current.get("enabled", True))
    configs = []
    for on in (enabled, not enabled):
        data = copy.deepcopy(base)
        data.setdefault("train", {})["steps"] = steps
        data.setdefault("regularizers", {})[technique] = {**current, "enabled": on}
        data["name"] = f"{base.get('name') or base.get('preset') or 'run'} · {technique} {'on' if on else 'off'}"
        configs.append(validate(data))
    return tuple(configs)


if base is not None:
    cols = st.columns([2, 1, 1])
    technique = cols[0].selectbox("Technique to flip", list(all_techniques()), key="ab:technique")
    steps = cols[1].number_input("steps", min_value=1, value=int(base.get("train", {}).get("steps", 1000)),
                                 key="ab:steps")
    if cols[2].button("Run A/B", type="primary", key="ab:run"):
        try:
            cfg_a, cfg_b = ab_configs(base, technique, int(steps))
            pair = [Job(cfg_a, store), Job(cfg_b, store)]
        except (ConfigError, StoreError) as err:
            st.error(str(err))
        else:
            holder.replace_group("ab", pair)  # stopped with the session, like the Lab's job


polling = active(holder.groups.get("ab", []))


@st.fragment(run_every=poll_interval(polling))
def ab_panel() -> None:
    pair = holder.groups.get("ab")
    if not pair:
        return
    live = not all(j.done for j in pair)
    for col, side, j in zip(st.columns(2), "AB", pair, strict=True):
        view = j.view()
        with col:
            st.markdown(f"**{side}: {j.cfg.name}**")
            st.progress(min(1.0, view.step / max(1, view.total_steps)),
                        text=f"{view.state} — step {view.step}/{view.total_steps}"
                        + (f" · outcome: {view.outcome}" if view.outcome else ""))
            if view.message and view.state in ("diverged", "failed"):
                st.error(view.message)
            stem = view.run_id or side
            plot_panel(curves(view.series, ["train/loss", "test/loss"], f"{side}: loss"), f"{stem}_loss",
                       key=f"ab:loss:{side}")
            plot_panel(curves(view.series, ["train/acc", "test/acc"], f"{side}: accuracy"), f"{stem}_accuracy",
                       key=f"ab:acc:{side}")
    if polling and not live:
        st.rerun()  # full rerun: stop polling


ab_panel()
