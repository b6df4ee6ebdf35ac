"""``python -m engine …``: presets, regularizers, run, list, show, export, sweep (see the README).

Exit codes: 0 completed, 2 bad input (one line on stderr, no traceback), 3 diverged (the loss
became non-finite or blew up past 10⁴ × its first value), 1 anything else. Everything a command
can check up front — the config, its dataset (engine/preflight.py), the output folder — is checked
before any work, so a bad ``--out`` never costs a training run. Machine-readable output goes to
stdout (``--json``); progress goes to stderr.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn, get_args

from engine.config import ConfigError, RunConfig, apply_overrides, load_file, validate
from engine.events import Eval, Event, Status, Step
from engine.outcome import Outcome

EXIT_OK, EXIT_OTHER, EXIT_BAD_INPUT, EXIT_DIVERGED = 0, 1, 2, 3


class _Parser(argparse.ArgumentParser):
    """argparse with a one-line error (exit 2) instead of usage + error."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_BAD_INPUT, f"error: {message} (see: {self.prog} --help)\n")


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="python -m engine", description="Regularization Lab engine")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    p = sub.add_parser("presets", help="list preset ids with one-line descriptions")
    p.add_argument("--json", action="store_true")
    p = sub.add_parser("regularizers", help="list techniques with their parameters")
    p.add_argument("--json", action="store_true")
    p = sub.add_parser("run", help="train one run and record it in the store")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--preset", metavar="ID")
    src.add_argument("--config", metavar="FILE", help="JSON or YAML config")
    p.add_argument("--variant", metavar="NAME", help="a preset's named variant, e.g. regularized")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"])
    p.add_argument("--store", metavar="PATH")
    p.add_argument("--out", metavar="DIR", help="write config.json, metrics.csv, summary.json here")
    p.add_argument("--json", action="store_true", help="print the summary object on stdout")
    p.add_argument("--quiet", action="store_true", help="no progress on stderr")
    p = sub.add_parser("list", help="runs in the store, newest first")
    p.add_argument("--store", metavar="PATH")
    p.add_argument("--json", action="store_true")
    p.add_argument("--limit", type=int, default=50, help="at most this many runs (default 50)")
    p.add_argument("--preset", metavar="ID", help="only runs of this preset")
    p.add_argument("--outcome", choices=get_args(Outcome), help="only runs with this verdict")
    p = sub.add_parser("show", help="one run: config summary, verdict, final metrics")
    p.add_argument("run_id", metavar="RUN_ID")
    p.add_argument("--store", metavar="PATH")
    p.add_argument("--json", action="store_true")
    p = sub.add_parser("export", help="a run's figures (png, svg, pdf, html), metrics.csv, a zip bundle, "
                                      "or a TensorBoard log")
    p.add_argument("run_id", metavar="RUN_ID")
    p.add_argument("--format", dest="fmt", choices=["png", "svg", "pdf", "html", "csv", "zip", "tensorboard"],
                   default="png")
    p.add_argument("--out", metavar="DIR", default="exports", help="output folder (default ./exports)")
    p.add_argument("--store", metavar="PATH")
    _add_sweep_parser(sub)
    return parser


