#!/usr/bin/env python
"""Benchmark the PWLU op against SiLU and ReLU, measured in the same run (CPU or CUDA).

CPU (default): per training shape (float32, NCHW), forward and forward+backward of SiLU, ReLU,
the op (layer- and channel-wise) and the public ``pwlu()`` (channel-wise) timed in ``--repeats``
interleaved rounds: medians in ms, the ratio to SiLU as the median (min-max) of its
round-by-round values, and the bytes autograd keeps alive for backward per input byte. Then the
forward alone on the small shapes a Mask R-CNN sees at inference (microseconds, channel-wise).
Targets for the C++ kernel: forward <= 1.0x SiLU, forward+backward <= 1.15x SiLU, saved = 1.0x.

CUDA (``--device cuda``): the Triton backend on the R50-FPN shapes (P2-P6 of an 800x1333 image
padded to 800x1344, batch 2, 256 channels; the mask head's RoI map (512, 256, 14, 14); the box
head's FC output (1024, 1024)), in float32 and bfloat16, forward and forward+backward:
microseconds (medians of ``triton.testing.do_bench``, L2 flushed), GB/s, the ratio to SiLU and
to a copy of the same bytes, the same under CUDA graphs (``do_bench_cudagraph``: no host
overhead), and the kernels launched per call (``torch.profiler``). Needs neither Detectron2
nor the C++ extension.

The CPU run then times the op's autograd in C++ against Python's formula (interleaved, in one
process). Both devices end with the bound projection that follows every optimizer step
(:func:`pwlu_det.layers.project_bounds`) on the 57 units of a PWLU Mask R-CNN R50-FPN: all units
in one call against one unit at a time (what a per-module loop costs), interleaved, medians.

Example::

    .venv/bin/python tools/benchmark_pwlu.py --threads 2
    .venv/bin/python tools/benchmark_pwlu.py --inference-only
    python tools/benchmark_pwlu.py --device cuda --json output/gpu-check/benchmark.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
import torch.utils.benchmark as benchmark
from tabulate import tabulate

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as `python tools/benchmark_pwlu.py`, pwlu_det not installed
    sys.path.insert(0, str(ROOT))
from pwlu_det.layers import PWLU, project_bounds, pwlu, pwlu_cpp  # noqa: E402
from pwlu_det.layers.pwlu_op import canonical_params  # noqa: E402

#: Training shapes: a ResNet-50 res2 map at batch 16, the demo's largest map (res2 of the
#: R18-FPN on a 256x256 image, batch 2) and a COCO image's res2 map at batch 2.
SHAPES = {
    "res2, batch 16": (16, 256, 56, 56),
    "demo res2": (2, 64, 64, 64),
    "COCO res2, batch 2": (2, 64, 400, 608),
}
# Inference: mask head (RoIs, 14x14 and 28x28), box head (RoIs, channels), small and large maps.
INFERENCE_SHAPES = (
    (50, 64, 14, 14),
    (50, 64, 28, 28),
    (250, 512),
    (1, 512, 8, 8),
    (1, 64, 128, 128),
)


def relu_like_params(channels: int | None, num_intervals: int = 16) -> list[torch.Tensor]:
    """PWLU parameters of a unit shaped like ReLU on [-3, 3] (layer- or channel-wise)."""
    shape = () if channels is None else (channels,)
    breaks = torch.linspace(-3.0, 3.0, num_intervals + 1)
    params = [
        torch.full(shape, -3.0),
        torch.full(shape, 3.0),
        breaks.clamp(min=0).expand(*shape, num_intervals + 1).clone(),
        torch.zeros(shape),
        torch.ones(shape),
    ]
    return [p.requires_grad_() for p in params]


def median_ms(fn: Callable[[], object], repeats: int, warmup: int = 2) -> float:
    """Median milliseconds of ``repeats`` single calls, timed by ``torch.utils.benchmark``."""
    timer = benchmark.Timer(stmt="fn()", globals={"fn": fn}, num_threads=torch.get_num_threads())
    timer.timeit(warmup)
    return 1e3 * statistics.median(timer.timeit(1).median for _ in range(repeats))


def saved_bytes(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> int:
    """Bytes of the distinct storages autograd saves for backward during ``fn(x)``."""
    storages: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        storages[storage.data_ptr()] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn(x)
    return sum(storages.values())


def activations(channels: int) -> dict[str, Callable[[torch.Tensor], torch.Tensor]]:
    """The activations timed on CPU; SiLU first (the baseline of the ratios).

    "PWLU op" is ``torch.ops.pwlu_det.pwlu_forward`` on canonical parameters, as the PWLU
    module calls it; ``pwlu()`` adds the public function's argument checks (Python).
    """
    layer, channel = relu_like_params(None), relu_like_params(channels)
    op = torch.ops.pwlu_det.pwlu_forward
    layer_op, channel_op = canonical_params(*layer), canonical_params(*channel)
    return {
        "SiLU": F.silu,
        "ReLU": F.relu,
        "PWLU op (layer)": lambda x: op(x, *layer_op, 1),
        "PWLU op (channel)": lambda x: op(x, *channel_op, 1),
        "pwlu() (channel)": lambda x: pwlu(x, *channel),
    }


def run(shape: tuple[int, ...], rounds: int, calls: int = 3) -> list[dict]:
    """Forward and forward+backward of each activation on ``shape``, in interleaved rounds.

    Each round times every activation (``calls`` calls each, their median), in an order that
    alternates between rounds, so that machine drift hits all alike; the ratio to SiLU is taken
    round by round. Returns per activation: median ms and the median, min and max of its
    per-round ratio to SiLU, for ``forward`` and ``forward_backward``, and ``saved`` (bytes
    autograd keeps for backward per input byte).
    """
    x = torch.randn(shape)
    x_grad = x.clone().requires_grad_()
    grad = torch.randn(shape)
    fns = activations(shape[1])
    timers = {}
    for name, fn in fns.items():

        def forward(fn=fn):
            with torch.no_grad():
                fn(x)

        def forward_backward(fn=fn):
            fn(x_grad).backward(grad)
            x_grad.grad = None

        timers[name] = {"forward": forward, "forward_backward": forward_backward}
    times = {name: {"forward": [], "forward_backward": []} for name in fns}
    for fn_pair in timers.values():  # warm-up
        for fn in fn_pair.values():
            median_ms(fn, 1)
    for r in range(rounds):
        order = list(fns) if r % 2 == 0 else list(fns)[::-1]
        for name in order:
            for kind, fn in timers[name].items():
                times[name][kind].append(median_ms(fn, calls, warmup=0))
    rows = []
    for name, fn in fns.items():
        row = {"name": name, "saved": saved_bytes(fn, x_grad) / (x.numel() * x.element_size())}
        for kind in ("forward", "forward_backward"):
            ratios = [t / s for t, s in zip(times[name][kind], times["SiLU"][kind], strict=True)]
            row[kind] = statistics.median(times[name][kind])
            row[f"{kind}_ratio"] = (statistics.median(ratios), min(ratios), max(ratios))
        rows.append(row)
    return rows


def _ratio_text(ratio: tuple[float, float, float]) -> str:
    median, low, high = ratio
    return f"{median:.2f} ({low:.2f}-{high:.2f})"


def run_inference(shape: tuple[int, ...], repeats: int) -> dict[str, float]:
    """Forward microseconds (medians) of SiLU, ``pwlu()`` and the bare C++ op on ``shape``."""
    x = torch.randn(shape)
    params = [p.detach() for p in relu_like_params(shape[1])]
    op = torch.ops.pwlu_det.pwlu_forward
    fns = {
        "SiLU": lambda: F.silu(x),
        "pwlu()": lambda: pwlu(x, *params),
        "torch.ops": lambda: op(x, *params, 1),
    }
    with torch.no_grad():
        return {name: 1e3 * median_ms(fn, repeats, warmup=10) for name, fn in fns.items()}


# --------------------------------------------------------------------------------------------
# The bound projection after each optimizer step
# --------------------------------------------------------------------------------------------


def r50_fpn_units(device: str | torch.device) -> list[PWLU]:
    """Channel-wise units shaped as in a PWLU Mask R-CNN R50-FPN: the stem, 3 per bottleneck
    block (res2-res5: 3, 4, 6, 3 blocks), the RPN conv, 2 box-head FCs and 5 mask-head layers."""
    widths = [64]
    for blocks, width in ((3, 64), (4, 128), (6, 256), (3, 512)):
        widths += [width, width, 4 * width] * blocks
    widths += [256] + [1024, 1024] + [256] * 5
    return [PWLU(c).to(device) for c in widths]


def run_projection(device: str, repeats: int) -> dict[str, float]:
    """Microseconds (medians of interleaved calls) of projecting every unit's bounds."""
    units = r50_fpn_units(device)
    sync = torch.cuda.synchronize if device == "cuda" else lambda: None
    calls = {
        "all units in one call": lambda: project_bounds(units),
        "one unit at a time": lambda: [project_bounds((u,)) for u in units],
    }
    times: dict[str, list[float]] = {name: [] for name in calls}
    for i in range(repeats + 3):
        for name, call in calls.items():
            sync()
            start = time.perf_counter()
            call()
            sync()
            if i >= 3:  # warm-up
                times[name].append(1e6 * (time.perf_counter() - start))
    return {name: statistics.median(t) for name, t in times.items()} | {"units": len(units)}


