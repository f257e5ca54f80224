"""The Triton kernels against the reference on CPU, in Triton's interpreter.

These run in the interpreter session that ``make test`` starts,
``TRITON_INTERPRET=1 python -m pytest tests/triton``, where the op's CPU kernel is the Triton
one: output and all six gradients through ``pwlu()`` against autograd through
:func:`pwlu_reference` (float64 tight, float32 with sum tolerances scaled to the element count),
plus finite differences. In a session without the interpreter they skip; their GPU
counterparts are ``test_triton_kernels.py``.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest
import torch

from pwlu_det.layers import environment
from pwlu_det.layers.pwlu_op import PARAM_NAMES, pwlu
from pwlu_det.layers.pwlu_reference import pwlu_reference

pytestmark = pytest.mark.skipif(
    not environment.TRITON_INTERPRET,
    reason="CPU checks of the Triton kernels: they run in the interpreter session "
    "(TRITON_INTERPRET=1 python -m pytest tests/triton; make test runs it)",
)

_EPS32 = 2.0**-23

INTERPRETED: dict[str, Callable[[], None]] = {}


def _register(group: dict[str, Callable[[], None]], name: str, fn: Callable[[], None]) -> None:
    assert name not in group, name
    group[name] = fn


# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------


def _params(units, n, dtype, *, layerwise, seed, left_slope=None):
    """Random bounds around [-1.5, 1.5], heights and slopes; 0-d / (N+1,) when layer-wise."""
    gen = torch.Generator().manual_seed(seed)
    f64 = torch.float64
    bl = -1.5 + 0.5 * torch.rand(units, generator=gen, dtype=f64)
    br = 1.5 + 0.5 * torch.rand(units, generator=gen, dtype=f64)
    heights = torch.randn(units, n + 1, generator=gen, dtype=f64)
    kl = torch.randn(units, generator=gen, dtype=f64)
    kr = torch.randn(units, generator=gen, dtype=f64)
    if left_slope is not None:
        kl[0] = left_slope
    params = [p.to(dtype) for p in (bl, br, heights, kl, kr)]
    return [p[0] for p in params] if layerwise else params


def _special_values(bl, br, n, far):
    """Breakpoints as x (two roundings), their float neighbours, B_L, B_R, and far values:
    ``4 (N + 1) + 6`` values."""
    i = torch.arange(n + 1, dtype=bl.dtype)
    points = bl + i * ((br - bl) / n)
    inf = torch.tensor(float("inf"), dtype=bl.dtype)
    return torch.cat(
        [
            points,
            bl + (br - bl) * i / n,
            torch.nextafter(points, inf),
            torch.nextafter(points, -inf),
            torch.stack([bl, br, bl - far, br + far, bl - 1e-3, br + 1e-3]),
        ]
    )


def _input(shape, params, channel_dim, dtype, *, seed, far=1e3, special=True):
    """Normal values (scale 2: about a third outside the bounds) with each unit's special
    values written into that unit's elements."""
    gen = torch.Generator().manual_seed(seed)
    x = 2 * torch.randn(shape, generator=gen, dtype=torch.float64)
    x = x.to(dtype)
    if not special:
        return x
    bl, br, heights = params[0], params[1], params[2]
    n = heights.shape[-1] - 1
    if bl.dim() == 0:
        values = _special_values(bl.to(dtype), br.to(dtype), n, far)
        flat = x.view(-1)
        flat[: values.numel()] = values[: flat.numel()]
        return x
    for c in range(bl.shape[0]):
        values = _special_values(bl[c].to(dtype), br[c].to(dtype), n, far)
        unit = x.select(channel_dim, c)
        flat = unit.flatten().clone()
        assert flat.numel() >= values.numel(), "input too small for the special values"
        flat[: values.numel()] = values
        unit.copy_(flat.view(unit.shape))
    return x


def _run(backend, x_base, params, channel_dim, grad_y, transform=None):
    """Forward and backward of one backend; gradients w.r.t. x_base and the parameters."""
    leaf = x_base.detach().clone().requires_grad_()
    ps = [p.detach().clone().requires_grad_() for p in params]
    x = transform(leaf) if transform is not None else leaf
    if backend == "reference":
        y = pwlu_reference(x, *ps, channel_dim=channel_dim)
    else:  # the op: its CPU kernel is the Triton one in the interpreter
        y = pwlu(x, *ps, channel_dim=channel_dim)
    y.backward(grad_y)
    return x, y.detach(), [leaf.grad, *(p.grad for p in ps)]


