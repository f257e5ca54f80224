"""``pwlu_det.layers`` on its own: no Detectron2, no C++ extension (as on the GPU machines).

A child process blocks ``detectron2`` and ``pwlu_det._C`` with a ``sys.meta_path`` finder,
runs a plain ``import pwlu_det.layers`` (the real package: its ``__init__`` skips the
Detectron2 parts), and runs ``pwlu()``, compiled and eager, and the PWLU module on CPU: once as
is (no CPU kernel: the reference, with a warning) and once with ``TRITON_INTERPRET=1`` (the
Triton kernels are then the CPU kernels, interpreted).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

_CHILD = r"""
import importlib.abc, json, logging, sys
BLOCKED = ("detectron2", "pwlu_det._C")

class Blocker(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if any(name == b or name.startswith(b + ".") for b in BLOCKED):
            raise ModuleNotFoundError(f"blocked for this test: {name}")
        return None

sys.meta_path.insert(0, Blocker())
import pwlu_det.layers  # the real package: Detectron2 is "not installed"
import pwlu_det
assert hasattr(pwlu_det, "PWLU") and not hasattr(pwlu_det, "add_pwlu_config"), vars(pwlu_det)
import torch
from pwlu_det.layers import PWLU, has_kernel, pwlu, pwlu_cpp, pwlu_reference, pwlu_triton

records = []
logging.getLogger("pwlu_det").addHandler(logging.Handler())
logging.getLogger("pwlu_det").handlers[-1].emit = lambda r: records.append(r.getMessage())
gen = torch.Generator().manual_seed(0)
ps = [-torch.rand(3, generator=gen) - 1, torch.rand(3, generator=gen) + 1,
      torch.randn(3, 9, generator=gen), torch.randn(3, generator=gen),
      torch.randn(3, generator=gen)]
ps = [p.double().requires_grad_() for p in ps]
x = (2 * torch.randn(2, 3, 5, 6, generator=gen)).double().requires_grad_()
want = pwlu_reference(x, *ps, channel_dim=1)
want_grads = torch.autograd.grad(want.sum(), [x, *ps])
# Compiled first (before any eager call has warned): the warning must not break fullgraph.
compiled = torch.compile(lambda t: pwlu(t, *[p.detach() for p in ps]), backend="eager",
                         fullgraph=True)
compiled_error = float((compiled(x.detach()) - want.detach()).abs().max())
got = pwlu(x, *ps)  # no extension: the reference (with a warning), or the interpreted kernels
got_grads = torch.autograd.grad(got.sum(), [x, *ps])
act = PWLU(3)
act.start_statistics()
act(x.detach())
act.realign()
print(json.dumps({
    "detectron2_imported": any(m.split(".")[0] == "detectron2" for m in sys.modules),
    "extension_imported": "pwlu_det._C" in sys.modules,
    "package_file": pwlu_det.__file__,
    "package_pwlu": pwlu_det.PWLU is PWLU and pwlu_det.pwlu is pwlu,
    "package_all": sorted(pwlu_det.__all__),
    "package_has_config": hasattr(pwlu_det, "add_pwlu_config"),
    "cpp_available": pwlu_cpp.available(),
    "cpp_reason": pwlu_cpp.unavailable_reason(),
    "triton_available": pwlu_triton.available(),
    "cpu_kernel": has_kernel("cpu"),
    "equal": bool(torch.equal(got, want)),
    "compiled_error": compiled_error,
    "error": float((got - want).abs().max()),
    "grad_error": max(float((a - b).abs().max()) for a, b in zip(got_grads, want_grads)),
    "module_finite": bool(torch.isfinite(act(x.detach())).all()),
    "warnings": records,
}))
"""


@pytest.mark.parametrize("interpreter", [False, True], ids=["reference", "interpreter"])
def test_layers_import_and_run_without_detectron2_and_extension(interpreter: bool) -> None:
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    if interpreter:
        env["TRITON_INTERPRET"] = "1"
    proc = subprocess.run(
        [sys.executable, "-c", _CHILD],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert not result["detectron2_imported"] and not result["extension_imported"]
    assert Path(result["package_file"]) == ROOT / "pwlu_det" / "__init__.py"
    assert result["package_pwlu"], result
    assert result["package_all"] == ["PWLU", "__version__", "pwlu"], result
    assert not result["package_has_config"], result
    assert not result["cpp_available"] and result["triton_available"]
    assert result["compiled_error"] < 1e-12  # fullgraph compile (through the warning path)
    assert result["error"] < 1e-12 and result["grad_error"] < 1e-10, result
    if interpreter:  # the Triton kernels, not the reference
        assert "TRITON_INTERPRET" in result["cpp_reason"] and result["cpu_kernel"], result
        assert not result["warnings"], result
    else:
        assert "blocked for this test" in result["cpp_reason"], result
        assert not result["cpu_kernel"] and result["equal"], result
        assert any("C++ extension is unavailable" in w for w in result["warnings"]), result
    assert result["module_finite"]
