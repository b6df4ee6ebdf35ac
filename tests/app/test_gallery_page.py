"""AppTest: the Gallery lists every preset as a card and trains a baseline/regularized pair live."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from engine import gallery
from engine.presets import list_presets
from engine.store import RunStore
from tests.app.conftest import APP, progress_texts, wait_for

pytestmark = pytest.mark.app


def open_gallery() -> AppTest:
    at = AppTest.from_file(APP, default_timeout=60).run()
    at.switch_page("pages/gallery.py").run()
    assert not at.exception
    return at


def test_every_preset_has_a_card(lab_home: Path) -> None:
    at = open_gallery()
    titles = [h.value for h in at.subheader]
    presets = list_presets()
    assert len(titles) == len(presets)
    for preset in presets:
        assert any(t.startswith(preset["title"]) for t in titles), preset["id"]
    assert any(m.value.startswith("**What to look for.**") for m in at.markdown)
    run_buttons = {b.key.removeprefix("gal:run:"): b.label for b in at.button if (b.key or "").startswith("gal:run:")}
    cards = {c.id: c for c in gallery.cards()}
    assert set(run_buttons) == {pid for pid, c in cards.items() if c.has_pair}
    for pid, label in run_buttons.items():
        assert label == "Run baseline vs regularized" + (" (long run)" if cards[pid].long_run else "")
    texts = [m.value for m in at.markdown]
    assert sum("long run: minutes or more" in t for t in texts) == sum(c.long_run for c in cards.values())
    sweeps = [i.value for i in at.info if "run it on the Sweeps page" in i.value]
    assert len(sweeps) == sum(c.sweep is not None for c in cards.values())


def test_pair_trains_both_versions_with_one_click(lab_home: Path) -> None:
    at = open_gallery()
    at.button(key="gal:run:noisy-labels").click().run()
    assert not at.exception and not at.error
    wait_for(at, lambda a: sum(t.startswith(("baseline: completed", "regularized: completed"))
                               for t in progress_texts(a)) == 2, timeout=240)
    assert not at.exception
    texts = progress_texts(at)
    assert any(t.startswith("baseline: completed — step 1900/1900") for t in texts), texts
    assert any(t.startswith("regularized: completed — step 1900/1900") for t in texts), texts
    badges = [a.value for a in (*at.success, *at.warning, *at.info)
              if a.value.startswith(("**Generalized**", "**Memorized**", "**Partial"))]
    assert any(b.startswith("**Memorized**") and "of the 40 % wrong labels were fitted" in b for b in badges), badges
    assert any(b.startswith("**Generalized**") and "test acc" in b for b in badges), badges

    # both curves overlaid in one panel: train/test accuracy of each run, each with points
    acc = json.loads(at.get("plotly_chart")[0].proto.spec)["data"]
    names = {t["name"] for t in acc}
    assert {"baseline · test/acc", "regularized · test/acc", "baseline · train/acc"} <= names
    assert all(len(t["x"]) > 1 for t in acc)
    assert [b.label for b in at.get("download_button")].count("PNG") == len(at.get("plotly_chart"))

    store = RunStore()
    runs = store.list_runs()
    assert len(runs) == 2 and {r["status"] for r in runs} == {"completed"}
    base, reg = sorted(runs, key=lambda r: r["name"])  # "… · baseline" < "… · regularized"
    assert base["seed"] == reg["seed"]
    assert not base["config"]["regularizers"] and reg["config"]["regularizers"]["elr"]["enabled"]
    strip = {"name", "regularizers"}
    assert {k: v for k, v in base["config"].items() if k not in strip} == \
        {k: v for k, v in reg["config"].items() if k not in strip}  # only the toggle differs

    at.button(key="gal:compare").click().run()
    assert not at.exception
    assert sorted(at.multiselect(key="cmp:runs").value) == sorted(r["id"] for r in runs)
