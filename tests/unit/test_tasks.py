"""Random-label task switching (data.tasks, engine/data/tasks.py): boundaries, determinism, no-op at 1."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from engine.config import ConfigError, validate
from engine.data import build_dataset
from engine.data.tasks import TaskSchedule, task_labels
from engine.events import Eval
from engine.trainer import Trainer


def config(tasks: int, steps: int = 30, seed: int = 0, **data: Any) -> Any:
    return validate({
        "seed": seed,
        "data": {"name": "blobs", "n_train": 120, "n_test": 40, "n_classes": 4, "tasks": tasks, **data},
        "model": {"name": "mlp", "width": 16, "depth": 2},
        "optim": {"name": "adam", "lr": 0.01},
        "train": {"steps": steps, "batch_size": 16, "eval_every": 10},
    })


def schedule(cfg: Any) -> tuple[TaskSchedule, Any]:
    data = build_dataset(cfg.data, cfg.seed)
    return TaskSchedule(cfg, data), data


def test_one_task_changes_nothing() -> None:
    cfg = config(tasks=1)
    tasks, data = schedule(cfg)
    original = build_dataset(cfg.data, cfg.seed)
    model = torch.nn.Linear(2, 4)
    assert not any(tasks.after_step(step, model) for step in range(1, 31))
    assert torch.equal(data.y_train, original.y_train) and torch.equal(data.y_test, original.y_test)


def test_labels_are_redrawn_at_each_boundary_and_only_there() -> None:
    tasks, data = schedule(config(tasks=3))
    model = torch.nn.Linear(2, 4)
    seen = [data.y_train.clone()]
    for step in range(1, 31):
        before = data.y_train.clone()
        metrics = tasks.after_step(step, model)
        if step in (10, 20):
            assert metrics["task/index"] == step // 10 - 1
            assert not torch.equal(data.y_train, before)
            seen.append(data.y_train.clone())
        elif step == 30:  # the run's last update ends the last task; nothing left to relabel
            assert metrics["task/index"] == 2 and torch.equal(data.y_train, before)
        else:
            assert metrics == {} and torch.equal(data.y_train, before)
    for task, labels in enumerate(seen):
        assert torch.equal(labels, task_labels(160, 4, 0, task)[:120])
    # uniform over the classes: every class present in every task (120 draws over 4 classes)
    assert all(torch.bincount(labels, minlength=4).min() > 0 for labels in seen)


def test_task_labels_are_deterministic_per_seed_and_differ_between_seeds() -> None:
    first, second, other = (schedule(config(tasks=2, seed=s))[1] for s in (0, 0, 1))
    assert torch.equal(first.y_train, second.y_train) and torch.equal(first.y_test, second.y_test)
    assert not torch.equal(first.y_train, other.y_train)


def test_last_task_takes_the_remainder() -> None:
    tasks, _ = schedule(config(tasks=3, steps=10))
    assert [s for s in range(1, 11) if tasks.task_end(s)] == [3, 6, 10]


def test_relabelling_never_writes_into_tensors_the_builder_shares() -> None:
    """A builder may hand out views of cached arrays; the schedule relabels its own copies."""
    cfg = config(tasks=2)
    data = build_dataset(cfg.data, cfg.seed)
    shared = torch.cat([data.y_train, data.y_test])
    kept = shared.clone()
    data.y_train, data.y_test = shared[:120], shared[120:]
    TaskSchedule(cfg, data)
    assert torch.equal(shared, kept) and not torch.equal(data.y_train, kept[:120])


def test_trainer_reports_end_of_task_accuracy_on_that_tasks_labels() -> None:
    trainer = Trainer(config(tasks=3))
    events = [e for e in trainer.events() if isinstance(e, Eval)]
    ends = {e.step: e.metrics for e in events if "task/end_acc" in e.metrics}
    assert sorted(ends) == [10, 20, 30]
    train_acc = {e.step: e.metrics["train/acc"] for e in events if "train/acc" in e.metrics}
    for step, metrics in ends.items():  # the regular eval at the same step saw the same labels
        assert metrics["task/end_acc"] == pytest.approx(train_acc[step])
        assert metrics["task/sigma_max"] == max(v for k, v in metrics.items() if k.startswith("task/sigma_max_l"))
    assert trainer.final["task/index"] == 2


# sparse_features does not read n_classes: the helper's blobs value goes back to its default (3), not refused
@pytest.mark.parametrize("extra", [{"noise": 0.2}, {"n_labeled": 10},
                                   {"name": "sparse_features", "dim": 4, "n_classes": 3}])
def test_tasks_refuse_label_noise_few_labels_and_regression(extra: dict) -> None:
    with pytest.raises(ConfigError, match=r"^data\.tasks: "):
        config(tasks=2, **extra)


def test_more_tasks_than_steps_is_refused_with_the_key() -> None:
    with pytest.raises(ValueError, match=r"^data\.tasks: 5 tasks need at least as many train\.steps"):
        Trainer(config(tasks=5, steps=4))
