"""The Lab page's configuration as plain data: knobs, overrides against a preset, and the URL form.

A Lab view is (preset, variant, overrides): the preset's variant config plus dotted ``key=value``
assignments — the same strings as ``python -m engine run --preset ID --set KEY=VALUE``, so a shared
URL is a CLI call in another shape. Only values that differ from the preset's variant travel, which
keeps URLs short. Kept out of the page (no Streamlit import) so the format is unit-tested and lives
in one place.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from engine.config import ConfigError, DataConfig, LossConfig, ModelConfig, OptimConfig, parse_value, validate
from engine.presets import get_preset, preset_ids
from engine.regularizers import all_techniques


@dataclass(frozen=True)
class Knob:
    """One widget of the Lab sidebar bound to a dotted config key."""

    key: str
    type: type  # float, int, bool or str
    choices: tuple[str, ...] | None = None
    help: str = ""


def _choices(section: type, name: str = "name") -> tuple[str, ...]:
    return section.choices(name)  # type: ignore[attr-defined]  # registered plugin names (engine.config)


def knobs() -> list[Knob]:
    """The run-building knobs shown above the regularizers (widgets are generated from these)."""
    return [
        Knob("data.name", str, _choices(DataConfig), "dataset (generated or bundled; nothing is downloaded)"),
        Knob("model.name", str, _choices(ModelConfig), "architecture; cnn needs digits, transformer needs modular"),
        Knob("optim.name", str, _choices(OptimConfig), "optimizer"),
        Knob("loss.name", str, _choices(LossConfig), "data loss"),
        Knob("optim.lr", float, help="learning rate (> 0); can also be changed while training"),
        Knob("optim.weight_decay", float, help="decoupled for adamw/lion, coupled otherwise (≥ 0)"),
        Knob("train.steps", int, help="optimizer steps"),
        Knob("seed", int, help="seeds data, init and every technique's own generator"),
    ]


def technique_knobs() -> list[Knob]:
    """``regularizers.<name>.enabled`` and one knob per parameter, from the registry's typed params."""
    out = []
    for name, cls in all_techniques().items():
        out.append(Knob(f"regularizers.{name}.enabled", bool, help=cls.summary()))
        for p in cls.params:
            bounds = "" if p.min is None and p.max is None else f" (range {_num(p.min)} … {_num(p.max)})"
            out.append(Knob(f"regularizers.{name}.{p.name}", p.type, p.choices, f"{p.help}{bounds}".strip()))
    return out


def _num(value: float | None) -> str:
    return "−∞" if value is None else f"{value:g}"


def all_knobs() -> dict[str, Knob]:
    return {k.key: k for k in (*knobs(), *technique_knobs())}


def coerce(knob: Knob, value: Any) -> Any:
    """A value from a URL as the widget's type (ValueError naming the key if it cannot be).

    Only the *type* is checked here: an out-of-range number (lr 0, a negative strength) is kept, so
    the page shows the same refusal next to the widget as when the value is typed in.
    """
    if knob.type is bool:
        if isinstance(value, bool):
            return value
        raise ValueError(f"{knob.key}: expected true or false (got {_shown(value)})")
    if knob.type is str:
        if knob.choices and value not in knob.choices:
            raise ValueError(f"{knob.key}: must be one of {', '.join(knob.choices)} (got {_shown(value)})")
        return str(value)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{knob.key}: expected a number (got {_shown(value)})")
    if knob.type is int:
        if value != int(value):
            raise ValueError(f"{knob.key}: expected an integer (got {_shown(value)})")
        return int(value)
    return float(value)


def get_path(data: Mapping[str, Any], dotted: str, default: Any = None) -> Any:
    node: Any = data
    for part in dotted.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return default
        node = node[part]
    return node


def resolved(data: dict[str, Any]) -> dict[str, Any]:
    """Every value of a config dict with defaults filled (regularizers normalised), as plain data."""
    return validate(data).to_dict()


def technique_value(full: Mapping[str, Any], key: str) -> Any:
    """Value of a ``regularizers.<name>.<param>`` knob in a resolved config (off / default when absent)."""
    _, name, param = key.split(".", 2)
    block = full.get("regularizers", {}).get(name)
    if block is not None:
        return block[param]
    if param == "enabled":
        return False
    return next(p.default for p in all_techniques()[name].params if p.name == param)


def base_value(full: Mapping[str, Any], key: str) -> Any:
    return technique_value(full, key) if key.startswith("regularizers.") else get_path(full, key)


def assignment(key: str, value: Any) -> str:
    """``key=value`` as ``--set`` reads it back (``parse_value``): JSON for numbers/booleans, bare strings."""
    text = value if isinstance(value, str) else json.dumps(value)
    return f"{key}={text}"


def overrides(full: Mapping[str, Any], values: Mapping[str, Any]) -> list[tuple[str, Any]]:
    """(key, value) for the knob values that differ from the resolved base config, in knob order.

    ``values`` maps dotted knob keys to widget values; a technique's parameters count only while it
    is enabled (a hidden widget carries no meaning).
    """
    out = []
    for key, value in values.items():
        if key.startswith("regularizers.") and not key.endswith(".enabled"):
            name = key.split(".")[1]
            if not values.get(f"regularizers.{name}.enabled", False):
                continue
        if value != base_value(full, key):
            out.append((key, value))
    return out


# ---- URL query parameters -----------------------------------------------------------------------

