"""What a sweep runs: axes over dotted config keys, seeds, and the cells they expand to.

A spec is plain data (stored as JSON in the ``sweeps`` table) so a sweep can be resumed or drawn
later; expanding it is deterministic. Every cell is validated when the spec is expanded, before
anything is launched: a typo in the last grid value must not surface an hour into a sweep.

Grid syntax (``--grid KEY=v1,v2``): values parse like ``--set`` values (JSON when they parse,
else strings), so ``optim.lr=1e-3,1e-2``, ``optim.name=adam,sgd`` and
``optim.betas=[0.9,0.98],[0.8,0.9]`` all work. Random search (``random > 0``) samples points
instead of taking the product; there an axis may also be a range ``lo..hi`` (uniform; integers
when both ends are) or ``log:lo..hi`` (log-uniform).
"""

from __future__ import annotations

import itertools
import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from engine import safe_input
from engine.config import ConfigError, apply_overrides, load_file, parse_value, validate

_RANGE = re.compile(r"(?P<log>log:)?(?P<lo>[^.][^,]*?)\.\.(?P<hi>[^,]+)")


@dataclass(frozen=True)
class Axis:
    """One swept key: either listed ``values`` or, for random search only, a range."""

    key: str
    values: tuple[Any, ...] = ()
    low: float | None = None
    high: float | None = None
    log: bool = False

    @property
    def is_range(self) -> bool:
        return self.low is not None

    def sample(self, rng: np.random.Generator) -> Any:
        if not self.is_range:
            return self.values[int(rng.integers(len(self.values)))]
        lo, hi = float(self.low), float(self.high)  # type: ignore[arg-type]
        x = math.exp(rng.uniform(math.log(lo), math.log(hi))) if self.log else rng.uniform(lo, hi)
        if isinstance(self.low, int) and isinstance(self.high, int):
            return round(x)
        return float(f"{x:.4g}")  # readable axis labels; 4 digits is finer than any sweep resolves

    def to_dict(self) -> dict[str, Any]:
        if self.is_range:
            return {"key": self.key, "low": self.low, "high": self.high, "log": self.log}
        return {"key": self.key, "values": list(self.values)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Axis:
        if "low" in data:
            return cls(data["key"], low=data["low"], high=data["high"], log=bool(data.get("log")))
        return cls(data["key"], tuple(data["values"]))


@dataclass(frozen=True)
class Cell:
    """One run of the sweep: a grid point (``params``) and a seed, with its validated config."""

    index: int
    params: dict[str, Any]
    seed: int
    config: dict[str, Any] = field(repr=False)

    @property
    def label(self) -> str:
        return " ".join(f"{k}={format_value(v)}" for k, v in self.params.items()) + f" seed={self.seed}"


def format_value(value: Any) -> str:
    """Short, stable text for an axis value (tick labels, run names)."""
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, str):
        return value
    return json.dumps(value)


def _parse_values(key: str, raw: str) -> Axis:
    raw = raw.strip()
    if not raw:
        raise ConfigError(f"--grid {key}=: give at least one value, e.g. --grid {key}=v1,v2")
    if m := _RANGE.fullmatch(raw):
        lo, hi = parse_value(m["lo"]), parse_value(m["hi"])
        if not all(isinstance(v, int | float) and not isinstance(v, bool) for v in (lo, hi)) or not lo < hi:
            raise ConfigError(f"--grid {key}={raw}: a range needs numbers lo < hi, e.g. {key}=1e-4..1e-1")
        if m["log"] and lo <= 0:
            raise ConfigError(f"--grid {key}={raw}: a log range needs lo > 0")
        return Axis(key, low=lo, high=hi, log=bool(m["log"]))
    try:  # capped like --set values: nesting, duplicate keys, size (engine/safe_input.py)
        values = safe_input.loads_json(f"[{raw}]")
    except safe_input.InputError as err:
        raise ConfigError(f"--grid {key}: {err}") from None
    except ValueError:  # not JSON as a whole (bare strings), or an integer past Python's digit limit
        values = [parse_value(v.strip()) for v in raw.split(",")]
    if any(v == "" for v in values):
        raise ConfigError(f"--grid {key}={raw}: empty value; separate values with single commas")
    if len({json.dumps(v, sort_keys=True) for v in values}) != len(values):
        raise ConfigError(f"--grid {key}={raw}: a value is repeated; list each value once")
    return Axis(key, tuple(values))


def parse_grid(items: Sequence[str]) -> list[Axis]:
    """``["model.width=32,64", "data.noise=0,0.2"]`` → axes, in the order given (first = x)."""
    axes: list[Axis] = []
    for item in items:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"--grid {item!r}: expected KEY=v1,v2, e.g. --grid optim.lr=1e-3,1e-2")
        axes.append(_parse_values(key, raw))
    return check_axes(axes)


def axes_from_mapping(grid: Mapping[str, Any]) -> list[Axis]:
    """A preset's ``sweep.grid`` block (key → list of values) as axes."""
    axes = []
    for key, values in grid.items():
        vals = values if isinstance(values, list) else [values]
        axes.append(_parse_values(key, ",".join(json.dumps(v) for v in vals)))
    return check_axes(axes)


def check_axes(axes: list[Axis]) -> list[Axis]:
    keys = [a.key for a in axes]
    if dup := next((k for k in keys if keys.count(k) > 1), None):
        raise ConfigError(f"--grid {dup}: given twice; put all its values in one --grid {dup}=v1,v2")
    if "seed" in keys:
        raise ConfigError("--grid seed: seeds are not an axis (they are averaged over); use --seeds N")
    if "name" in keys or "preset" in keys:
        raise ConfigError("--grid name/preset: labels, not settings; sweep a config key such as optim.lr")
    return axes


