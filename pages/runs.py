"""Runs page: every run in the store as a table a person reads; one run in detail; several to Compare.

The table fits a 1440 px screen without scrolling sideways (name, preset, techniques, outcome, test
accuracy, local start time, duration); ticking a row shows that run below, ticking several opens
them together in Compare. The detail is the run picker of every analysis page (``?run=ID`` links
here too): the verdict with its reason, the config as readable lines and as JSON (expanded),
final metrics grouped by family, downloads, rename and delete.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Mapping, Sequence
from functools import partial
from typing import Any

import streamlit as st

from engine.listing import config_summary, duration, grouped_metrics, local_time, run_label, techniques
from engine.runner import metrics_csv
from engine.store import StoreError
from pages.common import (
    STORE_ERRORS,
    open_store,
    outcome_badge,
    picker_rows,
    run_bundle,
    run_filters,
    run_picker,
)

TABLE_KEY, PICK_KEY = "runs_table", "runs:selected"

st.title("Runs")
store = open_store()
rows = picker_rows(store)
if store is None or rows is None:
    st.stop()  # the one error line is already shown
st.caption(f"Store: `{store.path}` · {len(rows)} run{'s' if len(rows) != 1 else ''}. Tick a row to see that run "
           "below; tick several to open them together in Compare.")
if not rows:
    st.info("No runs yet: start one on the Lab page (or `python -m engine run --preset noisy-labels`).")
    st.stop()


def table_rows(rows: Sequence[Mapping[str, Any]], now: float) -> list[dict[str, Any]]:
    """One line per run, only what fits a 1440 px screen; ``id`` rides along hidden (selection, tests)."""
    return [{"id": r["id"], "name": r.get("name") or "", "preset": r.get("preset") or "custom",
             "techniques": ", ".join(techniques(r.get("config") or {})) or "none",
             "outcome": r["shown_outcome"].replace("_", " "),
             "test acc": r["test_acc"] if r["test_acc"] is not None and math.isfinite(r["test_acc"]) else None,
             "created": local_time(r.get("created_at")), "duration": duration(r, now)} for r in rows]


shown = run_filters(rows, "runs")
ids = [r["id"] for r in shown]
table = st.dataframe(
    table_rows(shown, time.time()), hide_index=True, key=TABLE_KEY, width="stretch",
    on_select="rerun", selection_mode="multi-row",
    column_order=("name", "preset", "techniques", "outcome", "test acc", "created", "duration"),
    column_config={  # pixel widths that add up to the table's ~980 px at a 1440 px window with the sidebar open
        "name": st.column_config.TextColumn("name", width=200),
        "preset": st.column_config.TextColumn("preset", width=145),
        "techniques": st.column_config.TextColumn("techniques", width=185,
                                                  help="The techniques that were on (their values are below)."),
        "outcome": st.column_config.TextColumn("outcome", width=100,
                                               help="The run's verdict (its reason is shown below when the run is "
                                                    "selected), or its status while it has none."),
        "test acc": st.column_config.NumberColumn("test acc", format="%.3f", width=70),
        "created": st.column_config.TextColumn("created", width=136, help="Local time the run started."),
        "duration": st.column_config.TextColumn("duration", width=80),
    },
)
ticked = [ids[i] for i in table.selection.rows if i < len(ids)]
newly = [rid for rid in ticked if rid not in st.session_state.get("runs:ticked", [])]
st.session_state["runs:ticked"] = ticked
if newly:  # the row just ticked (clicked) becomes the run shown below: set before its picker is drawn
    st.session_state[PICK_KEY] = newly[-1]
if st.button(f"Open {len(ticked)} runs in Compare" if len(ticked) > 1 else "Open in Compare",
             key="runs:compare", type="primary", disabled=not ticked,
             help="Tick runs in the table first." if not ticked else None):
    st.switch_page("pages/compare.py", query_params={"runs": ",".join(ticked)})

st.divider()
run_id = run_picker(store, PICK_KEY, rows=shown, label="Run shown below")
if run_id is None:
    st.stop()
try:
    run = store.get_run(run_id)
    final = store.final_metrics(run_id) if run is not None else {}
except STORE_ERRORS as err:
    st.error(f"Run {run_id} cannot be read from the store: {' '.join(str(err).split())}")
    st.stop()
if run is None:  # deleted by another session since the list was read
    st.warning("This run is no longer in the store; pick another above.")
    st.stop()
row = next(r for r in shown if r["id"] == run_id)

if row["outcome"] not in ("", "-"):
    outcome_badge(row["outcome"], row["reason"])
else:
    st.info(f"**{row['status'].capitalize()}**" + (f" — {run['message']}" if run.get("message") else ""))
st.caption(f"id `{run_id}` · started {local_time(run.get('created_at'))} · ran {duration(run, time.time())} · "
           f"seed {run.get('seed')} · device {run.get('device')} · `python -m engine show {run_id}`")
links = st.columns(3)
links[0].page_link("pages/diagnostics.py", label="Open in Diagnostics", icon="📈", query_params={"run": run_id})
links[1].page_link("pages/embeddings.py", label="Open in Embeddings", icon="🌀", query_params={"run": run_id})
links[2].page_link("pages/compare.py", label="Open in Compare", icon="⚖️", query_params={"runs": run_id})

left, right = st.columns([3, 2])
with left:
    st.subheader("Config")
    st.markdown("\n".join(f"- **{label}**: {text}" for label, text in config_summary(run["config"])))
    with st.expander("Full config (JSON)", expanded=True), st.container(height=420, border=False):
        st.json(run["config"], expanded=True)  # scrolls in its box: downloads and rename stay within reach
with right:
    st.subheader("Final metrics")
    if final:
        groups = sorted(grouped_metrics(final), key=lambda g: (g[0] not in ("train", "test"), g[0] != "train"))
        lines = [{"family": family, "metric": name, "value": value}
                 for family, items in groups for name, value in items]
        st.dataframe(lines, hide_index=True, key="runs:final", width="stretch",
                     height=min(35 * (len(lines) + 1) + 3, 600))  # the accuracies first; no inner scroll for ≤ 16
    else:
        st.caption("No metrics recorded.")

dl = st.columns(3)
dl[0].download_button("Download metrics CSV", data=partial(metrics_csv, store, run_id),
                      file_name=f"{run_id}_metrics.csv", mime="text/csv", key="runs:csv", on_click="ignore")
dl[1].download_button("Download config JSON", data=json.dumps(run["config"], indent=2),
                      file_name=f"{run_id}_config.json", mime="application/json", key="runs:json", on_click="ignore")
dl[2].download_button("Download bundle (zip)", data=partial(run_bundle, run_id), file_name=f"{run_id}.zip",
                      mime="application/zip", key="runs:zip", on_click="ignore")

st.subheader("Manage")
new_name = st.text_input("Name", value=run["name"] or "", key=f"runs:name:{run_id}")
if st.button("Rename", key="runs:rename", disabled=not new_name.strip() or new_name.strip() == (run["name"] or "")):
    try:
        store.rename_run(run_id, new_name.strip())
    except StoreError as err:
        st.error(str(err))
    else:
        st.rerun()

running = run["status"] == "running"
confirm = st.checkbox(f"Yes, delete “{run_label(run)}” (started {local_time(run.get('created_at'))}) with its "
                      "metrics and files", key=f"runs:confirm:{run_id}",
                      disabled=running, help="A running run cannot be deleted; stop it first." if running else None)
if st.button("Delete", key="runs:delete", type="primary", disabled=not confirm or running):
    store.delete_run(run_id)
    st.rerun()
