"""State and widgets shared by the pages of one browser session: jobs, the run store, plot panels."""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Callable, Iterable, Mapping, Sequence
from functools import partial
from typing import TYPE_CHECKING, Any, Literal, overload

import streamlit as st
from streamlit import runtime

from engine.jobs import Job
from engine.listing import choice_label, outcome_word, run_label, run_rows
from engine.store import RunStore, StoreError
from pages import app_navigation, navigated

if TYPE_CHECKING:
    import plotly.graph_objects as go

POLL_S = 0.5  # live pages redraw at 2 Hz while something trains


def _use_app_navigation() -> None:
    """Run app.py's navigation even when a server's first request is a deep link.

    Streamlit treats an app with a ``pages/`` folder next to its entry script as a legacy
    multipage app until ``st.navigation`` has run once in the server process; so a fresh server
    whose first request is ``/compare?runs=…`` runs that page alone (no page config, a list of
    file names as navigation). Every page imports this module, and that first import happens in
    such a run only before app.py has ever run in the process: then the app's own navigation is
    declared here (hidden; calling ``st.navigation`` is what ends the legacy mode, for the whole
    process) and the run starts again, now through app.py, on the same URL and query. Nothing
    happens on a bare import (tests import this module outside any server).
    """
    if not navigated() and runtime.exists():
        app_navigation(position="hidden")
        st.rerun()


_use_app_navigation()


class JobHolder:
    """Per-browser-session jobs, released (and stopped) when the tab closes.

    ``job`` is the Lab's run; ``groups`` hold runs started together by other pages (the Gallery's
    baseline/regularized pair, Compare's A/B) — one group per page, replaced as a whole.
    """

    def __init__(self) -> None:
        self.job: Job | None = None
        self.groups: dict[str, list[Job]] = {}

    def replace_group(self, name: str, jobs: list[Job]) -> list[Job]:
        """Stop the group's previous jobs, then start and keep the new ones."""
        for old in self.groups.get(name, []):
            old.stop()
        self.groups[name] = [j.start() for j in jobs]
        return self.groups[name]

    def all_jobs(self) -> Iterable[Job]:
        if self.job is not None:
            yield self.job
        for jobs in self.groups.values():
            yield from jobs

    def stop(self) -> None:
        jobs = list(self.all_jobs())
        for job in jobs:
            job.stop()  # ask all first, then wait: each trainer stops before its next step
        for job in jobs:
            job.stop(wait=2.0)  # no thread outlives the session


@st.cache_resource(scope="session", on_release=lambda holder: holder.stop(), show_spinner=False)
def job_holder() -> JobHolder:
    return JobHolder()


@st.cache_resource(show_spinner=False)
def run_store() -> RunStore:
    return RunStore()


def active(jobs: Iterable[Job | None]) -> bool:
    return any(j is not None and not j.done for j in jobs)


def poll_interval(live: bool) -> float | None:
    """``run_every`` for a page's live fragment: poll only while something trains, so an idle page
    costs nothing and its download buttons keep stable ids."""
    return POLL_S if live else None


# ---- outcome badge ---------------------------------------------------------------------------------

_BADGES = {  # verdict → (how it reads, Streamlit alert kind); rules in engine/outcome.py and the README
    "generalized": ("Generalized", st.success),
    "grokked": ("Grokked (generalized long after fitting)", st.success),
    "memorized": ("Memorized", st.warning),
    "partial": ("Partial: learned, but neither fitted nor generalized", st.info),
    "no_learning": ("No learning: stayed near chance", st.warning),
    "diverged": ("Diverged", st.error),
    "stopped": ("Stopped", st.info),
}


def outcome_badge(outcome: str, reason: str = "") -> None:
    """The run's verdict as a coloured line with its reason (green when it generalized)."""
    label, alert = _BADGES.get(outcome, (outcome, st.info))
    reason = reason.removeprefix(f"{outcome} ")  # "diverged at step 40 (…)" under "Diverged"
    alert(f"**{label}**" + (f" — {reason}" if reason else ""))


# ---- plot panels with a download menu -------------------------------------------------------------

def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_") or "figure"


def _render(fig: go.Figure, fmt: str) -> bytes:
    from engine.export import figure_bytes

    return figure_bytes(fig, fmt)


def _csv(fig: go.Figure) -> str:
    from engine.export import figure_csv

    return figure_csv(fig)


