"""The engine's user-facing error type, in a module that imports nothing from the engine.

It sits at the bottom of the import graph so plugins, registries and the config schema can all
raise it without importing each other (``engine.config`` re-exports it for existing callers).
"""

from __future__ import annotations


class ConfigError(ValueError):
    """A bad configuration value. ``str(err)`` is a single line naming the field and the fix."""
