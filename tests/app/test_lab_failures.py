"""AppTest: a technique that raises inside the training worker ends the run ``failed`` — one-line
reason beside the status, traceback in the server log, Start enabled again — never a frozen page."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from engine.regularizers.l2 import L2
from engine.store import RunStore
from tests.app.conftest import APP, progress_texts, wait_for

pytestmark = pytest.mark.app

REASON = "deliberately broken technique"


def test_a_technique_raising_in_the_worker_fails_the_run_visibly(
        lab_home: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    calls = []

    def broken(self: L2, ctx: object) -> None:
        calls.append(1)
        if len(calls) >= 5:  # a few good steps first: the failure happens mid-run, in the worker thread
            raise RuntimeError(f"{REASON}\nsecond line that must not reach the page")

    monkeypatch.setattr(L2, "extra_loss", broken)
    caplog.set_level(logging.ERROR, logger="engine.jobs")
    at = AppTest.from_file(APP, default_timeout=60).run()
    at.sidebar.number_input(key="k:train.steps").set_value(40).run()
    at.sidebar.toggle(key="k:regularizers.l2.enabled").set_value(True).run()
    assert at.button[0].label == "Start" and not at.button[0].disabled
    at.button[0].click().run()
    wait_for(at, lambda a: any(t.startswith("failed") for t in progress_texts(a)), timeout=60)
    assert not at.exception
    errors = [e.value for e in at.error]
    assert errors == [f"RuntimeError: {REASON}"], errors  # one line, beside the status
    assert at.button[0].disabled is False  # Start is usable again
    assert all(b.disabled for b in at.button[1:4])  # Pause, Resume, Stop: nothing to control
    logged = [r for r in caplog.records if r.name == "engine.jobs" and r.exc_info]
    assert logged and REASON in "".join(logging.Formatter().formatException(r.exc_info) for r in logged)
    [run] = RunStore(lab_home / "lab.db").list_runs()
    assert run["status"] == "failed" and REASON in run["message"]


def test_a_technique_raising_while_built_is_refused_on_the_page(
        lab_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken_init(self: L2, *args: object, **kwargs: object) -> None:
        raise RuntimeError(REASON)

    monkeypatch.setattr(L2, "__init__", broken_init)
    at = AppTest.from_file(APP, default_timeout=60).run()
    at.sidebar.toggle(key="k:regularizers.l2.enabled").set_value(True).run()
    at.button[0].click().run()
    assert not at.exception
    assert any(f"could not start the run: RuntimeError: {REASON}" == e.value for e in at.error), at.error
    assert at.button[0].disabled is False
    assert not (lab_home / "lab.db").exists() or not RunStore(lab_home / "lab.db").list_runs()
