"""Registry of diagnostics (instruments). Adding one = adding a module with a ``@register`` class."""

from __future__ import annotations

from typing import Any

from engine.diagnostics.base import (
    REGISTRY,
    ArtifactSpec,
    Diagnostic,
    DiagnosticContext,
    Measurement,
    MetricSpec,
    PanelSpec,
    preserved_state,
    register,
)
from engine.plugin import Param, normalize_params

__all__ = ["REGISTRY", "ArtifactSpec", "Diagnostic", "DiagnosticContext", "Measurement", "MetricSpec", "PanelSpec",
           "all_diagnostics", "describe_all", "get", "normalize_diagnostic_params", "preserved_state", "register"]

def get(name: str) -> type[Diagnostic]:
    return REGISTRY.lookup(name)


def all_diagnostics() -> dict[str, type[Diagnostic]]:
    return REGISTRY.sorted_items()


def normalize_diagnostic_params(name: str, params: Any) -> dict[str, Any]:
    """Validate one ``diagnostics.<name>`` block: ``enabled``, ``every`` (0 = on demand) and params."""
    cls = get(name)
    specs = (*cls.params, Param("enabled", bool, True), Param("every", int, cls.every, 0, 10_000_000))
    return normalize_params("diagnostics", name, specs, params, lead=("enabled", "every"))


def describe_all() -> list[dict[str, Any]]:
    """The catalog as plain data (the UI's instrument panel)."""
    return [cls.describe() for cls in all_diagnostics().values()]
