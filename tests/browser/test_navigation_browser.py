"""Deep links as the very first request of a fresh server run through app.py's navigation.

Streamlit treats an app with a ``pages/`` folder beside its entry script as a legacy multipage app
until ``st.navigation`` has run once in the process: without pages/common.py's hand-over, a first
request to ``/compare?runs=…`` would run that page alone, titled "compare", with the file names
(``app``, ``common``, …) as its navigation. Each case here starts its own server for that reason.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

from engine.config import apply_overrides, validate
from engine.presets import preset_config
from engine.runner import execute
from engine.store import RunStore
from pages import PAGES
from tests.browser.conftest import wait_idle
from tests.browser.server import Server, start_server

pytestmark = pytest.mark.browser


@pytest.fixture
def home_with_runs(tmp_path: Path) -> tuple[Path, list[str]]:
    """A LAB_HOME holding two short finished runs, for ``/compare?runs=A,B``."""
    ids = []
    with RunStore(tmp_path / "lab.db") as store:
        for lr in ("0.4", "0.2"):
            data = apply_overrides(preset_config("edge-of-stability"), ["train.steps=10", f"optim.lr={lr}"])
            run_id, result = execute(validate(data), store)
            assert result.status == "completed"
            ids.append(run_id)
    return tmp_path, ids


@pytest.fixture
def fresh_server(home_with_runs: tuple[Path, list[str]]) -> Iterator[tuple[Server, list[str]]]:
    home, ids = home_with_runs
    try:
        server = start_server(home)
    except RuntimeError as err:
        pytest.fail(str(err))
    yield server, ids
    server.stop()


def nav_titles(page) -> list[str]:
    links = page.get_by_test_id("stSidebarNav").get_by_role("link")
    return [text.strip().splitlines()[-1].strip() for text in links.all_inner_texts()]  # icon line, then title


@pytest.mark.parametrize(("path", "title"), [("/compare?runs={a},{b}", "Compare"), ("/diagnostics", "Diagnostics")])
def test_a_deep_link_as_the_first_request_gets_the_apps_page_config_and_navigation(
        fresh_server: tuple[Server, list[str]], browser, tmp_path: Path, path: str, title: str) -> None:
    server, (a, b) = fresh_server
    page = browser.new_page()
    page.goto(server.url + path.format(a=a, b=b))  # nothing has been requested from this server before
    main = page.get_by_test_id("stMainBlockContainer")
    main.locator("h1").filter(has_text=title).wait_for(timeout=60_000)
    wait_idle(page)
    page.screenshot(path=str(tmp_path / f"{title.lower()}.png"))
    assert page.title() == "Regularization Lab"  # app.py's set_page_config, not the legacy "compare"
    assert nav_titles(page) == [t for _, t, _ in PAGES]  # app.py's pages, no "app" / "common" entries
    asked, landed = urlsplit(server.url + path.format(a=a, b=b)), urlsplit(page.url)
    assert landed.path == asked.path  # same page ...
    # ... and the link's query kept (the run picker may add ?run= for the run it shows by default)
    assert parse_qs(asked.query).items() <= parse_qs(landed.query).items()
    if title == "Compare":
        chosen = main.get_by_test_id("stMultiSelect").first.inner_text()
        assert chosen.count("edge-of-stability · ") == 2  # ?runs= was applied (the picker shows runs by name)
    page.close()
