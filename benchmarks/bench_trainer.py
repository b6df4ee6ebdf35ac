"""Trainer speed: the engine's real run path versus a hand-written bare PyTorch loop.

For each preset (``noisy-labels``, ``grokking-quadratic``) the same model, data and optimizer are
trained two ways, interleaved in one process (A, B, A, B, …) for ``--repeats`` rounds:

(a) **engine** — ``engine.runner.execute(cfg, RunStore(tmp), trainer=Trainer(cfg))``: the path the
    CLI uses, with live metrics and the SQLite store on (the ``StoreRecorder`` subscriber writes
    every Step/Eval metric in batches to a fresh store in a temporary directory). Timed: the whole
    ``execute`` call (creating the run row, training, every metric write, finishing the run).

(b) **bare** — a plain loop: ``zero_grad → forward → loss → backward → optimizer.step()`` on the
    same dataset tensors (``engine.data.build_dataset``), the same model (``engine.models.build_model``
    under the same ``torch.manual_seed``), the same optimizer class and hyperparameters and the same
    batch-order semantics: full batch for grokking-quadratic; for noisy-labels shuffled mini-batches
    of 64 without replacement, a fresh permutation per epoch and the ragged tail dropped, drawn from
    the same seeded generator the engine uses, so both runs see the same batches in the same order.
    The loss is the idiomatic one-liner (``F.cross_entropy``; for the MSE preset ``F.mse_loss``
    against the one-hot targets, built each step as the engine does). The bare loop records nothing
    per step (no ``.item()``, no gradient norm, no store), which makes it the floor the engine —
    with its per-step ``train/loss``, ``lr`` and ``grad/norm`` metrics — is measured against.

    **Evaluation choice:** so that both sides do the same *useful* work, the bare loop also runs
    the preset's evaluation passes at the same cadence as ``train.eval_every`` (before step 1, every
    ``eval_every`` steps and after the last step): eval mode, no grad, a forward pass over the full
    train and test sets, their loss and accuracy, the noisy-label memorisation fractions when labels
    are noisy, and the global weight norm — the metrics the engine's ``Eval`` event carries. The
    ratio therefore measures the engine's *overhead* (events, per-step metrics, hooks, the store),
    not the cost of evaluating, which both pay.

    As a check that the two do the same work, the final full-train-set loss of both runs is
    printed; it should agree to float precision (same init, batches and updates).

    The engine's default-on diagnostic instruments (``diagnostics.*``: calibration, collapse, …)
    are switched off in (a) unless ``--diagnostics`` is given: the bare loop has no counterpart,
    and their cost is budgeted and measured separately; this benchmark measures the trainer.

Excluded from both timings: dataset and model construction (the engine's ``Trainer(cfg)``, the
bare loop's ``build_dataset``/``build_model``/optimizer) and opening the store. Both run on the
CPU (``--device``) with the same torch thread count (``--threads``, default 1, which is what the
engine's ``train.threads=0`` means; the value is written into the config, so the engine's
``configure_torch`` applies the same count) and with ``torch.set_flush_denormal(True)``.
``gc.collect()`` runs before each timed run; one short untimed warm-up of each side comes first.

Reported per preset: the median time of each side (and per step), the ratio of those medians,
and the median of the per-round paired ratios engine/bare — the figure on the last line, since
pairing each engine run with the bare run right after it cancels most slow drifts of a shared
machine.

Usage::

    .venv/bin/python benchmarks/bench_trainer.py                 # 5 repeats, default steps
    .venv/bin/python benchmarks/bench_trainer.py --repeats 3 --steps noisy-labels=500

Default steps: the preset's own 1900 for noisy-labels, 300 for grokking-quadratic (its preset
runs 400) to keep the whole benchmark to a few minutes. The machine may be shared: the pairing,
interleaving and medians are there to absorb that; rerun when the spread looks large.

The last line is the summary, e.g.
``bench_trainer: noisy-labels ratio=1.04 grokking-quadratic ratio=1.02 (target ≤ 1.10)``.
"""

from __future__ import annotations

import argparse
import gc
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

from engine.config import RunConfig, validate
from engine.data import Dataset, build_dataset
from engine.models import build_model
from engine.presets import preset_config
from engine.regularizers.base import technique_generator
from engine.runner import execute
from engine.store import RunStore
from engine.trainer import Trainer, resolve_device

PRESETS = ("noisy-labels", "grokking-quadratic")
DEFAULT_STEPS = {"noisy-labels": None, "grokking-quadratic": 300}  # None: the preset's own
TARGET = 1.10


