"""State and widgets shared by the pages of one browser session: jobs, the run store, plot panels."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from functools import partial
from typing import TYPE_CHECKING

import streamlit as st
from streamlit import runtime

from engine.jobs import Job
from engine.store import RunStore
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
