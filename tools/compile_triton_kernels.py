#!/usr/bin/env python
"""Compile the PWLU Triton kernels to cubin for real GPUs (default sm_80 and sm_90), no GPU needed.

Prints, per kernel variant and architecture, the cubin size, registers per thread and spilled
bytes (from ptxas): :func:`compile_for_targets`.

With ``--check-int64``, instead: builds the 64-bit-indexing variants' TTIR and checks that every
offset into the large tensors is int64 with no i32 multiply upstream
(:func:`check_int64_offsets`); exit status 1 if one is not.

Uses Triton's internal compiler API (``ASTSource``, ``GPUTarget``), checked with Triton 3.8.
Needs no Detectron2 and no C++ extension.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import re
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as `python tools/compile_triton_kernels.py`, not installed
    sys.path.insert(0, str(ROOT))

from pwlu_det.layers.triton_offsets import i32_offset_multiplies  # noqa: E402

logger = logging.getLogger("compile_triton_kernels")
_INT32_MAX = 2**31 - 1


@dataclasses.dataclass(frozen=True)
class KernelBuild:
    """One kernel variant compiled for one GPU architecture.

    Attributes:
        kernel: the Triton kernel's name.
        variant: which specialization (constexpr values) was compiled.
        arch: the compute capability, e.g. 80 for sm_80.
        cubin_bytes: size of the cubin.
        registers: registers per thread, from ``ptxas -v`` (None if not reported).
        spill_stores, spill_loads: bytes spilled to local memory per thread (None if unknown).
        shared_bytes: static shared memory (scratch for reductions) from the kernel metadata.
        ptxas: the ptxas that built it, ``"<path> (release <version>)"``.
    """

    kernel: str
    variant: str
    arch: int
    cubin_bytes: int
    registers: int | None
    spill_stores: int | None
    spill_loads: int | None
    shared_bytes: int
    ptxas: str


@dataclasses.dataclass(frozen=True)
class _AotVariant:
    kernel: object
    name: str
    signature: dict[str, str]
    constexprs: dict[str, object]
    attrs: dict[tuple[int, ...], list[list[object]]]
    num_warps: int


# The SM count the backward's grid is planned for: an H100's or H200's (both 132). It sets only
# n_split and steps, which the kernel does not specialize on, so the cubin is the same for any.
SM_COUNT = 132


def _host():
    """The host module, with its kernels compiled for GPUs (not the interpreter's)."""
    from pwlu_det.layers import pwlu_triton

    if not pwlu_triton.available():
        raise RuntimeError(pwlu_triton.unavailable_reason())
    import triton

    if not isinstance(pwlu_triton.jit_kernels()[0], triton.runtime.jit.JITFunction):
        raise RuntimeError(
            "unset TRITON_INTERPRET (the kernels were created for Triton's interpreter and "
            "cannot be compiled)"
        )
    return pwlu_triton


def _specialize(launch, name: str, dtypes: dict[str, str]) -> _AotVariant:
    """Signature, constexprs and attributes as Triton's JIT would specialize a launch.

    Args:
        launch: the :class:`~pwlu_det.layers.pwlu_triton.KernelLaunch` the op would make.
        name: the variant's label.
        dtypes: the pointer arguments' element types, e.g. ``{"x_ptr": "fp32"}``.

    The JIT marks 16-byte aligned pointers (fresh torch allocations are) with
    ``tt.divisibility = 16``. Integers listed in the kernel's ``do_not_specialize`` stay plain
    i32/i64 (the PWLU kernels list all their shape integers); others equal to 1 become
    constants and others divisible by 16 get the divisibility attribute. The same here, so that
    the cubin is the one a GPU would run.
    """
    kernel = launch.kernel
    args = {**launch.scalars, **launch.constexprs}
    plain = {kernel.arg_names[i] if isinstance(i, int) else i for i in kernel.do_not_specialize}
    signature, constexprs, attrs = {}, {}, {}
    for index, arg in enumerate(kernel.arg_names):
        if arg in dtypes:
            signature[arg] = "*" + dtypes[arg]
            attrs[(index,)] = [["tt.divisibility", 16]]
        elif arg.isupper() or (arg not in plain and args[arg] == 1):  # a constexpr
            signature[arg] = "constexpr"
            constexprs[arg] = args[arg]
        else:  # the JIT passes ints that do not fit in int32 as int64
            signature[arg] = "i32" if -(2**31) <= args[arg] <= _INT32_MAX else "i64"
            if arg not in plain and args[arg] % 16 == 0:
                attrs[(index,)] = [["tt.divisibility", 16]]
    return _AotVariant(kernel, name, signature, constexprs, attrs, launch.num_warps)


_PARAM_POINTERS = ("lb_ptr", "rb_ptr", "h_ptr", "ls_ptr", "rs_ptr")
_GRAD_POINTERS = ("g_lb_ptr", "g_rb_ptr", "g_h_ptr", "g_ls_ptr", "g_rs_ptr")


def _forward_variant(name: str, dtype: str, view: tuple[int, int, int], index_64: bool):
    """The forward kernel for the view (outer, channels, inner) of ``dtype`` (N=16)."""
    (launch,) = _host().launch_plan("forward", *view, 16)
    launch = dataclasses.replace(launch, constexprs={**launch.constexprs, "INDEX_64": index_64})
    dtypes = {"x_ptr": dtype, "y_ptr": dtype, **dict.fromkeys(_PARAM_POINTERS, "fp32")}
    return _specialize(launch, name, dtypes)


def _backward_variants(
    name: str, view: tuple[int, int, int], num_intervals: int, index_64: bool
) -> list[_AotVariant]:
    """The float32 main and finalize backward kernels for the view, planned for SM_COUNT SMs."""
    main, finalize = _host().launch_plan("backward", *view, num_intervals, sm_count=SM_COUNT)
    main = dataclasses.replace(main, constexprs={**main.constexprs, "INDEX_64": index_64})
    dtypes = dict.fromkeys(("x_ptr", "g_ptr", "gx_ptr", "sums_ptr", *_PARAM_POINTERS), "fp32")
    c = main.constexprs
    tile = f"{c['GROUPS']}x[{c['BLOCK_R']},{c['BLOCK_C']},{c['BLOCK_I']}]"
    finalize_dtypes = dict.fromkeys(("sums_ptr", *_PARAM_POINTERS, *_GRAD_POINTERS), "fp32")
    return [
        _specialize(main, f"{name} tile={tile}", dtypes),
        _specialize(finalize, f"P={view[1]} N={num_intervals}", finalize_dtypes),
    ]


def _aot_variants() -> list[_AotVariant]:
    """The kernel specializations worth building, for typical detection-backbone shapes."""
    variants = []
    for name, dtype, view in (
        ("fp32 layer-wise", "fp32", (2 * 256 * 4096, 1, 1)),
        ("fp32 NCHW channel-wise C=256 HxW=64x64", "fp32", (2, 256, 4096)),
        ("fp32 channels_last channel-wise C=256", "fp32", (2 * 4096, 256, 1)),
        ("fp16 NCHW channel-wise C=256 HxW=64x64", "fp16", (2, 256, 4096)),
        ("bf16 channels_last channel-wise C=256", "bf16", (2 * 4096, 256, 1)),
    ):
        variants.append(_forward_variant(name, dtype, view, False))
    for layout, view in (
        ("layer-wise", (2 * 256 * 4096, 1, 1)),
        ("NCHW C=256 HxW=64x64", (2, 256, 4096)),
        ("NCHW C=256 HxW=7x7", (2, 256, 49)),
        ("channels_last C=256", (2 * 4096, 256, 1)),
    ):
        for n in (16, 64):
            variants.extend(_backward_variants(f"fp32 {layout} N={n}", view, n, False))
    return variants


def _ptxas_usage(ptx: str, arch: int) -> tuple[int | None, int | None, int | None]:
    """Registers and spill bytes of a PTX module, from ``ptxas -v`` (Triton's own ptxas).

    Triton runs ptxas with ``-v`` but drops the log; running it again on the same PTX with the
    same register-allocation flag gives the numbers (n_regs / n_spills on a CompiledKernel come
    only from loading it on a GPU).
    """
    from triton.backends.nvidia.compiler import get_ptxas, sm_arch_from_capability

    with tempfile.TemporaryDirectory() as tmp:
        src = os.path.join(tmp, "kernel.ptx")
        with open(src, "w") as f:
            f.write(ptx)
        cmd = [
            get_ptxas(arch).path,
            "-v",
            "--regAllocOptLevel=2",
            f"--gpu-name={sm_arch_from_capability(arch)}",
            src,
            "-o",
            os.path.join(tmp, "kernel.cubin"),
        ]
        result = subprocess.run(cmd, capture_output=True, text=True, check=False)
    log = result.stdout + result.stderr
    if result.returncode != 0:
        logger.warning("ptxas -v failed (%d): %s", result.returncode, log.strip())
        return None, None, None
    regs = re.search(r"Used (\d+) registers", log)
    spills = re.search(r"(\d+) bytes spill stores, (\d+) bytes spill loads", log)
    return (
        int(regs.group(1)) if regs else None,
        int(spills.group(1)) if spills else None,
        int(spills.group(2)) if spills else None,
    )


def _compile(variant: _AotVariant, arch: int):
    """``triton.compile`` one variant for ``sm_<arch>``; the compiled kernel (``.asm``)."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource, make_backend

    target = GPUTarget("cuda", arch, 32)
    options = make_backend(target).parse_options({"num_warps": variant.num_warps})
    src = ASTSource(
        fn=variant.kernel,
        signature=variant.signature,
        constexprs=variant.constexprs,
        attrs=variant.attrs,
    )
    return triton.compile(src, target=target, options=options.__dict__)


def compile_for_targets(archs: Sequence[int] = (80, 90)) -> list[KernelBuild]:
    """Compile every kernel variant to cubin for each CUDA architecture, without a GPU.

    Uses ``triton.compile(ASTSource(...), target=GPUTarget("cuda", arch, 32))`` and Triton's
    bundled ptxas.

    Args:
        archs: compute capabilities, e.g. ``(80, 90)`` for A100 and H100.

    Returns:
        One :class:`KernelBuild` per variant and architecture.

    Raises:
        RuntimeError: Triton is missing, or ``TRITON_INTERPRET=1`` is set (the kernels are then
            interpreter functions, which cannot be compiled).
        triton.CompilationError / PTXASError: a kernel fails to compile.
    """
    _host()
    from triton.backends.nvidia.compiler import get_ptxas

    builds = []
    for arch in archs:
        tool = get_ptxas(arch)  # bundled with Triton unless TRITON_PTXAS_PATH says otherwise
        for variant in _aot_variants():
            kernel = variant.kernel
            compiled = _compile(variant, arch)
            cubin = compiled.asm["cubin"]
            regs, spill_stores, spill_loads = _ptxas_usage(compiled.asm["ptx"], arch)
            builds.append(
                KernelBuild(
                    kernel=kernel.__name__,
                    variant=variant.name,
                    arch=arch,
                    cubin_bytes=len(cubin),
                    registers=regs,
                    spill_stores=spill_stores,
                    spill_loads=spill_loads,
                    shared_bytes=int(compiled.metadata.shared),
                    ptxas=f"{tool.path} (release {tool.version})",
                )
            )
            logger.info(
                "compiled %s [%s] for sm_%d: %d bytes cubin, %s registers",
                kernel.__name__,
                variant.name,
                arch,
                len(cubin),
                regs,
            )
    return builds


# --------------------------------------------------------------------------------------------
# 64-bit offsets, checked in the Triton IR (no GPU needed)
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class OffsetCheck:
    """What :func:`check_int64_offsets` found in one kernel variant's TTIR.

    Attributes:
        kernel: the Triton kernel's name.
        variant: which specialization (all with ``INDEX_64=True``).
        offsets_checked: ``tt.addptr`` ops on the large tensors' pointers (x, y, g, grad_x and
            the partial sums) whose offset was traced back.
        i32_offsets: those whose offset itself is 32-bit (TTIR lines).
        i32_multiplies: ``arith.muli`` in i32 that feed one of those offsets (TTIR lines).
    """

    kernel: str
    variant: str
    offsets_checked: int
    i32_offsets: tuple[str, ...]
    i32_multiplies: tuple[str, ...]

    @property
    def ok(self) -> bool:
        """True when every checked offset is 64-bit and no i32 product feeds one."""
        return self.offsets_checked > 0 and not self.i32_offsets and not self.i32_multiplies


def _int64_variants() -> list[tuple[_AotVariant, tuple[str, ...]]]:
    """``INDEX_64`` specializations for tensors past 2^31 elements, with their large pointers.

    The integer arguments are the ones such launches pass: each below 2^31 (so i32) except
    where the element count itself is larger (then i64, as the JIT passes it).
    """
    variants = []
    big = 2**31 + 2**20
    for name, dtype, view in (
        ("NCHW channel-wise, one sample of 4 x 2^29", "fp32", (1, 4, 2**29)),
        ("channels_last channel-wise C=256", "bf16", (big // 256, 256, 1)),
        ("layer-wise", "fp16", (big, 1, 1)),
    ):
        variant = _forward_variant(f"{dtype} {name}", dtype, view, True)
        variants.append((variant, ("x_ptr", "y_ptr")))

    for name, view in (
        ("NCHW, one sample of 4 x 2^29", (1, 4, 2**29)),
        ("NCHW (2, 256, 2048, 2048)", (2, 256, 2**22)),
        ("channels_last C=256", (big // 256, 256, 1)),
        ("layer-wise", (big, 1, 1)),
    ):
        main, _ = _backward_variants(f"fp32 {name}", view, 16, True)
        variants.append((main, ("x_ptr", "g_ptr", "gx_ptr", "sums_ptr")))
    return variants


def check_int64_offsets(arch: int = 90) -> list[OffsetCheck]:
    """Build the ``INDEX_64`` kernel variants' TTIR and check that their offsets are 64-bit.

    An offset past 2^31 elements must be computed in int64 from the start: an i32 product
    (``chan * inner``, ``channels * inner``) that is widened afterwards has already wrapped
    around, and the kernel reads and writes gigabytes away from its tensors. No GPU is needed.

    Args:
        arch: the compute capability to compile for.

    Returns:
        One :class:`OffsetCheck` per variant (see :attr:`OffsetCheck.ok`).

    Raises:
        RuntimeError: Triton is missing, or ``TRITON_INTERPRET=1`` is set.
    """
    checks = []
    for variant, pointers in _int64_variants():
        ttir = _compile(variant, arch).asm["ttir"]
        checked, i32_offsets, multiplies = i32_offset_multiplies(ttir, pointers)
        checks.append(
            OffsetCheck(
                kernel=variant.kernel.__name__,
                variant=variant.name,
                offsets_checked=checked,
                i32_offsets=tuple(i32_offsets),
                i32_multiplies=tuple(multiplies),
            )
        )
    return checks


def check_int64(arch: int, as_json: bool) -> int:
    """Print the 64-bit offset check of every INDEX_64 variant; 1 if any fails."""
    checks = check_int64_offsets(arch)
    if as_json:
        print(json.dumps([{**dataclasses.asdict(c), "ok": c.ok} for c in checks], indent=1))
    else:
        for c in checks:
            print(
                f"{'ok  ' if c.ok else 'FAIL'} {c.kernel.strip('_'):<22} {c.variant:<48} "
                f"{c.offsets_checked} offsets"
            )
            for line in c.i32_offsets:
                print(f"     32-bit offset: {line.split(' loc(')[0]}")
            for line in c.i32_multiplies:
                print(f"     i32 multiply:  {line.split(' loc(')[0]}")
        print(f"INDEX_64 TTIR for sm_{arch}: {sum(c.ok for c in checks)}/{len(checks)} variants ok")
    return 0 if all(c.ok for c in checks) else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--arch",
        type=int,
        nargs="+",
        default=[80, 90],
        help="compute capabilities to build for (default: 80 90)",
    )
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    parser.add_argument(
        "--check-int64",
        action="store_true",
        help="check the INDEX_64 variants' TTIR for 32-bit offsets instead (first --arch only)",
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    # Triton reads TRITON_INTERPRET when a kernel is defined: with it set, the kernels are
    # interpreter functions and cannot be compiled. Drop it before pwlu_det is imported.
    if os.environ.pop("TRITON_INTERPRET", "0") != "0":
        print("note: ignoring TRITON_INTERPRET for ahead-of-time compilation", file=sys.stderr)
    from pwlu_det.layers import pwlu_triton

    if not pwlu_triton.available():
        print(f"Triton is unavailable: {pwlu_triton.unavailable_reason()}", file=sys.stderr)
        return 1
    if args.check_int64:
        return check_int64(args.arch[0], args.json)
    builds = compile_for_targets(args.arch)

    if args.json:
        print(json.dumps([dataclasses.asdict(b) for b in builds], indent=1))
        return 0
    header = f"{'kernel':<22} {'variant':<50} {'arch':>5} {'cubin B':>8} {'regs':>5} {'spills':>7}"
    print(header)
    print("-" * len(header))
    for b in builds:
        spills = "?" if b.spill_stores is None else f"{b.spill_stores}/{b.spill_loads}"
        regs = "?" if b.registers is None else str(b.registers)
        print(
            f"{b.kernel.strip('_'):<22} {b.variant:<50} {'sm_' + str(b.arch):>5} "
            f"{b.cubin_bytes:>8} {regs:>5} {spills:>7}"
        )
    print("spills: bytes of spill stores/loads per thread (ptxas -v)")
    for ptxas in sorted({b.ptxas for b in builds}):
        print(f"ptxas: {ptxas}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