def _sum_tolerances(x, params, grad_y, n):
    """Absolute tolerances of the five parameter gradients for float32 sums over x.

    Each gradient is a sum over the unit's elements of ``g * df/dparam``; rounding errors of
    such sums grow like ``sqrt(numel)`` (random walk) times the largest term. Measured here:
    errors about 1e-5 where these tolerances are about 1e-3.
    """
    numel = max(x.numel(), 1)
    g = grad_y.double().abs().max().item() if grad_y.numel() else 0.0
    bl, br, kl, kr = (params[k].double().reshape(-1) for k in (0, 1, 3, 4))
    heights = params[2].double().reshape(-1, n + 1)
    k_in = (heights[:, 1:] - heights[:, :-1]).abs() * (n / (br - bl))[:, None]
    k_max = max(k_in.max().item(), kl.abs().max().item(), kr.abs().max().item(), 1.0)
    finite = x.double()[torch.isfinite(x.double())]
    reach = (finite.abs().max().item() if finite.numel() else 0.0) + 2.0
    per_sum = 4 * _EPS32 * math.sqrt(numel) * g
    return (per_sum * k_max, per_sum * k_max, per_sum, per_sum * reach, per_sum * reach)


def _check(x_base, params, channel_dim, *, transform=None, grad_y=None, rtol, atol, sum_atol=None):
    """Triton (through pwlu's dispatch) against the reference: output and all six gradients."""
    if grad_y is None:
        shape = (transform(x_base) if transform else x_base).shape
        gen = torch.Generator().manual_seed(12345)
        grad_y = torch.randn(shape, generator=gen, dtype=torch.float64).to(x_base.dtype)
    x_ref, y_ref, g_ref = _run("reference", x_base, params, channel_dim, grad_y, transform)
    x_tri, y_tri, g_tri = _run("triton", x_base, params, channel_dim, grad_y, transform)

    assert y_tri.dtype == x_tri.dtype and y_tri.shape == x_tri.shape
    if x_tri.numel() and _dense(x_tri):
        assert y_tri.stride() == x_tri.stride(), (y_tri.stride(), x_tri.stride())
    torch.testing.assert_close(
        y_tri, y_ref, rtol=rtol, atol=atol, equal_nan=True, msg=lambda m: f"output: {m}"
    )
    names = ("x", *PARAM_NAMES)
    n = params[2].shape[-1] - 1
    sum_atols = sum_atol or _sum_tolerances(x_tri.detach(), params, grad_y, n)
    for k, (name, got, want) in enumerate(zip(names, g_tri, g_ref, strict=True)):
        assert got is not None, f"no gradient for {name}"
        assert got.dtype == want.dtype and got.shape == want.shape, (name, got.dtype, want.dtype)
        tol = atol if k == 0 else max(atol, sum_atols[k - 1])
        torch.testing.assert_close(
            got,
            want,
            rtol=rtol,
            atol=tol,
            equal_nan=True,
            msg=lambda m, name=name: f"grad of {name}: {m}",
        )


def _dense(t):
    """Gap-free, non-overlapping memory (written independently of pwlu_triton._is_dense)."""
    expected = 1
    for size, stride in sorted(zip(t.shape, t.stride(), strict=True), key=lambda s: s[1]):
        if size != 1:
            if stride != expected:
                return False
            expected *= size
    return True


F64 = {"rtol": 1e-10, "atol": 1e-10, "sum_atol": (1e-10,) * 5}
F32 = {"rtol": 1e-5, "atol": 1e-5}


# --------------------------------------------------------------------------------------------
# Interpreted checks: the kernels on CPU under TRITON_INTERPRET=1
# --------------------------------------------------------------------------------------------


def _interpreter_is_on():
    from triton.runtime.jit import JITFunction

    from pwlu_det.layers import has_kernel, pwlu_cpp, pwlu_triton

    assert environment.TRITON_INTERPRET
    assert pwlu_triton.available(), pwlu_triton.unavailable_reason()
    assert pwlu_triton.unavailable_reason() == ""
    assert not isinstance(pwlu_triton.jit_kernels()[0], JITFunction)
    assert has_kernel("cpu") and not pwlu_cpp.available()  # the Triton kernel, not C++
    assert "TRITON_INTERPRET" in pwlu_cpp.unavailable_reason()


_register(INTERPRETED, "interpreter_is_on", _interpreter_is_on)


