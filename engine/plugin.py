"""The one plugin base shared by every family: datasets, models, optimizers, schedules, losses,
techniques, diagnostics and sweep backends.

A plugin is a named class (or a builder wrapped in one) that declares its own typed, ranged,
documented parameters as ``Param`` records. The same records drive config validation, the CLI
listings and the UI widgets, so a new plugin gets all three by declaring its parameters once.
This module sits at the bottom of the import graph: it imports nothing from the engine, so any
plugin module can import it without creating an import cycle.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar


@dataclass(frozen=True)
class Param:
    """One typed, ranged parameter of a technique (drives validation, CLI listing and UI widgets)."""

    name: str
    type: type  # float, int, bool or str
    default: Any
    min: float | None = None
    max: float | None = None
    live: bool = False
    log: bool = False  # UI slider on a log scale
    choices: tuple[str, ...] | None = None
    help: str = ""
    min_open: bool = False  # the bound itself is excluded (a rate in (0, 1), a base p > 1)
    max_open: bool = False

    def coerce(self, value: Any, where: str) -> Any:
        """Validate one value; raise ValueError('regularizers.x.p: …') naming the fix."""
        if self.type is bool:
            if isinstance(value, bool):
                return value
            if isinstance(value, str) and value.lower() in {"true", "false", "1", "0", "yes", "no", "on", "off"}:
                return value.lower() in {"true", "1", "yes", "on"}
            if isinstance(value, int) and value in (0, 1):
                return bool(value)
            raise ValueError(f"{where}: expected true or false (got {value!r})")
        if self.type is str:
            if not isinstance(value, str) or (self.choices and value not in self.choices):
                raise ValueError(f"{where}: must be one of {', '.join(self.choices or ())} (got {value!r})")
            return value
        if isinstance(value, bool) or not isinstance(value, int | float | str):
            raise ValueError(f"{where}: expected a {self.type.__name__} (got {value!r})")
        try:
            number = float(value)
        except ValueError:
            raise ValueError(f"{where}: expected a {self.type.__name__} (got {value!r})") from None
        if not math.isfinite(number):
            raise ValueError(f"{where}: must be finite (got {value!r})")
        if self.type is int:
            if number != int(number):
                raise ValueError(f"{where}: expected an integer (got {value!r})")
            number = int(number)
        if self.min is not None and number < self.min:
            raise ValueError(f"{where}: must be ≥ {self.min} (got {value!r})")
        if self.max is not None and number > self.max:
            raise ValueError(f"{where}: must be ≤ {self.max} (got {value!r})")
        if self.min_open and number == self.min:
            raise ValueError(f"{where}: must be > {self.min} (got {value!r})")
        if self.max_open and number == self.max:
            raise ValueError(f"{where}: must be < {self.max} (got {value!r})")
        return number

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name, "type": self.type.__name__, "default": self.default, "min": self.min,
            "max": self.max, "live": self.live, "log": self.log,
            "choices": list(self.choices) if self.choices else None, "help": self.help,
        }


def normalize_params(where: str, name: str, specs: tuple[Param, ...], params: Any, *,
                     lead: tuple[str, ...] = ()) -> dict[str, Any]:
    """Validate one ``<where>.<name>`` block of settings against ``specs``; fill every default.

    ``None``/``true``/``false`` is shorthand for ``{"enabled": …}`` with defaults, so ``specs`` should
    include an ``enabled`` Param wherever that shorthand is meant to work. ``lead`` names the
    settings placed first in the result (e.g. ``enabled``), which keeps stored config dumps in the
    order earlier versions wrote them. The unknown-key message lists ``specs`` in the given order.
    """
    if params is None or isinstance(params, bool):
        params = {"enabled": params is not False}
    if not isinstance(params, dict):
        raise ValueError(f"{where}.{name}: expected a mapping of parameters (got {params!r})")
    by_name = {p.name: p for p in specs}
    out: dict[str, Any] = {key: by_name[key].default for key in lead}
    for key, value in params.items():
        if key not in by_name:
            raise ValueError(f"{where}.{name}.{key}: unknown parameter; {name} takes {', '.join(by_name)}")
        out[key] = by_name[key].coerce(value, f"{where}.{name}.{key}")
    for spec in specs:
        out.setdefault(spec.name, spec.default)
    return out


def describe_params(specs: tuple[Param, ...]) -> list[dict[str, Any]]:
    """The parameters as plain data, in declaration order (CLI ``--json`` listings, UI widgets)."""
    return [p.describe() for p in specs]


class Plugin:
    """Base of every plugin class: a registered name, declared parameters and a one-line summary.

    Families add their own class attributes (a technique's hooks, a dataset's task, a model's
    traits); what is common — naming, parameter lookup and printable descriptions — lives here
    so it is written once.
    """

    name: ClassVar[str]
    params: ClassVar[tuple[Param, ...]] = ()

    @classmethod
    def summary(cls) -> str:
        """First line of the docstring: the one-line help the UI shows."""
        return (cls.__doc__ or cls.name).strip().splitlines()[0]

    @classmethod
    def param(cls, name: str) -> Param:
        for p in cls.params:
            if p.name == name:
                return p
        raise KeyError(name)

    @classmethod
    def describe(cls) -> dict[str, Any]:
        """Name, summary and parameters as plain data."""
        return {"name": cls.name, "summary": cls.summary(), "params": describe_params(cls.params)}

    @classmethod
    def check_config(cls, cfg: Any) -> None:
        """Refuse a RunConfig this plugin cannot run with: raise ValueError naming the key.

        Called during config validation, so the CLI and the UI refuse before anything is built.
        """
