"""Background training job for the UI: a thread that runs a Trainer and keeps a bounded live view.

The worker never touches Streamlit; pages read ``Job.view()`` on each poll. Memory stays bounded
for long runs: each metric keeps at most ``max_points`` points, and when the buffer fills every
other old point is dropped (so a 100k-step curve keeps its shape at a fixed cost). Only the latest
snapshot (and the latest decision boundary of a 2-D run) is kept. The store subscriber still persists
every point.

Failures never leave a page waiting: an exception in a technique or diagnostic ends the run as
``failed`` (the trainer catches it) with a one-line reason in ``view().message``, and its traceback
goes to the server log (logger ``engine.jobs``). Anything that escapes the trainer — the store
refusing a write, a subscriber raising — is caught by the worker thread itself, which then marks
the job (and the stored run, when it can) ``failed`` the same way; a thread that died silently
would leave the job ``running`` forever and its Start button disabled.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from engine.config import ConfigError, RunConfig
from engine.events import FINAL_STATES, Artifact, Eval, Event, Snapshot, Status, Step
from engine.store import RunStore
from engine.trainer import Trainer

log = logging.getLogger(__name__)


def one_line(message: str, limit: int = 300) -> str:
    """The first line of an error message, cut to ``limit`` characters (it is shown beside the status)."""
    line = (message.strip().splitlines() or [""])[0]
    return line if len(line) <= limit else line[: limit - 1] + "…"


@dataclass
class Series:
    """A metric's points, thinned by 2× whenever it reaches ``cap`` (oldest half first)."""

    cap: int
    steps: list[int] = field(default_factory=list)
    values: list[float] = field(default_factory=list)

    def add(self, step: int, value: float) -> None:
        self.steps.append(step)
        self.values.append(value)
        if len(self.steps) >= self.cap:
            half = self.cap // 2
            self.steps = self.steps[:half:2] + self.steps[half:]
            self.values = self.values[:half:2] + self.values[half:]


@dataclass
class JobView:
    """What a page draws: a consistent copy taken under the job's lock."""

    run_id: str | None
    state: str
    message: str
    step: int
    total_steps: int
    steps_per_s: float
    series: dict[str, tuple[list[int], list[float]]]
    snapshot: Snapshot | None
    artifacts: dict[str, Artifact]
    outcome: str
    boundary: dict[str, np.ndarray] | None = None  # latest decision-boundary grid (2-D classification)
    boundary_step: int = 0
    points: dict[str, np.ndarray] | None = None  # the inputs the boundary panel overlays, with it