def _grid_case(n, dtype, layerwise, channel_dim=1, shape=(2, 3, 12, 12)):
    def case():
        units = 1 if layerwise else shape[channel_dim]
        params = _params(units, n, dtype, layerwise=layerwise, seed=n)
        far = 1e3 if dtype == torch.float64 else 50.0
        x = _input(shape, params, channel_dim, dtype, seed=100 + n, far=far)
        _check(x, params, channel_dim, **(F64 if dtype == torch.float64 else F32))

    return case


for _n in (1, 2, 16, 64):
    for _lw in (True, False):
        _kind = "layerwise" if _lw else "channelwise"
        _register(INTERPRETED, f"float64_{_kind}_N{_n}", _grid_case(_n, torch.float64, _lw))
for _n in (2, 16):
    for _lw in (True, False):
        _kind = "layerwise" if _lw else "channelwise"
        _register(INTERPRETED, f"float32_{_kind}_N{_n}", _grid_case(_n, torch.float32, _lw))
_register(
    INTERPRETED,
    "float64_channel_dim_last",
    _grid_case(16, torch.float64, False, channel_dim=3, shape=(2, 10, 11, 3)),
)
_register(
    INTERPRETED,
    "float32_channel_dim_last",
    _grid_case(16, torch.float32, False, channel_dim=3, shape=(2, 10, 11, 3)),
)
_register(
    INTERPRETED,
    "float64_channel_dim_0_of_2d",
    _grid_case(16, torch.float64, False, channel_dim=0, shape=(4, 80)),
)


def _rounding_sensitive_inputs(bl, br, n, dtype):
    """Inputs near breakpoints whose interval under the reference's
    ``p = (x - B_L) * (N / (B_R - B_L))`` differs from other ways of writing p."""
    d = (br - bl) / n
    i = torch.arange(n + 1, dtype=dtype)
    x = bl + i * d
    inf = torch.tensor(float("inf"), dtype=dtype)
    around = [x]
    up, down = x, x
    for _ in range(16):  # 16 ulps either side of every breakpoint
        up, down = torch.nextafter(up, inf), torch.nextafter(down, -inf)
        around += [up, down]
    x = torch.cat(around)
    x = x[(x >= bl) & (x < br)]
    p_ref = ((x - bl) * (n / (br - bl))).floor()
    alternatives = [(x - bl) / d, (x - bl) * (1 / d), (x - bl) / (br - bl) * n]
    differs = [x[(p.floor() != p_ref)] for p in alternatives]
    return differs


def _breakpoint_rounding():
    """Bin choice at breakpoints follows the reference's exact order of operations (the
    gradient in x is the slope of the chosen interval, so a different bin shows)."""
    for dtype, tols in ((torch.float64, F64), (torch.float32, F32)):
        # N = 12, not a power of two: N / D and 1 / (D / N) round differently.
        params = _params(3, 12, dtype, layerwise=False, seed=27)
        bl, br = params[0], params[1]
        per_unit = [_rounding_sensitive_inputs(bl[c], br[c], 12, dtype) for c in range(3)]
        for k in range(3):  # each alternative formula disagrees somewhere: the check has teeth
            assert sum(u[k].numel() for u in per_unit) > 0, (dtype, k)
        columns = [torch.cat(u) for u in per_unit]
        width = max(c.numel() for c in columns)
        x = torch.stack([torch.cat([c, c[:1].expand(width - c.numel())]) for c in columns])
        _check(x, params, 0, **tols)


_register(INTERPRETED, "breakpoint_rounding", _breakpoint_rounding)


def _channels_last():
    for layerwise in (False, True):
        params = _params(4, 16, torch.float64, layerwise=layerwise, seed=3)
        x = _input((2, 4, 7, 9), params, 1, torch.float64, seed=4)

        def to_cl(t):
            return t.to(memory_format=torch.channels_last)

        assert to_cl(x).stride()[1] == 1
        # grad_y contiguous while x is channels_last: the backward restrides it.
        grad_y = torch.randn(2, 4, 7, 9, dtype=torch.float64)
        _check(x, params, 1, transform=to_cl, grad_y=grad_y, **F64)
        _check(x, params, 1, transform=to_cl, grad_y=to_cl(grad_y), **F64)
    # float32 channels_last
    params = _params(4, 16, torch.float32, layerwise=False, seed=5)
    x = _input((2, 4, 7, 9), params, 1, torch.float32, seed=6, far=50.0)
    _check(x, params, 1, transform=lambda t: t.to(memory_format=torch.channels_last), **F32)


