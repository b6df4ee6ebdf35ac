"""One registry type for every plugin family (datasets, models, optimizers, schedules, losses,
regularizers, diagnostics, sweep backends).

A registry is a dict from name to plugin that fills itself lazily by importing every module of
its package the first time it is read — so adding a technique or a dataset is adding a file. A
registry may also belong to a single module (optimizers, losses): then loading imports that module.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class Registry(dict[str, T], Generic[T]):
    """``name → plugin``; ``load()`` imports the package's modules (except ``base``) once."""

    def __init__(self, package: str, key: str, default: str | None = None) -> None:
        super().__init__()
        self.package, self.key = package, key  # key: config prefix in error messages, e.g. "data.name"
        self.default = default  # the plugin a config gets when it names none (declared by the family)
        self._loaded = False

    def add(self, name: str, item: T) -> T:
        if name in self:
            raise ValueError(f"duplicate {self.key} {name!r}")
        self[name] = item
        return item

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator registering a builder under ``name``."""
        return lambda item: self.add(name, item)

    def load(self) -> Registry[T]:
        if not self._loaded:
            module = importlib.import_module(self.package)
            for info in pkgutil.iter_modules(getattr(module, "__path__", ())):
                if info.name != "base":
                    importlib.import_module(f"{self.package}.{info.name}")
            self._loaded = True
        return self

    def names(self) -> list[str]:
        return sorted(self.load())

    def unknown(self, name: object) -> str:
        """The one-line refusal of a name that is not registered: ``data.name: unknown; choose one of …``."""
        return f"{self.key}: unknown {name!r}; choose one of {', '.join(self.names())}"

    def lookup(self, name: str) -> T:
        """The plugin called ``name``, or ValueError('<key>: unknown …; choose one of …')."""
        self.load()
        if name not in self:
            raise ValueError(f"{self.key}.{name}: unknown; choose one of {', '.join(sorted(self))}")
        return self[name]

    def sorted_items(self) -> dict[str, T]:
        return dict(sorted(self.load().items()))