def make_config(preset: str, steps: int | None, threads: int, device: str = "cpu",
                diagnostics: bool = False) -> RunConfig:
    data = preset_config(preset)
    data = {**data, "train": {**data["train"], "threads": threads}, "device": device}
    if steps is not None:
        data["train"]["steps"] = steps
    cfg = validate(data)
    active = getattr(cfg, "active_diagnostics", dict)()
    if active and not diagnostics:  # default-on instruments: the bare loop has no counterpart
        data["diagnostics"] = {name: {"enabled": False} for name in active}
        cfg = validate(data)
    if cfg.enabled_regularizers():
        raise SystemExit(f"{preset}: the bare loop has no regularizers; benchmark the baseline variant")
    return cfg


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# ---- (a) the engine --------------------------------------------------------------------------


def prepare_engine(cfg: RunConfig, root: Path, tag: str) -> Callable[[], float]:
    """Build the trainer and open a fresh store (untimed); return the timed run."""
    trainer = Trainer(cfg)
    store = RunStore(root / tag)

    def timed() -> float:
        gc.collect()
        _sync(trainer.device)
        start = time.perf_counter()
        _, result = execute(cfg, store, trainer=trainer)
        _sync(trainer.device)
        elapsed = time.perf_counter() - start
        store.close()
        if result.status != "completed":
            raise SystemExit(f"engine run {tag} ended {result.status}: {result.message}")
        timed.final_loss = result.final["train/loss_full"]  # type: ignore[attr-defined]
        return elapsed

    return timed


# ---- (b) the bare loop -----------------------------------------------------------------------


def _loss_fn(cfg: RunConfig, data: Dataset) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """The preset's data loss written directly (both presets are classification, no float64)."""
    assert data.task == "classification" and not cfg.loss.float64 and data.labeled is None
    if cfg.loss.name == "ce":
        return F.cross_entropy
    assert cfg.loss.mse_reduction == "mean" and data.num_classes is not None
    k = data.num_classes
    return lambda out, y: F.mse_loss(out, F.one_hot(y, k).to(out.dtype))


def _optimizer(cfg: RunConfig, params: list[torch.nn.Parameter]) -> torch.optim.Optimizer:
    o = cfg.optim
    assert o.schedule == "constant" and not o.warmup_steps
    cls = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW}[o.name]
    return cls(params, lr=o.lr, betas=(o.beta1, o.beta2), eps=o.eps, weight_decay=o.weight_decay)


@torch.no_grad()
def _bare_eval(model: torch.nn.Module, data: Dataset, loss_fn: Callable) -> dict[str, float]:
    """Same passes and metrics as engine.evaluation.evaluate + the trainer's weights/norm."""
    model.eval()
    out: dict[str, float] = {}
    for split, x, y in (("train", data.x_train, data.y_train), ("test", data.x_test, data.y_test)):
        logits = model(x)
        pred = logits.argmax(-1)
        out[f"{split}/loss"] = loss_fn(logits, y).item()
        out[f"{split}/acc"] = (pred == y).float().mean().item()
        if split == "train" and data.is_noisy is not None and data.y_train_true is not None:
            noisy = data.is_noisy
            out["train/acc_clean"] = (pred[~noisy] == y[~noisy]).float().mean().item()
            out["train/acc_noisy"] = (pred[noisy] == data.y_train_true[noisy]).float().mean().item()
            out["noisy/memorized_frac"] = (pred[noisy] == y[noisy]).float().mean().item()
    out["weights/norm"] = torch.linalg.vector_norm(
        torch.stack([p.norm() for p in model.parameters()])).item()
    model.train()
    return out


def prepare_bare(cfg: RunConfig) -> Callable[[], float]:
    """Build data, model and optimizer exactly as the engine does (untimed); return the timed run."""
    device = resolve_device(cfg.device)
    data = build_dataset(cfg.data, cfg.seed, device)
    torch.manual_seed(cfg.seed)
    model = build_model(cfg.model, data).to(device)
    torch.manual_seed(cfg.seed + 1)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = _optimizer(cfg, params)
    loss_fn = _loss_fn(cfg, data)
    n, steps, eval_every = data.n_train, cfg.train.steps, cfg.train.eval_every
    size = cfg.train.batch_size if 0 < cfg.train.batch_size < n else n
    generator = technique_generator(cfg.seed, "data_order")  # the engine's data-order stream
    x_train, y_train = data.x_train, data.y_train

    def timed() -> float:
        gc.collect()
        _sync(device)
        start = time.perf_counter()
        evals = [_bare_eval(model, data, loss_fn)]
        model.train()
        order, pos = None, n
        for step in range(1, steps + 1):
            if size == n:
                x, y = x_train, y_train
            else:
                if pos + size > n:
                    order, pos = torch.randperm(n, generator=generator).to(device), 0
                idx = order[pos:pos + size]
                pos += size
                x, y = x_train[idx], y_train[idx]
            optimizer.zero_grad(set_to_none=True)
            loss = loss_fn(model(x), y)
            loss.backward()
            optimizer.step()
            if step % eval_every == 0 or step == steps:
                evals.append(_bare_eval(model, data, loss_fn))
        _sync(device)
        elapsed = time.perf_counter() - start
        timed.final_loss = evals[-1]["train/loss"]  # type: ignore[attr-defined]
        return elapsed

    return timed