def _add_sweep_parser(sub: Any) -> None:
    p = sub.add_parser("sweep", help="a grid of runs over config keys × seeds (phase diagrams)",
                       description="Every cell is a normal run in the store, tagged with the sweep id. Exit 0 when "
                       "every cell finished (completed or diverged), 1 when some failed or were stopped, 2 on bad "
                       "input (checked for every cell before anything runs).")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--preset", metavar="ID")
    src.add_argument("--config", metavar="FILE", help="JSON or YAML config")
    src.add_argument("--resume", metavar="SWEEP_ID", help="rerun the cells of a sweep that did not finish")
    p.add_argument("--variant", metavar="NAME", help="a preset's named variant as the base")
    p.add_argument("--grid", action="append", default=[], metavar="KEY=v1,v2",
                   help="an axis (repeat for more; default: the preset's own sweep block)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="fixed change to the base config")
    p.add_argument("--seeds", type=int, metavar="N", help="seeds per grid point (default: the preset's, else 1)")
    p.add_argument("--random", type=int, default=0, metavar="N",
                   help="random search: N points sampled from the axes (which may be ranges lo..hi, log:lo..hi)")
    p.add_argument("--backend", default="local", metavar="local|ray", help="local process pool (default) or ray")
    p.add_argument("--address", metavar="ADDR", help="ray: cluster address (default: start ray on this machine)")
    p.add_argument("--workers", type=int, metavar="N", help="cells at once (default: cores ÷ torch threads)")
    p.add_argument("--name", metavar="NAME")
    p.add_argument("--store", metavar="PATH")
    p.add_argument("--json", action="store_true", help="print {sweep_id, cells: [...]} on stdout")
    p.add_argument("--quiet", action="store_true", help="no progress on stderr")


def load_run_config(preset: str | None, config: str | None, overrides: Sequence[str],
                    variant: str | None = None, device: str | None = None) -> RunConfig:
    """Preset or file → overrides → validation. Raises ConfigError with one line."""
    from engine.presets import preset_config

    if preset is not None:
        data = preset_config(preset, variant)
    else:
        if variant:
            raise ConfigError("--variant needs --preset")
        data = load_file(config or "")
    data = apply_overrides(data, list(overrides))
    if device:
        data["device"] = device
    return validate(data)


class Progress:
    """A one-line progress bar on stderr, redrawn at most 5× a second."""

    def __init__(self, total: int, enabled: bool) -> None:
        self.total, self.enabled = total, enabled
        self.start = self.last_draw = time.perf_counter()
        self.metrics: dict[str, float] = {}
        self.tty = sys.stderr.isatty()

    def __call__(self, event: Event) -> None:
        if not self.enabled:
            return
        if isinstance(event, Step | Eval):
            self.metrics.update(event.metrics)
            now = time.perf_counter()
            if now - self.last_draw >= (0.2 if self.tty else 5.0) or event.step == self.total:
                self.last_draw = now
                self._draw(event.step, now)
        elif isinstance(event, Status) and event.state != "running":
            sys.stderr.write(("\n" if self.tty else "") + f"{event.state}: {event.message}\n")

    def _draw(self, step: int, now: float) -> None:
        frac = step / max(1, self.total)
        bar = "#" * int(30 * frac)
        rate = step / max(1e-9, now - self.start)
        shown = " ".join(f"{k}={self.metrics[k]:.4g}" for k in ("train/loss", "train/acc", "test/acc")
                         if k in self.metrics)
        line = f"[{bar:<30}] {step}/{self.total} {rate:.0f} steps/s {shown}"
        sys.stderr.write(("\r" + line) if self.tty else line + "\n")
        sys.stderr.flush()


def _cmd_presets(args: argparse.Namespace) -> int:
    from engine.presets import list_presets

    items = list_presets()
    if args.json:
        print(json.dumps(items, indent=2))
    else:
        width = max(len(p["id"]) for p in items)
        for p in items:
            print(f"{p['id']:<{width}}  {p['description']}")
    return EXIT_OK


def _cmd_regularizers(args: argparse.Namespace) -> int:
    from engine.regularizers import describe_all

    items = describe_all()
    if args.json:
        print(json.dumps(items, indent=2))
        return EXIT_OK
    for item in items:
        params = ", ".join(f"{p['name']}={p['default']}" + ("*" if p["live"] else "") for p in item["params"])
        print(f"{item['name']:<16} {item['group']:<10} {params}")
        print(f"{'':<16} {item['summary']}  [{item['source']}]")
    print("(* = can change while a run trains)")
    return EXIT_OK


def _open_store(path: str | None, writable: bool = True) -> Any:
    """The run store. ``run``/``sweep`` refuse a read-only store here, before any work; ``list``,
    ``show`` and ``export`` pass ``writable=False`` and read a read-only store without leaving
    ``-wal``/``-shm`` files beside it."""
    from engine.store import RunStore

    return RunStore(path, writable=writable)


def check_out_dir(path: str, flag: str, files: Sequence[str] = ()) -> None:
    """Refuse an output folder that cannot be used, before any work is done (ConfigError, one line).

    The folder may be missing (it is created later) but must not be a file, nor sit under a
    file, nor be unwritable; ``files`` it will hold must not already be folders. Checked up front
    because ``run --out`` only writes after training, and a refusal then costs the whole run.
    """
    out = Path(path)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"{flag} {path}: is an existing file; name a folder (created if missing)")
    parent = out
    while not parent.exists():  # the nearest existing ancestor is where the folder would be created
        if parent == parent.parent:
            break
        parent = parent.parent
    if parent.exists() and not parent.is_dir():
        raise ConfigError(f"{flag} {path}: {parent} is a file, not a folder; choose another folder")
    if parent.is_dir():
        try:  # a real probe: os.access says yes to root on a read-only mount or under /proc
            with tempfile.TemporaryFile(dir=parent):
                pass
        except OSError as err:
            reason = err.strerror or type(err).__name__
            raise ConfigError(f"{flag} {path}: cannot write in {parent} ({reason}); choose another folder") from None
    for name in files:
        if (out / name).is_dir():
            raise ConfigError(f"{flag} {path}: {out / name} is a folder where a file goes; remove it or "
                              "choose another folder")


