"""Export a stored run as a TensorBoard log: scalars, the config, and embedding snapshots.

Researchers keep runs in TensorBoard; ``python -m engine export RUN_ID --format tensorboard
--out DIR`` then ``tensorboard --logdir DIR`` shows a lab run beside theirs. Written with
``torch.utils.tensorboard.SummaryWriter`` (the public writer; it needs the ``tensorboard``
package, which only this format uses, so it is imported lazily):

- every scalar metric at its recorded steps, under its lab name (``train/loss``, ``test/acc``),
  so TensorBoard groups them by the part before the slash as the lab's panels do;
- the run's config as a text entry (``config``, JSON in a code block);
- each feature snapshot as a projector embedding at its step (tag ``features``), with metadata
  columns ``label``, ``noisy`` and ``correct`` (``noisy``/``correct`` are ``-`` where the run has
  no label noise or no predictions).

The log goes to ``DIR/<run name or preset>_<run id>/``: TensorBoard names a run by its folder.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from engine.errors import ConfigError

if TYPE_CHECKING:
    from engine.store import RunStore

INSTALL_HINT = "pip install tensorboard (or pip install -e '.[tensorboard]')"


class TensorBoardMissing(RuntimeError):
    """The ``tensorboard`` package is not installed; one-line message with the install command."""


def _summary_writer() -> Any:
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise TensorBoardMissing(f"--format tensorboard needs the tensorboard package: {INSTALL_HINT}") from None
    return SummaryWriter


def log_dir_name(run: dict[str, Any]) -> str:
    """Folder (= TensorBoard run name) for a run: its name or preset, then its id; filesystem-safe."""
    label = run.get("name") or run.get("preset") or "run"
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", str(label)).strip("-.") or "run"
    return f"{slug[:60]}_{run['id']}"


def _metadata(arrays: dict[str, np.ndarray]) -> list[list[str]]:
    labels = arrays["labels"]
    n = len(labels)

    def column(key: str) -> list[str]:
        values = arrays.get(key)
        return ["-"] * n if values is None else [str(int(v)) for v in np.asarray(values).reshape(-1)]

    return [[str(int(label)), noisy, correct]
            for label, noisy, correct in zip(labels.reshape(-1), column("flag_is_noisy"), column("flag_correct"),
                                             strict=True)]


def export_tensorboard(store: RunStore, run_id: str, out_dir: str | Path) -> list[Path]:
    """Write the run's TensorBoard log under ``out_dir``; returns the run's log folder.

    Raises ConfigError for an unknown run and TensorBoardMissing when tensorboard is absent.
    """
    run = store.get_run(run_id)
    if run is None:
        raise ConfigError(f"RUN_ID {run_id!r}: no such run in {store.path}; see `python -m engine list`")
    writer_cls = _summary_writer()
    log_dir = Path(out_dir) / log_dir_name(run)
    writer = writer_cls(log_dir=str(log_dir))
    try:
        for name, (steps, values) in store.metrics(run["id"]).items():
            for step, value in zip(steps.tolist(), values.tolist(), strict=True):
                writer.add_scalar(name, value, global_step=int(step), new_style=True)
        config = json.dumps(run["config"], indent=2, default=str)
        writer.add_text("config", f"```json\n{config}\n```", global_step=0)
        for art in store.artifacts(run["id"], kind="snapshot"):
            arrays = store.load_snapshot(art["path"])
            if "features" not in arrays or "labels" not in arrays:
                continue
            features = np.asarray(arrays["features"], dtype=np.float32)
            if features.ndim != 2 or not math.isfinite(float(np.abs(features).sum())):
                continue  # the projector cannot show non-finite points (a diverged run's last snapshot)
            writer.add_embedding(features, metadata=_metadata(arrays), metadata_header=["label", "noisy", "correct"],
                                 global_step=int(art["step"] or 0), tag="features")
    finally:
        writer.close()
    return [log_dir]
