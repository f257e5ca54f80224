"""The Triton kernels as compiled for GPUs, checked without one.

- The ops' fake (meta) implementation, as ``torch.compile`` / ``torch.export`` trace it, on fake
  CUDA tensors.
- ``tools/compile_triton_kernels.py``: real cubin for sm_80 and sm_90, no GPU; and with
  ``--check-int64`` the 64-bit-indexing variants' TTIR, where no offset into a large tensor
  may be 32-bit or computed from an i32 multiply (the offset checker itself is tested on TTIR
  snippets, among them the pre-fix backward kernel's).

The kernels run on CPU under the interpreter in ``tests/triton``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]


# --------------------------------------------------------------------------------------------
# Compiled-mode checks (no interpreter): what torch.compile / torch.export trace
# --------------------------------------------------------------------------------------------


def test_fake_tensor_shapes_strides_dtypes():
    """The ops' fake implementation on fake CUDA tensors: shapes, strides, dtypes, devices."""
    from torch._subclasses.fake_tensor import FakeTensorMode
    from triton.runtime.jit import JITFunction

    from pwlu_det.layers import pwlu_triton

    assert isinstance(pwlu_triton.jit_kernels()[0], JITFunction)
    ops = torch.ops.pwlu_det
    with FakeTensorMode():
        for memory_format in (torch.contiguous_format, torch.channels_last):
            for dtype in (torch.float32, torch.bfloat16):
                x = torch.empty(2, 4, 3, 5, device="cuda", dtype=dtype)
                x = x.to(memory_format=memory_format)
                vec = torch.empty(4, device="cuda")
                heights = torch.empty(4, 17, device="cuda", dtype=torch.float64)
                params = (vec, vec, heights, vec, vec)
                y = ops.pwlu_forward(x, *params, 1)
                assert (y.shape, y.stride(), y.dtype, y.device) == (
                    x.shape,
                    x.stride(),
                    x.dtype,
                    x.device,
                )
                grads = ops.pwlu_backward(y, x, *params, 1)
                assert grads[0].shape == x.shape and grads[0].dtype == dtype
                for g, p in zip(grads[1:], params, strict=True):
                    assert (g.shape, g.dtype, g.device) == (p.shape, p.dtype, p.device)


# --------------------------------------------------------------------------------------------
# tools/compile_triton_kernels.py
# --------------------------------------------------------------------------------------------


def _child_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env.update(extra)
    return env


def test_aot_compile_sm80_sm90(tmp_path: Path) -> None:
    """Real cubin for every kernel variant on sm_80 and sm_90, no GPU, no spills."""
    env = _child_env(TRITON_CACHE_DIR=str(tmp_path / "triton-cache"))  # really compile
    proc = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "compile_triton_kernels.py"), "--json"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr
    builds = json.loads(proc.stdout)
    kernels = {b["kernel"] for b in builds}
    assert kernels == {"_pwlu_forward_kernel", "_pwlu_backward_kernel", "_pwlu_param_grad_kernel"}
    for arch in (80, 90):
        variants = [b for b in builds if b["arch"] == arch]
        assert {b["kernel"] for b in variants} == kernels
        assert len(variants) == len(builds) // 2
    for b in builds:
        assert b["cubin_bytes"] > 0, b
        assert b["registers"] is not None and 0 < b["registers"] <= 128, b
        assert (b["spill_stores"], b["spill_loads"]) == (0, 0), b
    assert list(tmp_path.joinpath("triton-cache").rglob("*.cubin")), "nothing was compiled"


def test_int64_offsets_in_ttir() -> None:
    """Every INDEX_64 variant: offsets into x, y, g, grad_x and the sums are i64 from the start."""
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "tools" / "compile_triton_kernels.py"),
            "--check-int64",
            "--arch",
            "90",
            "--json",
        ],
        env=_child_env(),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.stdout, proc.stderr
    checks = json.loads(proc.stdout)
    failures = [c for c in checks if not c["ok"]]
    assert not failures, json.dumps(failures, indent=1)
    assert proc.returncode == 0, proc.stderr
    kernels = {c["kernel"] for c in checks}
    assert kernels == {"_pwlu_forward_kernel", "_pwlu_backward_kernel"}
    for c in checks:  # x and y; x, g, grad_x and both planes of the sums
        minimum = 2 if c["kernel"] == "_pwlu_forward_kernel" else 5
        assert c["offsets_checked"] >= minimum, c


