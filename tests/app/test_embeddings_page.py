"""AppTest: the Embeddings page projects stored snapshots — PCA at once, t-SNE in the background."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

from engine.config import validate
from engine.runner import execute
from engine.store import RunStore
from pages.common import run_store

PAGE = str(Path(__file__).resolve().parents[2] / "pages" / "embeddings.py")
pytestmark = pytest.mark.app


@pytest.fixture
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[RunStore]:
    monkeypatch.setenv("LAB_HOME", str(tmp_path))
    st.cache_resource.clear()  # the page's store and projection service must point at this LAB_HOME
    s = run_store()
    cfg = validate({"seed": 0, "data": {"name": "blobs", "n_train": 300, "n_test": 50, "n_classes": 3, "dim": 5,
                                        "noise": 0.2},
                    "model": {"width": 16}, "train": {"steps": 30, "eval_every": 10, "snapshot_every": 10}})
    execute(cfg, s)
    yield s
    st.cache_resource.clear()


def figure(at: AppTest) -> dict:
    charts = at.get("plotly_chart")
    return json.loads(charts[0].proto.spec) if charts else {"data": [], "layout": {}}


def plot_traces(at: AppTest) -> int:
    return len(figure(at)["data"])


def plot_title(at: AppTest) -> str:
    return figure(at)["layout"].get("title", {}).get("text", "")


def test_pca_frame_then_tsne_in_background(store: RunStore) -> None:
    at = AppTest.from_file(PAGE, default_timeout=60).run()
    assert not at.exception
    assert at.select_slider(key="emb:step").options == ["0", "10", "20", "30"]
    assert plot_traces(at) == 3  # one trace per class
    assert any("trustworthiness" in c.value for c in at.caption)
    at.radio(key="emb:colour").set_value("noisy / clean label").run()
    assert plot_traces(at) == 2  # noisy vs clean labels
    at.radio(key="emb:method").set_value("tsne").run()
    deadline = time.monotonic() + 120
    assert at.info or plot_title(at).startswith("TSNE")  # a "computing in the background" notice, or done
    while not plot_title(at).startswith("TSNE — step"):
        assert time.monotonic() < deadline, "t-SNE never arrived"
        time.sleep(0.3)
        at.run()
    assert not at.exception
    assert [b.label for b in at.get("download_button")] == ["PNG", "SVG", "PDF", "HTML (interactive)", "CSV (data)"]


def test_runs_listed_by_name_and_opened_by_link(store: RunStore) -> None:
    snapshotted = store.list_runs()[0]["id"]
    no_snapshots, _ = execute(validate({"name": "no-snapshots", "seed": 1, "data": {"name": "moons", "n_train": 100},
                                     "train": {"steps": 5, "snapshot_every": 0}}), store)
    assert not store.artifacts(no_snapshots, kind="snapshot")
    at = AppTest.from_file(PAGE, default_timeout=60)
    at.query_params["run"] = no_snapshots
    at.run()
    assert not at.exception
    assert len(at.warning) == 1 and "no-snapshots" in at.warning[0].value  # nothing to project: said, not hidden
    assert "has no feature snapshots" in at.warning[0].value
    box = at.selectbox(key="emb:run")
    assert box.value == snapshotted and len(box.options) == 1  # only runs with snapshots are offered
    assert box.options[0].startswith("blobs · mlp · no technique · ") and snapshotted not in box.options[0]
    assert at.query_params["run"] == snapshotted
    assert at.select_slider(key="emb:step").options == ["0", "10", "20", "30"]
