"""AppTest: the Lab page renders, and a short run started through the UI produces metrics."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

APP = str(Path(__file__).resolve().parents[2] / "app.py")
pytestmark = pytest.mark.app


@pytest.fixture(autouse=True)
def fresh_session() -> Iterator[None]:
    """Every AppTest shares one session id: release the cached store and job (stopping it) around each test."""
    st.cache_resource.clear()
    yield
    st.cache_resource.clear()


def test_lab_renders_and_trains(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LAB_HOME", str(tmp_path))
    at = AppTest.from_file(APP, default_timeout=60).run()
    assert not at.exception
    assert [b.label for b in at.button][:4] == ["Start", "Pause", "Resume", "Stop"]
    at.sidebar.number_input[0].set_value(30).run()
    at.button[0].click().run()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        at.run()
        if any("completed" in (p.proto.text or "") for p in at.get("progress")):
            break
        time.sleep(0.2)
    assert not at.exception
    texts = [p.proto.text for p in at.get("progress")]
    assert any("completed — step 30/30" in t for t in texts), texts
    assert (tmp_path / "lab.db").exists()


def test_incompatible_toggles_are_refused_with_a_message(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LAB_HOME", str(tmp_path))
    at = AppTest.from_file(APP, default_timeout=60).run()
    at.sidebar.toggle(key="reg:elr").set_value(True).run()
    assert at.button[0].disabled is False and not at.error
    at.sidebar.toggle(key="reg:mixup").set_value(True).run()
    assert not at.exception
    assert at.button[0].disabled is True
    assert "cannot be combined" in at.error[0].value


def _wait(at: AppTest, done, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        at.run()
        if done(at):
            return
        time.sleep(0.2)
    raise AssertionError("the app never reached the expected state")


def test_diagnostics_page_shows_sharpness_and_on_demand_density(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LAB_HOME", str(tmp_path))
    at = AppTest.from_file(APP, default_timeout=60).run()
    at.sidebar.selectbox[0].set_value("edge-of-stability").run()
    at.sidebar.number_input[0].set_value(100).run()
    at.button[0].click().run()
    _wait(at, lambda a: any("completed — step 100/100" in (p.proto.text or "") for p in a.get("progress")))
    at.switch_page("pages/diagnostics.py").run()
    assert not at.exception
    charts_before = len(at.get("plotly_chart"))
    assert charts_before >= 2  # sharpness with its 2/lr line, collapse panel
    assert any("penalties excluded" in c.value for c in at.caption)
    at.button(key="measure:density").click().run()
    _wait(at, lambda a: len(a.get("plotly_chart")) > charts_before)
    assert not at.exception


def test_live_lr_change_reaches_the_running_trainer(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LAB_HOME", str(tmp_path))
    at = AppTest.from_file(APP, default_timeout=60).run()
    at.sidebar.selectbox[0].set_value("noisy-labels").run()
    at.sidebar.number_input[0].set_value(100_000).run()
    at.button[0].click().run()
    at.number_input(key="live:lr").set_value(0.0)
    at.button(key="FormSubmitter:live-Apply").click().run()
    assert "optim.lr" in at.error[0].value  # lr 0 is refused with a one-line message
    at.number_input(key="live:lr").set_value(0.0042)
    at.button(key="FormSubmitter:live-Apply").click().run()
    _wait(at, lambda a: "lr" in _job_series(a) and _job_series(a)["lr"][1][-1] == pytest.approx(0.0042))
    at.button[3].click().run()  # Stop
    _wait(at, lambda a: any("stopped" in (p.proto.text or "") for p in a.get("progress")))


def _job_series(at: AppTest) -> dict:
    """Recorded ``lr`` of the newest run, read back from the store (flushed every 0.5 s)."""
    from engine.store import RunStore

    store = RunStore()
    runs = store.list_runs(limit=1)
    return store.metrics(runs[0]["id"], names=["lr"]) if runs else {}
