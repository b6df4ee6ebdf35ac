"""TensorBoard export: the event file holds every stored scalar, the config, and the projector."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from engine.cli import main
from engine.store import RunStore
from engine.tb_export import TensorBoardMissing, export_tensorboard, log_dir_name

event_accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")


@pytest.fixture(scope="module")
def noisy_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    store = tmp_path_factory.mktemp("tb") / "lab.db"
    args = ["run", "--preset", "noisy-labels", "--set", "train.steps=40", "--set", "train.eval_every=20",
            "--set", "train.snapshot_every=20", "--store", str(store), "--quiet"]
    assert main(args) == 0
    with RunStore(store) as s:
        return store, s.list_runs()[0]["id"]


def test_every_scalar_matches_the_store(noisy_run: tuple[Path, str], tmp_path: Path) -> None:
    store_path, run_id = noisy_run
    with RunStore(store_path) as store:
        [log_dir] = export_tensorboard(store, run_id, tmp_path)
        stored = store.metrics(run_id)
        run = store.get_run(run_id)
    assert log_dir.name == log_dir_name(run) and log_dir.name.startswith("noisy-labels_")
    acc = event_accumulator.EventAccumulator(str(log_dir), size_guidance={event_accumulator.TENSORS: 0})
    acc.Reload()
    tags = set(acc.Tags()["tensors"])
    assert {"train/loss", "test/acc", "noisy/memorized_frac"} <= set(stored)
    assert set(stored) <= tags
    for name, (steps, values) in stored.items():
        events = acc.Tensors(name)
        assert [e.step for e in events] == steps.tolist(), name
        for event, value in zip(events, values.tolist(), strict=True):
            got = float(event.tensor_proto.float_val[0])
            assert (math.isnan(got) and math.isnan(value)) or got == pytest.approx(value, rel=1e-6), name
    config_text = acc.Tensors("config/text_summary")[0].tensor_proto.string_val[0].decode()
    assert json.loads(config_text.split("```json\n", 1)[1].rsplit("```", 1)[0]) == run["config"]


def test_snapshots_become_projector_embeddings(noisy_run: tuple[Path, str], tmp_path: Path) -> None:
    store_path, run_id = noisy_run
    with RunStore(store_path) as store:
        [log_dir] = export_tensorboard(store, run_id, tmp_path)
        snapshots = store.artifacts(run_id, kind="snapshot")
        first = store.load_snapshot(snapshots[0]["path"])
    assert snapshots
    projector = (log_dir / "projector_config.pbtxt").read_text()
    assert projector.count("embeddings {") == len(snapshots)
    step_dir = log_dir / f"{int(snapshots[0]['step']):05d}" / "features"
    tensors = (step_dir / "tensors.tsv").read_text().splitlines()
    metadata = (step_dir / "metadata.tsv").read_text().splitlines()
    assert len(tensors) == len(first["labels"]) and len(tensors[0].split("\t")) == first["features"].shape[1]
    assert metadata[0].split("\t") == ["label", "noisy", "correct"]
    rows = [line.split("\t") for line in metadata[1:]]
    assert [int(r[0]) for r in rows] == first["labels"].tolist()
    assert [int(r[1]) for r in rows] == first["flag_is_noisy"].astype(int).tolist()  # the preset has 40 % noise
    assert any(r[1] == "1" for r in rows)


def test_missing_tensorboard_is_one_line(noisy_run: tuple[Path, str], tmp_path: Path,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    import builtins

    real_import = builtins.__import__

    def no_tensorboard(name: str, *args: object, **kwargs: object) -> object:
        if name.startswith(("torch.utils.tensorboard", "tensorboard")):
            raise ImportError(f"No module named {name!r}")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_tensorboard)
    store_path, run_id = noisy_run
    with RunStore(store_path) as store, pytest.raises(TensorBoardMissing) as err:
        export_tensorboard(store, run_id, tmp_path)
    assert "pip install tensorboard" in str(err.value) and "\n" not in str(err.value)


def test_cli_export_tensorboard(noisy_run: tuple[Path, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
                                ) -> None:
    store_path, run_id = noisy_run
    out = tmp_path / "tb"
    assert main(["export", run_id, "--format", "tensorboard", "--out", str(out), "--store", str(store_path)]) == 0
    [printed] = capsys.readouterr().out.splitlines()
    assert Path(printed).parent == out and list(Path(printed).glob("events.out.tfevents.*"))