_register(INTERPRETED, "channels_last", _channels_last)


def _views():
    params = _params(5, 16, torch.float64, layerwise=False, seed=7)
    base = _input((3, 5, 8, 12), params, 1, torch.float64, seed=8)
    # A permutation (dense, channel stride 8*12 -> dim 3): runs natively.
    permuted = _input((3, 8, 12, 5), params, 3, torch.float64, seed=9)
    _check(permuted, params, 1, transform=lambda t: t.permute(0, 3, 1, 2), **F64)
    # Strided slice (not dense): made contiguous first.
    _check(base, params, 1, transform=lambda t: t[:, :, ::2, 1:], **F64)
    # A dense view with a storage offset.
    _check(base, params, 1, transform=lambda t: t[1:], **F64)
    # Expanded input (stride 0, overlapping).
    small = _input((1, 5, 8, 12), params, 1, torch.float64, seed=10)
    _check(small, params, 1, transform=lambda t: t.expand(2, 5, 8, 12), **F64)
    # Layer-wise on a transposed 2-D view and on a 1-D tensor (channel_dim ignored).
    lw = _params(1, 16, torch.float64, layerwise=True, seed=11)
    _check(_input((12, 20), lw, 1, torch.float64, seed=12), lw, 1, transform=lambda t: t.t(), **F64)
    _check(_input((130,), lw, 1, torch.float64, seed=13), lw, 1, **F64)


_register(INTERPRETED, "views_and_layouts", _views)


def _empty():
    for layerwise in (False, True):
        params = _params(3, 16, torch.float32, layerwise=layerwise, seed=14)
        for shape in ((0, 3, 5), (2, 3, 0)):
            x = torch.empty(shape)
            _, y, grads = _run("triton", x, params, 1, torch.empty(shape))
            assert y.shape == shape and y.dtype == torch.float32
            for g, p in zip(grads[1:], params, strict=True):
                assert g.shape == p.shape and g.dtype == p.dtype and bool((g == 0).all())
            _check(x, params, 1, grad_y=torch.empty(shape), **F32)


_register(INTERPRETED, "empty_tensor", _empty)


def _nan_inf():
    specials = torch.tensor([float("nan"), float("inf"), -float("inf"), 0.3, -3.0, 3.0])
    for dtype in (torch.float64, torch.float32):
        for layerwise in (True, False):
            # Unit 0 has K_L = 0 (ReLU-like): f(-inf) = Y_0 + (-inf) * 0 = NaN, as in IEEE.
            params = _params(3, 16, dtype, layerwise=layerwise, seed=15, left_slope=0.0)
            x = _input((2, 3, 4, 5), params, 1, dtype, seed=16, special=False)
            x[0, :, 0, :] = specials[:5].to(dtype)
            x[1, :, 1, :3] = specials[:3].to(dtype)
            _check(x, params, 1, **(F64 if dtype == torch.float64 else F32))
            # And the NaN pattern is really there (the check above is not vacuous).
            _, y, grads = _run("triton", x, params, 1, torch.ones_like(x))
            assert bool(y[0, :, 0, 0].isnan().all()) and bool(y[0, 0, 0, 2].isnan())
            assert bool(grads[1].isnan().all()) and bool(grads[2].isnan().all())
            assert bool(torch.isfinite(grads[0]).all())


_register(INTERPRETED, "nan_and_inf", _nan_inf)


def _half_precision():
    for dtype, tol in ((torch.float16, 1e-3), (torch.bfloat16, 8e-3)):
        for layerwise in (True, False):
            params = _params(3, 16, torch.float32, layerwise=layerwise, seed=17)
            x = _input((2, 3, 6, 7), params, 1, torch.float32, seed=18, special=False).to(dtype)
            grad_y = torch.randn(2, 3, 6, 7).to(dtype)
            sums = _sum_tolerances(x, params, grad_y, 16)
            _check(
                x,
                params,
                1,
                grad_y=grad_y,
                rtol=tol,
                atol=tol,
                sum_atol=tuple(max(s, 1e-4) for s in sums),
            )
            _, y, grads = _run("triton", x, params, 1, grad_y)
            assert y.dtype == dtype and grads[0].dtype == dtype
            assert all(g.dtype == torch.float32 for g in grads[1:])


_register(INTERPRETED, "float16_bfloat16_input", _half_precision)


