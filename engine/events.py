"""Events the trainer emits (see ``engine/trainer.py``) and the commands it accepts from other threads."""

from __future__ import annotations

import queue
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

RunState = Literal["running", "paused", "completed", "diverged", "stopped", "failed"]
FINAL_STATES = ("completed", "diverged", "stopped", "failed")


@dataclass(frozen=True)
class Step:
    """Per-step metrics: ``train/loss`` of the batch before update ``step``, ``lr``, norms."""

    step: int
    metrics: dict[str, float]


@dataclass(frozen=True)
class Eval:
    """Metrics of an evaluation pass after ``step`` updates (eval mode, unaugmented data)."""

    step: int
    metrics: dict[str, float]


@dataclass(frozen=True)
class Snapshot:
    """Penultimate features of a fixed probe subset, for embeddings and collapse panels.

    ``boundary`` (2-D classification inputs only, else None): the model's decision on a fixed grid
    over the input plane — ``x`` (nx,), ``y`` (ny,), ``pred`` and ``conf`` (ny, nx) and
    ``num_classes`` — from ``engine.evaluation.BoundaryGrid.predict``.
    """

    step: int
    features: np.ndarray
    labels: np.ndarray
    flags: dict[str, np.ndarray] = field(default_factory=dict)
    boundary: dict[str, np.ndarray] | None = None


@dataclass(frozen=True)
class Artifact:
    """Arrays an instrument produced (spectral density, landscape grid); stored as ``.npz``."""

    step: int
    kind: str
    arrays: dict[str, np.ndarray]


@dataclass(frozen=True)
class Status:
    """A change of run state, or a message while running (e.g. a live setting applied)."""

    state: RunState
    message: str = ""
    step: int = 0
    outcome: str = ""  # final states only: memorized / generalized / grokked / no_learning / diverged


Event = Step | Eval | Snapshot | Artifact | Status


@dataclass(frozen=True)
class Command:
    kind: Literal["pause", "resume", "stop", "set", "measure"]
    key: str = ""
    value: Any = None


class CommandQueue:
    """Thread-safe inbox of the trainer. Any thread may call these; the trainer applies them at
    the start of its next step, so a live change takes effect at exactly the next update."""

    def __init__(self) -> None:
        self._queue: queue.Queue[Command] = queue.Queue()

    def pause(self) -> None:
        self._queue.put(Command("pause"))

    def resume(self) -> None:
        self._queue.put(Command("resume"))

    def stop(self) -> None:
        self._queue.put(Command("stop"))

    def set(self, key: str, value: Any) -> None:
        self._queue.put(Command("set", key, value))

    def measure(self, instrument: str) -> None:
        """Run an instrument once before the next step (on-demand ones: density, landscape)."""
        self._queue.put(Command("measure", instrument))

    def pending(self) -> bool:
        """Cheap check before every step: reading the deque's length takes no lock (≈ 10× cheaper
        than a failing ``get``); a command arriving just after is applied before the next step."""
        return bool(self._queue.queue)

    def get(self, block: bool, timeout: float | None = None) -> Command | None:
        try:
            return self._queue.get(block=block, timeout=timeout)
        except queue.Empty:
            return None
