"""Helpers of the Triton tests: devices, skips, inputs and the comparison with the reference.

Every test in ``tests/triton/test_triton_kernels.py`` takes ``device`` (``conftest.py``):

- ``"cuda"``: the Triton kernels compiled for the GPU;
- ``"interpreter"``: the same body on CPU tensors, the kernels run by Triton's interpreter
  (a session started with ``TRITON_INTERPRET=1``).

Nothing here needs Detectron2, so the folder also runs on GPU machines without it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import pytest
import torch

from pwlu_det.layers import environment, pwlu_triton
from pwlu_det.layers.pwlu_op import PARAM_NAMES, pwlu
from pwlu_det.layers.pwlu_reference import pwlu_reference

DEVICES = ("interpreter", "cuda")
NO_GPU_REASON = "needs a CUDA GPU (its interpreter twin runs the same test on CPU)"
_EPS32 = 2.0**-23


def interpreting() -> bool:
    """True when this process runs the kernels in Triton's interpreter."""
    from triton.runtime.jit import JITFunction

    interpreted = not isinstance(pwlu_triton.jit_kernels()[0], JITFunction)
    return interpreted and environment.TRITON_INTERPRET


def skip(reason: str) -> None:
    """Skip the running test."""
    pytest.skip(reason)


def torch_device(device: str) -> torch.device:
    """The tensors' device for a test parameter; skips what cannot run in this process."""
    if device == "cuda":
        if not torch.cuda.is_available():
            skip(NO_GPU_REASON)
        if interpreting():
            skip("this process runs the Triton interpreter; GPU tests run in one without it")
        return torch.device("cuda", torch.cuda.current_device())
    if device != "interpreter":
        raise ValueError(f"unknown test device {device!r}")
    if not interpreting():
        raise RuntimeError("the interpreter twin needs TRITON_INTERPRET=1 before triton loads")
    return torch.device("cpu")


def require_gpus(device: str, count: int) -> None:
    """Skip a GPU test on machines with fewer than ``count`` GPUs."""
    if device == "cuda" and torch.cuda.device_count() < count:
        skip(f"needs {count} GPUs, found {torch.cuda.device_count()}")


def params(
    units: int,
    n: int = 16,
    dtype: torch.dtype = torch.float32,
    *,
    layerwise: bool = False,
    seed: int = 0,
    device: torch.device | str = "cpu",
) -> list[torch.Tensor]:
    """Random bounds around [-1.5, 1.5], heights and slopes; 0-d / (N+1,) when layer-wise."""
    gen = torch.Generator().manual_seed(seed)
    f64 = torch.float64
    values = [
        -1.5 + 0.5 * torch.rand(units, generator=gen, dtype=f64),
        1.5 + 0.5 * torch.rand(units, generator=gen, dtype=f64),
        torch.randn(units, n + 1, generator=gen, dtype=f64),
        torch.randn(units, generator=gen, dtype=f64),
        torch.randn(units, generator=gen, dtype=f64),
    ]
    values = [p.to(device=device, dtype=dtype) for p in values]
    return [p[0] for p in values] if layerwise else values


def randn(shape: Sequence[int], dtype=torch.float32, *, seed: int = 1, device="cpu", scale=2.0):
    """Normal values (scale 2: about a third fall outside the bounds), made on CPU."""
    gen = torch.Generator().manual_seed(seed)
    x = scale * torch.randn(tuple(shape), generator=gen, dtype=torch.float64)
    return x.to(dtype).to(device)


def apply(backend: str, x: torch.Tensor, *ps: torch.Tensor, channel_dim: int) -> torch.Tensor:
    """``"triton"``: the op (on CUDA tensors, and on CPU ones under the interpreter, its kernel
    is the Triton one); ``"reference"``: the plain-PyTorch reference."""
    if backend == "reference":
        return pwlu_reference(x, *ps, channel_dim=channel_dim)
    if backend != "triton":
        raise ValueError(f"unknown backend {backend!r}")
    return pwlu(x, *ps, channel_dim=channel_dim)


