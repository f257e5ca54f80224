#!/usr/bin/env python
"""Where the PWLU op's CUDA time goes: per-kernel device time, host time, resources, ncu.

``tools/benchmark_pwlu.py --device cuda`` says how fast the op is; this says why:

1. the device time of each kernel launched by one forward+backward (``torch.profiler``), on
   P2/P3 of an R50-FPN, float32 and bfloat16, NCHW and channels_last, layer- and channel-wise;
2. the registers, spills, shared memory and theoretical occupancy of every compiled variant;
3. the host (Python) time of an eager forward+backward on a small map, where the host, not
   the GPU, sets the pace: ``cProfile``'s top functions;
4. with ``--ncu-target``: one forward+backward and nothing else, for ``ncu`` to profile, e.g.
   ``ncu --clock-control none -k regex:pwlu -c 3 --section SpeedOfLight --section Occupancy
   python tools/profile_pwlu_cuda.py --ncu-target``.

Needs a GPU, torch and Triton; no Detectron2, no C++ extension.

Example::

    python tools/profile_pwlu_cuda.py --json output/gpu-check/profile.json
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import pstats
import sys
from pathlib import Path

import torch
from benchmark_pwlu import (
    CUDA_SHAPES,
    _cuda_input,
    _cuda_ops,
    _step,
    kernel_resources,
    print_kernel_resources,
)

VARIANTS = ("float32", "bfloat16", "float32 channels_last", "bfloat16 channels_last")
OPS = ("SiLU", "PWLU layer", "PWLU channel")


def kernel_times(shape_name: str, variant: str, op: str, repeats: int = 5) -> dict[str, float]:
    """Mean device microseconds per call of each kernel one forward+backward launches."""
    from torch.profiler import ProfilerActivity, profile

    device = torch.device("cuda", torch.cuda.current_device())
    shape = CUDA_SHAPES[shape_name]
    x, grad = _cuda_input(shape, variant, device)
    fn, params = _cuda_ops(shape[1], device)[op]
    step = _step(fn, x, grad, "forward+backward")
    leaves = [x, *params]

    def cleared_step() -> None:  # as in training after zero_grad: no accumulation kernels
        for t in leaves:
            t.grad = None
        step()

    for _ in range(3):
        cleared_step()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(repeats):
            cleared_step()
        torch.cuda.synchronize()
    times: dict[str, float] = {}
    for event in prof.key_averages():
        if event.device_type == torch.autograd.DeviceType.CUDA:
            us = getattr(event, "device_time_total", 0.0) / repeats
            times[event.key] = times.get(event.key, 0.0) + us
    for t in leaves:
        t.grad = None
    return times


def host_profile(shape_name: str = "P5 (2,256,25,42)", calls: int = 200) -> str:
    """cProfile's top functions (by own time) of ``calls`` eager channel-wise forward+backward."""
    device = torch.device("cuda", torch.cuda.current_device())
    shape = CUDA_SHAPES[shape_name]
    x, grad = _cuda_input(shape, "float32", device)
    fn, _ = _cuda_ops(shape[1], device)["PWLU channel"]
    step = _step(fn, x, grad, "forward+backward")
    for _ in range(5):
        step()
    torch.cuda.synchronize()
    profiler = cProfile.Profile()
    profiler.enable()
    for _ in range(calls):
        step()
    torch.cuda.synchronize()
    profiler.disable()
    out = io.StringIO()
    stats = pstats.Stats(profiler, stream=out)
    stats.sort_stats("tottime").print_stats(25)
    total = stats.total_tt
    return f"{calls} calls on {shape_name}, {1e6 * total / calls:.0f} us host time per call\n" + (
        out.getvalue()
    )


def ncu_target() -> None:
    """One channel-wise forward+backward on P2 float32 after compiling on a tiny input."""
    device = torch.device("cuda", torch.cuda.current_device())
    fn, _ = _cuda_ops(256, device)["PWLU channel"]
    small, small_grad = _cuda_input((1, 256, 4, 4), "float32", device)
    _step(fn, small, small_grad, "forward+backward")()
    x, grad = _cuda_input(CUDA_SHAPES["P2 (2,256,200,336)"], "float32", device)
    torch.cuda.synchronize()
    _step(fn, x, grad, "forward+backward")()
    torch.cuda.synchronize()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", help="also write the results to this JSON file")
    parser.add_argument("--ncu-target", action="store_true", help="one call for ncu, then exit")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("no GPU found (torch.cuda.is_available() is False)")
    if args.ncu_target:
        ncu_target()
        return 0
    report: dict = {"device": torch.cuda.get_device_name()}
    print(f"{report['device']}, torch {torch.__version__}; device us per call of each kernel")
    report["kernel_times"] = []
    for shape_name in ("P2 (2,256,200,336)", "P3 (2,256,100,168)"):
        for variant in VARIANTS:
            for op in OPS:
                times = kernel_times(shape_name, variant, op)
                report["kernel_times"].append(
                    {"shape": shape_name, "variant": variant, "op": op, "kernels": times}
                )
                print(f"\n{shape_name} {variant} {op}: {sum(times.values()):.1f} us in all")
                for name, us in times.items():
                    print(f"  {us:>9.1f}  {name if len(name) <= 70 else name[:67] + '...'}")
    report["resources"] = kernel_resources()
    print_kernel_resources(report["resources"])
    report["host"] = host_profile()
    print("\nhost time of the eager path\n" + report["host"])
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(report, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
