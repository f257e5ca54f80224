"""The ``device`` parameter of the CUDA tests, and where their interpreter twins run.

Each test runs twice: ``device="cuda"`` (skipped without a GPU, with the reason) and
``device="interpreter"``, its twin on CPU. Triton reads ``TRITON_INTERPRET`` when a kernel is
defined, and in a full ``make test`` session other modules have imported the kernels compiled
for GPUs long before, so the twins run in one child process with ``TRITON_INTERPRET=1``
(``tools/run_cuda_tests.py``, which needs no pytest); each twin here reports its verdict from
there. A pytest process started with ``TRITON_INTERPRET=1`` runs them itself.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
_RUNNER = ROOT / "tools" / "run_cuda_tests.py"
_verdicts: dict[str, dict[str, str]] = {}


@pytest.fixture(
    params=[
        "interpreter",
        pytest.param(
            "cuda",
            marks=pytest.mark.skipif(
                not torch.cuda.is_available(),
                reason="needs a CUDA GPU (its interpreter twin runs the same test on CPU)",
            ),
        ),
    ]
)
def device(request: pytest.FixtureRequest) -> str:
    """``"interpreter"`` (CPU tensors, Triton's interpreter) or ``"cuda"``."""
    return request.param


def _interpreting_here() -> bool:
    if os.environ.get("TRITON_INTERPRET") != "1":
        return False
    kernels = sys.modules.get("pwlu_det.layers.pwlu_triton")
    if kernels is None:  # not defined yet: they will be interpreter functions
        return True
    from triton.runtime.jit import JITFunction

    return not isinstance(kernels._pwlu_forward_kernel, JITFunction)


def _child_verdicts() -> dict[str, dict[str, str]]:
    """Run every interpreter twin once in a child process; ``{"module::test": verdict}``."""
    if not _verdicts:
        env = {**os.environ, "TRITON_INTERPRET": "1"}
        proc = subprocess.run(
            [sys.executable, str(_RUNNER), "--device", "interpreter", "--json", "-"],
            env=env,
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=900,
        )
        try:
            _verdicts.update(json.loads(proc.stdout)["results"])
        except (ValueError, KeyError) as e:
            raise RuntimeError(
                f"the interpreter twins crashed (exit {proc.returncode}): {e}\n"
                f"{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
            ) from e
    return _verdicts


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem: pytest.Function) -> bool | None:
    """Report an interpreter twin's verdict from the child process instead of running it."""
    callspec = getattr(pyfuncitem, "callspec", None)
    if callspec is None or callspec.params.get("device") != "interpreter":
        return None
    if _interpreting_here():
        return None  # run the body in this process
    key = f"{Path(str(pyfuncitem.fspath)).stem}::{pyfuncitem.originalname}"
    verdict = _child_verdicts().get(key)
    if verdict is None:
        pytest.fail(f"{key} did not run in the interpreter process", pytrace=False)
    if verdict["status"] == "skipped":
        pytest.skip(verdict["detail"])
    if verdict["status"] != "passed":
        pytest.fail(f"interpreter twin:\n{verdict['detail']}", pytrace=False)
    return True
