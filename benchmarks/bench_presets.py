"""Preset budgets: every default preset's run time through the CLI path, against issue 5's targets.

Each preset (baseline config, or ``--variant``) runs exactly as ``python -m engine run --preset ID``
does — ``engine.cli.main`` in this process with a fresh store in a temporary folder — and is timed
twice: wall clock and the process CPU time (user + sys) spent during the call. On an idle 2-core
machine with ``train.threads=0`` (one torch thread) the two agree; on a shared machine the CPU
time is the better estimate of the idle wall time, so both are printed. Imports and the first
kaleido/torch warm-up are paid once before timing (an untimed tiny run).

Presets whose YAML says ``long_run: true`` (the grokking transformer, minutes to hours on a CPU)
are excepted by the issue and skipped unless ``--all`` is given.

Targets (issue 5): each preset ≤ 60 s at its default budget on 2 CPU cores, all of them together
≤ 300 s. The last line is the summary, e.g.
``bench_presets: 11 presets, total wall 78.1 s cpu 76.5 s (target ≤ 300), slowest plasticity 11.2 s (target ≤ 60)``.

Usage::

    .venv/bin/python benchmarks/bench_presets.py                    # baselines
    .venv/bin/python benchmarks/bench_presets.py --variant regularized
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from engine.cli import main
from engine.presets import get_preset, preset_ids


def cpu_seconds() -> float:
    times = os.times()
    return times.user + times.system


def time_preset(preset: str, variant: str | None, store: Path) -> tuple[float, float, int]:
    argv = ["run", "--preset", preset, "--store", str(store), "--quiet"]
    if variant and variant in get_preset(preset).get("variants", {}):
        argv += ["--variant", variant]
    wall, cpu = time.perf_counter(), cpu_seconds()
    code = main(argv)
    return time.perf_counter() - wall, cpu_seconds() - cpu, code


def main_bench() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variant", help="time this named variant where a preset has it (default: baseline)")
    parser.add_argument("--all", action="store_true", help="include long_run presets")
    parser.add_argument("--only", nargs="*", help="preset ids to time (default: all)")
    args = parser.parse_args()
    ids = args.only or preset_ids()
    skipped = [p for p in ids if get_preset(p).get("long_run") and not args.all]
    ids = [p for p in ids if p not in skipped]
    with tempfile.TemporaryDirectory() as tmp:
        store = Path(tmp) / "lab.db"
        main(["run", "--preset", "ssl-moons", "--store", str(store), "--quiet", "--set", "train.steps=5"])
        rows = [(p, *time_preset(p, args.variant, store)) for p in ids]
    print(f"{'preset':<22} {'wall s':>8} {'cpu s':>8}  exit")
    for preset, wall, cpu, code in rows:
        print(f"{preset:<22} {wall:8.1f} {cpu:8.1f}  {code}")
    if skipped:
        print(f"skipped (long_run): {', '.join(skipped)}")
    total_wall, total_cpu = sum(r[1] for r in rows), sum(r[2] for r in rows)
    slowest = max(rows, key=lambda r: r[1])
    print(f"bench_presets: {len(rows)} presets{f' ({args.variant})' if args.variant else ''}, "
          f"total wall {total_wall:.1f} s cpu {total_cpu:.1f} s (target ≤ 300), "
          f"slowest {slowest[0]} {slowest[1]:.1f} s wall {slowest[2]:.1f} s cpu (target ≤ 60)")


if __name__ == "__main__":
    main_bench()
