"""Static figure rendering (PNG, SVG, PDF) in a child process that can be killed and replaced.

Why a child process: kaleido's sync server waits on Chromium without a timeout, and a hung or
crashed Chromium cannot be abandoned from inside the process that started it except by rewriting
kaleido's private state. A process we own can simply be killed. So one worker process per
app/CLI process (``python -m engine.renderer``) holds kaleido's persistent sync server, started
through kaleido's public ``start_sync_server``, and renders through plotly's public
``plotly.io.to_image`` — the same code path as ``Figure.to_image`` in-process, so the bytes are
the same. The parent sends figures as JSON over the worker's stdin and reads the images back from
its stdout, one request at a time under a lock, each answer tagged with its request's id: two
browser sessions exporting at once queue behind each other and can never receive each other's
image. A render that does not answer within its timeout, or a worker that dies, fails with
:class:`RenderError`; the worker and its Chromium are killed and the next render starts a fresh one.

Cost: the first render in a process starts the worker (Python + plotly import) and its Chromium,
a few seconds; later renders reuse both (the figure's JSON crosses a pipe, a few milliseconds).
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any

WORKER_ARGV: tuple[str, ...] = (sys.executable, "-m", "engine.renderer")
_ROOT = Path(__file__).resolve().parents[1]  # the worker imports ``engine`` from here
_POLL_S = 0.25  # how often a waiting render checks that the worker is still alive


class RenderError(RuntimeError):
    """A render that failed inside a working renderer (bad figure, Chromium error); one line."""


class RenderTimeout(RenderError):
    """No answer in time, or the worker died: the worker has been killed and will be replaced."""


def _one_line(text: str) -> str:
    text = " ".join(text.split())
    return (text[:200] + "…") if len(text) > 200 else text


class Renderer:
    """One worker process and the pipe protocol to it (a JSON header line, then a payload).

    Request: ``{"id", "format", "size"}`` + ``size`` bytes of figure JSON. Answer: ``{"id", "ok",
    "size"}`` + ``size`` bytes of image, or ``{"id", "ok": false, "error"}``. ``argv`` is the worker
    command (tests substitute stand-ins that hang, die or fail).
    """

    def __init__(self, argv: Sequence[str] = WORKER_ARGV) -> None:
        self.argv = tuple(argv)
        self._lock = threading.Lock()
        self._proc: subprocess.Popen[bytes] | None = None
        self._answers: queue.Queue[tuple[dict[str, Any], bytes] | None] | None = None
        self._next_id = 0
        self.started = 0  # worker processes started so far (a restart shows here)

    @property
    def pid(self) -> int | None:
        """The running worker's process id, or None when none is running."""
        proc = self._proc
        return proc.pid if proc is not None and proc.poll() is None else None

    def render(self, figure_json: bytes, fmt: str, timeout: float) -> bytes:
        """The image of ``figure_json`` (plotly JSON) as ``fmt``, within ``timeout`` seconds."""
        with self._lock:
            proc, answers = self._ensure_started()
            self._next_id += 1
            request_id = self._next_id
            head = {"id": request_id, "format": fmt, "size": len(figure_json)}
            try:
                assert proc.stdin is not None
                proc.stdin.write(json.dumps(head).encode() + b"\n" + figure_json)
                proc.stdin.flush()
            except OSError:
                self._kill()
                raise RenderTimeout("the renderer process died (Chromium crashed?)") from None
            deadline = time.monotonic() + timeout
            while True:
                try:
                    item = answers.get(timeout=max(0.0, min(_POLL_S, deadline - time.monotonic())))
                except queue.Empty:
                    if proc.poll() is not None:
                        self._kill()
                        raise RenderTimeout("the renderer process died (Chromium crashed?)") from None
                    if time.monotonic() >= deadline:
                        self._kill()
                        raise RenderTimeout(f"no answer from kaleido/Chromium within {timeout:g} s") from None
                    continue
                if item is None:  # the worker closed its stdout: it exited
                    self._kill()
                    raise RenderTimeout("the renderer process died (Chromium crashed?)")
                reply, data = item
                if reply.get("id") != request_id:  # cannot happen with one request at a time; never hand it out
                    self._kill()
                    raise RenderTimeout("the renderer answered another request; restarted it")
                if not reply.get("ok"):
                    # a crashed Chromium first surfaces as an error ("Executor is closed") and then never
                    # answers again: a fresh worker costs a few seconds once, a stale one a timeout
                    self._kill()
                    raise RenderError(_one_line(str(reply.get("error") or "render failed")))
                return data

    def close(self, wait: float = 1.0) -> None:
        """Stop the worker (and its Chromium); the next render starts a new one.

        Waits at most ``wait`` seconds for a render in flight (at exit, one stuck render must not
        hold the process for its whole timeout), then kills the worker anyway.
        """
        locked = self._lock.acquire(timeout=wait)
        try:
            self._kill()
        finally:
            if locked:
                self._lock.release()

    # -- process management ---------------------------------------------------------------------

    def _ensure_started(self) -> tuple[subprocess.Popen[bytes], queue.Queue[tuple[dict[str, Any], bytes] | None]]:
        if self._proc is not None and self._answers is not None and self._proc.poll() is None:
            return self._proc, self._answers
        self._kill()
        proc = subprocess.Popen(self.argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.DEVNULL, cwd=_ROOT, start_new_session=True)
        answers: queue.Queue[tuple[dict[str, Any], bytes] | None] = queue.Queue()
        assert proc.stdout is not None
        threading.Thread(target=_read_answers, args=(proc.stdout, answers), name="lab-renderer-reader",
                         daemon=True).start()
        self._proc, self._answers = proc, answers
        self.started += 1
        return proc, answers

    def _kill(self) -> None:
        """Kill the worker, its process group and every process it started (Chromium runs in a
        session of its own, so killing the group alone would leave it behind)."""
        proc, self._proc, self._answers = self._proc, None, None
        if proc is None:
            return
        family = [*_descendants(proc.pid), proc.pid]
        for pid in family:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(OSError):
            os.killpg(proc.pid, signal.SIGKILL)
        for stream in (proc.stdin, proc.stdout):
            with contextlib.suppress(OSError):
                if stream is not None:
                    stream.close()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=5)


