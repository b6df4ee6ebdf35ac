"""Checks a valid RunConfig must also pass before anything is recorded: the ones that need the data.

The schema (engine/config.py) can only see one value at a time and knows nothing about what a
dataset holds: ``data.n_train=5000`` is a fine integer, but digits has 1,797 images; a
``train.batch_size`` of 5000 is fine for 10,000 examples and silently means "full batch" for
1,200. Both used to surface only after the run was created (or a sweep cell failed mid-sweep),
so the CLI, the Lab's Start button and every sweep cell call ``check_runnable`` first.

Only the dataset is built (generated or bundled, so cheap; the model is never built), on the CPU,
and only its size is remembered, keyed by the data section and seed: a sweep checks many cells
that share one dataset.
"""

from __future__ import annotations

import json
from functools import lru_cache

from engine.config import ConfigError, RunConfig


@lru_cache(maxsize=64)
def _train_size(data_json: str, seed: int) -> int:
    """Training-set size of the dataset ``data_json`` describes (a ValueError names the bad field)."""
    from engine.config import DataConfig
    from engine.data import build_dataset

    return build_dataset(DataConfig.model_validate(json.loads(data_json)), seed).n_train


def train_size(cfg: RunConfig) -> int:
    """How many training examples ``cfg`` yields; ConfigError (one line) when its data cannot be built."""
    key = json.dumps(cfg.data.model_dump(mode="json"), sort_keys=True)
    try:
        return _train_size(key, cfg.seed)
    except ConfigError:
        raise
    except ValueError as err:  # dataset builders name the field: "data.n_train: digits has 1,797 images ..."
        raise ConfigError(str(err).splitlines()[0]) from None


def check_runnable(cfg: RunConfig) -> None:
    """Refuse, with one line naming the field and the fix, a config its dataset cannot run.

    Raises ConfigError; returns None when the run can start. Safe to call from any thread or
    process (it builds the data on the CPU and does not touch torch's global RNG state beyond
    what the seeded builders do with their own generators).
    """
    n_train = train_size(cfg)
    batch = cfg.train.batch_size
    if batch > n_train:
        raise ConfigError(f"train.batch_size: {batch} is larger than the {n_train} training examples; "
                          f"use ≤ {n_train} or 0 for full batch")
