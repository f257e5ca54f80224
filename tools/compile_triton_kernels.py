#!/usr/bin/env python
"""Compile the PWLU Triton kernels to cubin for real GPUs (default sm_80 and sm_90), no GPU needed.

Prints, per kernel variant and architecture, the cubin size, registers per thread and spilled
bytes (from ptxas). The logic is :func:`pwlu_det.layers.pwlu_triton.compile_for_targets`.

With ``--check-int64``, instead: builds the 64-bit-indexing variants' TTIR and checks that every
offset into the large tensors is int64 with no i32 multiply upstream
(:func:`pwlu_det.layers.pwlu_triton.check_int64_offsets`); exit status 1 if one is not.

Needs no Detectron2 and no C++ extension.
"""

import argparse
import dataclasses
import json
import logging
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as `python tools/compile_triton_kernels.py`, not installed
    sys.path.insert(0, str(ROOT))


def check_int64(pwlu_triton, arch: int, as_json: bool) -> int:
    """Print the 64-bit offset check of every INDEX_64 variant; 1 if any fails."""
    checks = pwlu_triton.check_int64_offsets(arch)
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
        return check_int64(pwlu_triton, args.arch[0], args.json)
    builds = pwlu_triton.compile_for_targets(args.arch)

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
