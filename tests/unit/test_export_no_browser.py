"""Export without a browser: one line saying what is missing and how to get it; HTML/CSV still work."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import plotly.graph_objects as go
import pytest

from engine import browser
from engine.cli import main
from engine.export import ExportError, figure_bytes

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def no_browser(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BROWSER_PATH", str(tmp_path / "no-such-chromium"))  # kaleido's own override
    monkeypatch.setattr(browser, "_cache", None)


def test_image_export_says_what_is_missing_at_once(no_browser: None) -> None:
    fig = go.Figure(go.Scatter(x=[0, 1], y=[1, 0]))
    started = time.monotonic()
    with pytest.raises(ExportError) as err:
        figure_bytes(fig, "png")
    assert time.monotonic() - started < 2.0  # no render attempt that waits for a timeout
    message = str(err.value)
    assert "\n" not in message and "no Chromium-based browser" in message and "install_browser.py" in message
    assert b"<html>" in figure_bytes(fig, "html")[:100]


def test_cli_png_export_without_browser_is_one_line_and_html_csv_work(tmp_path: Path) -> None:
    store = tmp_path / "lab.db"
    assert main(["run", "--preset", "noisy-labels", "--set", "train.steps=5", "--store", str(store), "--quiet"]) == 0
    env = {**os.environ, "BROWSER_PATH": str(tmp_path / "no-such-chromium")}

    def export(fmt: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "engine", "export", "r", "--format", fmt, "--out",
                               str(tmp_path / fmt), "--store", str(store)], capture_output=True, text=True,
                              env=env, cwd=ROOT, timeout=120)

    png = export("png")
    assert png.returncode == 1
    assert png.stderr.strip().count("\n") == 0 and "no Chromium-based browser found" in png.stderr
    assert "Traceback" not in png.stderr
    for fmt in ("html", "csv"):
        done = export(fmt)
        assert done.returncode == 0, done.stderr
        assert list((tmp_path / fmt).iterdir())