def _mixed_param_dtypes():
    # float32 x with float64 parameters: computed in float32, gradients in float64.
    params = _params(3, 16, torch.float64, layerwise=False, seed=19)
    x = _input((2, 3, 8, 9), params, 1, torch.float32, seed=20, far=50.0)
    _check(x, params, 1, **F32)
    # float64 x with float32 parameters: computed in float64, gradients in float32.
    params32 = [p.float() for p in params]
    x64 = _input((2, 3, 8, 9), params32, 1, torch.float64, seed=21)
    _check(x64, params32, 1, rtol=1e-6, atol=1e-6, sum_atol=(1e-5,) * 5)


_register(INTERPRETED, "mixed_parameter_dtypes", _mixed_param_dtypes)


def _many_programs():
    """Tiny tiles, so that grids have many programs, each backward program takes several steps
    and the partial sums several rows, tiles have ragged edges, and (forced) 64-bit indexing
    runs."""
    from pwlu_det.layers import pwlu_triton as pt

    small = {"_FORWARD_TILE": 64, "_WARP_TILE": 16, "_GROUPS": 2, "_PROGRAMS_PER_SM": 2}
    saved = {k: getattr(pt, k) for k in (*small, "_INT32_MAX")}
    try:
        for k, v in small.items():
            setattr(pt, k, v)
        cases = [  # (shape, channel_dim, layerwise, transform)
            ((2, 6, 5, 7), 1, False, None),  # NCHW, inner 35: two inner blocks
            ((2, 6, 5, 7), 1, False, lambda t: t.to(memory_format=torch.channels_last)),
            ((2, 6, 5, 7), 1, True, None),
            ((9, 10, 2), 1, False, None),  # inner 2: tiles span rows, channels and positions
        ]
        splits = []
        for int32_max in (saved["_INT32_MAX"], 0):
            pt._INT32_MAX = int32_max
            for shape, cd, layerwise, transform in cases:
                units = 1 if layerwise else shape[cd]
                params = _params(units, 16, torch.float64, layerwise=layerwise, seed=22)
                x = _input(shape, params, cd, torch.float64, seed=23, special=False)
                xv = transform(x) if transform else x
                outer, channels, inner = pt.memory_view(xv, units, cd)
                launch = pt.backward_grid(outer, channels, inner, 18, pt._sm_count(xv.device))
                assert launch.steps > 1, launch
                splits.append(launch.n_split)
                _check(x, params, cd, transform=transform, **F64)
        assert max(splits) > 1, splits  # partial sums from several programs per channel
    finally:
        for k, v in saved.items():
            setattr(pt, k, v)


_register(INTERPRETED, "many_programs_and_int64_indexing", _many_programs)


_ALLOCATIONS_AND_VIEWS = {
    "aten::empty",
    "aten::empty_like",
    "aten::empty_strided",
    "aten::as_strided",
    "aten::reshape",
    "aten::view",
    "aten::_reshape_alias",
    "aten::alias",
    "aten::detach",  # autograd storing a first .grad
}


