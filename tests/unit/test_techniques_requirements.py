"""Techniques declare what they need and what they clash with; nothing names another plugin.

Covers ``engine/regularizers/requirements.py`` (exclusive groups, ``marks``/``refuses``,
``requires`` checked from the run's traits), hook detection by override, the ``metrics()`` hook
(log steps only) and the two questions instruments ask the run instead of naming techniques:
``hessian_shift`` (coupled penalties in the curvature instruments) and the installed output
function (calibration).
"""

from __future__ import annotations

import ast
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import Tensor

from engine.config import ConfigError, validate
from engine.diagnostics import get as get_diagnostic
from engine.diagnostics.dynamics import calibration
from engine.events import Step
from engine.regularizers import REGISTRY, Regularizer, get
from engine.regularizers.base import Need, register
from engine.regularizers.stablemax import log_stablemax
from engine.trainer import Trainer
from engine.traits import RunTraits

ENGINE = Path(__file__).resolve().parents[2] / "engine"
QUIET = {name: {"enabled": False} for name in ("rank", "collapse", "calibration", "units", "sae")}


def moons(steps: int = 20, **extra: Any) -> dict[str, Any]:
    return {"seed": 0, "data": {"name": "moons", "n_train": 60, "n_test": 20},
            "model": {"name": "mlp", "width": 8, "depth": 1}, "train": {"steps": steps, "eval_every": steps},
            "diagnostics": QUIET} | extra


@pytest.fixture
def doubles() -> Iterator[dict[str, type[Regularizer]]]:
    """Throwaway techniques registered for one test: two of a group, a mark and its refuser, a need."""

    class GroupA(Regularizer):
        """Test double: member of an exclusive group."""

        name, group, source, exclusive = "zz_group_a", "test", "test", "zz_group"

    class GroupB(Regularizer):
        """Test double: the other member."""

        name, group, source, exclusive = "zz_group_b", "test", "test", "zz_group"

    class Marked(Regularizer):
        """Test double: has a property."""

        name, group, source, marks = "zz_marked", "test", "test", frozenset({"zz_mark"})

    class Refuser(Regularizer):
        """Test double: cannot run with that property."""

        name, group, source, refuses = "zz_refuser", "test", "test", frozenset({"zz_mark"})

    class Needy(Regularizer):
        """Test double: needs a model trait no model declares."""

        name, group, source = "zz_needy", "test", "test"
        requires = (Need(why="it reads the zz widget", fix="use a model with one", model_traits=frozenset({"zz"})),)

    class Counting(Regularizer):
        """Test double: counts how often the trainer reads its metrics."""

        name, group, source = "zz_counting", "test", "test"
        calls = 0

        def metrics(self) -> dict[str, float]:
            type(self).calls += 1
            return {"zz/calls": float(type(self).calls)}

    classes = [GroupA, GroupB, Marked, Refuser, Needy, Counting]
    for cls in classes:
        register(cls)
    try:
        yield {cls.name: cls for cls in classes}
    finally:
        for cls in classes:
            REGISTRY.pop(cls.name, None)


# ---- nothing names another plugin -------------------------------------------------------------