def run(
    backend: str,
    x: torch.Tensor,
    ps: Sequence[torch.Tensor],
    channel_dim: int,
    grad_y: torch.Tensor,
    transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Forward and backward of one backend: ``y`` and the gradients of x and the parameters."""
    leaf = x.detach().clone().requires_grad_()
    leaves = [p.detach().clone().requires_grad_() for p in ps]
    inp = transform(leaf) if transform is not None else leaf
    y = apply(backend, inp, *leaves, channel_dim=channel_dim)
    y.backward(grad_y)
    return y.detach(), [leaf.grad, *(p.grad for p in leaves)]


def sum_tolerance(x: torch.Tensor, grad_y: torch.Tensor, ps: Sequence[torch.Tensor]) -> float:
    """Absolute tolerance of a float32 parameter gradient: a sum over the unit's elements."""
    g = grad_y.double().abs().max().item() if grad_y.numel() else 0.0
    finite = x.double()[torch.isfinite(x.double())]
    reach = (finite.abs().max().item() if finite.numel() else 0.0) + 2.0
    heights = ps[2].double().reshape(-1, ps[2].shape[-1])
    n = heights.shape[1] - 1
    width = (ps[1].double() - ps[0].double()).reshape(-1, 1)
    slope = ((heights[:, 1:] - heights[:, :-1]).abs() * n / width).max().item()
    slope = max(slope, ps[3].double().abs().max().item(), ps[4].double().abs().max().item(), 1.0)
    return 8 * _EPS32 * math.sqrt(max(x.numel(), 1)) * g * max(slope, reach)


def check_against_reference(
    x: torch.Tensor,
    ps: Sequence[torch.Tensor],
    channel_dim: int,
    *,
    transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
    grad_y: torch.Tensor | None = None,
    tol: float | None = None,
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Triton (through ``pwlu``) against autograd through the reference, same device and dtype.

    Checks the output (values, dtype, shape, strides of dense inputs) and all six gradients
    (dtypes and shapes too). Returns the Triton output and gradients.
    """
    shape = (transform(x) if transform else x).shape
    if grad_y is None:
        grad_y = randn(shape, x.dtype, seed=12345, device=x.device, scale=1.0)
    y_ref, g_ref = run("reference", x, ps, channel_dim, grad_y, transform)
    y, grads = run("triton", x, ps, channel_dim, grad_y, transform)
    if tol is None:
        tol = {torch.float64: 1e-10, torch.float32: 1e-5, torch.float16: 2e-3}.get(x.dtype, 1e-2)
    inp = transform(x) if transform else x
    assert y.dtype == inp.dtype and y.shape == inp.shape and y.device == inp.device
    if inp.is_contiguous() or inp.is_contiguous(memory_format=torch.channels_last):
        assert y.stride() == inp.stride(), (y.stride(), inp.stride())
    torch.testing.assert_close(y, y_ref, rtol=tol, atol=tol, equal_nan=True)
    sum_atol = max(tol, sum_tolerance(inp.detach(), grad_y, ps))
    for k, (name, got, want) in enumerate(zip(("x", *PARAM_NAMES), grads, g_ref, strict=True)):
        assert got is not None, f"no gradient for {name}"
        assert (got.dtype, got.shape) == (want.dtype, want.shape), name
        torch.testing.assert_close(
            got,
            want,
            rtol=tol,
            atol=tol if k == 0 else sum_atol,
            equal_nan=True,
            msg=lambda m, name=name: f"grad of {name}: {m}",
        )
    return y, grads


class TritonPWLU(torch.nn.Module):
    """A channel-wise PWLU whose forward calls :func:`pwlu` with a fixed backend."""

    def __init__(self, channels: int, backend: str = "triton", seed: int = 0):
        super().__init__()
        self.backend = backend
        self.params = torch.nn.ParameterList(
            torch.nn.Parameter(p) for p in params(channels, seed=seed)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return apply(self.backend, x, *self.params, channel_dim=1)


__all__ = [
    "HostReads",
    "LaunchRecorder",
    "DEVICES",
    "NO_GPU_REASON",
    "PARAM_NAMES",
    "TritonPWLU",
    "apply",
    "check_against_reference",
    "interpreting",
    "params",
    "pwlu",
    "pwlu_reference",
    "pwlu_triton",
    "randn",
    "require_gpus",
    "run",
    "skip",
    "sum_tolerance",
    "torch_device",
]


class LaunchRecorder:
    """Records every kernel launch of :mod:`pwlu_triton`: kernel name, grid, constexprs, and
    the device that is current during the launch (None for CPU tensors)."""

    def __init__(self):
        self.launches: list[dict[str, object]] = []
        self._saved = None

    def __enter__(self) -> LaunchRecorder:
        self._saved = pwlu_triton._launch
        saved, launches = self._saved, self.launches

        def launch(kernel, grid, *args, **kwargs):
            x = args[0]
            current = torch.cuda.current_device() if x.device.type == "cuda" else None
            launches.append(
                {
                    "kernel": getattr(kernel, "fn", kernel).__name__,
                    "grid": grid,
                    "device": x.device,
                    "current": current,
                    "INDEX_64": kwargs.get("INDEX_64"),
                }
            )
            return saved(kernel, grid, *args, **kwargs)

        pwlu_triton._launch = launch
        return self

    def __exit__(self, *exc) -> None:
        pwlu_triton._launch = self._saved


class HostReads(torch.utils._python_dispatch.TorchDispatchMode):
    """Records the ops that copy a tensor value to the host (``.item()``, ``bool(t)``, ...):
    on a GPU each is a device-to-host sync."""

    def __init__(self):
        super().__init__()
        self.reads: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func in (torch.ops.aten._local_scalar_dense.default, torch.ops.aten.item.default):
            self.reads.append(str(func))
        return func(*args, **(kwargs or {}))