# The pre-fix backward kernel's TTIR under INDEX_64 (sm_90, trimmed): row is int64, but
# channels * inner is multiplied in i32 and only then widened.
_TTIR_I32_PRODUCT = """
  tt.func public @k(%x_ptr: !tt.ptr<f32>, %unit_ptr: !tt.ptr<f32>, %channels: i32, %inner: i32) {
    %c3_i32 = arith.constant 3 : i32 loc(#loc2)
    %r_program = tt.get_program_id x : i32 loc(#loc1)
    %r_program_15 = arith.extsi %r_program : i32 to i64 loc(#loc121)
    %left_bound_18 = arith.muli %r_program, %c3_i32 : i32 loc(#loc123)
    %left_bound_19 = tt.addptr %unit_ptr, %left_bound_18 : !tt.ptr<f32>, i32 loc(#loc124)
    %offs = arith.muli %channels, %inner : i32 loc(#loc132)
    %offs_30 = arith.extsi %offs : i32 to i64 loc(#loc133)
    %offs_31 = arith.muli %r_program_15, %offs_30 : i64 loc(#loc133)
    %pos = tt.make_range {end = 1024 : i32, start = 0 : i32} : tensor<1x1x1024xi32> loc(#loc3)
    %offs_32 = arith.extsi %pos : tensor<1x1x1024xi32> to tensor<1x1x1024xi64> loc(#loc133)
    %offs_33 = tt.splat %offs_31 : i64 -> tensor<1x1x1024xi64> loc(#loc133)
    %offs_34 = arith.addi %offs_33, %offs_32 : tensor<1x1x1024xi64> loc(#loc133)
    %x = tt.splat %x_ptr : !tt.ptr<f32> -> tensor<1x1x1024x!tt.ptr<f32>> loc(#loc134)
    %x_35 = tt.addptr %x, %offs_34 : tensor<1x1x1024x!tt.ptr<f32>>, tensor<1x1x1024xi64> loc(#loc4)
    tt.return loc(#loc)
  } loc(#loc)
"""


def _loop_ttir(i32_product_feeds: str) -> str:
    """A row offset carried by an scf.for; an i32 product feeds the row or an accumulator."""
    row_step, acc_step = ("%m64", "%one") if i32_product_feeds == "row" else ("%c128", "%m64")
    types = "tensor<128xi64>, tensor<128xi64>"
    carried = "iter_args(%row = %init, %acc = %init)"
    return f"""
  tt.func public @k(%x_ptr: !tt.ptr<f32>, %n: i32) {{
    %c0 = arith.constant 0 : i32
    %c1 = arith.constant 1 : i32
    %c128_i32 = arith.constant 128 : i32
    %c128 = arith.constant dense<128> : tensor<128xi64>
    %one = arith.constant dense<1> : tensor<128xi64>
    %init = arith.constant dense<0> : tensor<128xi64>
    %xs = tt.splat %x_ptr : !tt.ptr<f32> -> tensor<128x!tt.ptr<f32>>
    %res:2 = scf.for %step = %c0 to %n step %c1 {carried} -> ({types})  : i32 {{
      %q = tt.addptr %xs, %row : tensor<128x!tt.ptr<f32>>, tensor<128xi64>
      %m = arith.muli %step, %c128_i32 : i32
      %m1 = arith.extsi %m : i32 to i64
      %m64 = tt.splat %m1 : i64 -> tensor<128xi64>
      %row_next = arith.addi %row, {row_step} : tensor<128xi64>
      %acc_next = arith.addi %acc, {acc_step} : tensor<128xi64>
      scf.yield %row_next, %acc_next : tensor<128xi64>, tensor<128xi64>
    }} loc(#loc5)
    tt.return
  }}
"""


def test_ir_offset_check_finds_i32_products() -> None:
    """The TTIR offset checker flags what the 64-bit check must catch, and nothing else."""
    from pwlu_det.layers.triton_offsets import i32_offset_multiplies

    checked, i32_offsets, multiplies = i32_offset_multiplies(_TTIR_I32_PRODUCT, ["x_ptr"])
    assert checked == 1 and i32_offsets == []  # the final offset is i64, yet it overflowed
    assert [m.split(" loc(")[0] for m in multiplies] == [
        "%offs = arith.muli %channels, %inner : i32"
    ]
    # The i32 product of the table pointer (unit_ptr) is not a large tensor's offset.
    assert i32_offset_multiplies(_TTIR_I32_PRODUCT, ["unit_ptr"])[1:] == (
        ["%left_bound_19 = tt.addptr %unit_ptr, %left_bound_18 : !tt.ptr<f32>, i32 loc(#loc124)"],
        ["%left_bound_18 = arith.muli %r_program, %c3_i32 : i32 loc(#loc123)"],
    )
    # Widened before the multiply: clean.
    fixed = _TTIR_I32_PRODUCT.replace(
        "%offs = arith.muli %channels, %inner : i32", "%offs = arith.extsi %channels : i32 to i64"
    )
    assert i32_offset_multiplies(fixed, ["x_ptr"]) == (1, [], [])
    # Loop-carried offsets: the product reaches the row through scf.yield, or only the
    # accumulator (which is no offset).
    checked, _, multiplies = i32_offset_multiplies(_loop_ttir("row"), ["x_ptr"])
    assert checked == 1 and [m.split(" :")[0] for m in multiplies] == [
        "%m = arith.muli %step, %c128_i32"
    ]
    assert i32_offset_multiplies(_loop_ttir("acc"), ["x_ptr"]) == (1, [], [])
