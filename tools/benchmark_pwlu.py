#!/usr/bin/env python
"""Benchmark the PWLU op on CPU against SiLU and ReLU, measured in the same run.

Prints, per input shape (float32, NCHW): forward ms, forward+backward ms (medians), their ratio
to SiLU, and the bytes autograd keeps alive for backward per input byte. Then the forward alone
on the small shapes a Mask R-CNN sees at inference (microseconds, channel-wise parameters).

Targets for the cpp backend: forward <= 1.0x SiLU, forward+backward <= 1.5x SiLU, saved = 1.0x.

Example::

    .venv/bin/python tools/benchmark_pwlu.py --threads 2
    .venv/bin/python tools/benchmark_pwlu.py --inference-only
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F

from pwlu_det.layers import pwlu, pwlu_cpp

SHAPES = ((16, 256, 56, 56), (2, 64, 400, 608))
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
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1e3 * statistics.median(times)


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
    layer, channel = relu_like_params(None), relu_like_params(channels)
    return {
        "SiLU": F.silu,
        "ReLU": F.relu,
        "PWLU cpp (layer)": lambda x: pwlu(x, *layer, backend="cpp"),
        "PWLU cpp (channel)": lambda x: pwlu(x, *channel, backend="cpp"),
        "PWLU reference (layer)": lambda x: pwlu(x, *layer, backend="reference"),
        "PWLU reference (channel)": lambda x: pwlu(x, *channel, backend="reference"),
    }


def run(shape: tuple[int, ...], repeats: int) -> list[dict]:
    x = torch.randn(shape)
    x_grad = x.clone().requires_grad_()
    grad = torch.randn(shape)
    rows = []
    for name, fn in activations(shape[1]).items():
        reps = max(3, repeats // 4) if "reference" in name else repeats

        def forward(fn=fn):
            with torch.no_grad():
                fn(x)

        def forward_backward(fn=fn):
            fn(x_grad).backward(grad)
            x_grad.grad = None

        rows.append(
            {
                "name": name,
                "forward": median_ms(forward, reps),
                "forward_backward": median_ms(forward_backward, reps),
                "saved": saved_bytes(fn, x_grad) / (x.numel() * x.element_size()),
            }
        )
    return rows


def run_inference(shape: tuple[int, ...], repeats: int) -> dict[str, float]:
    """Forward microseconds (medians) of SiLU, ``pwlu()`` and the bare C++ op on ``shape``."""
    x = torch.randn(shape)
    params = [p.detach() for p in relu_like_params(shape[1])]
    op = torch.ops.pwlu_det.pwlu_forward
    fns = {
        "SiLU": lambda: F.silu(x),
        "pwlu()": lambda: pwlu(x, *params, backend="cpp"),
        "torch.ops": lambda: op(x, *params, 1),
    }
    with torch.no_grad():
        return {name: 1e3 * median_ms(fn, repeats, warmup=10) for name, fn in fns.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    parser.add_argument("--repeats", type=int, default=20, help="timed repeats (median)")
    parser.add_argument(
        "--inference-only", action="store_true", help="only the small inference shapes"
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if not pwlu_cpp.available():
        raise SystemExit(f"the C++ extension is not built: {pwlu_cpp.unavailable_reason()}")
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, float32, "
        f"cpp kernel ISA: {pwlu_cpp.cpu_capability()}, N = 16, medians of {args.repeats}"
    )
    for shape in () if args.inference_only else SHAPES:
        rows = run(shape, args.repeats)
        silu = rows[0]
        print(f"\ninput {shape} ({torch.Size(shape).numel() / 1e6:.1f} M elements)")
        print(
            f"{'activation':<26}{'fwd ms':>9}{'x SiLU':>8}{'fwd+bwd ms':>12}{'x SiLU':>8}"
            f"{'saved/input':>13}"
        )
        for row in rows:
            print(
                f"{row['name']:<26}{row['forward']:>9.1f}"
                f"{row['forward'] / silu['forward']:>8.2f}"
                f"{row['forward_backward']:>12.1f}"
                f"{row['forward_backward'] / silu['forward_backward']:>8.2f}"
                f"{row['saved']:>13.2f}"
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


if __name__ == "__main__":
    main()
