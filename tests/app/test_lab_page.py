"""AppTest: the Lab page renders, and a short run started through the UI produces metrics."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

APP = str(Path(__file__).resolve().parents[2] / "app.py")
pytestmark = pytest.mark.app


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