# --------------------------------------------------------------------------------------------
# The op's CPU autograd: the C++ kernel against Python's formula, in one process
# --------------------------------------------------------------------------------------------

AUTOGRAD_SHAPES = ((2, 64, 16, 16), (2, 64, 64, 64), (16, 256, 56, 56))


def _python_autograd_over_cpp() -> torch.library.Library:
    """Registers the op's Python autograd formula (what other devices run) over the C++ one
    for CPU tensors, until the returned library is destroyed. torch's private helper, the one
    ``torch.library.register_autograd`` uses (torch pinned at 2.14.1)."""
    import warnings

    from torch._library import autograd as library_autograd

    from pwlu_det.layers import pwlu_op

    op = torch.ops.pwlu_det.pwlu_forward.default
    info = library_autograd.Info(pwlu_op._backward, pwlu_op._setup_context)
    lib = torch.library.Library("pwlu_det", "IMPL")  # noqa: TOR901 (destroyed by the caller)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "overriding a previously registered kernel"
        kernel = library_autograd.make_autograd_impl(op, info)
        lib.impl("pwlu_forward", kernel, "AutogradCPU", with_keyset=True)
    return lib


def print_autograd(rounds: int) -> None:
    """Forward+backward ms of a channel-wise PWLU module with the op's C++ autograd and with
    the Python formula over it, in interleaved rounds."""
    print(f"\nthe op's CPU autograd, forward+backward ms, channel-wise ({rounds} rounds)")
    table = []
    for shape in AUTOGRAD_SHAPES:
        unit = PWLU(num_channels=shape[1], num_intervals=16)
        x = torch.randn(shape, requires_grad=True)
        grad = torch.randn(shape)

        def step(unit=unit, x=x, grad=grad):
            unit(x).backward(grad)
            x.grad = None

        calls = 5 if x.numel() > 1e6 else 30
        times = {"C++": [], "Python": []}
        for r in range(rounds):
            for name in ("C++", "Python") if r % 2 == 0 else ("Python", "C++"):
                lib = _python_autograd_over_cpp() if name == "Python" else None
                times[name].append(median_ms(step, calls))
                if lib is not None:
                    lib._destroy()
        ratios = [p / c for p, c in zip(times["Python"], times["C++"], strict=True)]
        table.append(
            [
                str(shape),
                f"{statistics.median(times['C++']):.3f}",
                f"{statistics.median(times['Python']):.3f}",
                _ratio_text((statistics.median(ratios), min(ratios), max(ratios))),
            ]
        )
    print(tabulate(table, ["input", "C++", "Python", "Python / C++"], disable_numparse=True))


