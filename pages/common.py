"""State shared by the pages of one browser session: the training job and the run store."""

from __future__ import annotations

import streamlit as st

from engine.jobs import Job
from engine.store import RunStore


class JobHolder:
    """Per-browser-session slot for the running job; released (and stopped) when the tab closes."""

    def __init__(self) -> None:
        self.job: Job | None = None

    def stop(self) -> None:
        if self.job is not None:
            self.job.stop(wait=2.0)  # the trainer stops before its next step: no thread outlives the session


@st.cache_resource(scope="session", on_release=lambda holder: holder.stop(), show_spinner=False)
def job_holder() -> JobHolder:
    return JobHolder()


@st.cache_resource(show_spinner=False)
def run_store() -> RunStore:
    return RunStore()
