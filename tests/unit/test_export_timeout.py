"""Static exports go through a renderer process that is killed on a timeout and replaced on the next export.

The renderer's worker is replaced by small stand-in processes speaking the same pipe protocol (one
JSON header line, then the payload), told what to do by a file the test rewrites: hang, die, answer
with an error, or answer with an image derived from the request. So no Chromium is started and
nothing here depends on machine speed; one test at the end does the same with the real Chromium.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import plotly.graph_objects as go
import pytest

from engine import export, renderer
from engine.export import ExportError, figure_bytes
from engine.renderer import Renderer

# A stand-in worker. Its mode file says what it does with each request:
#   answer  -> an image made of the request's hash (so a swapped answer is detectable)
#   hang    -> starts a "Chromium" (sleep, in a session of its own, pid written to <mode>.child), never answers
#   die     -> exits at once
#   error   -> answers {"ok": false, "error": "Executor is closed."}
STAND_IN = r"""
import hashlib, json, os, random, subprocess, sys, time
mode_file = sys.argv[1]
inp, out = sys.stdin.buffer, sys.stdout.buffer
while True:
    line = inp.readline()
    if not line:
        break
    head = json.loads(line)
    payload = inp.read(head["size"])
    mode = open(mode_file).read().strip()
    if mode == "hang":
        child = subprocess.Popen(["sleep", "600"], start_new_session=True)
        open(mode_file + ".child", "w").write(str(child.pid))
        time.sleep(600)
    if mode == "die":
        sys.exit(1)
    if mode == "error":
        reply, data = {"id": head["id"], "ok": False, "error": "Executor\n is closed."}, b""
    else:
        time.sleep(random.random() * 0.02)
        data = b"image:" + head["format"].encode() + b":" + hashlib.sha1(payload).hexdigest().encode()
        reply = {"id": head["id"], "ok": True, "size": len(data)}
    out.write(json.dumps(reply).encode() + b"\n" + data)
    out.flush()
"""


@pytest.fixture
def mode(tmp_path: Path) -> Path:
    path = tmp_path / "mode"
    path.write_text("answer")
    return path


@pytest.fixture
def stand_in(monkeypatch: pytest.MonkeyPatch, mode: Path) -> Iterator[Renderer]:
    """The process's renderer, running the stand-in worker; closed (killed) after the test."""
    r = Renderer([sys.executable, "-c", STAND_IN, str(mode)])
    monkeypatch.setattr(renderer, "_default", r)
    yield r
    r.close()


def expected(fig: go.Figure, fmt: str) -> bytes:
    return b"image:" + fmt.encode() + b":" + hashlib.sha1(fig.to_json(validate=False).encode()).hexdigest().encode()


def alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie left for init to reap counts as gone)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def wait_gone(pid: int, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while alive(pid) and time.monotonic() < deadline:
        time.sleep(0.02)
    return not alive(pid)


def test_a_hung_renderer_times_out_is_killed_with_its_browser_and_the_next_export_restarts_it(
        monkeypatch: pytest.MonkeyPatch, stand_in: Renderer, mode: Path) -> None:
    fig = go.Figure(go.Scatter(y=[1, 2, 3]))
    assert figure_bytes(fig, "png") == expected(fig, "png")  # started under the default timeout (a busy box)
    first = stand_in.pid
    assert first is not None and stand_in.started == 1

    monkeypatch.setattr(export, "RENDER_TIMEOUT_S", 0.5)
    mode.write_text("hang")
    start = time.monotonic()
    with pytest.raises(ExportError, match=r"^png export failed \(no answer from kaleido/Chromium within 0.5 s\); "
                                          r"the next export restarts the renderer"):
        figure_bytes(fig, "png")
    assert time.monotonic() - start < 10  # measured 0.5 s
    browser = int(Path(f"{mode}.child").read_text())
    assert wait_gone(first) and wait_gone(browser)  # the worker and what it started, in its own session too
    assert stand_in.pid is None

    mode.write_text("answer")
    monkeypatch.setattr(export, "RENDER_TIMEOUT_S", 60.0)
    other = go.Figure(go.Bar(y=[3, 1]))
    assert figure_bytes(other, "png") == expected(other, "png")  # a fresh worker, not a late answer
    assert stand_in.started == 2 and stand_in.pid not in (None, first)


def test_a_dead_renderer_fails_fast_instead_of_waiting_out_the_timeout(
        monkeypatch: pytest.MonkeyPatch, stand_in: Renderer, mode: Path) -> None:
    monkeypatch.setattr(export, "RENDER_TIMEOUT_S", 60.0)
    mode.write_text("die")
    start = time.monotonic()
    with pytest.raises(ExportError, match=r"^svg export failed \(the renderer process died") as err:
        figure_bytes(go.Figure(), "svg")
    assert time.monotonic() - start < 10  # measured 0.1 s, not the 60 s timeout
    assert "\n" not in str(err.value)
    mode.write_text("answer")
    assert figure_bytes(go.Figure(), "svg") == expected(go.Figure(), "svg")
    assert stand_in.started == 2


def test_a_render_error_is_reported_in_one_line_and_the_next_export_uses_a_fresh_worker(
        stand_in: Renderer, mode: Path) -> None:
    """What a real Chromium crash looks like first (measured: kaleido raises "Executor is closed", then
    never answers again): the error is passed on and the worker is not reused."""
    mode.write_text("error")
    with pytest.raises(ExportError, match=r"^pdf export failed \(Executor is closed.\); install a browser with") as err:
        figure_bytes(go.Figure(), "pdf")
    assert "\n" not in str(err.value)
    mode.write_text("answer")
    assert figure_bytes(go.Figure(), "pdf") == expected(go.Figure(), "pdf")
    assert stand_in.started == 2


def test_sessions_exporting_at_once_each_get_their_own_image(stand_in: Renderer) -> None:
    figs = [go.Figure(go.Scatter(y=[i, i * i, 1]), layout={"title": {"text": f"session {i}"}}) for i in range(8)]
    got: dict[int, list[bytes]] = {i: [] for i in range(len(figs))}

    def session(i: int) -> None:
        for fmt in ("png", "svg", "png"):
            got[i].append(figure_bytes(figs[i], fmt))

    threads = [threading.Thread(target=session, args=(i,)) for i in range(len(figs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    for i, fig in enumerate(figs):
        assert got[i] == [expected(fig, "png"), expected(fig, "svg"), expected(fig, "png")]
    assert stand_in.started == 1  # one worker served them all


def test_a_worker_without_kaleido_reports_why_on_each_export(monkeypatch: pytest.MonkeyPatch) -> None:
    """The real worker (engine.renderer.main) with kaleido unimportable: it answers with the cause,
    which reaches the user as a one-line error with the fix, instead of a dead renderer."""
    no_kaleido = "import sys; sys.modules['kaleido'] = None; from engine.renderer import main; main()"
    r = Renderer([sys.executable, "-c", no_kaleido])
    monkeypatch.setattr(renderer, "_default", r)
    try:
        for _ in range(2):
            with pytest.raises(ExportError, match=r"^png export failed \(.*kaleido.*\); install a browser with") as err:
                figure_bytes(go.Figure(), "png")
            assert "\n" not in str(err.value)
    finally:
        r.close()


@pytest.mark.skipif(shutil.which("chromium") is None and not Path("/usr/bin/chromium").exists(),
                    reason="needs Chromium")
def test_a_frozen_chromium_times_out_and_the_next_export_renders_again(monkeypatch: pytest.MonkeyPatch) -> None:
    """The real thing: kaleido's Chromium is frozen (SIGSTOP) mid-session; the export times out, the
    worker and its Chromium are killed, and the next export starts them afresh and renders a PNG."""
    r = Renderer()
    monkeypatch.setattr(renderer, "_default", r)
    try:
        fig = go.Figure(go.Scatter(y=[1, 3, 2]))
        assert figure_bytes(fig, "png").startswith(b"\x89PNG")
        worker = r.pid
        assert worker is not None
        family = renderer._descendants(worker)
        browsers = [p for p in family if "chromium" in Path(f"/proc/{p}/cmdline").read_bytes().decode(errors="replace")]
        assert browsers
        for pid in browsers:
            os.kill(pid, signal.SIGSTOP)
        monkeypatch.setattr(export, "RENDER_TIMEOUT_S", 2.0)
        with pytest.raises(ExportError, match=r"within 2 s"):
            figure_bytes(fig, "png")
        assert all(wait_gone(pid) for pid in [worker, *family])
        monkeypatch.setattr(export, "RENDER_TIMEOUT_S", 60.0)
        assert figure_bytes(fig, "png").startswith(b"\x89PNG")
        assert r.started == 2
    finally:
        r.close()