# ---- driver ----------------------------------------------------------------------------------


def parse_steps(items: list[str]) -> dict[str, int | None]:
    steps = dict(DEFAULT_STEPS)
    for item in items:
        if "=" in item:
            name, _, value = item.partition("=")
            if name not in steps:
                raise SystemExit(f"--steps {item}: unknown preset; choose from {', '.join(PRESETS)}")
            steps[name] = int(value)
        else:
            steps = dict.fromkeys(steps, int(item))
    return steps


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="interleaved A/B rounds (default 5)")
    parser.add_argument("--steps", nargs="*", default=[], metavar="[PRESET=]N",
                        help="steps for every preset (N) or one preset (PRESET=N); "
                             "default noisy-labels=1900 (its own), grokking-quadratic=300")
    parser.add_argument("--presets", nargs="*", default=list(PRESETS), choices=PRESETS)
    parser.add_argument("--threads", type=int, default=1,
                        help="torch intra-op threads for both sides (default 1: the engine's train.threads=0)")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda", "auto"),
                        help="device for both sides (default cpu)")
    parser.add_argument("--diagnostics", action="store_true",
                        help="keep the engine's default-on instruments (off by default: the bare loop has none)")
    args = parser.parse_args(argv)

    torch.set_flush_denormal(True)
    torch.set_num_threads(args.threads)
    steps = parse_steps(args.steps)
    configs = {p: make_config(p, steps[p], args.threads, args.device, args.diagnostics) for p in args.presets}
    times: dict[str, dict[str, list[float]]] = {p: {"engine": [], "bare": []} for p in configs}
    losses: dict[str, dict[str, float]] = {p: {} for p in configs}

    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, repeats {args.repeats}, "
          + ", ".join(f"{p} {c.train.steps} steps (eval every {c.train.eval_every})" for p, c in configs.items()))
    with tempfile.TemporaryDirectory(prefix="bench_trainer_") as tmp:
        root = Path(tmp)
        # Warm-up (untimed): imports, allocator, first-call paths of both sides.
        for p, cfg in configs.items():
            warm = cfg.model_copy(update={"train": cfg.train.model_copy(update={"steps": 2 * cfg.train.eval_every})})
            prepare_engine(warm, root, f"warm-{p}")()
            prepare_bare(warm)()
        for r in range(args.repeats):
            for p, cfg in configs.items():
                for kind in ("engine", "bare"):
                    run = prepare_engine(cfg, root, f"{p}-{r}") if kind == "engine" else prepare_bare(cfg)
                    torch.set_num_threads(args.threads)  # Trainer() re-applies its own; keep them equal
                    elapsed = run()
                    times[p][kind].append(elapsed)
                    losses[p][kind] = run.final_loss  # type: ignore[attr-defined]
                    print(f"  round {r + 1}/{args.repeats} {p:<19} {kind:<6} {elapsed:7.3f} s", flush=True)

    ratios: dict[str, float] = {}
    for p, cfg in configs.items():
        eng, bare = times[p]["engine"], times[p]["bare"]
        paired = [a / b for a, b in zip(eng, bare, strict=True)]
        ratios[p] = statistics.median(paired)
        n = cfg.train.steps
        me, mb = statistics.median(eng), statistics.median(bare)
        print(f"{p}: engine median {me:.3f} s ({1e3 * me / n:.3f} ms/step), bare median {mb:.3f} s "
              f"({1e3 * mb / n:.3f} ms/step); ratio of medians {me / mb:.3f}, median paired ratio "
              f"{ratios[p]:.3f} (paired: {', '.join(f'{x:.2f}' for x in paired)})")
        le, lb = losses[p]["engine"], losses[p]["bare"]
        print(f"{p}: final full-train loss engine {le:.6g} bare {lb:.6g} (|Δ| {abs(le - lb):.2g})")
    print("bench_trainer: " + " ".join(f"{p} ratio={x:.2f}" for p, x in ratios.items()) + f" (target ≤ {TARGET:.2f})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
