"""Shared pytest set-up: CPU only, fixed seeds, the set-up scripts under tools/ importable, and
the ``layers`` marker on the tests that exercise pwlu_det.layers alone."""

import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))

# Tests of the op and the module alone: no Detectron2 code runs in them, so the same torch gives
# the same result whichever Detectron2 is installed. CI's leg against Detectron2 main deselects
# them (-m "not layers"); the v0.6 leg runs them.
LAYERS_ONLY = {
    "test_layers_standalone.py",
    "test_pwlu_inference.py",
    "test_pwlu_module.py",
    "test_pwlu_op.py",
    "test_pwlu_triton.py",
}


def pytest_collection_modifyitems(items):
    for item in items:
        path = Path(str(item.fspath))
        if path.name in LAYERS_ONLY or path.parent.name == "cuda":
            item.add_marker(pytest.mark.layers)


@pytest.fixture(autouse=True)
def _seed_everything():
    torch.manual_seed(0)
    yield