#: Interleaved channels (channel stride 1): a box head's FC outputs, a channels_last map.
INTERLEAVED_SHAPES = (((128, 512), False), ((1024, 1024), False), ((2, 64, 64, 64), True))


def print_interleaved_backward(repeats: int) -> None:
    """The op's backward alone on interleaved channels, ms per call: each instruction set the
    CPU has (scalar: the loop every instruction set ran before they had vector loops) and SiLU's
    backward, interleaved calls, medians."""
    isas = pwlu_cpp.cpu_capabilities()
    print(f"\nthe op's backward on interleaved channels, ms (medians of {repeats} interleaved)")
    backward = torch.ops.pwlu_det.pwlu_backward
    table = []
    for shape, channels_last in INTERLEAVED_SHAPES:
        layout = torch.channels_last if channels_last else torch.contiguous_format
        x = torch.randn(shape).to(memory_format=layout)
        grad = torch.randn(shape).to(memory_format=layout)
        params = [p.detach() for p in canonical_params(*relu_like_params(shape[1]))]

        def op(x=x, grad=grad, params=params):
            backward(grad, x, *params, 1)

        def silu(x=x, grad=grad):
            torch.ops.aten.silu_backward(grad, x)

        times: dict[str, list[float]] = {name: [] for name in (*isas, "SiLU")}
        for r in range(repeats):
            for name in times if r % 2 == 0 else list(times)[::-1]:
                if name != "SiLU":
                    pwlu_cpp.set_cpu_capability(name)
                times[name].append(median_ms(silu if name == "SiLU" else op, 5, warmup=1))
        pwlu_cpp.set_cpu_capability("best")
        label = f"{shape}{' channels_last' if channels_last else ''}"
        table.append([label, *(f"{statistics.median(t):.3f}" for t in times.values())])
    print(tabulate(table, ["input", *isas, "SiLU"], disable_numparse=True))


