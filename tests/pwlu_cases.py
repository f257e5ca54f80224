"""Parameters and inputs shared by the PWLU op tests of every backend."""

from __future__ import annotations

import torch

from pwlu_det.layers.pwlu_op import canonical_params
from pwlu_det.layers.pwlu_reference import breakpoints, pwlu_reference


def make_params(
    channels: int | None, num_intervals: int, dtype=torch.float64, seed: int = 0
) -> tuple[torch.Tensor, ...]:
    """Random, valid PWLU parameters: layer-wise if ``channels`` is None, else channel-wise."""
    gen = torch.Generator().manual_seed(seed)
    shape = () if channels is None else (channels,)
    left = -2.0 + 0.5 * torch.rand(shape, generator=gen, dtype=torch.float64)
    right = 1.5 + torch.rand(shape, generator=gen, dtype=torch.float64)
    heights = torch.randn((*shape, num_intervals + 1), generator=gen, dtype=torch.float64)
    left_slope = torch.randn(shape, generator=gen, dtype=torch.float64)
    right_slope = torch.randn(shape, generator=gen, dtype=torch.float64)
    return tuple(p.to(dtype) for p in (left, right, heights, left_slope, right_slope))


def special_values(params: tuple[torch.Tensor, ...]) -> torch.Tensor:
    """Inputs on breakpoints, exactly on B_L and B_R, next to them, and far outside."""
    left, right = params[0].reshape(-1), params[1].reshape(-1)
    near = torch.cat(
        [
            left,
            right,
            torch.nextafter(left, left - 1),
            torch.nextafter(right, right - 1),
        ]
    )
    far = torch.tensor([-1e4, -50.0, 0.0, 50.0, 1e4], dtype=left.dtype)
    grid = breakpoints(left, right, params[2].shape[-1] - 1).reshape(-1)
    return torch.cat([grid, near, far])


def input_with_specials(shape, params, dtype, channel_dim=1, seed=0) -> torch.Tensor:
    """Random input of ``shape`` whose first elements along every channel are special values."""
    gen = torch.Generator().manual_seed(seed)
    x = 3 * torch.randn(shape, generator=gen, dtype=torch.float64)
    specials = special_values(params)
    flat = x.movedim(channel_dim, -1).reshape(-1, shape[channel_dim])
    count = min(flat.shape[0], specials.numel())
    flat[:count] = specials[:count].reshape(-1, 1)
    x = flat.reshape(*x.movedim(channel_dim, -1).shape).movedim(-1, channel_dim)
    return x.to(dtype).contiguous()


def reference_with_grads(x, params, grad, channel_dim, dtype=torch.float64):
    """Output and the six gradients of the reference, computed in ``dtype``."""
    inputs = [t.detach().to(dtype).requires_grad_() for t in (x, *params)]
    y = pwlu_reference(*inputs, channel_dim=channel_dim)
    grads = torch.autograd.grad(y, inputs, grad.to(dtype))
    return y.detach(), grads


def op_with_grads(fn, x, params, grad):
    """Output and the six gradients of ``fn(x, *params)`` (inputs keep their dtypes)."""
    inputs = [t.detach().requires_grad_() for t in (x, *params)]  # keeps x's memory layout
    y = fn(*inputs)
    grads = torch.autograd.grad(y, inputs, grad)
    return y.detach(), grads


def sample_inputs(device: str | torch.device) -> list[tuple[str, tuple, tuple]]:
    """Arguments of both ops on ``device``: ``(label, forward args, backward args)``.

    Layer- and channel-wise units in canonical form, float32 and float64, NCHW and
    channels_last. The forward's tensors require grad (so that ``opcheck`` tests the autograd
    registration); the backward's do not (it has no derivative of its own).
    """
    samples = []
    for label, channels, dtype, channels_last in (
        ("layer-wise float32", None, torch.float32, False),
        ("channel-wise float32", 3, torch.float32, False),
        ("channel-wise float64 channels_last", 3, torch.float64, True),
    ):
        params = make_params(channels, 16, dtype=dtype, seed=7)
        canonical = tuple(p.to(device) for p in canonical_params(*params))
        gen = torch.Generator().manual_seed(8)
        x = (2 * torch.randn(2, 3, 4, 5, generator=gen, dtype=torch.float64)).to(dtype)
        if channels_last:
            x = x.to(memory_format=torch.channels_last)
        x = x.to(device)
        grad_y = torch.randn(x.shape, generator=gen, dtype=torch.float64).to(dtype).to(device)
        forward = (x.clone().requires_grad_(), *(p.clone().requires_grad_() for p in canonical), 1)
        backward = (grad_y, x, *canonical, 1)
        samples.append((label, forward, backward))
    return samples