def _cmd_run(args: argparse.Namespace) -> int:
    from engine.preflight import check_runnable
    from engine.runner import build_trainer, execute, summary, write_metrics_csv, write_outputs

    cfg = load_run_config(args.preset, args.config, args.overrides, args.variant, args.device)
    if args.out:
        check_out_dir(args.out, "--out", ("config.json", "metrics.csv", "summary.json"))
    check_runnable(cfg)
    store = _open_store(args.store)
    trainer = build_trainer(cfg)
    progress = Progress(cfg.train.steps, enabled=not args.quiet)
    run_id, result = execute(cfg, store, progress, trainer=trainer)
    if args.out:
        result_summary = write_outputs(Path(args.out), cfg, store, run_id, result)
    else:
        csv_path = write_metrics_csv(store, run_id, store.run_dir(run_id) / "metrics.csv")
        result_summary = summary(run_id, result, str(csv_path))
    if args.json:
        print(json.dumps(result_summary))
    elif not args.quiet:
        print(f"{run_id} {result.status} after {result.steps} steps")
    return {"completed": EXIT_OK, "diverged": EXIT_DIVERGED}.get(result.status, EXIT_OTHER)


def _cmd_list(args: argparse.Namespace) -> int:
    from engine.listing import run_rows, runs_table

    if args.limit < 1:
        raise ConfigError(f"--limit: must be at least 1 (got {args.limit})")
    store = _open_store(args.store, writable=False)
    runs = store.list_runs(limit=None if args.outcome else args.limit, preset=args.preset)
    if args.outcome:  # the verdict is replayed from each run's history: filter, then cut to --limit
        rows = [row for row in run_rows(store, runs) if row["outcome"] == args.outcome][:args.limit]
        runs = [run for run in runs if run["id"] in {row["id"] for row in rows}]
    if args.json:
        print(json.dumps([{k: r.get(k) for k in ("id", "name", "preset", "status", "created_at", "seed")}
                          for r in runs], indent=2))
        return EXIT_OK
    filtered = args.outcome or args.preset
    print(runs_table(rows if args.outcome else run_rows(store, runs), now=time.time(),
                     **({"empty": "no runs match these filters"} if filtered else {})))
    return EXIT_OK


def _cmd_show(args: argparse.Namespace) -> int:
    from engine.listing import run_details
    from engine.outcome import stored_verdict

    store = _open_store(args.store, writable=False)
    run = store.get_run(args.run_id)
    if run is None:
        raise ConfigError(f"RUN_ID {args.run_id!r}: no such run in {store.path}; see `python -m engine list`")
    final = store.final_metrics(run["id"])
    if args.json:
        print(json.dumps({**run, "final": final}, indent=2, default=str))
        return EXIT_OK
    verdict = stored_verdict(store, run)
    print(run_details(run, final, verdict.outcome if verdict else "", verdict.reason if verdict else "",
                      now=time.time()))
    return EXIT_OK


