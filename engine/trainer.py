"""The training loop: events out, commands in.

One update runs commands, the lr schedule and the techniques' hooks in the order every technique
relies on, documented once in ``engine/regularizers/base.py``.

A non-finite loss ends the run as ``diverged`` with the history kept, and so does a finite
blow-up: a training loss above ``BLOWUP_FACTOR`` (10⁴) × the *initial loss*, defined as the first
recorded training loss (step 1's, measured before that step's update); the rule lives in
``engine/outcome.py`` with the other verdicts. A run whose loss climbed
to 1e15 and stayed finite used to end "completed"; 10⁴ sits far above the spikes of a run that is
still training and far below what a run that has left the basin reaches. An exception ends the
run as ``failed``. ``Trainer.events()`` is a generator, so the same loop serves the CLI, the UI
worker and the tests; ``Trainer.run(*subscribers)`` drives it and hands every event to each
subscriber.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from engine import config as config_mod
from engine.batch import Batch, LossContext, Setup
from engine.config import ConfigError, RunConfig
from engine.data import Dataset, build_dataset
from engine.data.tasks import TaskSchedule
from engine.diagnostics import Diagnostic, DiagnosticContext, preserved_state
from engine.diagnostics import get as get_diagnostic
from engine.evaluation import BoundaryGrid, evaluate, probe_indices, snapshot_arrays
from engine.events import Artifact, Command, CommandQueue, Eval, Event, Snapshot, Status, Step
from engine.losses import data_loss, log_softmax
from engine.models import build_model
from engine.optim import build_optimizer, schedule_factor, set_lr, set_weight_decay
from engine.outcome import Judging, OutcomeTracker, divergence
from engine.regularizers import Regularizer, get
from engine.rng import technique_generator

LIVE_KEYS = ("optim.lr", "optim.weight_decay")


def resolve_device(name: str) -> torch.device:
    """``auto`` picks CUDA when present; asking for CUDA without one is a clear error."""
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device: cuda requested but no CUDA device is available; use --device cpu or auto")
    return torch.device("cuda" if name != "cpu" and torch.cuda.is_available() else "cpu")


def configure_torch(threads: int) -> None:
    """Per-thread numerics: flush denormals (a grokking run slowed 4× without) and a deliberate
    thread count.

    ``train.threads=0`` means one thread: on this 2-core class of machine the lab's models are
    too small to gain from a second intra-op thread, and a 2-thread OpenMP region slows 3–10×
    as soon as another process (the UI server, a sweep worker) wants a core — measured on the
    grokking-quadratic preset: 20 ms/step on 1 thread under load vs 35–200 ms/step on 2. A
    fixed count also keeps results bit-identical run to run whatever the machine's load.
    """
    torch.set_flush_denormal(True)
    torch.set_num_threads(threads or 1)


@dataclass
class RunResult:
    status: str
    steps: int
    message: str = ""
    final: dict[str, float] = field(default_factory=dict)
    outcome: str = ""


class Batches:
    """Full batch, or shuffled mini-batches without replacement from a private generator."""

    def __init__(self, n: int, batch_size: int, seed: int, device: torch.device) -> None:
        self.n, self.size, self.device = n, batch_size if 0 < batch_size < n else n, device
        self.generator = technique_generator(seed, "data_order")
        self._order = torch.arange(n, device=device)
        self._pos = n if self.size < n else 0

    @property
    def per_epoch(self) -> int:
        return math.ceil(self.n / self.size)

    def next(self) -> Tensor:
        if self.size == self.n:
            return self._order
        if self._pos + self.size > self.n:
            self._order = torch.randperm(self.n, generator=self.generator).to(self.device)
            self._pos = 0
        idx = self._order[self._pos:self._pos + self.size]
        self._pos += self.size
        return idx


class Trainer:
    """Builds everything a RunConfig describes, then trains it step by step."""

    def __init__(self, cfg: RunConfig, commands: CommandQueue | None = None) -> None:
        configure_torch(cfg.train.threads)
        self.cfg = cfg
        self.commands = commands or CommandQueue()
        self.device = resolve_device(cfg.device)
        self.data: Dataset = build_dataset(cfg.data, cfg.seed, self.device)
        self.tasks = TaskSchedule(cfg, self.data)  # data.tasks > 1: random labels, redrawn per task
        torch.manual_seed(cfg.seed)
        self.model = build_model(cfg.model, self.data).to(self.device)
        torch.manual_seed(cfg.seed + 1)  # dropout masks: global RNG, isolated from init
        self.total_steps = cfg.train.steps
        self.batches = Batches(self.data.n_train, cfg.train.batch_size, cfg.seed, self.device)
        self.base_lr = cfg.optim.lr
        self.lr = self.base_lr * schedule_factor(cfg.optim, 0, self.total_steps)
        setup = Setup(model=self.model, dataset=self.data, seed=cfg.seed, total_steps=self.total_steps,
                      num_classes=self.data.num_classes, device=self.device, lr=lambda: self.lr,
                      steps_per_epoch=self.batches.per_epoch)
        enabled = sorted(cfg.enabled_regularizers().items(), key=lambda item: not get(item[0]).reparametrizes)
        self.techniques: dict[str, Regularizer] = {name: get(name)(setup, **values) for name, values in enabled}
        # Techniques are built before the optimizer: a reparametrisation (weight_norm) changes which
        # tensors are parameters, and the optimizer must hold the final ones.
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        # model.train() walks every submodule through nn.Module.__setattr__ (≈ 20 µs a step on a
        # small MLP); each step only needs it when something left a module in eval mode.
        modules = tuple(self.model.modules())
        self._train_mode_modules = modules if all(type(m).train is nn.Module.train for m in modules) else None
        self.optimizer = build_optimizer(cfg.optim, self.params)
        for technique in self.techniques.values():  # those that reset optimizer state (ReDo) need it
            technique.bind_optimizer(self.optimizer)
        # Hooks are found one way, by override (the order they run in: engine/regularizers/base.py).
        chain = sorted(self.techniques.values(), key=lambda r: r.order)
        hooks = {hook: [r for r in chain if r.overrides(hook)] for hook in (
            "transform_batch", "transform_targets", "output_fn", "extra_loss", "after_backward", "step",
            "after_step", "metrics")}
        self._batch_hooks, self._target_hooks = hooks["transform_batch"], hooks["transform_targets"]
        self._loss_hooks, self._grad_hooks = hooks["extra_loss"], hooks["after_backward"]
        self._after_step_hooks, self._metric_hooks = hooks["after_step"], hooks["metrics"]
        # At most one of each (config validation refuses two): the output function and the step.
        output = next((r.output_fn for r in hooks["output_fn"]), None)
        self._output_fn = output or log_softmax
        self._stepper: Regularizer | None = next(iter(hooks["step"]), None)
        self.probe = probe_indices(self.data, seed=cfg.seed)
        self.boundary_grid = BoundaryGrid.for_data(self.data)  # 2-D classification only; fixed for the run
        self.diagnostics_context = DiagnosticContext(
            self.model, self.data, cfg, self.probe, self._objective_loss, self.optimizer, lambda: self.lr,
            techniques=tuple(self.techniques.values()), output_fn=output)
        active = cfg.active_diagnostics()
        self.instruments: dict[str, Diagnostic] = {
            name: get_diagnostic(name)(self.diagnostics_context, cfg.seed,
                                       **{k: v for k, v in settings.items() if k != "every"})
            for name, settings in active.items()
        }
        self.cadence = {name: settings["every"] for name, settings in active.items()}
        self.outcome = OutcomeTracker(Judging.of(cfg))
        self._initial_weights = self._weights()
        self._update_size: float | None = None
        self.step = 0
        self.state = "running"
        self.final: dict[str, float] = {}
        self.last_change = ""

    def _objective_loss(self, outputs: Tensor, batch: Batch) -> Tensor:
        """The data objective as optimised (loss, float64 option, output function): what the
        curvature instruments differentiate."""
        return data_loss(outputs, batch, self.cfg.loss, self.data.task, self._output_fn)[0]

    # ---- one update ----------------------------------------------------------------------
    def _train_step(self, step: int, log: bool) -> dict[str, float]:
        self.lr = self.base_lr * schedule_factor(self.cfg.optim, step - 1, self.total_steps)
        set_lr(self.optimizer, self.lr)
        idx = self.batches.next()
        labeled = None if self.data.labeled is None else self.data.labeled[idx]
        batch = Batch(self.data.x_train[idx], self.data.y_train[idx], idx, labeled=labeled)
        for hook in self._batch_hooks:
            batch = hook.transform_batch(batch, step)
        for hook in self._target_hooks:
            batch = hook.transform_targets(batch, step)
        metrics: dict[str, float] = {}
        self._ensure_train_mode()

        def closure(apply_after_backward: bool = True) -> Tensor:
            self.optimizer.zero_grad(set_to_none=True)
            outputs = self.model(batch.x)
            loss, log_probs = data_loss(outputs, batch, self.cfg.loss, self.data.task, self._output_fn)
            total = loss
            if self._loss_hooks:
                ctx = LossContext(batch, outputs, log_probs, self.model, step, self.total_steps, loss)
                for hook in self._loss_hooks:
                    term = hook.extra_loss(ctx)
                    if term is not None:
                        total = total + term
                        if log:
                            metrics[f"reg/{hook.name}"] = term.detach().item()
            total.backward()
            if apply_after_backward:
                if log:
                    metrics["grad/norm"] = _global_norm([p.grad for p in self.params if p.grad is not None])
                for hook in self._grad_hooks:
                    metrics.update(hook.after_backward(self.params, step))
                self.model.before_optimizer_step()
            if log and total is not loss:
                metrics["train/total_loss"] = total.detach().item()
            return loss

        loss = self._stepper.step(closure, self.optimizer) if self._stepper else _plain_step(closure, self.optimizer)
        self.model.after_optimizer_step()
        for hook in self._after_step_hooks:
            hook.after_step(step)
        if log:
            for hook in self._metric_hooks:
                metrics.update(hook.metrics())
        metrics["train/loss"] = loss.item()
        metrics["lr"] = self.lr
        return metrics

    def _ensure_train_mode(self) -> None:
        """``model.train()``, skipped when every module is already in train mode (the usual case:
        evaluation restores it) and no module overrides ``train``."""
        modules = self._train_mode_modules
        if modules is None:
            self.model.train()
            return
        for module in modules:
            if not module.training:
                self.model.train()
                return

    def events(self) -> Iterator[Event]:
        """The run as a stream of events; ends with a final Status."""
        configure_torch(self.cfg.train.threads)  # flush-to-zero is per-thread state
        log_every, eval_every = self.cfg.train.log_every, self.cfg.train.eval_every
        snap_every = self.cfg.train.snapshot_every
        yield Status("running", f"training on {self.device}", 0)
        yield self._eval(0)
        yield from self._measure_due(0)
        if snap_every:
            yield self._snapshot(0)
        initial_loss: float | None = None  # step 1's training loss: the blow-up reference
        for step in range(1, self.total_steps + 1):
            command = self._poll_command()
            if command is not None:
                yield from self._apply_commands(command)
            if self.state == "stopped":
                verdict = self.outcome.verdict("stopped")
                yield Status("stopped", verdict.reason if verdict else f"stopped by request at step {self.step}",
                             self.step, verdict.outcome if verdict else "")
                return
            log = step % log_every == 0 or step == self.total_steps
            before = self._weights() if step % eval_every == 0 else None  # for update/size
            metrics = self._train_step(step, log)
            if before is not None:
                self._update_size = _global_norm(torch._foreach_sub(self._weights(), before))
            self.step = step
            loss = metrics["train/loss"]
            if initial_loss is None:
                initial_loss = loss
            reason = divergence(loss, initial_loss)
            if reason:
                self.state = "diverged"
                self.final.update(metrics)
                yield Step(step, metrics)
                cause = f"; last live change: {self.last_change}" if self.last_change else ""
                yield Status("diverged", f"diverged at step {step} ({reason}){cause}", step, "diverged")
                return
            if log:
                self.final.update(metrics)
                yield Step(step, metrics)
            if step % eval_every == 0 or step == self.total_steps:
                yield self._eval(step)
            yield from self._measure_due(step)
            if snap_every and step % snap_every == 0:
                yield self._snapshot(step)
            if task_metrics := self.tasks.after_step(step, self.model):  # end of a task, then relabel
                self.final.update(task_metrics)
                yield Eval(step, task_metrics)
        self.state = "completed"
        verdict = self.outcome.verdict("completed")
        yield Status("completed", verdict.reason if verdict else f"completed {self.total_steps} steps",
                     self.total_steps, verdict.outcome if verdict else "")

    def run(self, *subscribers: Callable[[Event], Any]) -> RunResult:
        """Drive ``events()`` to the end, handing each event to every subscriber."""
        message, outcome = "", ""
        try:
            for event in self.events():
                if isinstance(event, Status):
                    message, outcome = event.message, event.outcome
                for subscriber in subscribers:
                    subscriber(event)
        except Exception as err:  # a failed run is recorded, not lost
            self.state, message = "failed", f"{type(err).__name__}: {err}"
            for subscriber in subscribers:
                subscriber(Status("failed", message, self.step))
        return RunResult(self.state, self.step, message, dict(self.final), outcome)

    # ---- evaluation and snapshots --------------------------------------------------------
    def _eval(self, step: int) -> Eval:
        metrics = evaluate(self.model, self.data, self.cfg.loss, self._output_fn)
        weights = self._weights()
        metrics["weights/norm"] = _global_norm(weights)
        metrics["weights/dist_init"] = _global_norm(torch._foreach_sub(weights, self._initial_weights))
        if step and self._update_size is not None:
            metrics["update/size"] = self._update_size
        if "train/acc" in metrics and "test/acc" in metrics:
            metrics["gap/train_test"] = metrics["train/acc"] - metrics["test/acc"]
        self.final.update(metrics)
        self.outcome.update(step, metrics)
        return Eval(step, metrics)

    def _weights(self) -> list[Tensor]:
        """A copy of the trainable weights (θ₀ for weights/dist_init, θ_t for update/size)."""
        return [p.detach().clone() for p in self.params]

    def _measure_due(self, step: int) -> Iterator[Event]:
        for name, every in self.cadence.items():
            if every and step % every == 0:
                yield from self.measure(name, step)

    def measure(self, name: str, step: int | None = None) -> Iterator[Event]:
        """Run one instrument now, in eval mode, leaving the run exactly as it was.

        Called between steps by the loop (scheduled or on demand), or directly on a trainer
        whose run has ended (the UI's "compute density now").
        """
        step = self.step if step is None else step
        instrument = self.instruments.get(name)
        if instrument is None:
            cls = get_diagnostic(name)
            if not cls.applies(self.cfg):
                raise ConfigError(f"diagnostics.{name}: does not apply to this run")
            instrument = self.instruments[name] = cls(self.diagnostics_context, self.cfg.seed)
        self.diagnostics_context.step = step
        with preserved_state(self.model):
            self.model.eval()
            result = instrument.measure(self.diagnostics_context, step)
        if result.metrics:
            self.final.update(result.metrics)
            self.outcome.update(step, result.metrics)  # e.g. sae/dead_frac for the verdict's reason
            yield Eval(step, result.metrics)
        for kind, arrays in result.artifacts.items():
            yield Artifact(step, kind, arrays)

    def _snapshot(self, step: int) -> Snapshot:
        features, labels, flags = snapshot_arrays(self.model, self.data, self.probe)
        boundary = self.boundary_grid.predict(self.model, self._output_fn) if self.boundary_grid else None
        return Snapshot(step, features, labels, flags, boundary)

    # ---- commands from other threads -----------------------------------------------------
    def _poll_command(self) -> Command | None:
        """The next queued command, or None — checked before every step, so kept lock-free."""
        return self.commands.get(block=False) if self.commands.pending() else None

    def _apply_commands(self, command: Command | None = None) -> Iterator[Status]:
        """Apply queued commands (starting with ``command`` if given); block while paused."""
        paused = False
        while True:
            if command is None:
                command = self.commands.get(block=paused, timeout=0.1)
                if command is None:
                    if paused:
                        continue
                    return
            if command.kind == "stop":
                self.state = "stopped"
                return
            if command.kind == "pause" and not paused:
                paused = True
                self.state = "paused"
                yield Status("paused", f"paused at step {self.step}", self.step)
            elif command.kind == "resume" and paused:
                paused = False
                self.state = "running"
                yield Status("running", f"resumed at step {self.step}", self.step)
            elif command.kind == "measure":
                try:
                    yield from self.measure(command.key)
                except (ConfigError, ValueError) as err:
                    yield Status(self.state, f"refused: {err}", self.step)
            elif command.kind == "set":
                try:
                    self.apply_setting(command.key, command.value)
                    yield Status(self.state, f"set {command.key}={command.value} at step {self.step}", self.step)
                except (ConfigError, ValueError, KeyError) as err:
                    yield Status(self.state, f"refused: {err}", self.step)
            command = None

    def check_setting(self, key: str, value: Any) -> Any:
        """Validate a live change (callable from any thread); return the coerced value."""
        if key in LIVE_KEYS:
            section, field_name = key.split(".")
            data = self.cfg.to_dict()
            data[section][field_name] = value
            return getattr(getattr(config_mod.validate(data), section), field_name)
        parts = key.split(".")
        if len(parts) == 3 and parts[0] == "regularizers":
            technique = self.techniques.get(parts[1])
            if technique is None:
                raise ConfigError(f"{key}: {parts[1]} is not enabled in this run; start a new run with it on")
            spec = technique.param(parts[2]) if parts[2] in technique.values else None
            if spec is None or not spec.live:
                raise ConfigError(f"{key}: not a live parameter; start a new run to change it")
            return spec.coerce(value, key)
        raise ConfigError(f"{key}: cannot change during a run (live keys: {', '.join(LIVE_KEYS)}, "
                          "regularizers.<name>.<param>)")

    def apply_setting(self, key: str, value: Any) -> None:
        value = self.check_setting(key, value)
        if key == "optim.lr":
            self.base_lr = value
        elif key == "optim.weight_decay":
            set_weight_decay(self.optimizer, value)
        else:
            _, name, param = key.split(".")
            self.techniques[name].set(param, value)
        self.last_change = f"{key}={value} at step {self.step}"

    def set(self, key: str, value: Any) -> None:
        """Queue a live change after validating it in the caller's thread (raises ConfigError)."""
        self.commands.set(key, self.check_setting(key, value))

    def pause(self) -> None:
        self.commands.pause()

    def resume(self) -> None:
        self.commands.resume()

    def stop(self) -> None:
        self.commands.stop()


def _plain_step(closure: Callable[[bool], Tensor], optimizer: torch.optim.Optimizer) -> Tensor:
    loss = closure(True)
    optimizer.step()
    return loss


def _global_norm(tensors: list[Tensor]) -> float:
    if not tensors:
        return 0.0
    return float(torch.linalg.vector_norm(torch.stack(torch._foreach_norm(tensors))))


def final_summary(metrics: dict[str, float]) -> dict[str, float]:
    """Finite, JSON-safe copy of the last value of each metric (NaN/inf become None in JSON)."""
    return {k: (v if math.isfinite(v) else None) for k, v in sorted(metrics.items())}  # type: ignore[misc]
