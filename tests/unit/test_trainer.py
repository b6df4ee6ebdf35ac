"""Trainer behaviour: determinism, live commands from another thread, divergence, schedules."""

from __future__ import annotations

import math
import threading

import pytest
import torch

from engine.config import ConfigError, OptimConfig, validate
from engine.events import Eval, Status, Step
from engine.optim import Lion, schedule_factor
from engine.trainer import Batches, Trainer


def small_config(**overrides: object) -> dict:
    cfg = {
        "seed": 3,
        "data": {"name": "moons", "n_train": 200, "n_test": 100},
        "model": {"name": "mlp", "width": 16, "depth": 2},
        "optim": {"name": "adam", "lr": 0.01},
        "train": {"steps": 40, "batch_size": 32, "eval_every": 10},
    }
    for key, value in overrides.items():
        section, _, field = key.partition(".")
        if field:
            cfg.setdefault(section, {})[field] = value
        else:
            cfg[section] = value
    return cfg


def collect(trainer: Trainer) -> list:
    return list(trainer.events())


def metric_trace(events: list) -> list[tuple]:
    return [(type(e).__name__, e.step, tuple(sorted(e.metrics.items()))) for e in events if isinstance(e, Step | Eval)]


def test_same_seed_gives_identical_metrics_and_other_seed_differs() -> None:
    cfg = validate(small_config(**{"model.dropout": 0.2}))
    first = metric_trace(collect(Trainer(cfg)))
    second = metric_trace(collect(Trainer(cfg)))
    assert first == second
    other = metric_trace(collect(Trainer(validate(small_config(seed=4, **{"model.dropout": 0.2})))))
    assert other != first


def test_events_order_and_final_status() -> None:
    events = collect(Trainer(validate(small_config())))
    assert isinstance(events[0], Status) and events[0].state == "running"
    assert isinstance(events[-1], Status) and events[-1].state == "completed"
    steps = [e.step for e in events if isinstance(e, Step)]
    assert steps == list(range(1, 41))
    evals = [e.step for e in events if isinstance(e, Eval) and "test/loss" in e.metrics]
    assert evals == [0, 10, 20, 30, 40]
    last_eval = [e for e in events if isinstance(e, Eval) and "test/acc" in e.metrics][-1].metrics
    assert {"train/acc", "test/acc", "test/loss", "weights/norm"} <= set(last_eval)
    assert last_eval["train/acc"] > 0.8  # moons is learnable in 40 Adam steps


def test_live_lr_change_takes_effect_at_next_step() -> None:
    trainer = Trainer(validate(small_config(**{"train.steps": 20})))
    lrs: dict[int, float] = {}
    for event in trainer.events():
        if isinstance(event, Step):
            lrs[event.step] = event.metrics["lr"]
            if event.step == 5:
                trainer.set("optim.lr", 0.123)
    assert lrs[5] == pytest.approx(0.01)
    assert lrs[6] == pytest.approx(0.123)
    assert trainer.optimizer.param_groups[0]["lr"] == pytest.approx(0.123)


def test_live_setting_is_validated_in_callers_thread() -> None:
    trainer = Trainer(validate(small_config()))
    with pytest.raises(ConfigError, match=r"optim\.lr"):
        trainer.set("optim.lr", -1)
    with pytest.raises(ConfigError, match=r"model\.width"):
        trainer.set("model.width", 3)
    with pytest.raises(ConfigError, match="not enabled"):
        trainer.set("regularizers.l2.lambda", 0.1)


def test_pause_resume_stop_from_another_thread() -> None:
    cfg = validate(small_config(**{"train.steps": 100_000, "train.batch_size": 0, "train.eval_every": 1000}))
    trainer = Trainer(cfg)
    seen: list = []
    reached, paused = threading.Event(), threading.Event()

    def subscriber(event: object) -> None:
        seen.append(event)
        if isinstance(event, Step) and event.step >= 10:
            reached.set()
        if isinstance(event, Status) and event.state == "paused":
            paused.set()

    worker = threading.Thread(target=trainer.run, args=(subscriber,))
    worker.start()
    assert reached.wait(30)
    trainer.pause()
    assert paused.wait(30)
    steps_at_pause = trainer.step
    threading.Event().wait(0.3)  # a paused trainer must not advance in this window
    assert trainer.step == steps_at_pause
    trainer.resume()
    trainer.stop()
    worker.join(30)
    assert not worker.is_alive()
    final = [e for e in seen if isinstance(e, Status)][-1]
    assert final.state == "stopped"
    assert trainer.step < 100_000


def test_nan_loss_ends_diverged_with_history_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    # The non-finite path itself: with the 10⁴× blow-up check off, this run goes on to inf/NaN.
    monkeypatch.setattr("engine.outcome.BLOWUP_FACTOR", math.inf)
    cfg = validate({
        "seed": 0,
        "data": {"name": "teacher_student", "n_train": 64, "n_test": 16, "dim": 8},
        "model": {"name": "mlp", "width": 32, "depth": 2, "init_scale": 5.0},
        "optim": {"name": "sgd", "lr": 50.0},
        "loss": {"name": "mse"},
        "train": {"steps": 500, "eval_every": 5},
    })
    trainer = Trainer(cfg)
    result_events: list = []
    result = trainer.run(result_events.append)
    assert result.status == "diverged"
    final = result_events[-1]
    assert isinstance(final, Status) and final.state == "diverged"
    assert final.message.startswith(f"diverged at step {result.steps} (loss became")
    losses = [e.metrics["train/loss"] for e in result_events if isinstance(e, Step)]
    assert len(losses) == result.steps and not math.isfinite(losses[-1])
    assert all(math.isfinite(v) for v in losses[:-1])