def download_menu(fig: go.Figure, name: str, data: str | Callable[[], str | bytes] | None = None,
                  key: str | None = None) -> None:
    """A "Download" popover: PNG, SVG, PDF (kaleido), interactive HTML and the data as CSV.

    Every file is produced only when its button is clicked (deferred ``st.download_button``
    data, run by Streamlit in a worker thread), so drawing the menu costs nothing on each poll and
    an export never delays the live redraw. ``data`` replaces the figure's own traces as the CSV
    (a string, or a callable for something expensive); ``key`` must be unique on the page (defaults
    to ``name``).
    """
    from engine.browser import MISSING, browser_path
    from engine.export import FIGURE_FORMATS, IMAGE_FORMATS, MIME_TYPES

    key = key or name
    stem = _slug(name)
    no_browser = browser_path() is None  # PNG/SVG/PDF render through a headless Chromium
    with st.popover("Download", icon=":material/download:", key=f"dl:{key}"):
        if no_browser:
            st.caption(MISSING[0].upper() + MISSING[1:] + ".")
        for fmt in FIGURE_FORMATS:
            label = "HTML (interactive)" if fmt == "html" else fmt.upper()
            st.download_button(label, data=partial(_render, fig, fmt), file_name=f"{stem}.{fmt}",
                               mime=MIME_TYPES[fmt], key=f"dl:{key}:{fmt}", on_click="ignore",
                               width="stretch", disabled=no_browser and fmt in IMAGE_FORMATS)
        st.download_button("CSV (data)", data=partial(_csv, fig) if data is None else data,
                           file_name=f"{stem}.csv", mime="text/csv", key=f"dl:{key}:csv", on_click="ignore",
                           width="stretch")


def plot_panel(fig: go.Figure, name: str, key: str | None = None,
               data: str | Callable[[], str | bytes] | None = None) -> None:
    """A chart with its download menu underneath; ``key`` identifies both on the page."""
    key = key or name
    st.plotly_chart(fig, key=f"plot:{key}")
    download_menu(fig, name, data=data, key=key)


def run_bundle(run_id: str) -> bytes:
    """A run's zip bundle (config, metrics, summary, every figure as PNG + HTML), built when clicked."""
    import tempfile

    from engine.export import export_run

    with tempfile.TemporaryDirectory() as tmp:
        return export_run(run_store(), run_id, "zip", tmp)[0].read_bytes()


# ---- run picker over the store ---------------------------------------------------------------------

ALL = "All"  # the filters' "no filter" choice
STORE_ERRORS = (StoreError, sqlite3.Error, OSError)  # what reading a broken, vanished or locked store raises
EMPTY_STORE = "No stored runs yet: start one on the Lab page (or `python -m engine run --preset noisy-labels`)."
_OUTCOME_ORDER = ("generalized", "grokked", "memorized", "partial", "no_learning", "diverged", "stopped",
                  "running", "failed", "interrupted")


def open_store() -> RunStore | None:
    """The session's run store, or None after one error line when it cannot be opened (the page goes on)."""
    try:
        return run_store()
    except STORE_ERRORS as err:
        st.error(f"The run store cannot be opened: {_one_line(err)}")
        return None


def _one_line(err: BaseException) -> str:
    return " ".join(str(err).split()) or type(err).__name__


@st.cache_data(max_entries=20_000, show_spinner=False)
def _finished_verdict(path: str, run_id: str, status: str, finished_at: float,
                      _store: RunStore, _run: dict) -> tuple[str, str, float | None]:
    """(outcome, reason, final test acc) of a finished run: replaying a history on every rerun of every page
    would cost a query and a config validation per run, and a finished run's verdict never changes (the
    key holds the store path, id, status and finish time, so a re-finished or other store's run misses)."""
    row = run_rows(_store, [_run])[0]
    return row["outcome"], row["reason"], row["test_acc"]


