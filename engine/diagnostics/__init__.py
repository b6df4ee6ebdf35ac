"""Registry of diagnostics (instruments). Adding one = adding a module with a ``@register`` class."""

from __future__ import annotations

import importlib
import pkgutil
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

_loaded = False


def _load_all() -> None:
    global _loaded
    if not _loaded:
        for info in pkgutil.iter_modules(__path__):
            if info.name != "base":
                importlib.import_module(f"{__name__}.{info.name}")
        _loaded = True


def get(name: str) -> type[Diagnostic]:
    _load_all()
    if name not in REGISTRY:
        raise ValueError(f"diagnostics.{name}: unknown instrument; choose one of {', '.join(sorted(REGISTRY))}")
    return REGISTRY[name]


def all_diagnostics() -> dict[str, type[Diagnostic]]:
    _load_all()
    return dict(sorted(REGISTRY.items()))


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
