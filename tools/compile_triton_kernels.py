#!/usr/bin/env python
"""Compile the PWLU Triton kernels to cubin for real GPUs (default sm_80 and sm_90), no GPU needed.

Prints, per kernel variant and architecture, the cubin size, registers per thread and spilled
bytes (from ptxas). The logic is :func:`pwlu_det.layers.pwlu_triton.compile_for_targets`.
"""

import argparse
import dataclasses
import json
import logging
import os
import sys


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
