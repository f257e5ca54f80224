"""Static check of compiled Triton kernels: are the offsets into large tensors 64-bit?

A kernel that indexes a tensor of more than 2**31 elements must compute its offsets in int64,
and no i32 product may feed them (a product that overflowed is wrong before any sign
extension). :func:`i32_offset_multiplies` reads a kernel's TTIR (Triton's first IR, built
without a GPU) and finds both faults; ``tools/compile_triton_kernels.py --check-int64`` runs it
on the 64-bit-indexing variants of the PWLU kernels.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

__all__ = ["i32_offset_multiplies"]

_VALUE = r"%[\w$.\-]+"
_I32_MULI = re.compile(r"\barith\.muli\b.*:\s*(?:i32|tensor<[^>]*xi32>)(?:\s|$)")
_FOR = re.compile(
    rf"scf\.for\s+({_VALUE})\s*=\s*({_VALUE})\s+to\s+({_VALUE})\s+step\s+({_VALUE})"
    r"(?:\s+iter_args\(([^)]*)\))?"
)


def i32_offset_multiplies(
    ttir: str, pointer_args: Sequence[str]
) -> tuple[int, list[str], list[str]]:
    """Trace the offsets of pointer arithmetic on ``pointer_args`` back through a TTIR module.

    A def-use walk over the SSA values: every ``tt.addptr`` whose base derives from one of the
    named kernel arguments has its offset operand followed back through all the values it is
    computed from, loop-carried values of ``scf.for`` included (an ``iter_args`` value depends
    on its initial value and on the matching ``scf.yield`` operand).

    Args:
        ttir: the module text (``compiled.asm["ttir"]``).
        pointer_args: kernel argument names, e.g. ``("x_ptr", "y_ptr")``.

    Returns:
        ``(offsets_checked, i32_offsets, i32_multiplies)``: the number of such ``tt.addptr``
        ops, the ones with a 32-bit offset, and the i32 ``arith.muli`` lines upstream of any
        offset (an i32 product that is sign-extended afterwards has already overflowed).
    """
    deps: dict[str, set[str]] = {}
    i32_muls: dict[str, str] = {}
    addptrs: list[tuple[str, str, str]] = []  # base, offset, line
    frames: list[tuple[list[str], str | None]] = []  # (iter_args, loop result) per region

    def depend(name: str, on: Sequence[str]) -> None:
        deps.setdefault(name, set()).update(on)

    for raw in ttir.splitlines():
        line = raw.strip()
        if line.startswith("}"):
            frame = frames.pop() if frames else ([], None)
            if line.endswith("{"):  # `} else {`: the same region op continues
                frames.append(frame)
            continue
        result = re.match(rf"({_VALUE})(?::\d+)?\s*=\s*(.*)", line)
        body = result.group(2) if result else line
        operands = re.findall(_VALUE, body)
        loop = _FOR.search(body)
        if loop:
            iv, *bounds = loop.group(1, 2, 3, 4)
            depend(iv, bounds)
            carried = []
            for pair in (loop.group(5) or "").split(","):
                if "=" in pair:
                    arg, init = (v.strip() for v in pair.split("=", 1))
                    depend(arg, [init])
                    carried.append(arg)
            if result:
                depend(result.group(1), [v for v in operands if v not in carried and v != iv])
            frames.append((carried, result.group(1) if result else None))
            continue
        if line.startswith("scf.yield") and frames:
            carried, loop_result = frames[-1]
            for arg, value in zip(carried, operands, strict=False):
                depend(arg, [value])
            if loop_result:
                depend(loop_result, operands)
            continue
        if result:
            name = result.group(1)
            depend(name, operands)
            if _I32_MULI.search(body):
                i32_muls[name] = line
            if body.startswith("tt.addptr") and len(operands) >= 2:
                addptrs.append((operands[0], operands[1], line))
        if line.endswith("{"):
            frames.append(([], result.group(1) if result else None))

    def upstream(name: str) -> set[str]:
        seen, todo = set(), [name]
        while todo:
            value = todo.pop()
            if value not in seen:
                seen.add(value)
                todo.extend(deps.get(value, ()))
        return seen

    roots = {"%" + a for a in pointer_args}
    checked, i32_offsets, multiplies = 0, [], {}
    for base, offset, line in addptrs:
        if not upstream(base) & roots:
            continue
        checked += 1
        offset_type = line.rsplit(":", 1)[-1]
        if not re.search(r"\bi64\b|xi64>", offset_type):
            i32_offsets.append(line)
        for value in upstream(offset):
            if value in i32_muls:
                multiplies[value] = i32_muls[value]
    return checked, i32_offsets, sorted(multiplies.values())
