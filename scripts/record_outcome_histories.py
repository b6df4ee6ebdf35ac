"""Record the histories the outcome rule reads, for every preset's baseline and toggle variant.

    python scripts/record_outcome_histories.py [--only PRESET ...]

Runs each preset's ``baseline`` and ``regularized`` variants (``small`` / ``small_regularized`` for
presets marked ``long_run``) through the CLI, exactly as a user would, and writes
``tests/data/outcome_histories.json``: per run its preset, variant, config, final status and the
evaluation series of ``engine.outcome.HISTORY_KEYS`` (the per-step ``train/loss`` is left out: it is
large, and these runs do not diverge). ``tests/unit/test_outcome_presets.py`` replays them through
the rule, so a change of the rule is checked against real runs in seconds instead of the minutes
the runs take (≈ 4 min of CPU on a laptop-class machine).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

from engine.cli import main as cli
from engine.outcome import HISTORY_KEYS
from engine.presets import get_preset, preset_ids
from engine.store import RunStore

OUT = Path(__file__).resolve().parents[1] / "tests" / "data" / "outcome_histories.json"


def variants_of(preset_id: str) -> list[str]:
    preset = get_preset(preset_id)
    names = ("small", "small_regularized") if preset.get("long_run") else ("baseline", "regularized")
    return [name for name in names if name in preset.get("variants", {})]


def record(preset_id: str, variant: str, store_path: Path) -> dict:
    code = cli(["run", "--preset", preset_id, "--variant", variant, "--store", str(store_path), "--quiet"])
    with RunStore(store_path) as store:
        run = store.list_runs(limit=1)[0]
        series = store.metrics(run["id"], [k for k in HISTORY_KEYS if k != "train/loss"])
    history = {name: [[int(s), float(v)] for s, v in zip(steps.tolist(), values.tolist(), strict=True)]
               for name, (steps, values) in series.items()}
    print(f"{preset_id:<22} {variant:<18} exit {code} {run['status']}", file=sys.stderr)
    return {"preset": preset_id, "variant": variant, "status": run["status"], "config": run["config"],
            "history": history}


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="*", help="record these presets only (others are kept from the file)")
    args = parser.parse_args(argv)
    records = json.loads(OUT.read_text()) if OUT.exists() and args.only else []
    chosen = args.only or preset_ids()
    records = [r for r in records if r["preset"] not in chosen]
    with tempfile.TemporaryDirectory() as tmp:
        for preset_id in chosen:
            for variant in variants_of(preset_id):
                records.append(record(preset_id, variant, Path(tmp) / "lab.db"))
    records.sort(key=lambda r: (r["preset"], r["variant"]))
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(records, separators=(",", ":")) + "\n", encoding="utf-8")
    print(f"wrote {len(records)} runs to {OUT}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
