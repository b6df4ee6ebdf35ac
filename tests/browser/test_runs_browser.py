"""The Runs page in Chromium: a table that fits 1440 px, a run opened by link, ticked rows opened in Compare."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from engine.config import apply_overrides, validate
from engine.presets import preset_config
from engine.runner import execute
from engine.store import RunStore
from tests.browser.conftest import PLOT_HAS_POINTS, wait_idle

pytestmark = pytest.mark.browser
ROW_PX = 35  # Streamlit's dataframe row height (and header height) in pixels


@pytest.fixture
def two_runs(lab_home: Path) -> list[str]:
    """Two short finished runs in the server's store, named so that they are found among other tests' runs."""
    ids = []
    with RunStore(lab_home / "lab.db") as store:
        for name, lr in (("runs-page slow", "0.2"), ("runs-page fast", "0.4")):
            data = apply_overrides(preset_config("edge-of-stability"), ["train.steps=10", f"optim.lr={lr}"])
            run_id, result = execute(validate({**data, "name": name}), store)
            assert result.status == "completed"
            ids.append(run_id)
    return ids  # oldest first: the table lists them as its first two rows, newest first


def test_runs_table_fits_and_ticked_rows_open_in_compare(app_url: str, browser, two_runs: list[str],
                                                         tmp_path: Path) -> None:
    slow, fast = two_runs
    page = browser.new_page(viewport={"width": 1440, "height": 900})
    page.goto(f"{app_url}/runs?run={slow}")
    main = page.get_by_test_id("stMainBlockContainer")
    main.locator("h1").filter(has_text="Runs").wait_for(timeout=60_000)
    wait_idle(page)
    page.screenshot(path=str(tmp_path / "runs.png"))
    # the linked run is the one shown below, by name and never by bare id
    picked = main.get_by_test_id("stSelectbox").filter(has_text="Run shown below").locator("input").input_value()
    assert "runs-page slow (edge-of-stability)" in picked and slow not in picked
    page.wait_for_selector("[data-testid=stDataFrame] .dvn-scroller", timeout=60_000)  # the grid draws late
    widths = page.evaluate("""() => {
      const s = document.querySelector('[data-testid=stDataFrame] .dvn-scroller');
      return [s.scrollWidth, s.clientWidth, document.documentElement.scrollWidth, window.innerWidth];
    }""")
    assert widths[0] <= widths[1] and widths[2] <= widths[3], widths  # no sideways scrolling

    grid = main.get_by_test_id("stDataFrame").first.bounding_box()
    for row in (0, 1):  # the row-marker checkboxes of the two newest runs
        page.mouse.click(grid["x"] + 18, grid["y"] + ROW_PX * (row + 1) + ROW_PX / 2)
        wait_idle(page)
    page.get_by_role("button", name="Open 2 runs in Compare").click()
    main.locator("h1").filter(has_text="Compare").wait_for(timeout=60_000)
    page.wait_for_url(re.compile(rf"runs={fast}(%2C|,){slow}"))
    page.wait_for_function(PLOT_HAS_POINTS, arg=[0, 1], timeout=60_000)
    names = page.evaluate("() => document.querySelectorAll('.js-plotly-plot')[0].data.map(t => t.name)")
    assert sorted(names) == ["runs-page fast", "runs-page slow"]
    page.screenshot(path=str(tmp_path / "compare.png"))
    page.close()
