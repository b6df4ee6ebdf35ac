"""Diagnostics page: sharpness with its stability line, trace, collapse panel, on-demand spectra."""

from __future__ import annotations

import streamlit as st

from engine import figures
from pages.common import job_holder

st.title("Diagnostics")
st.caption("Instruments run in eval mode on a fixed probe set of training examples. Curvature is of the data "
           "loss: penalties (L2, weight decay) are excluded unless the instrument's include_penalties is on.")

job = job_holder().job
if job is None:
    st.info("Start a run on the Lab page first; its diagnostics appear here while it trains.")
    st.stop()

cols = st.columns(3)
for col, name in zip(cols, ("density", "landscape", "top_k"), strict=True):
    if col.button(f"Compute {name} now", key=f"measure:{name}"):
        job.measure(name)


@st.fragment(run_every=0.5)
def panels() -> None:
    view = job.view()
    series = view.series
    st.caption(f"{view.state} — step {view.step}/{view.total_steps}"
               + (f" · outcome: {view.outcome}" if view.outcome else ""))
    if "sharpness/top_eig" in series:
        included = series.get("sharpness/includes_penalty", ([], [0.0]))[1][-1]
        st.plotly_chart(figures.sharpness(series), key="sharpness")
        st.caption("penalties included" if included else "data loss only (penalties excluded)")
    else:
        st.caption("Sharpness is off for this run: set diagnostics.sharpness.every (the edge-of-stability preset "
                   "turns it on).")
    if "sharpness/trace" in series:
        st.plotly_chart(figures.curves(series, ["sharpness/trace"], "Hessian trace (Hutchinson)"), key="trace")
    nc = [n for n in ("nc/nc1", "nc/equinorm", "nc/equiangular", "nc/max_angle", "nc/nc3", "nc/nc4") if n in series]
    if nc:
        st.plotly_chart(figures.curves(series, nc, "Neural collapse", log_y=True), key="collapse")
    other = [n for n in ("rank/effective", "units/dead_frac", "calib/ece") if n in series]
    if other:
        st.plotly_chart(figures.curves(series, other, "Rank, dead units, calibration"), key="rank")
    if "density" in view.artifacts:
        art = view.artifacts["density"].arrays
        st.plotly_chart(figures.density(art["grid"], art["density"]), key="density")
    if "landscape" in view.artifacts:
        art = view.artifacts["landscape"].arrays
        betas = art.get("betas")
        st.plotly_chart(figures.landscape(art["alphas"], betas, art["loss"]), key="landscape")


panels()
