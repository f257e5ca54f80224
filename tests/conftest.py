"""Shared pytest set-up: CPU only, fixed seeds, and the ``layers`` marker on the tests that
exercise pwlu_det.layers alone."""

from pathlib import Path

import pytest
import torch

from pwlu_det.layers import environment

ROOT = Path(__file__).resolve().parents[1]

# tests/layers and tests/triton: the op, its kernels and the module alone. No Detectron2 code runs
# in them, so the same torch gives the same result whichever Detectron2 is installed. CI's leg
# against Detectron2 main deselects them (-m "not layers"); the v0.6 leg runs them.
LAYERS_FOLDERS = {"layers", "triton"}

# tests/triton runs on a GPU, or in an interpreter session (TRITON_INTERPRET=1 python -m pytest
# tests/triton, which `make test` starts); a plain session without a GPU does not collect it.
collect_ignore = [] if environment.TRITON_INTERPRET or torch.cuda.is_available() else ["triton"]


def pytest_collection_modifyitems(items):
    for item in items:
        if LAYERS_FOLDERS & set(Path(str(item.fspath)).relative_to(ROOT / "tests").parts[:-1]):
            item.add_marker(pytest.mark.layers)


@pytest.fixture(autouse=True)
def _seed_everything():
    torch.manual_seed(0)
    yield
