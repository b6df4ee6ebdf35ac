"""Adding a dataset, a model, a technique and a diagnostic is adding one file each.

The test copies the ``engine`` package to a temporary directory, writes one new module per family
there — exactly as a user would, with the public base classes and decorators only — and runs
the CLI with that copy first on ``PYTHONPATH``. No other file is edited: the registries find the
modules, config validation accepts their names and keys, compatibility is decided from their
declarations, and the run reports what each of them did.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import engine

DATASET = '''
"""Two classes split by a line of configurable slope through random points in ``dim`` dimensions."""

import numpy as np

from engine.data import Dataset, register_dataset
from engine.data._common import to_dataset
from engine.plugin import Param


@register_dataset("tilted_plane", inputs="vector", classes=2,
                  params=(Param("slope", float, 1.0, -10, 10, help="slope of the separating plane"),
                          Param("width", int, 6, 2, 64, help="input dimension")))
def tilted_plane(cfg, seed):
    """Points labelled by the side of a tilted plane."""
    rng = np.random.default_rng([seed, 7])
    x = rng.standard_normal((cfg.n_train + cfg.n_test, cfg.width))
    y = (x[:, 1] > cfg.slope * x[:, 0]).astype(np.int64)
    return to_dataset("tilted_plane", x[: cfg.n_train], y[: cfg.n_train], x[cfg.n_train :], y[cfg.n_train :], 2)
'''

MODEL = '''
"""A one-hidden-layer tanh network (the smallest thing with features and a head)."""

from torch import nn

from engine.models import LabModel, ModelFamily, register_model


class TinyNet(LabModel):
    def __init__(self, d_in, d_out, width):
        super().__init__()
        self.hidden = nn.Sequential(nn.Linear(d_in, width), nn.Tanh())
        self.out = nn.Linear(width, d_out)

    def features(self, x):
        return self.hidden(x.flatten(1))

    def head(self, h):
        return self.out(h)


@register_model
class TinyNetModel(ModelFamily):
    """One tanh hidden layer, linear head."""

    name = "tiny_net"
    tasks = frozenset({"classification"})
    inputs = frozenset({"vector"})
    traits = frozenset({"first_layer_linear"})

    @classmethod
    def build(cls, cfg, dataset):
        return TinyNet(dataset.input_shape[0], dataset.output_dim, cfg.width)
'''

TECHNIQUE = '''
"""Penalise the squared mean logit (a throwaway technique for the plugin test)."""

from engine.regularizers import Param, Regularizer, register


@register
class MeanLogitPenalty(Regularizer):
    """Add λ·(mean logit)² to the loss."""

    name = "mean_logit_penalty"
    group = "norm"
    source = "plugin test"
    params = (Param("lam", float, 0.1, 0.0, 10.0, live=True, help="strength λ"),)

    def extra_loss(self, ctx):
        return self["lam"] * ctx.logits.mean() ** 2
'''

DIAGNOSTIC = '''
"""Count the model's trainable parameters (a throwaway instrument for the plugin test)."""

from engine.diagnostics import Diagnostic, Measurement, register


@register
class ParamCount(Diagnostic):
    """Number of trainable parameter entries."""

    name = "param_count"
    group = "weights"
    every = 5
    cost = "free"

    def measure(self, ctx, step):
        total = sum(p.numel() for p in ctx.named_params().values())
        return Measurement(metrics={"plugin/param_count": float(total)})
'''


def test_one_new_file_per_family_runs_through_the_cli(tmp_path: Path) -> None:
    root = tmp_path / "pkg"
    shutil.copytree(Path(engine.__file__).resolve().parent, root / "engine",
                    ignore=shutil.ignore_patterns("__pycache__"))
    for rel, text in {"data/tilted_plane.py": DATASET, "models/tiny_net.py": MODEL,
                      "regularizers/mean_logit_penalty.py": TECHNIQUE,
                      "diagnostics/param_count.py": DIAGNOSTIC}.items():
        (root / "engine" / rel).write_text(textwrap.dedent(text).lstrip(), encoding="utf-8")
    config = {
        "seed": 1,
        "data": {"name": "tilted_plane", "n_train": 64, "n_test": 32, "slope": 0.5, "width": 5},
        "model": {"name": "tiny_net", "width": 8},
        "optim": {"name": "sgd", "lr": 0.1},
        "train": {"steps": 10, "eval_every": 5},
        "regularizers": {"mean_logit_penalty": {"lam": 0.5}},
        "diagnostics": {"param_count": {"every": 5}},
    }
    (tmp_path / "run.json").write_text(json.dumps(config), encoding="utf-8")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")]),
           "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "engine", "run", "--config", str(tmp_path / "run.json"), "--json",
         "--store", str(tmp_path / "runs.db")],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300, check=False,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["status"] == "completed" and result["steps"] == 10
    final = result["final"]
    assert final["plugin/param_count"] == 5 * 8 + 8 + 8 * 2 + 2  # tiny_net on 5 inputs, 2 classes
    assert final["reg/mean_logit_penalty"] >= 0.0  # the technique's term was logged
    # the copy on PYTHONPATH was used: the installed package knows none of these names
    probe = subprocess.run([sys.executable, "-m", "engine", "regularizers", "--json"], cwd=tmp_path, env=env,
                           capture_output=True, text=True, timeout=120, check=True)
    assert "mean_logit_penalty" in {t["name"] for t in json.loads(probe.stdout)}