def _read_answers(stream: IO[bytes], answers: queue.Queue[tuple[dict[str, Any], bytes] | None]) -> None:
    """Reader thread: every answer of one worker into its own queue (a killed worker's queue is
    dropped with it, so a late answer can never reach a later request); None at end of stream."""
    try:
        while True:
            line = stream.readline()
            if not line:
                break
            reply = json.loads(line)
            size = int(reply.get("size", 0))
            data = stream.read(size) if size else b""
            if len(data) != size:
                break
            answers.put((reply, data))
    except (OSError, ValueError):
        pass
    answers.put(None)


def _descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (Linux /proc; empty elsewhere), children before parents' kill."""
    children: dict[int, list[int]] = {}
    try:
        entries = os.listdir("/proc")
    except OSError:
        return []
    for entry in entries:
        if not entry.isdigit():
            continue
        try:
            stat = Path("/proc", entry, "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])  # after "pid (comm) state": the parent id
        children.setdefault(ppid, []).append(int(entry))
    found: list[int] = []
    todo = [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


_default: Renderer | None = None
_default_lock = threading.Lock()


def default_renderer() -> Renderer:
    """The process's renderer (created on first use, stopped at exit)."""
    global _default
    with _default_lock:
        if _default is None:
            _default = Renderer()
            atexit.register(_default.close)
        return _default


# -- the worker ---------------------------------------------------------------------------------


def serve(stdin: IO[bytes], stdout: IO[bytes]) -> None:
    """Answer render requests until stdin closes (the parent exited or closed the renderer).

    A worker that cannot start kaleido (not installed, no Chromium) stays up and answers every
    request with that error, so the parent reports the cause rather than a dead process.
    """
    broken = ""
    try:
        import kaleido
        import plotly.io as pio

        kaleido.start_sync_server(silence_warnings=True)
    except Exception as err:
        broken = _one_line(str(err)) or type(err).__name__
    try:
        while True:
            line = stdin.readline()
            if not line:
                return
            head = json.loads(line)
            payload = stdin.read(int(head["size"]))
            data = b""
            try:
                if broken:
                    raise RuntimeError(broken)
                with warnings.catch_warnings():  # plotly always passes kopts; the server has its own
                    warnings.filterwarnings("ignore", message="The kopts argument is ignored")
                    data = pio.to_image(json.loads(payload), format=head["format"], validate=False)
                reply: dict[str, Any] = {"id": head["id"], "ok": True, "size": len(data)}
            except Exception as err:  # reported to the parent as one line
                reply = {"id": head["id"], "ok": False, "error": _one_line(str(err)) or type(err).__name__}
            stdout.write(json.dumps(reply).encode() + b"\n" + data)
            stdout.flush()
    finally:
        if not broken:
            kaleido.stop_sync_server(silence_warnings=True)


def main() -> None:
    """Worker entry point: the protocol owns the real stdout; anything else printed goes to stderr."""
    protocol = os.fdopen(os.dup(sys.stdout.fileno()), "wb")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    serve(sys.stdin.buffer, protocol)


if __name__ == "__main__":
    main()
