"""Shared test setup: deterministic torch, a temporary store (engine is installed: ``pip install -e .``)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

os.environ.setdefault("LAB_NO_WARMUP", "1")  # AppTests run app.py in-process: skip the umap JIT thread
torch.set_flush_denormal(True)
torch.set_num_threads(1)


@pytest.fixture
def store_path(tmp_path: Path) -> Path:
    return tmp_path / "runs" / "lab.db"
