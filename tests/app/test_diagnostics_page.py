"""AppTest: the Diagnostics page draws a stored run's panels from the declarations.

A short edge-of-stability run (sharpness on, top-k measured on demand) is recorded into LAB_HOME
the way the CLI does, then opened by link (``?run=ID``): every recorded metric is in exactly one
chart, charts are titled and labelled as their declarations say, the stability threshold is a
dashed line, and a link to a run that does not exist gives a warning and the picker.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from engine.config import validate
from engine.listing import techniques
from engine.metrics_catalog import declare
from engine.panels import build_panels
from engine.presets import preset_config
from engine.runner import execute
from engine.store import RunStore
from engine.trainer import Trainer
from tests.app.conftest import APP

pytestmark = pytest.mark.app


@pytest.fixture
def stored_run(lab_home: Path) -> tuple[str, RunStore]:
    raw = preset_config("edge-of-stability")
    raw["train"] = {**raw["train"], "steps": 40, "eval_every": 10}
    raw["diagnostics"] = {**raw.get("diagnostics", {}), "top_k": {"k": 3}}
    cfg = validate(raw)
    trainer = Trainer(cfg)
    trainer.commands.measure("top_k")
    store = RunStore(lab_home / "lab.db")
    run_id, _ = execute(cfg, store, trainer=trainer)
    return run_id, store


def figures(at: AppTest) -> list[dict]:
    return [json.loads(chart.proto.spec) for chart in at.get("plotly_chart")]


def test_a_linked_stored_run_shows_every_metric_in_its_declared_panel(stored_run: tuple[str, RunStore]) -> None:
    run_id, store = stored_run
    at = AppTest.from_file(APP, default_timeout=60)
    at.query_params["run"] = run_id
    at.switch_page("pages/diagnostics.py").run()
    assert not at.exception
    series = store.metrics(run_id)
    enabled = list(techniques(store.get_run(run_id)["config"]))
    expected = build_panels(series, enabled)
    drawn = figures(at)
    # two columns per section: the same charts, each once
    assert sorted(f["layout"]["title"]["text"] for f in drawn) == sorted(p.spec.title for p in expected)
    curves = {t["name"] for f in drawn for t in f["data"]}
    labels = {declare(n, enabled).spec.label for n in series if declare(n, enabled).spec.role != "flag"}
    eig_curves = {t for t in curves if t.startswith("step ")}  # the top-k spectrum: one curve per step
    assert labels - {declare(n).spec.label for n in series if n.startswith("sharpness/eig_")} <= curves
    assert eig_curves and not curves & set(series)  # labels, never raw metric names
    sharp = next(f for f in drawn if f["layout"]["title"]["text"].startswith("Sharpness against"))
    dashed = [t["name"] for t in sharp["data"] if t.get("line", {}).get("dash") == "dash"]
    assert dashed == [declare("sharpness/threshold").spec.label]
    assert all(f["layout"]["yaxis"]["title"]["text"] for f in drawn)
    assert any("penalties excluded" in c.value for c in at.caption)
    assert [b.label for b in at.get("download_button")].count("PNG") == len(drawn)
    assert not [b for b in at.button if b.key and b.key.startswith("measure:")]  # stored run: nothing to compute
    assert at.query_params["run"] in (run_id, [run_id])  # the link stays


def test_a_link_to_a_missing_run_warns_and_offers_the_picker(stored_run: tuple[str, RunStore]) -> None:
    run_id, _ = stored_run
    at = AppTest.from_file(APP, default_timeout=60)
    at.query_params["run"] = "r000000-000000-nosuch"
    at.switch_page("pages/diagnostics.py").run()
    assert not at.exception
    assert any("no run with this id" in w.value for w in at.warning)
    assert at.selectbox(key="diag:run").value == run_id  # the picker, on the newest run
    assert figures(at)  # and its panels


def test_an_empty_store_says_how_to_get_a_run(lab_home: Path) -> None:
    at = AppTest.from_file(APP, default_timeout=60)
    at.switch_page("pages/diagnostics.py").run()
    assert not at.exception
    assert any("No stored runs yet" in i.value for i in at.info)
    assert not at.get("plotly_chart")
