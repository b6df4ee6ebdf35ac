"""Technique-level config checks: clashes between enabled techniques and what each one needs.

Called from config validation so the CLI and the UI refuse the same runs with the same words.
Every check reads what the techniques declare (``exclusive``, ``marks``/``refuses``, ``requires``,
``tasks``, the hooks they override), so no technique names another and none names a dataset
or a model.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from engine.regularizers.base import REGISTRY, Regularizer
from engine.traits import run_traits

if TYPE_CHECKING:
    from engine.config import RunConfig

# Hooks that run the data loss or the update for every technique: at most one override each.
SINGLE_HOOKS = (("replaces_output", "replace the output function"), ("wraps_step", "wrap the optimizer step"))


def check_techniques(cfg: RunConfig) -> None:
    """Raise ValueError('regularizers…: …') for technique combinations or settings that cannot run."""
    enabled = [REGISTRY.lookup(name) for name in cfg.enabled_regularizers()]
    check_combination(enabled)
    traits = run_traits(cfg)
    for cls in enabled:
        if traits.task not in cls.tasks:
            raise ValueError(f"regularizers.{cls.name}: works on {'/'.join(cls.tasks)} tasks, not "
                             f"{traits.dataset}; disable it")
        for need in cls.requires:
            message = need.refusal(cls.name, traits)
            if message:
                raise ValueError(message)
        cls.check_config(cfg)


def check_combination(enabled: list[type[Regularizer]]) -> None:
    """Refuse two overrides of one single hook, two members of one exclusive group, and a technique
    enabled with one whose property it refuses; every message names both techniques."""
    for flag, what in SINGLE_HOOKS:
        clash = [cls.name for cls in enabled if flag in cls.properties()]
        if len(clash) > 1:
            raise ValueError(f"regularizers: {' and '.join(clash)} both {what}; enable only one")
    for i, cls in enumerate(enabled):
        for other in enabled[i + 1:]:
            if cls.exclusive is not None and cls.exclusive == other.exclusive:
                raise ValueError(f"regularizers: {cls.name} cannot be combined with {other.name} (both are in the "
                                 f"one-at-a-time group {cls.exclusive}); disable one of them")
    for cls in enabled:
        for other in enabled:
            if other is not cls and cls.refuses & other.properties():
                raise ValueError(f"regularizers: {cls.name} cannot be combined with {other.name}; disable one of them")