@dataclass
class View:
    """A Lab view decoded from query parameters, plus one message per part that could not be used."""

    preset: str
    variant: str | None
    assignments: list[tuple[str, Any]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def variants(preset_id: str) -> list[str]:
    return list(get_preset(preset_id).get("variants") or {})


def to_query(preset: str, variant: str | None, assignments: Sequence[str]) -> dict[str, str | list[str]]:
    """Query parameters for a view: ``preset``, ``variant`` (when not the baseline) and repeated ``set``."""
    query: dict[str, str | list[str]] = {"preset": preset}
    if variant and variant != "baseline":
        query["variant"] = variant
    if assignments:
        query["set"] = list(assignments)
    return query


MAX_SET_PARAMS = 500  # a view differs from its preset in a handful of values; more is not a view


def _shown(value: Any, limit: int = 80) -> str:
    """``repr`` of a URL part cut to ``limit`` characters, so one absurd parameter is one short line."""
    try:
        shown = repr(value)
    except ValueError:  # an int past Python's digit limit cannot be printed
        return f"a {type(value).__name__} too large to print"
    return shown if len(shown) <= limit else f"{shown[:limit]}… ({len(shown):,} characters)"


def from_query(params: Mapping[str, Sequence[str]], default_preset: str) -> View:
    """Decode ``?preset=…&variant=…&set=key=value&set=…``; never raises — bad parts become problems.

    A URL is input from anyone, so every part is decoded defensively: a value nested too deeply,
    absurdly long or otherwise unusable is dropped with a one-line problem (shown as a warning) and
    the preset loads without it; anything unexpected while decoding yields the default preset and
    one problem rather than an exception in the page.
    """
    try:
        return _decode_query(params, default_preset)
    except Exception as err:  # the promise is "never raises": the page must open whatever the URL says
        message = (str(err).splitlines() or [type(err).__name__])[0][:200]
        return View(default_preset, _default_variant(default_preset), [],
                    [f"URL could not be read ({type(err).__name__}: {message}); showing {default_preset}"])


def _default_variant(preset: str) -> str | None:
    names = variants(preset)
    return "baseline" if "baseline" in names else (names[0] if names else None)


def _last(params: Mapping[str, Sequence[str]], name: str) -> str | None:
    values = params.get(name) or []
    if isinstance(values, str):
        values = [values]
    return str(values[-1]) if values else None


def _decode_query(params: Mapping[str, Sequence[str]], default_preset: str) -> View:
    problems: list[str] = []
    ids = preset_ids()
    preset = _last(params, "preset") or default_preset
    if preset not in ids:
        problems.append(f"URL preset={_shown(preset)} is not a preset (choose one of {', '.join(ids)}); "
                        f"showing {default_preset}")
        preset = default_preset
    names = variants(preset)
    variant = _last(params, "variant") or ("baseline" if "baseline" in names else None)
    if names and variant not in names:
        problems.append(f"URL variant={_shown(str(variant))}: preset {preset} has {', '.join(names)}; "
                        "showing the baseline")
        variant = names[0]
    knob_table = all_knobs()
    assignments: list[tuple[str, Any]] = []
    items = params.get("set") or []
    if isinstance(items, str):
        items = [items]
    if len(items) > MAX_SET_PARAMS:
        problems.append(f"URL has {len(items):,} set= parameters; only the first {MAX_SET_PARAMS} were read")
        items = list(items)[:MAX_SET_PARAMS]
    for item in items:
        item = str(item)
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or len(key) > 200 or not re.fullmatch(r"[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*", key):
            problems.append(f"URL set={_shown(item)} ignored: expected KEY=VALUE, e.g. set=optim.lr=0.01")
            continue
        try:
            value = parse_value(raw)
            knob = knob_table.get(key)
            if knob is not None:
                value = coerce(knob, value)
            else:
                _check_key(preset, variant, key, value)
        except (ValueError, ConfigError) as err:
            problems.append(f"URL set={_shown(item)} ignored: {err}")
            continue
        except RecursionError:  # last resort: parse_value caps nesting, so this should not happen
            problems.append(f"URL set={_shown(item)} ignored: nested too deeply")
            continue
        assignments.append((key, value))
    return View(preset, variant, assignments, problems)


def _check_key(preset: str, variant: str | None, key: str, value: Any) -> None:
    """Refuse a key the config does not have; a known key with a bad value is kept (refused on the page)."""
    from engine.config import apply_overrides
    from engine.presets import preset_config

    try:
        validate(apply_overrides(preset_config(preset, variant), [assignment(key, value)]))
    except ConfigError as err:
        text = str(err)
        if text.startswith("unknown config key") or re.search(r"^[\w.]+: unknown\b", text):
            raise


# ---- config errors next to their widget -----------------------------------------------------------

_FIELD = re.compile(r"^([A-Za-z_][\w]*(?:\.[A-Za-z_][\w]*)*): ")


def error_field(message: str) -> str | None:
    """The dotted field a one-line ConfigError starts with (``optim.lr: …`` → ``optim.lr``)."""
    match = _FIELD.match(message)
    return match.group(1) if match else None


def slot_for(message: str, slots: Iterable[str]) -> str | None:
    """The widget slot to show an error under: the named field, else its nearest named parent."""
    name = error_field(message)
    available = set(slots)
    while name:
        if name in available:
            return name
        name = name.rpartition(".")[0]
    return None
