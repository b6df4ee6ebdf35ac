"""Phenomena presets: one YAML file per phenomenon; the ids are part of the CLI contract (README).

A preset is plain data: a title, a one-line description, the paper, a full RunConfig under
``config`` (the baseline) and named ``variants`` — dotted ``--set`` overrides such as the toggle
that makes the difference. ``python -m engine run --preset ID --set KEY=VALUE`` applies user
overrides on top, exactly like for a config file. Files are read with ``yaml.safe_load``.
"""

from __future__ import annotations

from functools import cache
from importlib import resources
from typing import Any

import yaml

from engine.config import ConfigError, apply_overrides


@cache
def _all() -> dict[str, dict[str, Any]]:
    presets: dict[str, dict[str, Any]] = {}
    for entry in sorted(resources.files(__name__).iterdir(), key=lambda e: e.name):
        if entry.name.endswith(".yaml"):
            data = yaml.safe_load(entry.read_text(encoding="utf-8"))
            presets[data["id"]] = data
    return presets


def preset_ids() -> list[str]:
    return list(_all())


def list_presets() -> list[dict[str, str]]:
    return [{"id": p["id"], "title": p["title"], "description": p["description"]} for p in _all().values()]


def get_preset(preset_id: str) -> dict[str, Any]:
    presets = _all()
    if preset_id not in presets:
        raise ConfigError(f"--preset {preset_id!r}: unknown preset; choose one of {', '.join(presets)}")
    return presets[preset_id]


def preset_config(preset_id: str, variant: str | None = None) -> dict[str, Any]:
    """The preset's config as a plain dict (baseline, or with a named variant's overrides)."""
    preset = get_preset(preset_id)
    data = dict(preset["config"], preset=preset_id)
    if variant is None:
        return data
    variants = preset.get("variants", {})
    if variant not in variants:
        raise ConfigError(f"--variant {variant!r}: preset {preset_id} has {', '.join(variants) or 'no variants'}")
    return apply_overrides(data, [f"{k}={_text(v)}" for k, v in variants[variant].items()])


def _text(value: Any) -> str:
    import json

    return value if isinstance(value, str) else json.dumps(value)
