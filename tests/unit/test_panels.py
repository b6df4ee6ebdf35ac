"""Metric declarations and the panels built from them (engine/metrics_catalog.py, engine/panels.py).

Every metric a real run records must have a declaration — the trainer's catalog, an instrument's
``outputs`` or a technique's generic label — and ``build_panels`` must put each in exactly one
panel, drawn under its declared label. A throwaway instrument file, written into a copy of the
package, brings its own panel with no other edit.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

import engine
from engine.config import validate
from engine.diagnostics import MetricSpec, all_diagnostics
from engine.events import Artifact, Eval, Step
from engine.listing import techniques
from engine.metrics_catalog import INSTRUMENTS, TECHNIQUES, declare
from engine.panels import artifact_figure, build_panels, instrument_fingerprint, panel_caption, panel_figure
from engine.presets import preset_config
from engine.trainer import Trainer

ROOT = Path(__file__).resolve().parents[2]

RUNS = {  # short real runs covering trainer, instrument and technique metrics
    "noisy-labels/elr": ("noisy-labels", "regularized", {}),
    "ssl-moons/pi-model": ("ssl-moons", "regularized", {}),
    "sae-dead-latents/aux-k": ("sae-dead-latents", "regularized", {}),
    "grokking-quadratic/sharpness+grokking": ("grokking-quadratic", None, {
        "sharpness": {"enabled": True, "every": 10, "max_iter": 10},
        "grokking": {"enabled": True, "every": 10}}),
    "edge-of-stability": ("edge-of-stability", None, {}),
}


def short_run(preset: str, variant: str | None, diagnostics: dict, on_demand: tuple[str, ...] = ()
              ) -> tuple[dict[str, tuple[list[int], list[float]]], list[str], list[Artifact]]:
    """(series, enabled techniques, artifacts) of a 30-step run of a preset."""
    raw = preset_config(preset, variant)
    raw["train"] = {**raw.get("train", {}), "steps": 30, "eval_every": 10, "log_every": 5}
    raw["diagnostics"] = {**raw.get("diagnostics", {}), **diagnostics}
    cfg = validate(raw)
    trainer = Trainer(cfg)
    for name in on_demand:
        trainer.commands.measure(name)
    series: dict[str, tuple[list[int], list[float]]] = {}
    artifacts = []
    for event in trainer.events():
        if isinstance(event, Step | Eval):
            for name, value in event.metrics.items():
                steps, values = series.setdefault(name, ([], []))
                steps.append(event.step)
                values.append(value)
        elif isinstance(event, Artifact):
            artifacts.append(event)
    return series, list(techniques(cfg.model_dump())), artifacts


@pytest.fixture(scope="module")
def eos_run() -> tuple[dict, list[str], list[Artifact]]:
    return short_run("edge-of-stability", None, {"top_k": {"k": 3}, "density": {"m": 10}}, ("top_k", "density"))


@pytest.mark.parametrize("run", list(RUNS))
def test_every_metric_a_real_run_records_is_declared(run: str) -> None:
    preset, variant, diagnostics = RUNS[run]
    series, enabled, _ = short_run(preset, variant, diagnostics)
    assert len(series) > 10
    missing = sorted(name for name in series if declare(name, enabled) is None)
    assert not missing, f"{run}: metrics without a declaration: {missing}"
    for name in series:
        found = declare(name, enabled)
        assert found is not None and found.spec.label and found.spec.label != name


def test_on_demand_metrics_are_declared_and_top_k_draws_a_spectrum(eos_run) -> None:
    series, enabled, artifacts = eos_run
    eigs = [n for n in series if declare(n, enabled) and declare(n, enabled).source == "instrument top_k"]
    assert len(eigs) == 3
    assert all(declare(n, enabled) is not None for n in series)
    panel = next(p for p in build_panels(series, enabled) if p.source == "instrument top_k")
    fig = panel_figure(panel, series)
    steps = {s for n in eigs for s in series[n][0]}
    assert len(fig.data) == len(steps)  # one curve per measured step, against the index
    assert list(fig.data[0].x) == [1, 2, 3]
    assert fig.data[0].name.startswith("step ")
    assert fig.layout.xaxis.type == "linear"  # never a date axis around 1900
    assert fig.layout.xaxis.title.text == panel.spec.x_title != ""
    density = next(a for a in artifacts if a.kind == "density")
    drawn = artifact_figure("density", density.arrays, density.step)
    assert drawn is not None and f"step {density.step}" in drawn.layout.title.text


def test_every_recorded_metric_lands_in_exactly_one_panel_with_its_label(eos_run) -> None:
    series, enabled, _ = eos_run
    built = build_panels(series, enabled)
    placed = [name for p in built for name in p.names()]
    assert sorted(placed) == sorted(series)
    for panel in built:
        fig = panel_figure(panel, series)
        assert fig.layout.title.text == panel.spec.title
        assert fig.layout.yaxis.title.text and fig.layout.xaxis.title.text
        trace_names = {t.name for t in fig.data}
        assert not trace_names & set(series), f"{panel.key}: a curve is named by its raw metric name"
    sharp = next(p for p in built if p.source == "instrument sharpness")
    fig = panel_figure(sharp, series)
    reference = [t for t in fig.data if t.line.dash == "dash"]
    threshold = declare("sharpness/threshold").spec.label
    assert [t.name for t in reference] == [threshold]
    assert reference[0].y[-1] == pytest.approx(series["sharpness/threshold"][1][-1])
    assert "penalties excluded" in panel_caption(sharp, series)  # the 0/1 flag is read, not drawn
    assert "penalties" not in {t.name for t in fig.data}


def test_technique_metrics_get_a_label_from_their_technique() -> None:
    found = declare("ssl/mask_rate", ["pi_model"])
    assert found is not None and found.section == TECHNIQUES and found.source == "technique pi_model"
    assert found.spec.label == "mask rate" and "pi_model" in found.spec.meaning
    assert declare("reg/elr").source == "technique elr"  # reg/<name> names its technique
    assert declare("ssl/mask_rate") is None  # no technique on: nobody declares it
    both = ["grad_clip", "grad_noise"]
    assert declare("grad/noise_std", both).source == "technique grad_noise"
    assert declare("grad/clipped_frac", both).source == "technique grad_clip"
    assert declare("grad/norm", both).source == "trainer"


def test_undeclared_metrics_still_get_one_panel_and_logs_only_for_positive_values() -> None:
    series = {"mystery/thing": ([1, 2], [0.5, 0.7]), "train/loss": ([1, 2], [1.0, -0.5])}
    built = build_panels(series)
    assert [p.section for p in built] == ["Training", "Other metrics"]
    other = panel_figure(built[1], series)
    assert other.data[0].name == "thing"
    loss = panel_figure(built[0], series)
    assert loss.layout.yaxis.type == "linear"  # a log axis would hide the negative value
    assert panel_figure(built[0], {"train/loss": ([1, 2], [1.0, 0.5])}).layout.yaxis.type == "log"


def test_indexed_declarations_match_only_integers() -> None:
    spec = MetricSpec("sharpness/eig_{i}", "eigenvalue {i}")
    assert spec.matches("sharpness/eig_12") == "12"
    assert spec.matches("sharpness/eig_") is None and spec.matches("sharpness/eig_x") is None
    assert declare("units/dead_frac_l2").spec.label == "dead units, hidden layer 2"


def test_every_instrument_declares_what_it_emits_on_a_declared_panel() -> None:
    for name, cls in all_diagnostics().items():
        assert cls.outputs or cls.artifacts, f"{name} declares nothing"
        keys = {p.key for p in cls.panels}
        for spec in cls.outputs:
            assert spec.panel in keys, f"{name}: {spec.name} on undeclared panel {spec.panel!r}"
            assert spec.label and spec.meaning and spec.role in ("line", "reference", "flag")


def test_fingerprint_changes_when_an_on_demand_result_arrives() -> None:
    before = instrument_fingerprint("top_k", {}, {})
    after = instrument_fingerprint("top_k", {"sharpness/eig_1": ([5], [2.0])}, {})
    assert before != after
    art = Artifact(7, "density", {"grid": np.zeros(3), "density": np.ones(3)})
    assert instrument_fingerprint("density", {}, {"density": art}) != instrument_fingerprint("density", {}, {})


def test_the_diagnostics_page_names_no_metric() -> None:
    source = (ROOT / "pages" / "diagnostics.py").read_text(encoding="utf-8")
    declared = [s.name.split("{i}")[0] for cls in all_diagnostics().values() for s in cls.outputs]
    from engine.metrics_catalog import TRAINER_METRICS

    declared += [s.name.split("{i}")[0] for s in TRAINER_METRICS if "/" in s.name]
    assert not [name for name in declared if name in source]


INSTRUMENT = '''
"""Count the trainable parameters (a throwaway instrument for the panel test)."""

from engine.diagnostics import Diagnostic, Measurement, MetricSpec, PanelSpec, register


@register
class ParamCount(Diagnostic):
    """Number of trainable parameters."""

    name = "param_count"
    group = "size"
    every = 5
    cost = "free"
    default_on = True
    panels = (PanelSpec("size", "Model size", "parameters"),)
    outputs = (MetricSpec("size/params", "trainable parameters", "parameters", "size", "how many weights train"),)

    def measure(self, ctx, step):
        return Measurement({"size/params": float(sum(p.numel() for p in ctx.named_params().values()))})
'''

PROBE = '''
import json
from engine.config import validate
from engine.events import Eval
from engine.panels import build_panels, panel_figure
from engine.presets import preset_config
from engine.trainer import Trainer

raw = preset_config("noisy-labels")
raw["train"] = {**raw["train"], "steps": 10, "eval_every": 5}
series = {}
for e in Trainer(validate(raw)).events():
    if isinstance(e, Eval):
        for k, v in e.metrics.items():
            series.setdefault(k, ([], []))[0].append(e.step)
            series[k][1].append(v)
panel = next(p for p in build_panels(series) if "size/params" in p.names())
fig = panel_figure(panel, series)
print(json.dumps({"section": panel.section, "title": fig.layout.title.text, "y": fig.layout.yaxis.title.text,
                  "names": [t.name for t in fig.data]}))
'''


def test_a_new_instrument_file_brings_its_panel(tmp_path: Path) -> None:
    root = tmp_path / "src"
    shutil.copytree(Path(engine.__file__).resolve().parent, root / "engine",
                    ignore=shutil.ignore_patterns("__pycache__"))
    (root / "engine" / "diagnostics" / "param_count.py").write_text(textwrap.dedent(INSTRUMENT), encoding="utf-8")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")]),
           "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-c", PROBE], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out == {"section": INSTRUMENTS, "title": "Model size", "y": "parameters",
                   "names": ["trainable parameters"]}
