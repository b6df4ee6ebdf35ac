"""Gallery page: the phenomena presets as cards; one click trains baseline and regularized side by side."""

from __future__ import annotations

import streamlit as st
from streamlit.errors import StreamlitAPIException

from engine import figures, gallery
from engine.config import ConfigError
from engine.jobs import Job
from engine.store import StoreError
from pages.common import active, job_holder, outcome_badge, plot_panel, poll_interval, run_store

GROUP = "gallery"
holder = job_holder()
state = st.session_state

st.title("Gallery")
st.caption("Each card is one phenomenon. **Run baseline vs regularized** trains both versions at once in the "
           "background: the same config and seed, only the card's toggle differs. Runs keep going if you switch "
           "pages and are stored like any other run.")


def start_pair(preset_id: str) -> None:
    try:
        baseline, regularized = gallery.pair_configs(preset_id)
        jobs = [Job(baseline, run_store()), Job(regularized, run_store())]
    except (ConfigError, StoreError) as err:
        state["gal:error"] = (preset_id, str(err))
        return
    holder.replace_group(GROUP, jobs)
    state["gal:preset"], state["gal:error"] = preset_id, None


def sweeps_note(card: gallery.Card) -> None:
    grid = ", ".join(f"{k} ∈ {v}" for k, v in (card.sweep.get("grid") or {}).items()) if card.sweep else ""
    st.info("This phenomenon shows up across a sweep, not in a single pair of runs"
            + (f" ({grid})" if grid else "") + ": run it on the Sweeps page.")
    try:
        st.page_link("pages/sweeps.py", label="Open Sweeps", icon="🧮")
    except (StreamlitAPIException, KeyError):
        st.caption("(The Sweeps page is not part of this build; `python -m engine sweep --preset "
                   f"{card.id} …` runs the same grid.)")


pair = holder.groups.get(GROUP, [])


@st.fragment(run_every=poll_interval(active(pair)))
def pair_panel(card: gallery.Card, live: bool) -> None:
    """Both runs' progress, their curves overlaid (solid = baseline, dashed = regularized), outcomes."""
    jobs = holder.groups.get(GROUP, [])
    views = [j.view() for j in jobs]
    for col, label, view in zip(st.columns(2), gallery.PAIR, views, strict=True):
        with col:
            text = f"{label}: {view.state} — step {view.step}/{view.total_steps} · {view.steps_per_s:.0f} steps/s"
            st.progress(min(1.0, view.step / max(1, view.total_steps)), text=text)
            if view.message and view.state in ("diverged", "failed"):
                st.error(f"{label}: {view.message}")
    runs = {label: view.series for label, view in zip(gallery.PAIR, views, strict=True)}
    names = {n for view in views for n in view.series}
    watch = gallery.watch_metrics(card.id, names)
    cols = st.columns(3 if watch else 2)
    with cols[0]:
        plot_panel(figures.overlay(runs, ["train/acc", "test/acc"], "Accuracy", y_title="accuracy"),
                   f"{card.id}_pair_accuracy", key="gal:acc")
    with cols[1]:
        plot_panel(figures.overlay(runs, ["train/loss", "test/loss"], "Loss", log_y=True, y_title="loss"),
                   f"{card.id}_pair_loss", key="gal:loss")
    if watch:
        with cols[2]:
            plot_panel(figures.overlay(runs, watch, ", ".join(watch)), f"{card.id}_pair_watch", key="gal:watch")
    if all(j.done for j in jobs):
        for column, label, view in zip(st.columns(len(views)), gallery.PAIR, views, strict=True):
            with column:
                st.markdown(f"**{label}**")
                if view.outcome:
                    outcome_badge(view.outcome, view.message)
                else:
                    st.error(f"{view.state}: {view.message}")
    ids = [v.run_id for v in views]
    if all(ids) and st.button("Open both in Compare", key="gal:compare"):
        st.switch_page("pages/compare.py", query_params={"runs": ",".join(ids)})
    if live and all(j.done for j in jobs):
        st.rerun()  # full rerun: stop polling


error = state.get("gal:error")
for card in gallery.cards():
    with st.container(border=True, key=f"gal:card:{card.id}"):
        head, action = st.columns([4, 1])
        with head:
            st.subheader(card.title, anchor=False)
            if card.long_run:
                st.badge("long run: minutes or more on CPU, a background job", icon=":material/hourglass_top:",
                         color="orange")
            st.markdown(f"**What to look for.** {card.look_for}")
            if card.toggle:
                st.markdown(f"**Toggle.** {card.toggle}")
            if card.paper:
                st.caption(f"Paper: {card.paper}")
        with action:
            label = "Run baseline vs regularized" + (" (long run)" if card.long_run else "")
            if card.has_pair:
                st.button(label, key=f"gal:run:{card.id}", type="primary", on_click=start_pair, args=(card.id,),
                          help="Minutes or more on CPU; a GPU helps" if card.long_run else None)
            st.caption(f"`{card.id}`")
        if error and error[0] == card.id:
            st.error(error[1])
        if card.sweep is not None:
            sweeps_note(card)
        elif not card.has_pair:
            st.caption("This preset defines no baseline/regularized pair; open it on the Lab page.")
        if card.markdown:
            with st.expander("Setup, paper and measured numbers"):
                st.markdown(card.markdown)
        if pair and state.get("gal:preset") == card.id:
            pair_panel(card, active(pair))
