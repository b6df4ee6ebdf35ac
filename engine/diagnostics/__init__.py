"""Registry of diagnostics (instruments). Adding one = adding a module with a ``@register`` class."""

from __future__ import annotations

from typing import Any

from engine.diagnostics.base import (
    REGISTRY,
    Diagnostic,
    DiagnosticContext,
    Measurement,
    preserved_state,
    register,
)
from engine.regularizers.base import Param

__all__ = ["REGISTRY", "Diagnostic", "DiagnosticContext", "Measurement", "all_diagnostics", "describe_all",
           "get", "normalize_diagnostic_params", "preserved_state", "register"]

def get(name: str) -> type[Diagnostic]:
    return REGISTRY.lookup(name)


def all_diagnostics() -> dict[str, type[Diagnostic]]:
    return REGISTRY.sorted_items()


def normalize_diagnostic_params(name: str, params: Any) -> dict[str, Any]:
    """Validate one ``diagnostics.<name>`` block: ``enabled``, ``every`` (0 = on demand) and params."""
    cls = get(name)
    if params is None or isinstance(params, bool):
        params = {"enabled": params is not False}
    if not isinstance(params, dict):
        raise ValueError(f"diagnostics.{name}: expected a mapping of parameters (got {params!r})")
    specs = {p.name: p for p in cls.params}
    specs["enabled"] = Param("enabled", bool, True)
    specs["every"] = Param("every", int, cls.every, 0, 10_000_000)
    out: dict[str, Any] = {"enabled": True, "every": cls.every}
    for key, value in params.items():
        if key not in specs:
            raise ValueError(f"diagnostics.{name}.{key}: unknown parameter; {name} takes {', '.join(specs)}")
        out[key] = specs[key].coerce(value, f"diagnostics.{name}.{key}")
    for spec in cls.params:
        out.setdefault(spec.name, spec.default)
    return out


def describe_all() -> list[dict[str, Any]]:
    return [{"name": c.name, "group": c.group, "every": c.every, "cost": c.cost, "needs": sorted(c.needs),
             "default_on": c.default_on, "summary": c.summary(), "params": [p.describe() for p in c.params]}
            for c in all_diagnostics().values()]