def print_projection(device: str, repeats: int) -> None:
    t = run_projection(device, repeats)
    batched = t["all units in one call"]
    print(
        f"\nbound projection after an optimizer step, {t['units']} units of a Mask R-CNN "
        f"R50-FPN, {device}, microseconds (medians of {repeats} interleaved)"
    )
    for name in ("all units in one call", "one unit at a time"):
        print(f"{name:<26}{t[name]:>9.1f}{t[name] / batched:>8.2f}x")


# --------------------------------------------------------------------------------------------
# CUDA: the Triton backend on the shapes of an R50-FPN detector
# --------------------------------------------------------------------------------------------

# P2-P6 for 800x1333 padded to 800x1344 (size divisibility 32), batch 2, 256 channels.
CUDA_SHAPES = {
    "P2 (2,256,200,336)": (2, 256, 200, 336),
    "P3 (2,256,100,168)": (2, 256, 100, 168),
    "P4 (2,256,50,84)": (2, 256, 50, 84),
    "P5 (2,256,25,42)": (2, 256, 25, 42),
    "P6 (2,256,13,21)": (2, 256, 13, 21),
    "mask RoIs (512,256,14,14)": (512, 256, 14, 14),
    "box FC (1024,1024)": (1024, 1024),
}
# Bytes moved per element, in units of the element size: forward reads x and writes y; the
# backward (after the forward) reads x and grad_y and writes grad_x. A copy moves 2.
_TRAFFIC = {"forward": 2, "forward+backward": 5}


def _cuda_ops(channels: int, device: torch.device) -> dict[str, tuple[Callable, list]]:
    """name -> (function of x, its parameters)."""
    layer = [p.detach().to(device).requires_grad_() for p in relu_like_params(None)]
    channel = [p.detach().to(device).requires_grad_() for p in relu_like_params(channels)]
    return {
        "copy": (lambda x: x.clone(), []),
        "SiLU": (F.silu, []),
        "ReLU": (F.relu, []),
        "PWLU layer": (lambda x: pwlu(x, *layer), layer),
        "PWLU channel": (lambda x: pwlu(x, *channel), channel),
    }