def picker_rows(store: RunStore | None, include: Callable[[dict[str, Any]], bool] | None = None
                ) -> list[dict[str, Any]] | None:
    """The store's runs, newest first, as :func:`engine.listing.run_rows` rows plus ``label`` (what a person
    reads in a picker) and ``shown_outcome`` (the verdict, or the status while there is none).

    ``include`` keeps only the runs a page can show (Embeddings: runs with feature snapshots). None after one
    error line when the store cannot be read, so the caller draws the rest of its page without runs.
    """
    if store is None:
        return None
    try:
        rows = []
        for run in store.list_runs():
            if include is not None and not include(run):
                continue
            if run.get("finished_at") is not None:
                outcome, reason, test_acc = _finished_verdict(str(store.path), run["id"], run["status"],
                                                              float(run["finished_at"]), store, run)
                row = {**run, "outcome": outcome, "reason": reason, "test_acc": test_acc}
            else:
                row = run_rows(store, [run])[0]
            rows.append({**row, "label": choice_label(row), "shown_outcome": outcome_word(row)})
    except STORE_ERRORS as err:
        st.error(f"The run store {store.path} cannot be read: {_one_line(err)}")
        return None
    return rows


def run_filters(rows: Sequence[Mapping[str, Any]], key: str) -> list[Mapping[str, Any]]:
    """Preset and outcome filters (two selectboxes, ``{key}:preset`` and ``{key}:outcome``); the rows they keep.

    Options are only the presets and outcomes present, so a filter never offers an empty choice.
    """
    presets = sorted({r.get("preset") or "" for r in rows})
    outcomes = sorted({r["shown_outcome"] for r in rows},
                      key=lambda o: (_OUTCOME_ORDER.index(o) if o in _OUTCOME_ORDER else len(_OUTCOME_ORDER), o))
    cols = st.columns(2)
    preset = cols[0].selectbox("Preset", [ALL, *presets], key=f"{key}:preset",
                               format_func=lambda p: p if p else "custom (no preset)")
    outcome = cols[1].selectbox("Outcome", [ALL, *outcomes], key=f"{key}:outcome",
                                format_func=lambda o: o.replace("_", " "),
                                help="The run's verdict (rules in the README, Outcome verdicts), or its status "
                                     "while it has none.")
    return [r for r in rows if (preset == ALL or (r.get("preset") or "") == preset)
            and (outcome == ALL or r["shown_outcome"] == outcome)]


def session_run_id() -> str | None:
    """The run of this browser session's Lab job (None before its first step is recorded)."""
    job = job_holder().job
    return job.run_id if job is not None else None


def _apply_link(store: RunStore, key: str, param: str, by_id: Mapping[str, Mapping[str, Any]],
                multiple: bool, excluded: str) -> bool:
    """Select the runs a ``?{param}=`` link names when the link is new (not the page's own write-back).

    A unique id prefix is accepted; an id that is not in the store (or that this page cannot show) gives one
    warning line and leaves the picker on its default. Resets the filters so the linked run is offered.
    """
    state = st.session_state
    raw = st.query_params.get(param)
    if raw is None or raw == state.get(f"{key}:url"):
        return False
    state[f"{key}:url"] = raw
    wanted: list[str] = []
    for rid in filter(None, (part.strip() for part in raw.split(","))):
        try:
            run = store.get_run(rid)
        except STORE_ERRORS as err:  # an ambiguous prefix, or a store that went away
            st.warning(f"Link ?{param}={rid}: {_one_line(err)}")
            continue
        if run is None:
            st.warning(f"Link ?{param}={rid}: no run with this id in the store {store.path}; pick one below.")
        elif run["id"] not in by_id:
            st.warning(f"Link ?{param}={rid}: run {run_label(run)!r} {excluded}; pick another below.")
        elif run["id"] not in wanted:
            wanted.append(run["id"])
    if not wanted and not multiple:
        return False
    state[key] = wanted if multiple else wanted[0]
    state[f"{key}:preset"] = state[f"{key}:outcome"] = ALL
    return True


@overload
def run_picker(store: RunStore | None, key: str, *, default_run_id: str | None = ..., multiple: Literal[False] = ...,
               query_param: str | None = ..., include: Callable[[dict[str, Any]], bool] | None = ...,
               rows: Sequence[Mapping[str, Any]] | None = ..., label: str = ..., empty: str = ...,
               excluded: str = ...) -> str | None: ...
@overload
def run_picker(store: RunStore | None, key: str, *, default_run_id: str | None = ..., multiple: Literal[True],
               query_param: str | None = ..., include: Callable[[dict[str, Any]], bool] | None = ...,
               rows: Sequence[Mapping[str, Any]] | None = ..., label: str = ..., empty: str = ...,
               excluded: str = ...) -> list[str]: ...
