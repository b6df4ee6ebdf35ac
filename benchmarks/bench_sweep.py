"""Sweep throughput: the local process pool (and Ray) against running the cells one after another.

The sweep is a 3×3 grid × 2 seeds of ``grokking-quadratic`` on a short budget (default 100 steps
instead of 400): ``optim.weight_decay ∈ {0, 1, 5}`` × ``data.train_frac ∈ {0.3, 0.4, 0.5}`` — 18
cells, every one a full run written to a fresh temporary store. Timed, each as a whole
``Sweep.run()`` (wall clock, start-up included — a user pays it):

(a) **sequential** — the ``inline`` backend: the cells one after another in this process, the
    baseline;
(b) **local ×1** — the process pool with one worker: the pool's overhead (forkserver start, one
    process per pool, pickling a task, each worker opening the store) without any parallelism;
(c) **local ×N** — the pool with N workers (default: this machine's cores), the default backend;
(d) **ray ×N** — Ray tasks on a local ``ray.init(num_cpus=N)`` (skipped when ray is missing or
    with ``--no-ray``); Ray's start-up (several seconds) is inside the timing.

Every cell uses one torch thread (the preset's ``train.threads`` 0), so N workers use N cores.
The per-cell final metrics of every backend are checked to be identical to the sequential ones.

Two speed-ups are printed, both sequential / backend (> 1 = faster; on N cores the ceiling is N):

* **measured wall** — honest only on an otherwise idle machine; the load average is printed
  beside it (a saturated machine has no idle core to parallelise onto, whatever the backend);
* **idle estimate from CPU times** (local pool) — each worker reports the CPU time it spent in
  each cell; with one torch thread per cell, CPU time ≈ the wall time the cell would take on an
  idle core. The sequential time is the sum over its cells; the pool's is the busiest worker's
  sum (the critical path of the schedule the pool really made) plus the CPU a fresh interpreter
  spends importing the engine (what the forkserver does once before forking workers). What it
  leaves out: contention between workers for memory bandwidth and caches.

Usage::

    .venv/bin/python benchmarks/bench_sweep.py                      # 100 steps, N = cores
    .venv/bin/python benchmarks/bench_sweep.py --steps 50 --workers 2 --no-ray

The last line is the summary: the idle estimates, then the measured wall ratios with the load.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from engine.store import RunStore
from engine.sweeps import Sweep, build_spec
from engine.sweeps.backends import cores

GRID = ["optim.weight_decay=0,1,5", "data.train_frac=0.3,0.4,0.5"]


@dataclass
class Timing:
    wall: float  # s, the whole Sweep.run()
    cell_cpu: float  # s, CPU the workers spent in cells, summed
    busiest: float  # s, CPU of the worker process that spent most: the critical path on idle cores
    workers: int  # distinct worker processes that ran cells
    finals: dict


def timed(backend: str, workers: int, steps: int) -> Timing:
    spec = build_spec("grokking-quadratic", grid=GRID, seeds=2, overrides=[f"train.steps={steps}"])
    with tempfile.TemporaryDirectory(prefix="bench-sweep-") as tmp, RunStore(tmp) as store:
        sweep = Sweep(store, spec, backend=backend, workers=workers)
        wall = time.perf_counter()
        view = sweep.run()
        wall = time.perf_counter() - wall
        bad = [c for c in view.cells if not c.finished]
        if bad:
            raise SystemExit(f"{backend}: {len(bad)} cells did not finish: {bad[0].status} {bad[0].message}")
        per_pid: dict[int, float] = defaultdict(float)
        for report in sweep.reports:
            per_pid[report.pid] += report.cpu_s
        finals = {(json.dumps(c.params, sort_keys=True), c.seed): c.final for c in view.cells}
    return Timing(wall, sum(per_pid.values()), max(per_pid.values()), len(per_pid), finals)


def startup_cpu() -> float:
    """CPU s of what a pool's forkserver does once: a fresh interpreter importing the engine."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    subprocess.run([sys.executable, "-c", "import engine.sweeps.worker, engine.runner"], check=True,
                   cwd=Path(__file__).resolve().parents[1])
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--workers", type=int, default=cores())
    parser.add_argument("--no-ray", action="store_true")
    args = parser.parse_args()
    n = args.workers

    runs = [("sequential", "inline", 1), ("local×1", "local", 1), (f"local×{n}", "local", n)]
    if not args.no_ray:
        try:
            import ray  # noqa: F401
        except ImportError:
            print("ray not installed: skipping the ray backend")
        else:
            runs.append((f"ray×{n}", "ray", n))

    start_cpu = startup_cpu()
    load = os.getloadavg()[0]
    results: dict[str, Timing] = {}
    for label, backend, workers in runs:
        t = timed(backend, workers, args.steps)
        same = "identical" if not results or t.finals == results["sequential"].finals else "DIFFERENT"
        print(f"{label:<11} wall {t.wall:6.1f} s | cells' CPU {t.cell_cpu:6.1f} s over {t.workers} process(es), "
              f"busiest {t.busiest:6.1f} s | per-cell finals {same}")
        if same != "identical":
            raise SystemExit(f"{label}: per-cell results differ from the sequential run")
        results[label] = t
    load = max(load, os.getloadavg()[0])
    print(f"pool start-up (forkserver importing the engine): {start_cpu:.1f} s CPU; "
          f"load average up to {load:.1f} on {cores()} cores")

    seq = results["sequential"]
    measured, estimated = [], []
    for label, t in results.items():
        if label == "sequential":
            continue
        measured.append(f"{label}={seq.wall / t.wall:.2f}")
        if label.startswith("local"):
            # idle-machine estimate: the busiest worker's CPU plus the forkserver start, vs the
            # sequential cells' CPU (one thread each, so CPU time ≈ wall time on an idle core)
            estimated.append(f"{label}={seq.cell_cpu / (t.busiest + start_cpu):.2f}")
    print(f"bench_sweep: 18 cells × {args.steps} steps, speed-up vs sequential: idle estimate from CPU times "
          f"{' '.join(estimated)}; measured wall {' '.join(measured)} (load {load:.1f}; ceiling ≈ {n})")


if __name__ == "__main__":
    main()