def _step(fn, x: torch.Tensor, grad: torch.Tensor, mode: str) -> Callable[[], None]:
    if mode == "forward":

        def forward() -> None:
            with torch.no_grad():
                fn(x)

        return forward

    def forward_backward() -> None:
        fn(x).backward(grad)

    return forward_backward


def _kernels_per_call(step: Callable[[], None], grads: list[torch.Tensor]) -> int:
    """CUDA kernels (and memsets/copies) launched by one call, counted by torch.profiler.

    The gradients of ``grads`` are cleared first, as in training after ``zero_grad``, so that
    accumulating into an existing ``.grad`` is not counted.
    """
    from torch.profiler import ProfilerActivity, profile

    step()
    for t in grads:
        t.grad = None
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        step()
        torch.cuda.synchronize()
    for t in grads:
        t.grad = None
    return sum(1 for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA)


def _graph_us(step: Callable[[], None], grads: list[torch.Tensor]) -> float | None:
    import triton.testing

    try:
        return 1e3 * triton.testing.do_bench_cudagraph(
            step, rep=50, grad_to_none=grads, return_mode="median"
        )
    except Exception as e:  # a capture that fails is reported, not fatal
        print(f"  (CUDA graph capture failed: {type(e).__name__}: {str(e)[:120]})")
        return None


# What the issue asks on the FPN's largest maps: half precisions and channels_last as well.
EXTRA_VARIANTS = {
    "P2 (2,256,200,336)": ("float16", "float32 channels_last", "bfloat16 channels_last"),
    "P3 (2,256,100,168)": ("float16", "float32 channels_last", "bfloat16 channels_last"),
}


def _variants(shape_name: str, dtypes: list[str]) -> list[str]:
    """``"<dtype>"`` or ``"<dtype> channels_last"`` variants to time on one shape."""
    extra = [v for v in EXTRA_VARIANTS.get(shape_name, ()) if v not in dtypes]
    return [*dtypes, *extra]


def _cuda_input(shape: tuple[int, ...], variant: str, device: torch.device):
    """x (requires grad) and grad_y for a variant such as ``"bfloat16 channels_last"``."""
    dtype_name, _, layout = variant.partition(" ")
    dtype = getattr(torch, dtype_name)
    fmt = torch.channels_last if layout == "channels_last" else torch.contiguous_format
    x = torch.randn(shape, device=device).mul_(2).to(dtype=dtype, memory_format=fmt)
    grad = torch.randn(shape, device=device).to(dtype=dtype, memory_format=fmt)
    return x.requires_grad_(), grad


def run_cuda(dtypes: list[str], graphs: bool) -> list[dict]:
    """Time every op on every R50-FPN shape; one row per (shape, variant, mode, op)."""
    import triton.testing

    device = torch.device("cuda", torch.cuda.current_device())
    rows = []
    for shape_name, shape in CUDA_SHAPES.items():
        for variant in _variants(shape_name, dtypes):
            x, grad = _cuda_input(shape, variant, device)
            nbytes = x.numel() * x.element_size()
            for mode, traffic in _TRAFFIC.items():
                for op, (fn, fn_params) in _cuda_ops(shape[1], device).items():
                    if op == "copy" and mode != "forward":
                        continue
                    step = _step(fn, x, grad, mode)
                    params = [x, *fn_params]
                    us = 1e3 * triton.testing.do_bench(
                        step, grad_to_none=params, return_mode="median"
                    )
                    rows.append(
                        {
                            "shape": shape_name,
                            "dtype": variant,
                            "mode": mode,
                            "op": op,
                            "us": us,
                            "gbps": traffic * nbytes / (us * 1e-6) / 1e9,
                            "graph_us": _graph_us(step, params) if graphs else None,
                            "kernels": _kernels_per_call(step, params),
                            "bytes": traffic * nbytes,
                        }
                    )
    return rows


