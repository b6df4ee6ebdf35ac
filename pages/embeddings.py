"""Embeddings page: penultimate features over training — PCA live, UMAP / t-SNE in the background."""

from __future__ import annotations

from functools import partial

import numpy as np
import streamlit as st

from engine import figures
from engine.projections import ProjectionService, projection_csv
from pages.common import open_store, plot_panel, run_picker, run_store


@st.cache_resource(show_spinner=False)
def projection_service() -> ProjectionService:
    return ProjectionService(run_store())


st.title("Embeddings")
st.caption("Penultimate-layer features of a fixed, class-stratified probe set (≤ 2,000 training examples), "
           "eval mode. PCA frames are aligned to the previous one; UMAP and t-SNE run in the background and "
           "start from the previous frame's layout.")

store = open_store()


def has_snapshots(run: dict) -> bool:
    """Runs this page can show: those with feature snapshots, and running ones (their first arrives soon)."""
    return run["status"] == "running" or bool(store is not None and store.artifacts(run["id"], kind="snapshot"))


run_id = run_picker(store, "emb:run", include=has_snapshots,
                    empty="No run has feature snapshots yet: start one on the Lab page (it records ~20 snapshots "
                          "a run; from the command line, set train.snapshot_every).",
                    excluded="has no feature snapshots (start it with train.snapshot_every set)")
if run_id is None:
    st.stop()
method = st.radio("Projection", ["pca", "umap", "tsne"], horizontal=True, key="emb:method",
                  format_func={"pca": "PCA (live)", "umap": "UMAP", "tsne": "t-SNE"}.get)
colour = st.radio("Colour by", ["class", "noisy / clean label", "correct / wrong"], horizontal=True,
                  key="emb:colour")
play = st.toggle("Play", key="emb:play")


@st.fragment(run_every=0.5)
def frame() -> None:
    service = projection_service()
    steps = service.steps(run_id, refresh=True)
    if not steps:
        st.info("Waiting for the first snapshot…")
        return
    state = st.session_state
    if state.get("emb:step") not in steps:
        state["emb:step"] = steps[-1]
    elif play:
        state["emb:step"] = steps[(steps.index(state["emb:step"]) + 1) % len(steps)]
    step = st.select_slider("Snapshot step", options=steps, key="emb:step")
    handle = service.submit(run_id, step, method)
    if not handle.done():
        st.info(f"Computing {method.upper()} for step {step} in the background ({handle.status})…")
        return
    if handle.error is not None:
        st.error(f"{method} failed: {handle.error}")
        return
    projection = handle.result()
    snapshot = service.snapshot(run_id, step)
    index = snapshot.get("flag_index", np.arange(len(snapshot["labels"])))
    plot_panel(figures.embedding(projection.coords, snapshot, index, colour, f"{method.upper()} — step {step}"),
               f"{run_id}_{method}_{step}", key="emb", data=partial(projection_csv, projection, snapshot))
    st.caption(f"trustworthiness (k = 10): {projection.trustworthiness:.3f} · computed in "
               f"{projection.seconds:.2f} s" + (f" · initialised from step {projection.init_step}"
                                                 if projection.init_step is not None else ""))


frame()
