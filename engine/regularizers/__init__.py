"""Registry of regularizers. Adding a technique = adding a module here with an ``@register`` class."""

from __future__ import annotations

from typing import Any

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

def get(name: str) -> type[Regularizer]:
    return REGISTRY.lookup(name)


def all_techniques() -> dict[str, type[Regularizer]]:
    return REGISTRY.sorted_items()


def normalize_regularizer_params(name: str, params: Any) -> dict[str, Any]:
    """Validate one ``regularizers.<name>`` block; fill defaults; ``enabled`` defaults to true.

    ``regularizers.elr: true`` / ``false`` is accepted as shorthand for enabled with defaults.
    """
    cls = get(name)
    if params is None or isinstance(params, bool):
        params = {"enabled": params is not False}
    if not isinstance(params, dict):
        raise ValueError(f"regularizers.{name}: expected a mapping of parameters (got {params!r})")
    out: dict[str, Any] = {"enabled": True}
    specs = {p.name: p for p in cls.params}
    for key, value in params.items():
        where = f"regularizers.{name}.{key}"
        if key == "enabled":
            out["enabled"] = Param("enabled", bool, True).coerce(value, where)
        elif key in specs:
            out[key] = specs[key].coerce(value, where)
        else:
            allowed = ", ".join(["enabled", *specs]) or "enabled"
            raise ValueError(f"{where}: unknown parameter; {name} takes {allowed}")
    for spec in cls.params:
        out.setdefault(spec.name, spec.default)
    return out


def describe_all() -> list[dict[str, Any]]:
    """The catalog as plain data (CLI ``regularizers --json`` and the UI widgets)."""
    return [
        {"name": cls.name, "group": cls.group, "source": cls.source, "summary": cls.summary(),
         "params": [p.describe() for p in cls.params]}
        for cls in all_techniques().values()
    ]