def test_minibatches_cover_every_example_once_per_epoch() -> None:
    batches = Batches(n=10, batch_size=3, seed=0, device=torch.device("cpu"))
    assert batches.per_epoch == 4
    epoch = torch.cat([batches.next() for _ in range(3)])
    assert sorted(epoch.tolist()) == sorted(set(epoch.tolist())) and len(epoch) == 9
    full = Batches(n=10, batch_size=0, seed=0, device=torch.device("cpu"))
    assert full.next().tolist() == list(range(10))


def test_lr_schedules() -> None:
    warm = OptimConfig(schedule="warmup", warmup_steps=4)
    assert [schedule_factor(warm, s, 100) for s in range(6)] == [0.25, 0.5, 0.75, 1.0, 1.0, 1.0]
    cosine = OptimConfig(schedule="cosine", min_lr_frac=0.1)
    assert schedule_factor(cosine, 0, 100) == pytest.approx(1.0)
    assert schedule_factor(cosine, 50, 100) == pytest.approx(0.55)
    assert schedule_factor(cosine, 100, 100) == pytest.approx(0.1)
    step = OptimConfig(schedule="step", step_every=10, step_gamma=0.5)
    assert [schedule_factor(step, s, 100) for s in (0, 9, 10, 25)] == [1.0, 1.0, 0.5, 0.25]


def test_lion_moves_every_coordinate_by_exactly_lr() -> None:
    w = torch.nn.Parameter(torch.tensor([0.5, -1.0, 2.0]))
    opt = Lion([w], lr=0.1)
    w.grad = torch.tensor([0.3, -2.0, 1e-4])
    before = w.detach().clone()
    opt.step()
    assert torch.allclose((w.detach() - before).abs(), torch.full((3,), 0.1))
    assert set(opt.state[w]) == {"exp_avg"}


def test_noisy_label_identity() -> None:
    cfg = validate({"seed": 1, "data": {"name": "digits", "n_train": 300, "n_test": 100, "noise": 0.4},
                    "model": {"name": "mlp", "width": 32}, "train": {"steps": 30, "eval_every": 30}})
    trainer = Trainer(cfg)
    metrics = [e for e in trainer.events() if isinstance(e, Eval) and "train/acc" in e.metrics][-1].metrics
    rho = float(trainer.data.is_noisy.float().mean())
    expected = (1 - rho) * metrics["train/acc_clean"] + rho * metrics["noisy/memorized_frac"]
    assert metrics["train/acc"] == pytest.approx(expected, abs=1e-6)


def test_worker_thread_flushes_denormals() -> None:
    """Flush-to-zero is per-thread state: the thread that trains must have it on."""
    seen: list[float] = []

    def probe(event: object) -> None:
        if isinstance(event, Step) and not seen:
            tiny = torch.tensor([1e-39], dtype=torch.float64).float()  # a float32 subnormal
            seen.append(float(tiny * 1.0))

    torch.set_flush_denormal(False)
    try:
        worker = threading.Thread(target=Trainer(validate(small_config(**{"train.steps": 2}))).run, args=(probe,))
        worker.start()
        worker.join(30)
    finally:
        torch.set_flush_denormal(True)
    assert seen == [0.0]


def test_update_size_and_distance_from_init() -> None:
    cfg = validate(small_config(**{"optim.name": "sgd", "optim.lr": 0.1, "train.batch_size": 0,
                                   "train.eval_every": 5, "train.steps": 10}))
    events = list(Trainer(cfg).events())
    evals = {e.step: e.metrics for e in events if isinstance(e, Eval) and "weights/norm" in e.metrics}
    steps = {e.step: e.metrics for e in events if isinstance(e, Step)}
    assert evals[0]["weights/dist_init"] == 0.0 and "update/size" not in evals[0]
    for t in (5, 10):  # plain full-batch SGD: θ_t − θ_{t−1} = −η g, so ‖update‖ = η‖g‖
        assert evals[t]["update/size"] == pytest.approx(0.1 * steps[t]["grad/norm"], rel=1e-5)
    assert evals[10]["weights/dist_init"] > evals[5]["weights/dist_init"] > 0
    assert evals[10]["gap/train_test"] == pytest.approx(evals[10]["train/acc"] - evals[10]["test/acc"])


def test_memorization_metrics_hand_case() -> None:
    from engine.evaluation import memorization

    given = torch.tensor([0, 1, 2, 2, 0, 1])
    true = torch.tensor([0, 1, 1, 0, 0, 2])
    noisy = given != true  # examples 2, 3, 5
    pred = torch.tensor([0, 2, 1, 2, 0, 1])  # 2: true label; 3: memorised; 5: memorised
    out = memorization(pred, given, true, noisy)
    assert out["train/acc_clean"] == pytest.approx(2 / 3)
    assert out["train/acc_noisy"] == pytest.approx(1 / 3)
    assert out["noisy/memorized_frac"] == pytest.approx(2 / 3)
