"""Shared test setup: repo root on sys.path, deterministic torch, a temporary store."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

os.environ.setdefault("LAB_NO_WARMUP", "1")  # AppTests run app.py in-process: skip the umap JIT thread
torch.set_flush_denormal(True)
torch.set_num_threads(1)


@pytest.fixture
def store_path(tmp_path: Path) -> Path:
    return tmp_path / "runs" / "lab.db"