def run_picker(store: RunStore | None, key: str, *, default_run_id: str | None = None, multiple: bool = False,
               query_param: str | None = None, include: Callable[[dict[str, Any]], bool] | None = None,
               rows: Sequence[Mapping[str, Any]] | None = None, label: str = "", empty: str = EMPTY_STORE,
               excluded: str = "has nothing this page can show") -> str | list[str] | None:
    """Pick stored runs by what a person recognises (name or preset, techniques, outcome, test acc, local time).

    Newest first, with preset and outcome filters beside it. The choice defaults to ``default_run_id``, else
    this session's current Lab run, else the newest run (with ``multiple``, the two newest); a Lab run started
    since the last visit becomes the choice when the page is opened again. It reads and writes the URL:
    ``?run=ID`` (``?runs=ID,ID`` with ``multiple``; ``query_param`` renames it), so a view can be shared; an id
    in a link that is not in the store gives a one-line warning and the picker.

    ``key`` is the selectbox's (multiselect's) widget key; the filters use ``{key}:preset`` / ``{key}:outcome``.
    ``include`` keeps only the runs the page can show; ``rows`` (from :func:`picker_rows`, already filtered by
    the page) replaces both the store query and the filters; ``empty`` is the line shown when there is no run
    to offer at all, ``excluded`` what a linked run that ``include`` leaves out lacks. A ``store`` that is
    None or cannot be read gives one error line (from :func:`open_store` / :func:`picker_rows`) and an empty
    choice: None, or [] with ``multiple``. The choice is kept across page switches (Streamlit drops a
    widget's state when its page is left), and the returned ids are full ids of runs in the store.
    """
    state = st.session_state
    param = query_param or ("runs" if multiple else "run")
    label = label or ("Runs" if multiple else "Run")
    nothing: str | list[str] | None = [] if multiple else None
    draw_filters = rows is None
    if rows is None:
        rows = picker_rows(store, include)
    if rows is None or store is None:
        return nothing
    by_id = {r["id"]: r for r in rows}
    job_key, kept_key = f"{key}:job", f"{key}:kept"
    job_id = session_run_id()
    if _apply_link(store, key, param, by_id, multiple, excluded):
        state[job_key] = job_id
    if not by_id:  # after the link: a linked run this page cannot show is still explained
        st.info(empty)
        return nothing
    if key not in state:
        kept = state.get(kept_key)
        if kept is not None:
            state[key] = kept
        else:
            newest = [rid for rid in (default_run_id, job_id) if rid in by_id] or list(by_id)
            state[key] = list(dict.fromkeys(newest + list(by_id)))[:2] if multiple else newest[0]
            state[job_key] = job_id
    if not multiple and job_id in by_id and state.get(job_key) != job_id:
        state[key] = job_id  # the user started a new Lab run since this picker last drew
    state[job_key] = job_id

    if draw_filters and multiple:  # the chosen runs' labels need the full width
        with st.columns([2, 3])[0]:
            shown = run_filters(rows, key)
        pick_col = st.container()
    elif draw_filters:
        pick_col, filter_col = st.columns([3, 2], vertical_alignment="bottom")
        with filter_col:
            shown = run_filters(rows, key)
    else:
        pick_col, shown = st.container(), list(rows)
    ids = [r["id"] for r in shown]
    if multiple:
        selected = [rid for rid in state.get(key) or [] if rid in by_id]
        options = [rid for rid in by_id if rid in ids or rid in selected]  # a filter never drops a choice
        state[key] = selected
        choice: str | list[str] | None = pick_col.multiselect(
            label, options, format_func=lambda rid: by_id[rid]["label"], key=key,
            placeholder="Choose runs (filter by preset or outcome)")
        value = ",".join(choice or [])
    else:
        if not ids:
            pick_col.caption("No run matches these filters.")
            return None
        if state.get(key) not in ids:
            state[key] = ids[0]
        choice = pick_col.selectbox(label, ids, format_func=lambda rid: by_id[rid]["label"], key=key)
        value = choice or ""
    state[kept_key] = choice
    state[f"{key}:url"] = value
    if value and st.query_params.get(param) != value:
        st.query_params[param] = value
    elif not value and param in st.query_params:
        del st.query_params[param]
    return choice
