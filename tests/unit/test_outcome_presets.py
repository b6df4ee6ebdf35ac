"""Every preset's baseline and toggle variant gets the verdict its card describes.

The histories in ``tests/data/outcome_histories.json`` are real runs of the presets through the
CLI (``scripts/record_outcome_histories.py``, ≈ 4 min of CPU); this test replays them through the
current rule with the preset's current judging settings (``outcome.test_threshold`` included), so a
change to the rule or to a preset's threshold is checked against real runs in a second.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from engine.config import validate
from engine.outcome import Judging, judge
from engine.presets import preset_config, preset_ids

RECORDED = json.loads((Path(__file__).resolve().parents[1] / "data" / "outcome_histories.json").read_text())

# What each card describes, in the verdict vocabulary.
EXPECTED = {
    ("double-descent", "baseline"): "memorized",  # the interpolation peak: every wrong label fitted, test 0.24
    ("double-descent", "regularized"): "generalized",  # ridge removes the peak: test 0.84 ≥ the preset's 0.8
    ("edge-of-stability", "baseline"): "generalized",
    ("edge-of-stability", "regularized"): "generalized",
    ("gradient-noise", "baseline"): "no_learning",  # the deep MLP stays at chance
    ("gradient-noise", "regularized"): "partial",  # noise makes it train, to ≈ 0.6 test accuracy
    ("grokking-orthograd", "baseline"): "memorized",
    ("grokking-orthograd", "regularized"): "generalized",
    ("grokking-quadratic", "baseline"): "grokked",
    ("grokking-quadratic", "regularized"): "grokked",  # weight decay shortens the plateau (80 vs 260 steps)
    ("grokking-transformer", "small"): "memorized",
    ("grokking-transformer", "small_regularized"): "grokked",
    ("neural-collapse", "baseline"): "generalized",
    ("neural-collapse", "regularized"): "generalized",
    ("noisy-labels", "baseline"): "memorized",
    ("noisy-labels", "regularized"): "generalized",
    ("plasticity", "baseline"): "partial",  # random-label tasks: no test accuracy; fit lost (train 0.65)
    ("plasticity", "regularized"): "partial",  # fit kept much higher (0.97), still below 0.99
    ("sae-dead-latents", "baseline"): "partial",  # R² below 0.95; the reason names 49 % dead latents
    ("sae-dead-latents", "regularized"): "partial",  # better R², 1 % dead latents
    ("sam", "baseline"): "generalized",
    ("sam", "regularized"): "generalized",
    ("ssl-moons", "baseline"): "memorized",  # fits its 10 labels, test 0.85
    ("ssl-moons", "regularized"): "generalized",  # the Π-model: test 0.98
}


def test_every_preset_is_recorded() -> None:
    assert {r["preset"] for r in RECORDED} == set(preset_ids())
    assert {(r["preset"], r["variant"]) for r in RECORDED} == set(EXPECTED)


@pytest.mark.parametrize("record", RECORDED, ids=lambda r: f"{r['preset']}:{r['variant']}")
def test_replayed_verdict_matches_the_card(record: dict) -> None:
    judging = Judging.of(validate(preset_config(record["preset"], record["variant"])))
    verdict = judge(record["history"], record["status"], judging)
    assert verdict is not None
    assert verdict.outcome == EXPECTED[(record["preset"], record["variant"])], verdict.reason
    assert verdict.reason and "\n" not in verdict.reason


def test_reasons_carry_the_numbers_that_matter() -> None:
    def reason(preset: str, variant: str) -> str:
        record = next(r for r in RECORDED if (r["preset"], r["variant"]) == (preset, variant))
        return judge(record["history"], record["status"], Judging.of(validate(preset_config(preset, variant)))).reason

    assert "only 4 % of the 40 % wrong labels were fitted" in reason("noisy-labels", "regularized")
    assert "dead latents 49 %" in reason("sae-dead-latents", "baseline")
    assert "no test accuracy" in reason("plasticity", "baseline")
