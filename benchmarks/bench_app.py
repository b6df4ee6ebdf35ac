"""The app as a user meets it: start-up to an interactive first page, and PNG export from a panel menu.

**Start-up.** Chromium (Debian's ``/usr/bin/chromium`` through Playwright, headless) is launched
first and left idle (untimed). Each round then times, from ``streamlit run app.py`` (a fresh
server process, fresh LAB_HOME) to: ``/_stcore/health`` answering 200 (*healthy*), and the Lab page
rendered in the browser with its **Start** button enabled (*ready*: the default preset's widgets
are drawn and one click trains). Reported: the median *ready* time over rounds (target ≤ 5 s), and
the CPU seconds the server process used up to *ready* and those Chromium (with Playwright's driver)
used meanwhile (user + sys from /proc; the wall time on a shared machine is inflated by other
processes, CPU time is not; the two overlap, on separate cores, when the machine is idle).

**PNG export.** On the last round's server, a short run (the default preset, 60 steps, started
through the UI) finishes; then the loss panel's download menu is opened and **PNG** clicked
``--exports`` + 1 times. Each export is timed from the click to the finished download (Playwright's
download event + the file on disk): Streamlit runs the deferred callable in a worker thread, which
hands the figure to the server's renderer process (``engine/renderer.py``: kaleido in a child
process that a timeout can kill). The first export starts that process (Python, plotly and a headless
Chromium: seconds) and is reported separately; the median of the later ones is the figure (target
≤ 1 s). The CPU seconds of the whole server process tree (the renderer and its Chromium included)
per export are printed beside it.

Usage::

    .venv/bin/python -m benchmarks.bench_app                 # 3 start-up rounds, 5 exports (from the repo root:
                                                             # it reuses tests/browser/server.py)
    .venv/bin/python -m benchmarks.bench_app --rounds 5 --exports 9

The last line holds the figures, e.g.
``bench_app: ready=3.1s (healthy 0.7s, server cpu 2.4s, browser cpu 1.1s; target ≤ 5s) png=0.33s
(first 3.9s, cpu 0.3s; target ≤ 1s) [3 rounds, 5 exports]``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

from tests.browser.server import CHROMIUM, CHROMIUM_ARGS, start_server

ROOT = Path(__file__).resolve().parents[1]

READY_TARGET_S = 5.0
PNG_TARGET_S = 1.0
TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int, tree: bool = False) -> float:
    """user + sys CPU of a process (and, with ``tree``, of its live descendants) from /proc."""
    stats: dict[int, tuple[int, float]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        stats[int(entry.name)] = (int(fields[1]), (int(fields[11]) + int(fields[12])) / TICKS)
    wanted = {pid}
    if tree:
        grew = True
        while grew:
            children = {p for p, (ppid, _) in stats.items() if ppid in wanted} - wanted
            wanted |= children
            grew = bool(children)
    return sum(stats[p][1] for p in wanted if p in stats)


def client_cpu(server_pid: int | None) -> float:
    """CPU of this benchmark's other children: Playwright's driver and Chromium (the server excluded)."""
    mine = cpu_seconds(os.getpid(), tree=True) - cpu_seconds(os.getpid())
    return mine - (cpu_seconds(server_pid, tree=True) if server_pid else 0.0)


def time_startup(browser, home: Path) -> tuple[float, float, float, float, object]:
    """(healthy s, ready s, server CPU s, browser CPU s, server) for one fresh ``streamlit run``."""
    browser0 = client_cpu(None)
    t0 = time.perf_counter()
    server = start_server(home)
    healthy = time.perf_counter() - t0
    page = browser.new_page()
    page.goto(server.url)
    start = page.get_by_test_id("stMainBlockContainer").get_by_role("button", name="Start", exact=True)
    start.wait_for(timeout=60_000)
    page.wait_for_function("b => !b.disabled", arg=start.element_handle(), timeout=60_000)
    ready = time.perf_counter() - t0
    cpu = cpu_seconds(server.proc.pid)
    browser_cpu = client_cpu(server.proc.pid) - browser0
    page.close()
    return healthy, ready, cpu, browser_cpu, server


def time_exports(browser, server, n: int, out: Path) -> tuple[float, list[float], list[float]]:
    """(first export s, later export s, later export CPU s of the server tree) via the loss panel's menu."""
    page = browser.new_page(accept_downloads=True)
    page.goto(f"{server.url}/?preset=grokking-quadratic&set=train.steps%3D60")
    page.get_by_test_id("stMainBlockContainer").get_by_role("button", name="Start", exact=True).click()
    page.get_by_test_id("stProgress").filter(has_text="completed").wait_for(timeout=300_000)
    page.get_by_test_id("stStatusWidgetRunningIcon").wait_for(state="detached", timeout=60_000)
    page.get_by_test_id("stPopoverButton").first.click()
    button = page.get_by_test_id("stPopoverBody").get_by_role("button", name="PNG", exact=True)
    times, cpus = [], []
    for i in range(n + 1):
        cpu0, t0 = cpu_seconds(server.proc.pid, tree=True), time.perf_counter()
        with page.expect_download(timeout=120_000) as download:
            button.click()
        path = out / f"export_{i}.png"
        download.value.save_as(path)
        times.append(time.perf_counter() - t0)
        cpus.append(cpu_seconds(server.proc.pid, tree=True) - cpu0)
        data = path.read_bytes()
        if not data.startswith(b"\x89PNG") or len(data) < 5_000:
            raise RuntimeError(f"export {i} is not a real PNG ({len(data)} bytes)")
    page.close()
    return times[0], times[1:], cpus[1:]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3, help="fresh server starts to time")
    parser.add_argument("--exports", type=int, default=5, help="PNG exports timed after the first")
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory() as tmp, sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        browser.new_page().close()  # Chromium warm, as for a user whose browser is already open
        ready_s, healthy_s, cpu_s, browser_s = [], [], [], []
        server = None
        try:
            for r in range(args.rounds):
                if server is not None:
                    server.stop()
                healthy, ready, cpu, browser_cpu, server = time_startup(browser, Path(tmp) / f"home{r}")
                healthy_s.append(healthy)
                ready_s.append(ready)
                cpu_s.append(cpu)
                browser_s.append(browser_cpu)
                print(f"round {r}: healthy {healthy:.2f}s ready {ready:.2f}s server cpu {cpu:.2f}s "
                      f"browser cpu {browser_cpu:.2f}s", flush=True)
            first, later, later_cpu = time_exports(browser, server, args.exports, Path(tmp))
            print("png exports: first {:.2f}s then {}".format(first, " ".join(f"{t:.2f}s" for t in later)))
        finally:
            if server is not None:
                server.stop()
            browser.close()
    print(f"bench_app: ready={statistics.median(ready_s):.2f}s (healthy {statistics.median(healthy_s):.2f}s, "
          f"server cpu {statistics.median(cpu_s):.2f}s, browser cpu {statistics.median(browser_s):.2f}s; "
          f"target ≤ {READY_TARGET_S:g}s) "
          f"png={statistics.median(later):.2f}s (first {first:.2f}s, cpu {statistics.median(later_cpu):.2f}s; "
          f"target ≤ {PNG_TARGET_S:g}s) [{args.rounds} rounds, {args.exports} exports]")


if __name__ == "__main__":
    main()