def _compiled_kernels():
    """``(kernel name, CompiledKernel)`` of every Triton kernel variant PWLU compiled so far."""
    from pwlu_det.layers import pwlu_triton

    for jit in pwlu_triton.jit_kernels():
        name = jit.__name__
        for cache in getattr(jit, "device_caches", {}).values():
            for part in cache if isinstance(cache, tuple) else (cache,):
                if isinstance(part, dict):
                    for kernel in part.values():
                        if hasattr(kernel, "metadata"):
                            yield name, kernel


def kernel_resources() -> list[dict]:
    """Registers, spills, shared memory and theoretical occupancy of each compiled variant.

    Occupancy is resident warps per SM over the SM's maximum, from the three limits (registers,
    shared memory, warps); it is what the resources allow, not a measured figure.
    """
    props = torch.cuda.get_device_properties(torch.cuda.current_device())
    max_warps = props.max_threads_per_multi_processor // 32
    regs_per_sm = getattr(props, "regs_per_multiprocessor", 65536)
    smem_per_sm = getattr(props, "shared_memory_per_multiprocessor", 228 * 1024)
    rows = []
    for name, kernel in _compiled_kernels():
        kernel._init_handles()
        meta = kernel.metadata
        warps = meta.num_warps
        regs = kernel.n_regs
        regs_per_warp = -(-regs * 32 // 256) * 256  # allocated in units of 256 per warp
        limits = [max_warps // warps, 32]
        if regs_per_warp:
            limits.append(regs_per_sm // (regs_per_warp * warps))
        if meta.shared:
            limits.append(smem_per_sm // meta.shared)
        blocks = max(min(limits), 0)
        src = getattr(kernel, "src", None)
        signature = getattr(src, "signature", {}) or {}
        x_type = next((t for t in signature.values() if str(t).startswith("*")), "?")
        arg_names = getattr(getattr(src, "fn", None), "arg_names", [])
        constants = {}
        for key, value in (getattr(src, "constants", {}) or {}).items():
            index = key[0] if isinstance(key, tuple) and len(key) == 1 else None
            if index is not None and index < len(arg_names) and arg_names[index].isupper():
                constants[arg_names[index]] = value
        rows.append(
            {
                "kernel": name,
                "x": str(x_type),
                "constexprs": constants,
                "num_warps": warps,
                "num_stages": getattr(meta, "num_stages", None),
                "registers": regs,
                "spills": kernel.n_spills,
                "shared_bytes": meta.shared,
                "occupancy": blocks * warps / max_warps,
            }
        )
    return rows


def print_kernel_resources(rows: list[dict]) -> None:
    print("\ncompiled PWLU kernels: registers per thread, spills, shared memory, occupancy")
    print(
        f"{'kernel':<26}{'x':<7}{'warps':>6}{'regs':>6}{'spills':>7}{'smem B':>8}{'occ':>6}"
        "  constexprs"
    )
    for r in rows:
        consts = " ".join(f"{k}={v}" for k, v in r["constexprs"].items())
        print(
            f"{r['kernel']:<26}{r['x']:<7}{r['num_warps']:>6}{r['registers']:>6}"
            f"{r['spills']:>7}{r['shared_bytes']:>8}{r['occupancy']:>6.2f}  {consts}"
        )


def run_compiled(shape_name: str, variant: str) -> list[dict]:
    """Eager against ``torch.compile`` (Inductor) for SiLU and PWLU on one shape: forward+backward
    microseconds. The PWLU op stays one opaque custom op inside the compiled graph."""
    import triton.testing

    device = torch.device("cuda", torch.cuda.current_device())
    shape = CUDA_SHAPES[shape_name]
    x, grad = _cuda_input(shape, variant, device)
    channel = [p.detach().to(device).requires_grad_() for p in relu_like_params(shape[1])]
    fns = {"SiLU": F.silu, "PWLU channel": lambda t: pwlu(t, *channel)}
    rows = []
    for op, fn in fns.items():
        for how, f in (("eager", fn), ("compiled", torch.compile(fn, fullgraph=True))):
            step = _step(f, x, grad, "forward+backward")
            us = 1e3 * triton.testing.do_bench(
                step, grad_to_none=[x, *channel], return_mode="median"
            )
            rows.append({"shape": shape_name, "dtype": variant, "op": op, "how": how, "us": us})
    return rows


def print_cuda(rows: list[dict]) -> None:
    """One table per shape and dtype: us, GB/s, x SiLU, x copy; CUDA graphs; kernels."""
    copy = {(r["shape"], r["dtype"]): r for r in rows if r["op"] == "copy"}
    silu = {(r["shape"], r["dtype"], r["mode"]): r for r in rows if r["op"] == "SiLU"}
    header = (
        f"{'op':<14}{'mode':<18}{'us':>9}{'GB/s':>8}{'x SiLU':>8}{'x copy':>8}"
        f"{'graph us':>10}{'x SiLU':>8}{'kernels':>9}"
    )
    key = None
    for r in rows:
        if (r["shape"], r["dtype"]) != key:
            key = (r["shape"], r["dtype"])
            print(f"\n{r['shape']} {r['dtype']}")
            print(header)
        s, c = silu[(r["shape"], r["dtype"], r["mode"])], copy[key]
        # x copy: time / (time a copy needs for the same bytes); 1.0 = copy bandwidth.
        copy_us = c["us"] * r["bytes"] / c["bytes"]
        graph = r["graph_us"]
        graph_ratio = graph / s["graph_us"] if graph and s["graph_us"] else None
        print(
            f"{r['op']:<14}{r['mode']:<18}{r['us']:>9.1f}{r['gbps']:>8.0f}"
            f"{r['us'] / s['us']:>8.2f}{r['us'] / copy_us:>8.2f}"
            f"{graph if graph is not None else float('nan'):>10.1f}"
            f"{graph_ratio if graph_ratio is not None else float('nan'):>8.2f}"
            f"{r['kernels']:>9}"
        )


def print_targets(rows: list[dict]) -> None:
    """The op issue's targets on P2/P3: forward >= 80% of copy bandwidth, forward+backward
    <= 1.5x SiLU; one line per (shape, variant, PWLU kind)."""
    by = {(r["shape"], r["dtype"], r["mode"], r["op"]): r for r in rows}
    print("\ntargets on P2/P3: forward >= 0.80 of copy bandwidth, forward+backward <= 1.5x SiLU")
    print(f"{'shape':<20}{'variant':<24}{'op':<14}{'fwd/copy bw':>12}{'fwd+bwd x SiLU':>16}")
    for (shape, variant, mode, op), r in by.items():
        if mode != "forward" or not op.startswith("PWLU") or not shape.startswith(("P2", "P3")):
            continue
        copy = by[(shape, variant, "forward", "copy")]
        both = by[(shape, variant, "forward+backward", op)]
        silu = by[(shape, variant, "forward+backward", "SiLU")]
        print(
            f"{shape:<20}{variant:<24}{op:<14}{r['gbps'] / copy['gbps']:>12.2f}"
            f"{both['us'] / silu['us']:>16.2f}"
        )


def main_cuda(args: argparse.Namespace) -> None:
    if not torch.cuda.is_available():
        raise SystemExit("--device cuda: no GPU found (torch.cuda.is_available() is False)")
    import triton

    props = torch.cuda.get_device_properties(torch.cuda.current_device())
    print(
        f"{props.name}, torch {torch.__version__}, triton {triton.__version__}, "
        f"python {sys.version.split()[0]}; N = 16, ReLU-shaped PWLU; medians of do_bench "
        "(L2 flushed); GB/s counts reads + writes; x copy = time / copy time for the same bytes"
    )
    report: dict = {"device": props.name, "torch": torch.__version__, "triton": triton.__version__}

    def save() -> None:  # after each part, so that a run stopped at its limit keeps its data
        if args.json:
            Path(args.json).parent.mkdir(parents=True, exist_ok=True)
            Path(args.json).write_text(json.dumps(report, indent=1, default=str))

    report["rows"] = run_cuda(args.dtypes, graphs=not args.no_graphs)
    save()
    print_cuda(report["rows"])
    print_targets(report["rows"])
    try:
        report["kernels"] = kernel_resources()
    except Exception as e:  # reported, not fatal, like the compile timing below
        print(f"\nkernel resources unavailable: {type(e).__name__}: {str(e)[:400]}")
    else:
        print_kernel_resources(report["kernels"])
    save()
    if not args.no_compile:
        try:
            report["compiled"] = run_compiled("P3 (2,256,100,168)", "bfloat16")
        except Exception as e:  # reported, not fatal: the op's timings above stand
            print(f"\ntorch.compile timing failed: {type(e).__name__}: {str(e)[:400]}")
            report["compiled"] = f"{type(e).__name__}: {e}"
        else:
            print("\ntorch.compile (Inductor, fullgraph) on P3 bfloat16, forward+backward, us")
            for r in report["compiled"]:
                print(f"{r['op']:<14}{r['how']:<10}{r['us']:>9.1f}")
        save()
    print_projection("cuda", 200)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads (CPU)")
    parser.add_argument(
        "--repeats",
        type=int,
        default=20,
        help="CPU: interleaved rounds of the training shapes (10x that many calls for the rest)",
    )
    parser.add_argument(
        "--inference-only", action="store_true", help="only the small inference shapes (CPU)"
    )
    parser.add_argument(
        "--dtypes", nargs="+", default=["float32", "bfloat16"], help="dtypes (CUDA)"
    )
    parser.add_argument("--no-graphs", action="store_true", help="skip CUDA-graph timings")
    parser.add_argument(
        "--no-compile", action="store_true", help="skip the torch.compile timing (CUDA)"
    )
    parser.add_argument("--json", help="also write the CUDA results to this JSON file")
    args = parser.parse_args()
    if args.device == "cuda":
        main_cuda(args)
        return
    # pwlu_det.utils needs Detectron2, which GPU machines may lack: imported on the CPU path only.
    from pwlu_det.utils.machine import describe_machine, machine_info

    torch.set_num_threads(args.threads)
    if not pwlu_cpp.available():
        raise SystemExit(f"the C++ extension is not built: {pwlu_cpp.unavailable_reason()}")
    print(
        f"torch {torch.__version__}, {describe_machine(machine_info())}, float32, "
        f"N = 16, medians of {args.repeats}"
    )
    for name, shape in () if args.inference_only else SHAPES.items():
        rows = run(shape, args.repeats)
        print(f"\n{name} {shape} ({torch.Size(shape).numel() / 1e6:.1f} M elements)")
        print(
            tabulate(
                [
                    [
                        row["name"],
                        f"{row['forward']:.2f}",
                        _ratio_text(row["forward_ratio"]),
                        f"{row['forward_backward']:.2f}",
                        _ratio_text(row["forward_backward_ratio"]),
                        f"{row['saved']:.2f}",
                    ]
                    for row in rows
                ],
                ["activation", "fwd ms", "x SiLU", "fwd+bwd ms", "x SiLU", "saved/input"],
                disable_numparse=True,
            )
        )

    repeats = 10 * args.repeats
    print(f"\ninference shapes, forward only, channel-wise, microseconds (medians of {repeats})")
    print(f"{'input':<20}{'SiLU':>9}{'pwlu()':>9}{'x SiLU':>8}{'torch.ops':>11}{'x SiLU':>8}")
    for shape in INFERENCE_SHAPES:
        t = run_inference(shape, repeats)
        print(
            f"{str(shape):<20}{t['SiLU']:>9.1f}{t['pwlu()']:>9.1f}{t['pwlu()'] / t['SiLU']:>8.2f}"
            f"{t['torch.ops']:>11.1f}{t['torch.ops'] / t['SiLU']:>8.2f}"
        )
    print_interleaved_backward(args.repeats)
    print_projection("cpu", repeats)
    print_autograd(max(3, args.repeats // 2))


if __name__ == "__main__":
    main()