class Job:
    """One training run in a daemon thread; pause/resume/stop/set go straight to the trainer."""

    def __init__(self, cfg: RunConfig, store: RunStore | None = None, max_points: int = 4000) -> None:
        from engine.preflight import check_runnable
        from engine.runner import build_trainer

        check_runnable(cfg)  # dataset-level refusals (batch larger than the data, ...) before anything starts
        self.cfg = cfg
        self.store = store
        self.trainer: Trainer = build_trainer(cfg)
        self.max_points = max_points
        self.run_id: str | None = None
        self.state, self.message, self.step = "starting", "", 0
        self._series: dict[str, Series] = {}
        self._snapshot: Snapshot | None = None
        self._boundary: Snapshot | None = None
        self._artifacts: dict[str, Artifact] = {}
        self.outcome = ""
        self._lock = threading.Lock()
        self._started = 0.0
        self._ended: float | None = None  # when the run reached a final state: steps/s stops there
        self._thread = threading.Thread(target=self._work, name="lab-training", daemon=True)

    def start(self) -> Job:
        self._started = time.perf_counter()
        self._thread.start()
        return self

    def _work(self) -> None:
        try:
            if self.store is not None:
                from engine.runner import execute

                execute(self.cfg, self.store, self._on_event, trainer=self.trainer,
                        on_created=lambda run_id: setattr(self, "run_id", run_id))
            else:
                self.trainer.run(self._on_event)
        except Exception as err:  # escaped the trainer's own handling: still end as failed, never hang
            log.exception("training worker for run %s failed", self.run_id or "(not yet recorded)")
            message = one_line(f"{type(err).__name__}: {err}")
            with self._lock:
                self.state, self.message = "failed", message
                self._ended = self._ended or time.perf_counter()
            self._record_failure(message)

    def _record_failure(self, message: str) -> None:
        """Mark the stored run failed if it is still open (best effort: the store may be the cause)."""
        if self.store is None or self.run_id is None:
            return
        try:
            run = self.store.get_run(self.run_id)
            if run is not None and run.get("status") not in FINAL_STATES:
                self.store.finish_run(self.run_id, "failed", message)
        except Exception:  # the store itself failing: the next open marks the run interrupted
            log.exception("could not mark run %s failed in the store", self.run_id)

    def _on_event(self, event: Event) -> None:
        if isinstance(event, Status) and event.state == "failed":
            # The trainer reports a failure from inside its ``except`` block: the traceback is live
            # here and this is the one place the app can log it.
            if sys.exc_info()[0] is not None:
                log.error("run %s failed: %s", self.run_id, event.message, exc_info=True)
            event = Status("failed", one_line(event.message), event.step, event.outcome)
        with self._lock:
            if isinstance(event, Step | Eval):
                self.step = max(self.step, event.step)
                for name, value in event.metrics.items():
                    self._series.setdefault(name, Series(self.max_points)).add(event.step, value)
            elif isinstance(event, Snapshot):
                self._snapshot = event
                if event.boundary is not None:
                    self._boundary = event
            elif isinstance(event, Artifact):
                self._artifacts[event.kind] = event
            elif isinstance(event, Status):
                self.state, self.message = event.state, event.message
                self.outcome = event.outcome or self.outcome
                if self.state in FINAL_STATES and self._ended is None:
                    self._ended = time.perf_counter()

    # ---- commands (any thread) -----------------------------------------------------------
    def pause(self) -> None:
        self.trainer.pause()

    def resume(self) -> None:
        self.trainer.resume()

    def stop(self, wait: float = 0.0) -> None:
        self.trainer.stop()
        if wait:
            self._thread.join(wait)

    def set(self, key: str, value: Any) -> None:
        """Validated live change (raises ConfigError with a one-line message)."""
        try:
            self.trainer.set(key, value)
        except ConfigError:
            raise
        except ValueError as err:  # a technique parameter's own range check (Param.coerce)
            raise ConfigError(str(err).splitlines()[0]) from None

    def measure(self, instrument: str) -> None:
        """On-demand instrument (density, landscape, …): queued while training, else run now in a
        background thread on the final weights. Results arrive as metrics/artifacts in ``view()``."""
        if not self.done:
            self.trainer.commands.measure(instrument)
            return

        def work() -> None:
            try:
                for event in self.trainer.measure(instrument):
                    self._on_event(event)
            except Exception as err:  # the run is over and stays as it ended; say why nothing came
                log.exception("on-demand %s on run %s failed", instrument, self.run_id)
                with self._lock:
                    self.message = one_line(f"{instrument} failed: {type(err).__name__}: {err}")

        threading.Thread(target=work, name=f"lab-measure-{instrument}", daemon=True).start()

    @property
    def done(self) -> bool:
        return self.state in FINAL_STATES

    def view(self) -> JobView:
        with self._lock:
            elapsed = max(1e-9, (self._ended or time.perf_counter()) - self._started)
            boundary = self._boundary
            view = JobView(
                run_id=self.run_id, state=self.state, message=self.message, step=self.step,
                total_steps=self.cfg.train.steps, steps_per_s=self.step / elapsed,
                series={k: (list(s.steps), list(s.values)) for k, s in self._series.items()},
                snapshot=self._snapshot, artifacts=dict(self._artifacts), outcome=self.outcome,
            )
        if boundary is not None:
            view.boundary, view.boundary_step = boundary.boundary, boundary.step
            view.points = self.plane_points()
        return view

    def plane_points(self) -> dict[str, np.ndarray]:
        """Copies of the run's inputs and labels for the boundary panel: ``x_train``, ``y_train`` (as given),
        ``x_test``, ``y_test``, and ``is_noisy`` / ``labeled`` when the run has them. Copied on each call
        because a continual run relabels ``y_train`` in place between tasks."""
        data = self.trainer.data
        out = {"x_train": data.x_train, "y_train": data.y_train, "x_test": data.x_test, "y_test": data.y_test}
        if data.is_noisy is not None:
            out["is_noisy"] = data.is_noisy
        if data.labeled is not None:
            out["labeled"] = data.labeled
        return {k: v.detach().cpu().numpy().copy() for k, v in out.items()}
