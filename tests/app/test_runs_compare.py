"""AppTest: the Runs page (list, rename, delete) and the Compare page (overlay, A/B of one toggle)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

from engine.config import validate
from engine.listing import duration, local_time, run_rows
from engine.outcome import stored_verdict
from engine.runner import execute
from engine.store import RunStore
from pages.common import run_store
from tests.app.conftest import APP

PAGES = Path(__file__).resolve().parents[2] / "pages"
RUNS, COMPARE = str(PAGES / "runs.py"), str(PAGES / "compare.py")
pytestmark = pytest.mark.app


def short_config(name: str, seed: int) -> dict:
    return {"name": name, "seed": seed, "data": {"name": "moons", "n_train": 200, "n_test": 200},
            "model": {"width": 32}, "train": {"steps": 30, "eval_every": 10}}


@pytest.fixture
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[RunStore]:
    """A fresh LAB_HOME holding two real 30-step moons runs, and the pages' cached store pointing at it."""
    monkeypatch.setenv("LAB_HOME", str(tmp_path))
    run_store.clear()
    # Every AppTest shares one session id, so the session-scoped job holder may still hold a Lab job from another
    # test (and the A/B base would be its config): clearing all resource caches releases it (stopping the job).
    st.cache_resource.clear()
    s = run_store()
    assert s.path == tmp_path / "lab.db"
    for name, seed in (("alpha", 1), ("beta", 2)):
        execute(validate(short_config(name, seed)), s)
    yield s
    run_store.clear()  # other tests must not inherit this tmp store (nor the A/B jobs' session)
    st.cache_resource.clear()


def ids(s: RunStore) -> list[str]:
    return [r["id"] for r in s.list_runs()]


def open_runs_page() -> AppTest:
    """The Runs page inside the app (its links to other pages need the app's navigation)."""
    at = AppTest.from_file(APP, default_timeout=60).run()
    at.switch_page("pages/runs.py").run()
    assert not at.exception
    return at


def test_runs_page_lists_renames_and_deletes(store: RunStore) -> None:
    beta, alpha = ids(store)  # newest first
    at = open_runs_page()
    table = at.dataframe[0].value
    assert list(table["id"]) == [beta, alpha]  # newest first
    assert list(table["name"]) == ["beta", "alpha"]
    assert len(at.get("download_button")) == 3

    at.selectbox(key="runs:selected").set_value(alpha).run()
    at.text_input(key=f"runs:name:{alpha}").input("alpha-renamed").run()
    at.button(key="runs:rename").click().run()
    assert not at.exception
    assert store.get_run(alpha)["name"] == "alpha-renamed"
    assert store.get_run(beta)["name"] == "beta"
    assert "alpha-renamed" in set(at.dataframe[0].value["name"])

    assert at.button(key="runs:delete").disabled  # needs the confirm box first
    at.checkbox(key=f"runs:confirm:{alpha}").check().run()
    at.button(key="runs:delete").click().run()
    assert not at.exception
    assert ids(store) == [beta]
    assert store.metric_names(beta) and not store.metric_names(alpha)
    assert list(at.dataframe[0].value["id"]) == [beta]


def test_runs_table_reads_like_the_cli_listing(store: RunStore) -> None:
    """The columns a person compares runs by, with the same words and numbers as ``python -m engine list``."""
    at = open_runs_page()
    table = at.dataframe[0].value
    assert list(at.dataframe[0].proto.column_order) == [
        "name", "preset", "techniques", "outcome", "test acc", "created", "duration"]  # the id is not drawn
    rows = run_rows(store, store.list_runs())
    for line, row in zip(table.to_dict("records"), rows, strict=True):
        assert line["outcome"] == row["outcome"].replace("_", " ")
        assert line["test acc"] == pytest.approx(row["test_acc"])
        assert line["created"] == local_time(row["created_at"])  # local time, not a Unix timestamp
        assert line["duration"] == duration(row)
        assert line["preset"] == "custom" and line["techniques"] == "none"


def test_selected_run_shows_its_verdict_and_config_expanded(store: RunStore) -> None:
    beta = ids(store)[0]
    at = open_runs_page()
    assert at.selectbox(key="runs:selected").value == beta  # the newest by default
    verdict = stored_verdict(store, store.get_run(beta))
    shown = [e.value for e in [*at.success, *at.warning, *at.info]]
    assert any(verdict.reason in text for text in shown)
    summary = next(m.value for m in at.markdown if m.value.startswith("- **data**"))
    assert "moons" in summary and "**optimizer**" in summary and "30 steps" in summary
    assert at.expander[0].label == "Full config (JSON)" and at.expander[0].proto.expanded
    assert json.loads(at.get("json")[0].proto.body)["name"] == "beta"
    assert at.get("json")[0].proto.expanded


