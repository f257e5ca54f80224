"""Shared pytest set-up: CPU only, fixed seeds, and the set-up scripts under tools/ importable."""

import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))


@pytest.fixture(autouse=True)
def _seed_everything():
    torch.manual_seed(0)
    yield