def _cmd_export(args: argparse.Namespace) -> int:
    from engine.export import ExportError, export_run

    check_out_dir(args.out, "--out")
    store = _open_store(args.store, writable=False)
    if store.get_run(args.run_id) is None:
        raise ConfigError(f"RUN_ID {args.run_id!r}: no such run in {store.path}; see `python -m engine list`")
    try:
        if args.fmt == "tensorboard":
            from engine.tb_export import TensorBoardMissing, export_tensorboard

            try:
                paths = export_tensorboard(store, args.run_id, args.out)
            except TensorBoardMissing as err:
                raise ExportError(str(err)) from None
        else:
            paths = export_run(store, args.run_id, args.fmt, args.out)
    except ExportError as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_OTHER
    for path in paths:
        print(path)
    return EXIT_OK


def _sweep_progress(state: Any, done: int, total: int) -> None:
    """One stderr line per finished cell: a bar, the cell, its fate and headline metric."""
    bar = "#" * int(30 * done / max(1, total))
    shown = next((f" {k}={state.final[k]:.4g}" for k in ("test/acc", "test/loss", "train/loss")
                  if state.final.get(k) is not None), "")
    params = " ".join(f"{k}={v}" for k, v in state.params.items())
    sys.stderr.write(f"[{bar:<30}] {done}/{total} cells  {params} seed={state.seed} → {state.status}{shown}\n")
    sys.stderr.flush()


def _cmd_sweep(args: argparse.Namespace) -> int:
    from engine.sweeps import Sweep, build_spec

    if args.resume and (args.grid or args.overrides or args.seeds or args.variant or args.random):
        raise ConfigError("--resume SWEEP_ID reruns that sweep's own grid; drop --grid/--set/--seeds/--variant")
    spec = None
    if not args.resume:
        spec = build_spec(args.preset, args.config, args.grid, args.seeds, args.overrides, args.variant,
                          random=args.random, name=args.name)
        spec.cells()  # every cell validated before the store is touched
    store = _open_store(args.store)
    on_cell = None if args.quiet else _sweep_progress
    sweep = Sweep(store, spec, sweep_id=args.resume, backend=args.backend, workers=args.workers,
                  address=args.address, on_cell=on_cell)
    if not args.quiet:
        cells = sweep.view().cells
        finished = sum(c.finished for c in cells)
        skipped = f", {finished} already finished" if finished else ""
        print(f"sweep {sweep.sweep_id}: {len(cells)} cells{skipped}, on {args.backend}", file=sys.stderr)
    view = sweep.run()
    if args.json:
        print(json.dumps({"sweep_id": view.sweep_id, "status": view.status,
                          "cells": [c.to_json() for c in view.cells]}))
    elif not args.quiet:
        counts = ", ".join(f"{n} {status}" for status, n in sorted(view.counts.items()))
        print(f"{view.sweep_id} {view.status}: {counts}")
    return EXIT_OK if all(c.finished for c in view.cells) else EXIT_OTHER


COMMANDS = {"presets": _cmd_presets, "regularizers": _cmd_regularizers, "run": _cmd_run,
            "list": _cmd_list, "show": _cmd_show, "export": _cmd_export, "sweep": _cmd_sweep}


def main(argv: Sequence[str] | None = None) -> int:
    from engine.store import StoreError

    args = _parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except StoreError as err:  # bad input (a path that is not a store) unless the store says otherwise
        print(f"error: {err}", file=sys.stderr)
        return int(getattr(err, "exit_code", EXIT_BAD_INPUT))
    except OSError as err:  # e.g. writing --out after training: one line, not a traceback
        where = f"{err.filename}: " if err.filename else ""
        print(f"error: {where}{err.strerror or err}", file=sys.stderr)
        return EXIT_OTHER
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_OTHER