def test_runs_link_and_ticked_runs_open_in_compare(store: RunStore) -> None:
    beta, alpha = ids(store)
    at = AppTest.from_file(APP, default_timeout=60).run()
    at.switch_page("pages/runs.py")
    at.query_params["run"] = alpha
    at.run()
    assert not at.exception and not at.warning
    assert at.selectbox(key="runs:selected").value == alpha  # a ?run= link opens that run

    assert at.button(key="runs:compare").disabled  # nothing ticked yet
    at.session_state["runs_table"] = {"selection": {"rows": [0], "columns": []}}  # tick beta's row
    at.run()
    assert at.selectbox(key="runs:selected").value == beta  # the row just ticked is shown below
    assert at.button(key="runs:compare").label == "Open in Compare"
    at.session_state["runs_table"] = {"selection": {"rows": [0, 1], "columns": []}}  # and alpha's
    at.run()
    assert at.selectbox(key="runs:selected").value == alpha
    assert at.button(key="runs:compare").label == "Open 2 runs in Compare"
    at.button(key="runs:compare").click().run()
    assert not at.exception
    assert at.title[0].value == "Compare"
    assert at.multiselect(key="cmp:runs").value == [beta, alpha]
    assert at.query_params["runs"] == f"{beta},{alpha}"
    assert sorted(t["name"] for t in overlay_traces(at)) == ["alpha", "beta"]


def test_compare_tells_unnamed_runs_of_one_kind_apart(store: RunStore) -> None:
    for seed in (3, 4):
        execute(validate({**short_config("x", seed), "name": None}), store)
    first, second = ids(store)[:2]
    at = AppTest.from_file(COMPARE, default_timeout=60).run()
    assert at.multiselect(key="cmp:runs").value == [first, second]  # the two newest
    names = [t["name"] for t in overlay_traces(at)]
    assert len(set(names)) == 2 and all(n.startswith("moons · mlp · ") for n in names)


def overlay_traces(at: AppTest) -> list[dict]:
    return json.loads(at.get("plotly_chart")[0].proto.spec)["data"]  # the overlay is drawn first


def test_compare_overlays_two_runs(store: RunStore) -> None:
    at = AppTest.from_file(COMPARE, default_timeout=60).run()
    assert not at.exception
    assert len(at.multiselect(key="cmp:runs").value) == 2
    at.selectbox(key="cmp:metric").set_value("train/loss").run()
    at.toggle(key="cmp:log_y").set_value(True).run()
    assert not at.exception
    traces = overlay_traces(at)
    assert sorted(t["name"] for t in traces) == ["alpha", "beta"]
    assert all(len(t["x"]) == 30 for t in traces)


def test_compare_ab_runs_two_jobs_that_differ_in_one_toggle(store: RunStore) -> None:
    before = set(ids(store))
    base_seed = store.list_runs()[0]["seed"]  # the base is the newest run, the first one selected
    assert base_seed == 2
    at = AppTest.from_file(COMPARE, default_timeout=60).run()
    at.selectbox(key="ab:technique").set_value("l2").run()
    at.button(key="ab:run").click().run()
    assert not at.exception and not at.error
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        at.run()
        texts = [p.proto.text for p in at.get("progress")]
        if len(texts) == 2 and all(t.startswith("completed") for t in texts):
            break
        time.sleep(0.2)
    assert not at.exception
    texts = [p.proto.text for p in at.get("progress")]
    assert len(texts) == 2 and all("completed — step 30/30" in t for t in texts), texts
    assert len(at.get("plotly_chart")) >= 1 + 4  # overlay + loss/acc for A and for B

    new = [store.get_run(rid) for rid in set(ids(store)) - before]
    assert len(new) == 2 and {r["status"] for r in new} == {"completed"}
    assert {r["seed"] for r in new} == {base_seed}
    a, b = (dict(r["config"], name=None) for r in new)
    assert a["regularizers"]["l2"]["enabled"] != b["regularizers"]["l2"]["enabled"]
    b["regularizers"]["l2"]["enabled"] = a["regularizers"]["l2"]["enabled"]
    assert a == b


def test_compare_ab_refuses_an_invalid_flip(store: RunStore) -> None:
    before = ids(store)
    at = AppTest.from_file(COMPARE, default_timeout=60).run()
    at.selectbox(key="ab:technique").set_value("cutmix").run()
    at.button(key="ab:run").click().run()
    assert not at.exception
    assert len(at.error) == 1 and at.error[0].value.startswith("regularizers.cutmix: ")
    assert "needs image inputs" in at.error[0].value
    assert "\n" not in at.error[0].value
    assert ids(store) == before and not at.get("progress")


def test_compare_preselects_runs_from_the_url(store: RunStore) -> None:
    beta, alpha = ids(store)
    at = AppTest.from_file(COMPARE, default_timeout=60)
    at.query_params["runs"] = f"{alpha[:-1]},no-such-run"  # a unique prefix is enough
    at.run()
    assert not at.exception
    assert at.multiselect(key="cmp:runs").value == [alpha]
    assert "no-such-run" in at.warning[0].value
    assert at.query_params["runs"] == alpha  # the selection is written back (full id)
    at.multiselect(key="cmp:runs").select(beta).run()
    assert at.query_params["runs"] == f"{alpha},{beta}"
    assert [b.label for b in at.get("download_button")].count("PNG") == len(at.get("plotly_chart")) == 1
