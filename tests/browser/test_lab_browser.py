"""The Lab in a real browser: open, pick a preset, toggle a technique, train, see the curve."""

from __future__ import annotations

from pathlib import Path

import pytest

pytestmark = pytest.mark.browser


def test_train_a_preset_in_the_browser(app_url: str, browser, tmp_path: Path) -> None:
    page = browser.new_page()
    page.goto(app_url)
    page.get_by_role("button", name="Start").wait_for(timeout=60_000)
    sidebar = page.get_by_test_id("stSidebar")
    sidebar.get_by_text("Regularizers").click()
    sidebar.get_by_text("l2", exact=True).click()  # toggle the coupled L2 penalty on
    steps = sidebar.get_by_label("train.steps")
    steps.fill("80")
    steps.press("Enter")
    page.get_by_role("button", name="Start").click()
    page.get_by_text("completed — step 80/80").wait_for(timeout=120_000)
    page.locator(".js-plotly-plot .scatterlayer .trace").first.wait_for(timeout=30_000)
    assert page.locator(".js-plotly-plot .scatterlayer .trace").count() >= 2
    page.screenshot(path=str(tmp_path / "lab.png"), full_page=True)
    assert (tmp_path / "lab.png").stat().st_size > 10_000
    page.close()
