"""AppTest: the run picker (pages/common.run_picker) over a store of real short runs.

A tiny page script draws the picker alone, so these tests pin the picker's own behaviour: the
default (the session's Lab run, else the newest), ``?run=`` links (a unique prefix, a missing id),
the preset/outcome filters, labels a person reads, and a store that cannot be read.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

from engine.config import validate
from engine.runner import execute
from engine.store import RunStore
from pages.common import run_store

pytestmark = pytest.mark.app


def picker_page() -> None:
    """The page under test (AppTest.from_function runs this source as a script)."""
    import streamlit as st

    from pages.common import job_holder, open_store, run_picker

    if "lab_run" in st.session_state:  # stands for a Lab job of this session: the picker reads only its run id
        job_holder().job = type("LabJob", (), {"run_id": st.session_state["lab_run"], "done": True,
                                               "stop": lambda self, wait=0.0: None})()
    multiple = bool(st.session_state.get("multiple"))
    chosen = run_picker(open_store(), "pick", multiple=multiple, default_run_id=st.session_state.get("default"))
    st.text(f"chosen={chosen}")
    st.text("page still drawn")


def config(name: str | None, seed: int, steps: int = 30, preset: str | None = None, threshold: float = 0.95,
           **regularizers: dict) -> dict:
    return {"name": name, "seed": seed, "preset": preset, "data": {"name": "moons", "n_train": 200, "n_test": 200},
            "model": {"width": 32}, "train": {"steps": steps, "eval_every": 10}, "regularizers": regularizers,
            "outcome": {"test_threshold": threshold}}


@pytest.fixture
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[RunStore]:
    """Three real runs, oldest first: 'alpha' (no technique, judged against a test threshold of 0.5 so that it
    generalizes), an unnamed one with l2, 'gamma' trained 1 step and recorded under the ssl-moons preset."""
    monkeypatch.setenv("LAB_HOME", str(tmp_path))
    st.cache_resource.clear()
    s = run_store()
    execute(validate(config("alpha", 1, threshold=0.5)), s)
    execute(validate(config(None, 2, l2={"lambda": 1e-3})), s)
    execute(validate(config("gamma", 3, steps=1, preset="ssl-moons")), s)
    yield s
    st.cache_resource.clear()


def app() -> AppTest:
    return AppTest.from_function(picker_page, default_timeout=60)


def chosen(at: AppTest) -> str:
    return next(t.value for t in at.text if t.value.startswith("chosen="))[len("chosen="):]


def test_default_is_the_newest_run_and_labels_read_like_people_talk(store: RunStore) -> None:
    newest, unnamed, alpha = (r["id"] for r in store.list_runs())
    at = app().run()
    assert not at.exception and not at.warning and not at.error
    box = at.selectbox(key="pick")
    assert box.value == newest and chosen(at) == newest
    assert at.query_params["run"] == newest  # written back: the view is a link
    labels = box.options
    assert len(labels) == 3
    assert labels[0].startswith("gamma (ssl-moons) · no technique · ")
    assert labels[1].startswith("moons · mlp · l2 · ")  # no name, no preset: dataset and model
    assert labels[2].startswith("alpha · no technique · ")
    for text in labels:
        assert not any(rid in text for rid in (newest, unnamed, alpha))  # never a bare id
        assert re.search(r"\d{4}-\d\d-\d\d \d\d:\d\d$", text)  # local time, not a Unix timestamp
        assert not re.search(r"\b1[6-9]\d{8}\b", text)
    assert " · generalized · test " in labels[2]  # the verdict replayed from alpha's history (threshold 0.5)
    assert " · generalized · " not in labels[1]  # the same kind of run judged at 0.95


def test_default_is_the_sessions_lab_run(store: RunStore) -> None:
    newest, unnamed, alpha = (r["id"] for r in store.list_runs())
    at = app()
    at.session_state["lab_run"] = alpha
    at.run()
    assert not at.exception
    assert at.selectbox(key="pick").value == alpha
    at.selectbox(key="pick").set_value(newest).run()
    assert chosen(at) == newest  # the person's choice holds while the Lab run stays the same
    at.session_state["lab_run"] = unnamed  # a new Lab run since: the picker moves to it
    at.run()
    assert at.selectbox(key="pick").value == unnamed


def test_a_page_default_comes_before_the_lab_run(store: RunStore) -> None:
    _newest, unnamed, alpha = (r["id"] for r in store.list_runs())
    at = app()
    at.session_state["lab_run"] = alpha
    at.session_state["default"] = unnamed
    at.run()
    assert at.selectbox(key="pick").value == unnamed


def test_link_selects_a_run_by_id_or_unique_prefix(store: RunStore) -> None:
    alpha = store.list_runs()[-1]["id"]
    at = app()
    at.query_params["run"] = alpha[:-1]
    at.run()
    assert not at.exception and not at.warning
    assert at.selectbox(key="pick").value == alpha
    assert at.query_params["run"] == alpha  # the full id is written back


def test_link_to_a_missing_run_warns_once_and_keeps_the_picker(store: RunStore) -> None:
    newest = store.list_runs()[0]["id"]
    at = app()
    at.query_params["run"] = "r-no-such-run"
    at.run()
    assert not at.exception
    assert len(at.warning) == 1
    warning = at.warning[0].value
    assert "r-no-such-run" in warning and "pick one below" in warning and "\n" not in warning
    assert at.selectbox(key="pick").value == newest
    assert at.query_params["run"] == newest
    at.run()  # the warning is about the link, not repeated on every rerun
    assert not at.warning


def test_filters_by_preset_and_outcome(store: RunStore) -> None:
    gamma, unnamed, alpha = (r["id"] for r in store.list_runs())
    at = app().run()
    assert at.selectbox(key="pick:preset").options == ["All", "custom (no preset)", "ssl-moons"]
    outcomes = at.selectbox(key="pick:outcome").options
    assert outcomes[:2] == ["All", "generalized"] and len(outcomes) >= 3  # verdict order, only those present

    at.selectbox(key="pick:outcome").set_value("generalized").run()
    assert not at.exception
    assert len(at.selectbox(key="pick").options) == 1
    assert chosen(at) == alpha  # the choice moves into what the filter keeps

    at.selectbox(key="pick:outcome").set_value("All").run()
    at.selectbox(key="pick:preset").set_value("ssl-moons").run()
    assert len(at.selectbox(key="pick").options) == 1 and chosen(at) == gamma
    at.selectbox(key="pick:preset").set_value("").run()  # "custom (no preset)"
    assert {chosen(at)} <= {unnamed, alpha} and len(at.selectbox(key="pick").options) == 2


def test_multiple_reads_and_writes_runs(store: RunStore) -> None:
    newest, _unnamed, alpha = (r["id"] for r in store.list_runs())
    at = app()
    at.session_state["multiple"] = True
    at.query_params["runs"] = f"{alpha},nope"
    at.run()
    assert not at.exception
    assert at.multiselect(key="pick").value == [alpha]
    assert len(at.warning) == 1 and "nope" in at.warning[0].value
    at.multiselect(key="pick").select(newest).run()
    assert at.query_params["runs"] == f"{alpha},{newest}"


def test_a_store_that_cannot_be_read_gives_one_message_and_the_page_goes_on(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "lab.db").write_bytes(b"this is not an SQLite database" * 100)
    monkeypatch.setenv("LAB_HOME", str(tmp_path))
    st.cache_resource.clear()
    at = app().run()
    assert not at.exception
    assert len(at.error) == 1 and "lab.db" in at.error[0].value and "\n" not in at.error[0].value
    assert chosen(at) == "None"
    assert any(t.value == "page still drawn" for t in at.text)


@pytest.mark.parametrize("page", ["pages/runs.py", "pages/compare.py", "pages/embeddings.py"])
def test_pages_with_an_unreadable_store_say_so_once_and_keep_working(
        page: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.app.conftest import APP

    (tmp_path / "lab.db").write_bytes(b"this is not an SQLite database" * 100)
    monkeypatch.setenv("LAB_HOME", str(tmp_path))
    st.cache_resource.clear()
    at = AppTest.from_file(APP, default_timeout=60).run()
    at.switch_page(page).run()
    assert not at.exception
    assert len(at.error) == 1 and "lab.db" in at.error[0].value and "\n" not in at.error[0].value
    assert at.title[0].value in ("Runs", "Compare", "Embeddings")