@dataclass
class SweepSpec:
    """Base config × axes × seeds (or ``random`` sampled points × seeds)."""

    base: dict[str, Any]
    axes: list[Axis]
    seeds: list[int]
    preset: str | None = None
    name: str | None = None
    random: int = 0
    random_seed: int = 0

    def __post_init__(self) -> None:
        if not self.axes:
            raise ConfigError("--grid: give at least one KEY=v1,v2 axis")
        if not self.seeds:
            raise ConfigError("--seeds: must be at least 1")
        if self.random < 0:
            raise ConfigError("--random: must be ≥ 0 (0 = the full grid)")
        if not self.random and (ranged := next((a for a in self.axes if a.is_range), None)):
            raise ConfigError(f"--grid {ranged.key}: a lo..hi range needs random search (--random N); "
                              "list values for a grid")

    def points(self) -> list[dict[str, Any]]:
        """Grid points (product, first axis outermost) or ``random`` distinct sampled points."""
        if not self.random:
            return [dict(zip([a.key for a in self.axes], combo, strict=True))
                    for combo in itertools.product(*(a.values for a in self.axes))]
        rng = np.random.default_rng(self.random_seed)
        seen: dict[str, dict[str, Any]] = {}
        for _ in range(self.random * 50):  # finite grids may have fewer distinct points than asked
            point = {a.key: a.sample(rng) for a in self.axes}
            seen.setdefault(json.dumps(point, sort_keys=True), point)
            if len(seen) == self.random:
                break
        return list(seen.values())

    def cells(self, runnable: bool = True) -> list[Cell]:
        """Every (point, seed) as a validated config; raises ConfigError naming the bad cell.

        ``runnable`` also runs the checks a single run gets before it is recorded
        (``engine.preflight.check_runnable``: the dataset is built, so ``data.n_train=5000`` on
        digits is refused here, not as failed cells mid-sweep). Only a view of a sweep already
        recorded passes False: it needs the expansion, not a verdict, and must still draw a sweep
        whose cells were refused later.
        """
        from engine.preflight import check_runnable

        cells = []
        for point in self.points():
            for seed in self.seeds:
                cell_text = " ".join(f"{k}={format_value(v)}" for k, v in point.items())
                data = apply_overrides(self.base, [f"{k}={json.dumps(v)}" for k, v in point.items()])
                data["seed"] = seed
                data["name"] = f"{self.name or self.preset or 'sweep'} · {cell_text} · seed {seed}"
                if self.preset:
                    data["preset"] = self.preset
                try:
                    cfg = validate(data)
                    if runnable:
                        check_runnable(cfg)
                except ConfigError as err:
                    raise ConfigError(f"sweep cell {cell_text} (seed {seed}): {err}") from None
                cells.append(Cell(len(cells), point, seed, cfg.to_dict()))
        return cells

    def to_dict(self) -> dict[str, Any]:
        return {"base": self.base, "axes": [a.to_dict() for a in self.axes], "seeds": self.seeds,
                "preset": self.preset, "name": self.name, "random": self.random, "random_seed": self.random_seed}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SweepSpec:
        return cls(base=dict(data["base"]), axes=[Axis.from_dict(a) for a in data["axes"]],
                   seeds=[int(s) for s in data["seeds"]], preset=data.get("preset"), name=data.get("name"),
                   random=int(data.get("random", 0)), random_seed=int(data.get("random_seed", 0)))


def preset_sweep(preset_id: str) -> tuple[list[Axis], int] | None:
    """A preset's default sweep (``sweep: {grid: {key: [values]}, seeds: N}``), or None."""
    from engine.presets import get_preset

    block = get_preset(preset_id).get("sweep")
    if not block:
        return None
    return axes_from_mapping(block.get("grid", {})), int(block.get("seeds", 1))


def build_spec(preset: str | None = None, config: str | Mapping[str, Any] | None = None, grid: Sequence[str] = (),
               seeds: int | None = None, overrides: Sequence[str] = (), variant: str | None = None,
               random: int = 0, random_seed: int = 0, name: str | None = None) -> SweepSpec:
    """The CLI's and the page's way in: preset or config (a file path or a dict), ``--set`` overrides,
    ``--grid`` axes (default: the preset's own sweep block), ``--seeds N`` (default: the preset's or 1).

    Seeds are the base config's seed + 0, 1, …, N−1. Raises ConfigError (one line) on bad input;
    call ``.cells()`` on the result to validate every cell.
    """
    from engine.presets import preset_config

    if preset is not None:
        base = preset_config(preset, variant)
    elif variant:
        raise ConfigError("--variant needs --preset")
    elif isinstance(config, Mapping):
        base = dict(config)
    else:
        base = load_file(config or "")
    base = apply_overrides(base, list(overrides))
    default = preset_sweep(preset) if preset and not grid else None
    axes = parse_grid(grid) if grid else (default[0] if default else [])
    if not axes:
        where = f"preset {preset} has no default sweep block" if preset else "a config file has no default grid"
        raise ConfigError(f"--grid: give at least one KEY=v1,v2 axis ({where})")
    n_seeds = seeds if seeds is not None else (default[1] if default else 1)
    if n_seeds < 1:
        raise ConfigError(f"--seeds {n_seeds}: must be at least 1")
    first = base.get("seed", 0)
    if not isinstance(first, int) or isinstance(first, bool):
        raise ConfigError(f"seed: must be an integer (got {first!r})")
    return SweepSpec(base=base, axes=axes, seeds=[first + i for i in range(n_seeds)], preset=preset,
                     name=name, random=random, random_seed=random_seed)
