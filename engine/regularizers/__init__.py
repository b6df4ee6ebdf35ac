"""Registry of regularizers. Adding a technique = adding a module here with an ``@register`` class."""

from __future__ import annotations

from typing import Any

from engine.plugin import normalize_params
from engine.regularizers.base import REGISTRY, Batch, LossContext, Param, Regularizer, Setup, register

__all__ = [
    "REGISTRY",
    "Batch",
    "LossContext",
    "Param",
    "Regularizer",
    "Setup",
    "describe_all",
    "get",
    "normalize_regularizer_params",
    "register",
]

ENABLED = Param("enabled", bool, True)


def get(name: str) -> type[Regularizer]:
    return REGISTRY.lookup(name)


def all_techniques() -> dict[str, type[Regularizer]]:
    return REGISTRY.sorted_items()


def normalize_regularizer_params(name: str, params: Any) -> dict[str, Any]:
    """Validate one ``regularizers.<name>`` block; fill defaults; ``enabled`` defaults to true.

    ``regularizers.elr: true`` / ``false`` is accepted as shorthand for enabled with defaults.
    """
    specs = (ENABLED, *get(name).params)
    return normalize_params("regularizers", name, specs, params, lead=("enabled",))


def describe_all() -> list[dict[str, Any]]:
    """The catalog as plain data (CLI ``regularizers --json`` and the UI widgets)."""
    return [cls.describe() for cls in all_techniques().values()]
