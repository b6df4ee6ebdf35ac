"""AppTest: the Lab page renders, trains through the UI, refuses bad values in place, mirrors the URL."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from engine.store import RunStore
from tests.app.conftest import APP, progress_texts, wait_for

pytestmark = pytest.mark.app


def steps_input(at: AppTest):
    return at.sidebar.number_input(key="k:train.steps")


def test_lab_renders_and_trains(lab_home: Path) -> None:
    at = AppTest.from_file(APP, default_timeout=60).run()
    assert not at.exception
    assert [b.label for b in at.button][:5] == ["Start", "Pause", "Resume", "Stop", "Reset"]
    assert at.sidebar.selectbox(key="lab:preset").value == "grokking-quadratic"  # opens at a useful default
    steps_input(at).set_value(30).run()
    at.button[0].click().run()
    wait_for(at, lambda a: any("completed" in t for t in progress_texts(a)), timeout=60)
    assert not at.exception
    assert any("completed — step 30/30" in t for t in progress_texts(at)), progress_texts(at)
    assert (lab_home / "lab.db").exists()
    # every plot panel has a download menu with the five formats, and the run bundle is offered
    labels = [b.label for b in at.get("download_button")]
    assert labels.count("PNG") == len(at.get("plotly_chart")) == 2
    for fmt in ("SVG", "PDF", "HTML (interactive)", "CSV (data)"):
        assert labels.count(fmt) == 2
    assert "Run bundle (zip)" in labels


def test_incompatible_toggles_are_refused_with_a_message(lab_home: Path) -> None:
    at = AppTest.from_file(APP, default_timeout=60).run()
    at.sidebar.toggle(key="k:regularizers.elr.enabled").set_value(True).run()
    assert at.button[0].disabled is False and not at.error
    at.sidebar.toggle(key="k:regularizers.mixup.enabled").set_value(True).run()
    assert not at.exception
    assert at.button[0].disabled is True
    assert "cannot be combined" in at.sidebar.error[0].value  # in the sidebar, next to the toggles


@pytest.mark.parametrize(("key", "value", "field"), [
    ("k:optim.lr", 0.0, "optim.lr: "),
    ("k:train.steps", 0, "train.steps: "),
])
def test_bad_knob_values_are_refused_next_to_the_widget(lab_home: Path, key: str, value: float, field: str) -> None:
    at = AppTest.from_file(APP, default_timeout=60).run()
    at.sidebar.number_input(key=key).set_value(value).run()
    assert not at.exception
    assert at.button[0].disabled is True
    errors = at.sidebar.error
    assert len(errors) == 1 and errors[0].value.startswith(field) and "\n" not in errors[0].value
    assert not at.main.error  # the main area stays clean: the message sits under the widget
    # the refused widget's error is rendered right after it in the sidebar
    widgets = [n for n in at.sidebar if getattr(n, "key", None) == key or n.type == "error"]
    assert [("error" if n.type == "error" else n.key) for n in widgets][-2:] == [key, "error"]


def test_negative_strength_and_incompatible_model_are_refused(lab_home: Path) -> None:
    at = AppTest.from_file(APP, default_timeout=60).run()
    at.sidebar.selectbox(key="lab:preset").set_value("noisy-labels").run()
    at.sidebar.radio(key="lab:variant").set_value("regularized").run()
    assert at.sidebar.toggle(key="k:regularizers.elr.enabled").value is True  # the variant's toggle
    at.sidebar.number_input(key="k:regularizers.elr.lambda").set_value(-1.0).run()
    assert [e.value for e in at.sidebar.error] == ["regularizers.elr.lambda: must be ≥ 0.0 (got -1.0)"]
    at.sidebar.number_input(key="k:regularizers.elr.lambda").set_value(3.0).run()
    assert not at.sidebar.error and at.button[0].disabled is False
    at.sidebar.selectbox(key="k:model.name").set_value("transformer").run()
    assert at.sidebar.error[0].value.startswith("model.name: transformer needs data.name in ['modular']")
    assert at.button[0].disabled is True


def test_view_is_mirrored_in_the_url_and_restored_from_it(lab_home: Path) -> None:
    at = AppTest.from_file(APP, default_timeout=60).run()
    assert at.query_params == {"preset": "grokking-quadratic"}  # defaults travel as nothing
    at.sidebar.selectbox(key="lab:preset").set_value("noisy-labels").run()
    at.sidebar.radio(key="lab:variant").set_value("regularized").run()
    at.sidebar.number_input(key="k:optim.lr").set_value(0.002).run()
    at.sidebar.toggle(key="k:regularizers.l2.enabled").set_value(True).run()
    query = dict(at.query_params)
    assert query["preset"] == "noisy-labels" and query["variant"] == "regularized"
    assert query["set"] == ["optim.lr=0.002", "regularizers.l2.enabled=true"]

    fresh = AppTest.from_file(APP, default_timeout=60)  # a reload of the shared URL
    fresh.query_params.update(query)
    fresh.run()
    assert not fresh.exception and not fresh.warning
    assert fresh.sidebar.selectbox(key="lab:preset").value == "noisy-labels"
    assert fresh.sidebar.radio(key="lab:variant").value == "regularized"
    assert fresh.sidebar.number_input(key="k:optim.lr").value == pytest.approx(0.002)
    assert fresh.sidebar.toggle(key="k:regularizers.l2.enabled").value is True
    assert fresh.sidebar.toggle(key="k:regularizers.elr.enabled").value is True
    assert fresh.sidebar.number_input(key="k:regularizers.elr.lambda").value == pytest.approx(3.0)
    assert dict(fresh.query_params) == query


def test_bad_url_parameters_give_messages_not_a_crash(lab_home: Path) -> None:
    at = AppTest.from_file(APP, default_timeout=60)
    at.query_params.update({"preset": "no-such-preset",
                            "set": ["optim.lr=0", "train.steps=abc", "foo.bar=1", "nonsense", "data.noise=0.2"]})
    at.run()
    assert not at.exception
    warnings = [w.value for w in at.warning]
    assert len(warnings) == 4, warnings
    assert "no-such-preset" in warnings[0] and "showing grokking-quadratic" in warnings[0]
    assert any("train.steps=abc" in w and "expected a number" in w for w in warnings)
    assert any("foo.bar=1" in w and "unknown config key" in w for w in warnings)
    assert any("'nonsense'" in w and "KEY=VALUE" in w for w in warnings)
    # lr 0 is a valid *URL* but a bad value: restored into the widget and refused there
    assert at.sidebar.number_input(key="k:optim.lr").value == 0.0
    assert at.sidebar.error[0].value.startswith("optim.lr: ")
    # a config key without a widget is kept, shown, and written back
    assert any("data.noise=0.2" in c.value for c in at.sidebar.caption)
    assert at.query_params["set"] == ["optim.lr=0.0", "data.noise=0.2"]


def test_view_survives_a_visit_to_another_page(lab_home: Path) -> None:
    at = AppTest.from_file(APP, default_timeout=60).run()
    at.sidebar.number_input(key="k:optim.lr").set_value(0.02).run()
    at.switch_page("pages/runs.py").run()
    at.switch_page("pages/lab.py").run()
    assert not at.exception
    assert at.sidebar.number_input(key="k:optim.lr").value == pytest.approx(0.02)


def test_diagnostics_page_shows_sharpness_and_on_demand_density(lab_home: Path) -> None:
    at = AppTest.from_file(APP, default_timeout=60).run()
    at.sidebar.selectbox(key="lab:preset").set_value("edge-of-stability").run()
    steps_input(at).set_value(100).run()
    at.button[0].click().run()
    wait_for(at, lambda a: any("completed — step 100/100" in t for t in progress_texts(a)))
    at.switch_page("pages/diagnostics.py").run()
    assert not at.exception
    charts_before = len(at.get("plotly_chart"))
    assert charts_before >= 2  # sharpness with its 2/lr line, collapse panel
    assert any("penalties excluded" in c.value for c in at.caption)
    assert [b.label for b in at.get("download_button")].count("PNG") == charts_before
    at.button(key="measure:density").click().run()
    wait_for(at, lambda a: len(a.get("plotly_chart")) > charts_before)
    assert not at.exception


def test_live_lr_change_reaches_the_running_trainer(lab_home: Path) -> None:
    at = AppTest.from_file(APP, default_timeout=60).run()
    at.sidebar.selectbox(key="lab:preset").set_value("noisy-labels").run()
    steps_input(at).set_value(100_000).run()
    at.button[0].click().run()
    at.number_input(key="live:lr").set_value(0.0)
    at.button(key="FormSubmitter:live-Apply").click().run()
    assert "optim.lr" in at.error[0].value  # lr 0 is refused with a one-line message
    at.number_input(key="live:lr").set_value(0.0042)
    at.button(key="FormSubmitter:live-Apply").click().run()
    wait_for(at, lambda a: any("lr 0.0042" in t for t in progress_texts(a)))  # the trainer's own lr metric
    wait_for(at, lambda a: _recorded_lr()[-1:] == pytest.approx([0.0042]))  # and persisted (flushed every 0.5 s)
    at.button[3].click().run()  # Stop
    wait_for(at, lambda a: any("stopped" in t for t in progress_texts(a)))


def test_live_strength_change_is_validated_and_applied(lab_home: Path) -> None:
    at = AppTest.from_file(APP, default_timeout=60).run()
    at.sidebar.toggle(key="k:regularizers.l2.enabled").set_value(True).run()
    steps_input(at).set_value(100_000).run()
    at.button[0].click().run()
    box = at.number_input(key="live:regularizers.l2.lambda")
    assert box.value == pytest.approx(5e-4)  # the technique's default, as the trainer holds it
    box.set_value(-1.0)
    at.button(key="FormSubmitter:live-Apply").click().run()
    assert [e.value for e in at.main.error] == ["regularizers.l2.lambda: must be ≥ 0.0 (got -1.0)"]
    at.number_input(key="live:regularizers.l2.lambda").set_value(0.01)
    at.button(key="FormSubmitter:live-Apply").click().run()
    wait_for(at, lambda a: any("set regularizers.l2.lambda=0.01 at step" in c.value for c in a.caption))
    at.button[3].click().run()  # Stop
    wait_for(at, lambda a: any("stopped" in t for t in progress_texts(a)))


def test_diverging_run_says_where_and_keeps_its_curves(lab_home: Path) -> None:
    at = AppTest.from_file(APP, default_timeout=60).run()
    at.sidebar.selectbox(key="lab:preset").set_value("edge-of-stability").run()
    at.sidebar.number_input(key="k:optim.lr").set_value(50.0).run()  # far beyond 2/λ: blows up in a few steps
    at.button[0].click().run()
    wait_for(at, lambda a: any(t.startswith("diverged") for t in progress_texts(a)))
    assert not at.exception
    message = at.main.error[0].value
    # non-finite, or a finite blow-up past 10⁴ × the step-1 loss (README exit codes), whichever comes first
    assert re.match(r"\*\*Diverged\*\* — at step \d+ \(loss (became (nan|inf)|\S+ is above 10⁴ × the initial \S+)\)",
                    message), message
    loss = json.loads(at.get("plotly_chart")[0].proto.spec)["data"]
    train = next(t for t in loss if t["name"] == "train/loss")
    assert len(train["x"]) >= 2 and train["y"][0] is not None  # finite history kept up to the blow-up


def _recorded_lr() -> list[float]:
    """Recorded ``lr`` of the newest run, read back from the store (flushed every 0.5 s)."""
    store = RunStore()
    runs = store.list_runs(limit=1)
    lr = store.metrics(runs[0]["id"], names=["lr"]).get("lr") if runs else None
    return lr[1].tolist() if lr is not None else []  # nothing flushed yet: keep waiting