def _host_ops(fn) -> list[str]:
    """The ATen and pwlu_det ops that ``fn`` dispatches on the host, nested ones included
    (``torch.profiler``), allocations and views left out."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        fn()
    names = [e.name for e in prof.events()]
    return [
        n
        for n in names
        if n.startswith(("aten::", "pwlu_det::")) and n not in _ALLOCATIONS_AND_VIEWS
    ]


def _host_ops_per_call(x, ps, g) -> tuple[list[str], list[str]]:
    out = []
    forward_ops = _host_ops(lambda: out.append(pwlu(x, *ps, channel_dim=1)))
    backward_ops = _host_ops(lambda: out[0].backward(g))  # first backward: no add_ into .grad
    return forward_ops, backward_ops


def _host_dispatches():
    """At most 3 host ops per forward and 6 per backward, the op itself included (the budget
    of the CUDA path: on a GPU each is a launch or a dispatch), kernel launches stubbed."""
    from pwlu_det.layers import pwlu_triton as pt

    launched = []
    saved = pt._launch
    pt._launch = lambda kernel, grid, *args, **kwargs: launched.append(kernel.__name__)
    try:
        for layerwise, layout in ((False, torch.contiguous_format), (True, torch.channels_last)):
            units = 1 if layerwise else 256
            ps = [
                p.requires_grad_()
                for p in _params(units, 16, torch.float32, layerwise=layerwise, seed=5)
            ]
            x = torch.randn(2, 256, 25, 38).to(memory_format=layout).requires_grad_()
            g = torch.randn(2, 256, 25, 38).to(memory_format=layout)
            forward_ops, backward_ops = _host_ops_per_call(x, ps, g)
            assert len(forward_ops) <= 3 and "pwlu_det::pwlu_forward" in forward_ops, forward_ops
            assert len(backward_ops) <= 6 and "pwlu_det::pwlu_backward" in backward_ops, (
                backward_ops
            )
            assert x.grad is not None and all(p.grad is not None for p in ps)
        assert (
            launched
            == ["_pwlu_forward_kernel", "_pwlu_backward_kernel", "_pwlu_param_grad_kernel"] * 2
        ), launched
    finally:
        pt._launch = saved


_register(INTERPRETED, "host_dispatches_per_call", _host_dispatches)


def _finite_differences():
    """An oracle independent of the reference: gradcheck on the triton op, away from kinks."""
    gen = torch.Generator().manual_seed(24)
    f64 = torch.float64
    bl = torch.tensor([-1.0, -0.5], dtype=f64)
    br = torch.tensor([1.0, 1.5], dtype=f64)
    heights = torch.randn(2, 5, generator=gen, dtype=f64)
    kl = torch.tensor([0.2, -0.3], dtype=f64)
    kr = torch.tensor([1.1, 0.7], dtype=f64)
    # Interval midpoints of both units, plus outer points: no element within 1e-3 of a kink.
    x = (
        torch.tensor(
            [[-3.0, -0.75, -0.25, 0.25, 0.75, 2.5], [-2.0, -0.25, 0.25, 0.75, 1.25, 4.0]], dtype=f64
        )
        .t()
        .contiguous()
    )  # (6, 2): channel_dim 1

    def f(x, bl, br, h, kl, kr):
        return pwlu(x, bl, br, h, kl, kr, channel_dim=1)

    inputs = [t.clone().requires_grad_() for t in (x, bl, br, heights, kl, kr)]
    assert torch.autograd.gradcheck(f, inputs, eps=1e-6, atol=1e-7, rtol=1e-6)


_register(INTERPRETED, "gradcheck_finite_differences", _finite_differences)


def _saves_only_x_and_params():
    params = [p.requires_grad_() for p in _params(3, 16, torch.float32, layerwise=False, seed=25)]
    x = torch.randn(2, 3, 4, 5, requires_grad=True)
    saved = []

    def pack(t):
        saved.append(t)
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        y = pwlu(x, *params, channel_dim=1)
    assert len(saved) == 6, [tuple(t.shape) for t in saved]
    for got, want in zip(saved, (x, *params), strict=True):
        assert got.data_ptr() == want.data_ptr() and got.shape == want.shape
    y.sum().backward()
    assert x.grad is not None and all(p.grad is not None for p in params)


_register(INTERPRETED, "autograd_saves_only_x_and_parameters", _saves_only_x_and_params)


def _direct_ops():
    ops = torch.ops.pwlu_det
    params = _params(3, 4, torch.float64, layerwise=False, seed=26)
    canonical = [p.reshape(3, -1) if p.dim() == 2 else p.reshape(3) for p in params]
    x = torch.randn(2, 3, 5, dtype=torch.float64)
    y = ops.pwlu_forward(x, *canonical, 1)
    torch.testing.assert_close(y, pwlu_reference(x, *params, channel_dim=1), rtol=0, atol=1e-12)
    grads = ops.pwlu_backward(torch.ones_like(x), x, *canonical, 1)
    assert len(grads) == 6 and grads[0].shape == x.shape and grads[3].shape == (3, 5)
    for bad in (
        lambda: ops.pwlu_forward(x, *canonical, 2),  # x.shape[2] = 5 != 3 units
        lambda: ops.pwlu_forward(x, canonical[0][:2], *canonical[1:], 1),
        lambda: ops.pwlu_forward(x, *canonical[:2], canonical[2][:, :1], *canonical[3:], 1),
        lambda: ops.pwlu_backward(torch.ones(2, 3), x, *canonical, 1),
    ):
        try:
            bad()
        except (ValueError, RuntimeError):
            continue
        raise AssertionError("bad canonical arguments were accepted")


_register(INTERPRETED, "direct_ops_and_argument_checks", _direct_ops)


@pytest.mark.parametrize("name", list(INTERPRETED))
def test_against_reference(name: str) -> None:
    INTERPRETED[name]()
