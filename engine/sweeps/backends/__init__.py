"""Sweep backends: where cells run. Adding one = adding a module with a ``@register`` class.

A backend gets every pending cell at once and reports each as it finishes, in any order:
``run(tasks, done)`` blocks until all are reported or ``stop()`` (from another thread) ends the
sweep early — cells never started stay pending (a resume runs them), running ones stop at their
next step and are recorded ``stopped``.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import ClassVar

from engine.config import ConfigError
from engine.plugin import Plugin
from engine.registry import Registry
from engine.sweeps.worker import CellReport, CellTask

Done = Callable[[CellTask, CellReport], None]


class Backend(Plugin):
    """Base class: ``workers`` is how many cells run at once (None = sized to the machine)."""

    name: ClassVar[str]
    description: ClassVar[str]

    def __init__(self, workers: int | None = None, address: str | None = None) -> None:
        self.workers, self.address = workers, address

    def run(self, tasks: Sequence[CellTask], done: Done) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError


REGISTRY: Registry[type[Backend]] = Registry("engine.sweeps.backends", "--backend")


def register(name: str) -> Callable[[type[Backend]], type[Backend]]:
    def deco(cls: type[Backend]) -> type[Backend]:
        cls.name = name
        return REGISTRY.add(name, cls)

    return deco


def cores() -> int:
    """CPUs this process may use (affinity / cgroup-aware where the platform says)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def default_workers(tasks: Sequence[CellTask], workers: int | None) -> int:
    """Explicit count, else cores ÷ the torch threads one cell uses — never more than there are cells."""
    per_cell = max((t.threads for t in tasks), default=1)
    n = workers if workers else max(1, cores() // per_cell)
    return max(1, min(n, len(tasks)))


def backend_names() -> list[str]:
    return sorted(REGISTRY.load())


def get_backend(name: str) -> type[Backend]:
    try:
        return REGISTRY.lookup(name)
    except ValueError:
        raise ConfigError(f"--backend {name!r}: unknown; choose one of {', '.join(backend_names())}") from None


