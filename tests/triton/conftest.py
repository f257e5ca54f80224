"""The ``device`` of the Triton tests, from the session they run in.

- A session started with ``TRITON_INTERPRET=1`` (``make test`` starts one for this folder:
  ``TRITON_INTERPRET=1 python -m pytest tests/triton``): ``"interpreter"``, the kernels run by
  Triton's interpreter on CPU tensors.
- Any other session: ``"cuda"``, the kernels compiled for the GPU. Without a GPU, the root
  ``conftest.py`` does not collect this folder at all.

Triton reads ``TRITON_INTERPRET`` when a kernel is defined, so one session cannot do both.
"""

from __future__ import annotations

import pytest

from pwlu_det.layers import environment


@pytest.fixture(params=["interpreter" if environment.TRITON_INTERPRET else "cuda"])
def device(request: pytest.FixtureRequest) -> str:
    """``"interpreter"`` (CPU tensors, Triton's interpreter) or ``"cuda"``."""
    return request.param