def _name_comparisons(path: Path) -> list[str]:
    """``<x>.model.name`` / ``<x>.data.name`` / ``<x>.optim.name`` / ``data.name`` compared with anything."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Compare):
            for side in (node.left, *node.comparators):
                text = ast.unparse(side)
                if text.endswith((".model.name", ".data.name", ".optim.name")) or text == "data.name":
                    found.append(f"{path.name}:{node.lineno}: {ast.unparse(node)}")
    return found


def test_no_technique_or_instrument_compares_a_model_dataset_or_optimizer_name() -> None:
    files = [*ENGINE.joinpath("regularizers").glob("*.py"), *ENGINE.joinpath("diagnostics").glob("*.py")]
    assert len(files) > 60
    assert [hit for path in files for hit in _name_comparisons(path)] == []


def test_the_name_scan_finds_a_comparison(tmp_path: Path) -> None:
    sample = tmp_path / "sample.py"
    sample.write_text("def f(cfg):\n    return cfg.model.name == 'mlp' or 'x' in cfg.data.name "
                      "or cfg.optim.name in ('sgd',)\n")
    assert len(_name_comparisons(sample)) == 3


# ---- clashes: exclusive groups and refused properties -----------------------------------------


@pytest.mark.usefixtures("doubles")
def test_two_members_of_an_exclusive_group_are_refused_naming_both() -> None:
    with pytest.raises(ConfigError, match=r"^regularizers: zz_group_a cannot be combined with zz_group_b .*zz_group"):
        validate(moons(regularizers={"zz_group_a": {}, "zz_group_b": {}}))
    validate(moons(regularizers={"zz_group_a": {}, "zz_group_b": {"enabled": False}}))


@pytest.mark.usefixtures("doubles")
def test_a_refused_property_is_refused_in_either_order_naming_both() -> None:
    for pair in (("zz_marked", "zz_refuser"), ("zz_refuser", "zz_marked")):
        with pytest.raises(ConfigError, match=r"^regularizers: zz_refuser cannot be combined with zz_marked;"):
            validate(moons(regularizers={key: {} for key in pair}))
    validate(moons(regularizers={"zz_marked": {}}))


def test_properties_implied_by_overrides() -> None:
    assert "replaces_output" in get("stablemax").properties()
    assert "wraps_step" in get("sam").properties()
    assert "reparametrizes" in get("weight_norm").properties()
    assert not {"replaces_output", "wraps_step"} & get("l2").properties()
    assert get("sam").overrides("step") and not get("sam").overrides("output_fn")


@pytest.mark.parametrize(("pair", "reason"), [
    (("hypergradient", "sgld"), "controls_lr"),
    (("lawn", "weight_norm"), "reparametrizes"),
    (("regmixup", "stablemax"), "replaces_output"),
    (("robust_avg", "dropout"), "alters_forward"),
])
def test_scientific_pairs_are_declared_properties(pair: tuple[str, str], reason: str) -> None:
    a, b = (get(name) for name in pair)
    assert reason in (a.refuses & b.properties()) | (b.refuses & a.properties())


# ---- requirements from traits -----------------------------------------------------------------


def traits(**changes: Any) -> RunTraits:
    base: dict[str, Any] = {"task": "classification", "inputs": "vector", "dataset": "d", "model": "m",
                            "model_traits": frozenset({"a"}), "num_classes": 2}
    return RunTraits(**(base | changes))


def test_need_messages_name_the_key_and_the_fix() -> None:
    need = Need(why="it does x", fix="do y", inputs=frozenset({"image"}), model_traits=frozenset({"b"}))
    assert need.refusal("t", traits()) == (
        "regularizers.t: it does x; needs image inputs, and data.name=d gives vector; do y")
    assert need.refusal("t", traits(inputs="image")) == (
        "regularizers.t: it does x; needs a model with b, which model.name=m does not declare; do y")
    assert need.refusal("t", traits(inputs="image", model_traits=frozenset({"b"}))) is None
    lacks = Need(why="it does x", fix="do y", model_lacks=frozenset({"a"}), inputs_not=frozenset({"tokens"}))
    assert lacks.refusal("t", traits()) == "regularizers.t: it does x; not for a model with a (model.name=m); do y"
    assert "tokens inputs (data.name=d) cannot take" in str(lacks.refusal("t", traits(inputs="tokens")))


@pytest.mark.usefixtures("doubles")
def test_a_declared_need_refuses_the_run_from_its_traits() -> None:
    with pytest.raises(ConfigError, match=r"^regularizers\.zz_needy: it reads the zz widget; needs a model with zz, "
                                          r"which model\.name=mlp does not declare; use a model with one$"):
        validate(moons(regularizers={"zz_needy": {}}))


@pytest.mark.parametrize(("cfg", "name", "key"), [
    ({"data": {"name": "moons"}, "model": {"name": "mlp"}}, "dropblock", "data.name"),
    ({"data": {"name": "digits"}, "model": {"name": "mlp"}}, "dropblock", "model.name"),
    ({"data": {"name": "modular", "p": 7, "encoding": "tokens"}, "model": {"name": "transformer"}}, "input_noise",
     "data.name"),
    ({"data": {"name": "moons"}, "model": {"name": "mlp"}}, "lstsq_readout", "model.name"),
    ({"data": {"name": "digits"}, "model": {"name": "cnn"}}, "manifold_mixup", "model.name"),
])
def test_catalog_requirements_name_the_key(cfg: dict[str, Any], name: str, key: str) -> None:
    with pytest.raises(ConfigError, match=rf"^regularizers\.{name}: .*{key}="):
        validate(cfg | {"regularizers": {name: {}}})


# ---- hooks: override detection and metrics() on log steps --------------------------------------


def test_metrics_are_read_on_log_steps_only(doubles: dict[str, type[Regularizer]]) -> None:
    trainer = Trainer(validate(moons(steps=20, regularizers={"zz_counting": {}}) | {"train": {
        "steps": 20, "eval_every": 20, "log_every": 5}}))
    steps = [e for e in trainer.events() if isinstance(e, Step)]
    assert [e.step for e in steps] == [5, 10, 15, 20]
    assert doubles["zz_counting"].calls == 4
    assert [e.metrics["zz/calls"] for e in steps] == [1.0, 2.0, 3.0, 4.0]


def test_a_technique_without_a_metrics_override_is_not_polled() -> None:
    trainer = Trainer(validate(moons(regularizers={"l2": {}, "logit_z_loss": {}})))
    assert [type(r).name for r in trainer._metric_hooks] == ["logit_z_loss"]


def test_logit_z_metric_reports_the_step_it_trained_on() -> None:
    trainer = Trainer(validate(moons(steps=3, regularizers={"logit_z_loss": {}})))
    steps = [e for e in trainer.events() if isinstance(e, Step)]
    assert len(steps) == 3 and all("logits/log_z" in e.metrics for e in steps)
    assert steps[-1].metrics["logits/log_z"] == trainer.techniques["logit_z_loss"].last_log_z


# ---- instruments ask the run, not technique names ---------------------------------------------


def test_l2_declares_its_hessian_shift_on_the_weights_it_covers() -> None:
    trainer = Trainer(validate(moons(regularizers={"l2": {"lambda": 0.02}})))
    params = trainer.diagnostics_context.named_params()
    shift = trainer.techniques["l2"].hessian_shift(params)
    assert shift == {n: 0.02 for n, p in params.items() if p.dim() >= 2} and shift
    with_bias = Trainer(validate(moons(regularizers={"l2": {"lambda": 0.02, "include_bias": True}})))
    assert set(with_bias.techniques["l2"].hessian_shift(params)) == set(params)


def _trace(trainer: Trainer, include: bool) -> float:
    ctx = trainer.diagnostics_context
    return get_diagnostic("trace")(ctx, 0, include_penalties=include).measure(ctx, 0).metrics["sharpness/trace"]


def test_trace_adds_lambda_times_covered_parameters_and_follows_a_live_change() -> None:
    trainer = Trainer(validate(moons(regularizers={"l2": {"lambda": 0.02}})))
    covered = sum(p.numel() for p in trainer.diagnostics_context.named_params().values() if p.dim() >= 2)
    assert _trace(trainer, True) - _trace(trainer, False) == pytest.approx(0.02 * covered, rel=1e-5)
    trainer.apply_setting("regularizers.l2.lambda", 0.05)  # the penalty in the loss is now 0.05
    assert _trace(trainer, True) - _trace(trainer, False) == pytest.approx(0.05 * covered, rel=1e-5)
    plain = Trainer(validate(moons()))
    assert _trace(plain, True) == _trace(plain, False)


def test_calibration_reads_the_installed_output_function() -> None:
    trainer = Trainer(validate(moons(regularizers={"stablemax": {}})))
    ctx = trainer.diagnostics_context
    output_fn: Callable[[Tensor], Tensor] | None = ctx.output_fn
    assert output_fn is not None and torch.equal(output_fn(torch.tensor([[1.0, 0.0]])),
                                                 log_stablemax(torch.tensor([[1.0, 0.0]])))
    measured = get_diagnostic("calibration")(ctx, 0).measure(ctx, 0).metrics
    with torch.no_grad():
        trainer.model.eval()
        expected = calibration(trainer.model(trainer.data.x_test), trainer.data.y_test, log_stablemax)
    assert measured == pytest.approx(expected)
    assert Trainer(validate(moons())).diagnostics_context.output_fn is None  # plain softmax
