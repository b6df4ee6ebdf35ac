"""Technique-level config checks: clashes between enabled techniques and what each one needs.

Called from config validation so the CLI and the UI refuse the same runs with the same words.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from engine.config import RunConfig


def check_techniques(cfg: RunConfig) -> None:
    """Raise ValueError('regularizers…: …') for technique combinations or settings that cannot run."""
    from engine.compat import task_of
    from engine.regularizers import get

    data = cfg.data.name
    enabled = [get(name) for name in cfg.enabled_regularizers()]
    for flag, what in (("replaces_output", "replace the output function"), ("wraps_step", "wrap the optimizer step")):
        clash = [cls.name for cls in enabled if getattr(cls, flag)]
        if len(clash) > 1:
            raise ValueError(f"regularizers: {' and '.join(clash)} both {what}; enable only one")
    names = {cls.name for cls in enabled}
    for cls in enabled:
        for other in cls.conflicts:
            if other in names:
                raise ValueError(f"regularizers: {cls.name} cannot be combined with {other}; disable one of them")
    task = task_of(cfg)
    for cls in enabled:
        if task not in cls.tasks:
            raise ValueError(f"regularizers.{cls.name}: works on {'/'.join(cls.tasks)} tasks, not {data}; disable it")
        cls.check_config(cfg)
