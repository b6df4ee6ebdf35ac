"""The run bundle ships plotly.js once, beside HTML files that load it, and stays small."""

from __future__ import annotations

import zipfile
from pathlib import Path

import pytest

from engine import browser
from engine.cli import main
from engine.export import export_run
from engine.store import RunStore


@pytest.fixture(scope="module")
def stored_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    store = tmp_path_factory.mktemp("bundle") / "lab.db"
    assert main(["run", "--preset", "noisy-labels", "--set", "train.steps=20", "--store", str(store), "--quiet"]) == 0
    with RunStore(store) as s:
        return store, s.list_runs()[0]["id"]


def _bundle(stored_run: tuple[Path, str], out: Path) -> zipfile.ZipFile:
    store_path, run_id = stored_run
    with RunStore(store_path) as store:
        [path] = export_run(store, run_id, "zip", out)
    return zipfile.ZipFile(path)


def test_one_plotly_js_for_all_html_figures(stored_run: tuple[Path, str], tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BROWSER_PATH", str(tmp_path / "no-such-chromium"))  # no PNGs: tested elsewhere
    monkeypatch.setattr(browser, "_cache", None)
    with _bundle(stored_run, tmp_path) as zf:
        names = zf.namelist()
        html = [n for n in names if n.endswith(".html")]
        assert len(html) >= 3 and names.count("figures/plotly.min.js") == 1
        for name in html:
            text = zf.read(name).decode()
            assert '<script charset="utf-8" src="plotly.min.js"></script>' in text
            assert len(text) < 200_000  # the figure's data only, not its own copy of plotly.js (~4.6 MB)
        assert "no Chromium-based browser" in zf.read("figures/NO_PNG.txt").decode()
        assert not [n for n in names if n.endswith(".png")]
        assert {"config.json", "metrics.csv", "summary.json"} <= set(names)
