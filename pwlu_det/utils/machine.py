"""The machine a measurement ran on: CPU model, instruction sets and thread count.

CPU training is deterministic on one machine but not across machines (oneDNN picks kernels by CPU
and splits reductions by thread count), so every published figure carries this record, and the
demo says when its machine differs from the documented run's.
"""

from __future__ import annotations

import platform

import torch

__all__ = ["MACHINE_KEYS", "describe_machine", "machine_info", "machine_differences"]

#: The keys of :func:`machine_info`, also the machine columns of the comparison's results.csv.
MACHINE_KEYS = ("cpu", "pwlu_isa", "aten_isa", "threads")


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def machine_info() -> dict[str, str | int]:
    """This process's machine.

    Returns:
        ``cpu``: the CPU model (``lscpu``'s "Model name"); ``pwlu_isa``: the instruction set of
        the PWLU C++ kernel (``avx512``, ``avx2``, ``scalar``, or ``none`` without the
        extension); ``aten_isa``: PyTorch's own (``torch.backends.cpu.get_cpu_capability()``);
        ``threads``: ``torch.get_num_threads()``.
    """
    from pwlu_det.layers import pwlu_cpp

    return {
        "cpu": _cpu_model(),
        "pwlu_isa": pwlu_cpp.cpu_capability() if pwlu_cpp.available() else "none",
        "aten_isa": torch.backends.cpu.get_cpu_capability().lower(),
        "threads": torch.get_num_threads(),
    }


def describe_machine(info: dict) -> str:
    """One line, e.g. ``Intel(R) Xeon(R) Processor, PWLU kernel avx512, ATen avx512, 2 threads``."""
    return (
        f"{info.get('cpu') or 'unknown CPU'}, PWLU kernel {info.get('pwlu_isa') or '?'}, "
        f"ATen {info.get('aten_isa') or '?'}, {info.get('threads') or '?'} threads"
    )


def machine_differences(recorded: dict, current: dict) -> list[str]:
    """The keys of :data:`MACHINE_KEYS` whose values differ, as ``"key: recorded -> current"``.

    Values are compared as text, so a record read back from CSV compares equal to a live one.
    """
    return [
        f"{key}: {recorded.get(key)} -> {current.get(key)}"
        for key in MACHINE_KEYS
        if str(recorded.get(key)) != str(current.get(key))
    ]
