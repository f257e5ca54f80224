"""The PWLU op's Triton path on a GPU, each test with a CPU twin under Triton's interpreter.

Every test takes ``device``: ``"cuda"`` in a session on a GPU, or ``"interpreter"`` (the same
body on CPU tensors) in the session ``make test`` starts with ``TRITON_INTERPRET=1``; see
``conftest.py``. Shapes are small so that the interpreter twins stay
fast; the one test that needs more than 2^31 elements does so on a GPU only, with a memory
check, and its twin forces the 64-bit indexing path on small shapes instead (the TTIR of the
64-bit kernels is checked in ``tests/layers/test_triton_compilation.py``).
"""

from __future__ import annotations

import contextlib
import math

import torch
from triton_support import (
    HostReads,
    LaunchRecorder,
    TritonPWLU,
    check_against_reference,
    params,
    pwlu,
    pwlu_reference,
    pwlu_triton,
    randn,
    require_gpus,
    run,
    skip,
    torch_device,
)

FLOATS = (torch.float32, torch.float16, torch.bfloat16, torch.float64)


def _param_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


# --------------------------------------------------------------------------------------------
# Dtypes, granularity, layouts
# --------------------------------------------------------------------------------------------


def test_dtypes_layerwise(device: str) -> None:
    """fp32/fp16/bf16/fp64 inputs, one parameter set: outputs in x's dtype, grads in the
    parameters' dtype, all against the reference."""
    dev = torch_device(device)
    for dtype in FLOATS:
        ps = params(1, dtype=_param_dtype(dtype), layerwise=True, seed=1, device=dev)
        x = randn((2, 3, 6, 7), dtype, seed=2, device=dev)
        y, grads = check_against_reference(x, ps, 1)
        assert y.dtype == dtype and grads[0].dtype == dtype
        assert all(g.dtype == _param_dtype(dtype) for g in grads[1:])


def test_dtypes_channelwise(device: str) -> None:
    """The same four dtypes with one parameter set per channel."""
    dev = torch_device(device)
    for dtype in FLOATS:
        ps = params(3, dtype=_param_dtype(dtype), seed=3, device=dev)
        x = randn((2, 3, 6, 7), dtype, seed=4, device=dev)
        check_against_reference(x, ps, 1)


def test_channels_last(device: str) -> None:
    """channels_last input (channel stride 1): output keeps the layout; grad_y contiguous or not."""
    dev = torch_device(device)

    def to_cl(t: torch.Tensor) -> torch.Tensor:
        return t.to(memory_format=torch.channels_last)

    for layerwise in (False, True):
        for dtype in (torch.float32, torch.bfloat16):
            ps = params(4, layerwise=layerwise, seed=5, device=dev)
            x = randn((2, 4, 5, 7), dtype, seed=6, device=dev)
            grad_y = randn((2, 4, 5, 7), dtype, seed=7, device=dev, scale=1.0)
            y, _ = check_against_reference(x, ps, 1, transform=to_cl, grad_y=grad_y)
            assert y.is_contiguous(memory_format=torch.channels_last)
            check_against_reference(x, ps, 1, transform=to_cl, grad_y=to_cl(grad_y))


def test_two_dimensional_nc(device: str) -> None:
    """(N, C) inputs as in the box head's FC layers, channel-wise and layer-wise, both
    channel_dim conventions."""
    dev = torch_device(device)
    check_against_reference(randn((37, 24), seed=8, device=dev), params(24, seed=9, device=dev), 1)
    check_against_reference(
        randn((24, 37), seed=10, device=dev), params(24, seed=11, device=dev), 0
    )
    lw = params(1, layerwise=True, seed=12, device=dev)
    check_against_reference(randn((37, 24), seed=13, device=dev), lw, 1)


def test_non_dense_inputs(device: str) -> None:
    """Strided slices, expanded (stride 0), transposed views and a storage offset."""
    dev = torch_device(device)
    ps = params(5, seed=14, device=dev)
    base = randn((3, 5, 8, 12), seed=15, device=dev)
    check_against_reference(base, ps, 1, transform=lambda t: t[:, :, ::2, 1:])
    check_against_reference(base, ps, 1, transform=lambda t: t[1:])
    small = randn((1, 5, 8, 12), seed=16, device=dev)
    check_against_reference(small, ps, 1, transform=lambda t: t.expand(2, 5, 8, 12))
    permuted = randn((3, 8, 12, 5), seed=17, device=dev)
    check_against_reference(permuted, ps, 1, transform=lambda t: t.permute(0, 3, 1, 2))
    lw = params(1, layerwise=True, seed=18, device=dev)
    check_against_reference(randn((12, 20), seed=19, device=dev), lw, 1, transform=lambda t: t.t())


# --------------------------------------------------------------------------------------------
# Special values
# --------------------------------------------------------------------------------------------


def test_values_on_breakpoints(device: str) -> None:
    """x exactly on every breakpoint, on B_L and B_R, and one ulp either side: the kernel
    picks the reference's interval (so grad_x, the chosen interval's slope, matches too)."""
    dev = torch_device(device)
    for dtype, tol in ((torch.float64, 1e-12), (torch.float32, 1e-6)):
        # N = 12, not a power of two: different ways of computing the interval disagree.
        ps = params(3, n=12, dtype=dtype, seed=20, device=dev)
        columns = []
        for c in range(3):
            bl, br = ps[0][c].cpu(), ps[1][c].cpu()
            points = bl + torch.arange(13, dtype=dtype) * ((br - bl) / 12)
            inf = torch.tensor(float("inf"), dtype=dtype)
            columns.append(
                torch.cat([points, torch.nextafter(points, inf), torch.nextafter(points, -inf)])
            )
        x = torch.stack(columns, dim=1).to(dev)  # (39, 3): channel_dim 1
        check_against_reference(x, ps, 1, tol=tol)


def test_nan_and_inf(device: str) -> None:
    """NaN/+-inf behave like the reference (IEEE): f(-inf) with K_L = 0 is NaN, NaN inputs
    give NaN outputs and NaN parameter gradients, grad_x stays finite."""
    dev = torch_device(device)
    for dtype in (torch.float32, torch.float64, torch.float16):
        ps = params(3, dtype=_param_dtype(dtype), seed=21, device=dev)
        ps[3] = torch.tensor([0.0, 0.5, -0.5], dtype=ps[3].dtype, device=dev)
        x = randn((2, 3, 4, 5), dtype, seed=22, device=dev)
        specials = torch.tensor([float("nan"), float("inf"), -float("inf"), 0.3, -3.0])
        x[0, :, 0, :] = specials.to(dtype).to(dev)
        y, grads = check_against_reference(x, ps, 1, grad_y=torch.ones_like(x))
        assert bool(y[0, :, 0, 0].isnan().all()) and bool(y[0, 0, 0, 2].isnan())
        assert bool(grads[1].isnan().all()) and bool(torch.isfinite(grads[0]).all())


def test_empty_tensors(device: str) -> None:
    """Empty inputs: empty outputs, zero parameter gradients, no launch."""
    dev = torch_device(device)
    for layerwise in (False, True):
        ps = params(3, layerwise=layerwise, seed=23, device=dev)
        for shape in ((0, 3, 5), (2, 3, 0)):
            x = torch.empty(shape, device=dev)
            with LaunchRecorder() as rec:
                y, grads = run("triton", x, ps, 1, torch.empty(shape, device=dev))
            assert rec.launches == []
            assert y.shape == shape and y.dtype == torch.float32
            for g, p in zip(grads[1:], ps, strict=True):
                assert g.shape == p.shape and bool((g == 0).all())


# --------------------------------------------------------------------------------------------
# 64-bit offsets
# --------------------------------------------------------------------------------------------


def _large_tensor_check(dev: torch.device) -> None:
    """One NCHW sample of 4 x 32768 x 16400 > 2^31 bf16 elements, forward and backward, in
    chunks (the last chunks are where 32-bit offsets would read and write ~4 GB away).

    y and grad_x are checked against the reference chunk by chunk. The parameter gradients are
    checked against the sums of the same op's gradients over the chunks, each under 2^31
    elements (the 32-bit path, which the other tests hold to the reference): the reference's
    own height gradient is an ``index_put_`` with 17 distinct indices, which CUDA runs one
    index at a time, minutes for this size.
    """
    shape = (1, 4, 32768, 16400)
    numel = math.prod(shape)
    assert numel > 2**31
    need = 5 * numel * 2 + (8 << 30)  # x, y, grad_y, grad_x, saved x + reference chunks
    free, _ = torch.cuda.mem_get_info(dev)
    if free < need:
        skip(f"needs {need / 2**30:.0f} GiB of free GPU memory, {free / 2**30:.0f} GiB free")
    gen = torch.Generator(device=dev).manual_seed(0)
    x = (2 * torch.randn(shape, device=dev, generator=gen)).to(torch.bfloat16)
    grad_y = torch.randn(shape, device=dev, generator=gen).to(torch.bfloat16)
    ps = [p.requires_grad_() for p in params(4, seed=24, device=dev)]
    with LaunchRecorder() as rec:
        y = pwlu(x.requires_grad_(), *ps, channel_dim=1)
        y.backward(grad_y)
    assert [launch["INDEX_64"] for launch in rec.launches[:2]] == [True, True], rec.launches
    sums = [torch.zeros_like(p, dtype=torch.float64) for p in ps]
    rows = 4096
    for c in range(4):
        for r in range(0, shape[2], rows):
            where = f"channel {c}, rows {r}:{r + rows}"
            xc = x.detach()[:, c : c + 1, r : r + rows].contiguous()
            gc = grad_y[:, c : c + 1, r : r + rows].contiguous()
            pc = [p.detach()[c : c + 1] for p in ps]
            xr = xc.clone().requires_grad_()
            pwlu_reference(xr, *pc, channel_dim=1).backward(gc)
            torch.testing.assert_close(
                y[:, c : c + 1, r : r + rows], pwlu_reference(xc, *pc, channel_dim=1),
                rtol=1e-2, atol=1e-2, msg=where,
            )  # fmt: skip
            torch.testing.assert_close(
                x.grad[:, c : c + 1, r : r + rows], xr.grad, rtol=1e-2, atol=1e-2, msg=where
            )
            pk = [p.clone().requires_grad_() for p in pc]
            with LaunchRecorder() as chunk_rec:
                pwlu(xc, *pk, channel_dim=1).backward(gc)
            assert not chunk_rec.launches[1]["INDEX_64"], chunk_rec.launches
            for k, p in enumerate(pk):
                sums[k][c : c + 1] += p.grad.double()
    per_unit = numel // 4
    atol = 64 * 2.0**-23 * math.sqrt(per_unit) * 20.0
    for k, p in enumerate(ps):
        torch.testing.assert_close(p.grad.double(), sums[k], rtol=1e-3, atol=atol)


def test_more_than_2_31_elements(device: str) -> None:
    """GPU: a real tensor past 2^31 elements. Twin: the 64-bit variants (forced) on small
    shapes with tiny tiles, so that grids have many programs and the row loop runs."""
    dev = torch_device(device)
    if device == "cuda":
        _large_tensor_check(dev)
        return
    small = {"_FORWARD_TILE": 64, "_WARP_TILE": 16, "_GROUPS": 2, "_PROGRAMS_PER_SM": 2}
    saved = {k: getattr(pwlu_triton, k) for k in (*small, "_INT32_MAX")}
    try:
        for k, v in small.items():
            setattr(pwlu_triton, k, v)
        pwlu_triton._INT32_MAX = 0  # every launch takes the INDEX_64 path
        for shape, layerwise, cl in (
            ((2, 6, 5, 7), False, False),
            ((2, 6, 5, 7), False, True),
            ((2, 6, 5, 7), True, False),
        ):
            ps = params(6, dtype=torch.float64, layerwise=layerwise, seed=25, device=dev)
            x = randn(shape, torch.float64, seed=26, device=dev)
            transform = (lambda t: t.to(memory_format=torch.channels_last)) if cl else None
            with LaunchRecorder() as rec:
                check_against_reference(x, ps, 1, transform=transform)
            index_64 = [launch["INDEX_64"] for launch in rec.launches[:2]]
            assert index_64 == [True, True], rec.launches
    finally:
        for k, v in saved.items():
            setattr(pwlu_triton, k, v)


# --------------------------------------------------------------------------------------------
# Devices and streams
# --------------------------------------------------------------------------------------------


def test_input_on_another_device_than_the_current(device: str) -> None:
    """x on cuda:1 while cuda:0 is current: all three launches run with x's device current.

    Twin: the launch path calls the device guard for x (recorded) and computes correctly.
    """
    require_gpus(device, 2)
    dev = torch_device(device)
    if device == "cuda":
        dev = torch.device("cuda", 1)
    ps = params(3, seed=27, device=dev)
    x = randn((2, 3, 9, 11), seed=28, device=dev)
    guard = pwlu_triton._device_guard
    entered = []

    @contextlib.contextmanager
    def recording_guard(t: torch.Tensor):
        with guard(t):
            entered.append(t.device)
            yield

    pwlu_triton._device_guard = recording_guard
    try:
        with torch.cuda.device(0) if device == "cuda" else contextlib.nullcontext():
            with LaunchRecorder() as rec:
                check_against_reference(x, ps, 1)
            if device == "cuda":
                assert torch.cuda.current_device() == 0
    finally:
        pwlu_triton._device_guard = guard
    assert entered == [dev, dev], entered
    assert [launch["device"] for launch in rec.launches] == [dev, dev, dev]
    want = dev.index if device == "cuda" else None
    assert [launch["current"] for launch in rec.launches] == [want, want, want]


def test_side_stream(device: str) -> None:
    """On a side stream, right after the work that produces x: the kernels are ordered after
    it (they use the current stream of x's device) and the result is right."""
    dev = torch_device(device)
    ps = params(8, seed=29, device=dev)
    x0 = randn((4, 8, 32, 32), seed=30, device=dev)
    weight = randn((8, 8, 3, 3), seed=31, device=dev, scale=0.2)
    want = pwlu_reference(torch.conv2d(x0, weight, padding=1), *ps, channel_dim=1)
    if device == "cuda":
        stream = torch.cuda.Stream(dev)
        stream.wait_stream(torch.cuda.current_stream(dev))
        context = torch.cuda.stream(stream)
    else:
        context = contextlib.nullcontext()
    with context:
        x = torch.conv2d(x0, weight, padding=1)  # still running when the kernel is queued
        y = pwlu(x, *ps, channel_dim=1)
    if device == "cuda":
        torch.cuda.current_stream(dev).wait_stream(stream)
    torch.testing.assert_close(y, want, rtol=1e-5, atol=1e-5)


# --------------------------------------------------------------------------------------------
# Mixed precision, as Detectron2's AMPTrainer runs it
# --------------------------------------------------------------------------------------------


def _conv_pwlu_conv(dev: torch.device, backend: str) -> torch.nn.Sequential:
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3, padding=1), TritonPWLU(8, backend), torch.nn.Conv2d(8, 4, 1)
    )
    return model.to(dev)


def _amp_step(model, x, dtype, scaler=None):
    """One AMPTrainer-style step: autocast forward, (scaled) backward, (scaled) SGD step."""
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    seen = {}
    hook = model[1].register_forward_hook(
        lambda m, args, out: seen.update(inp=args[0].dtype, out=out.dtype)
    )
    with torch.autocast(x.device.type, dtype=dtype):
        loss = model(x).float().square().mean()
    hook.remove()
    if scaler is None:
        loss.backward()
        grads = [p.grad.clone() for p in model[1].parameters()]
        optimizer.step()
    else:
        scaler.scale(loss).backward()
        scaler.unscale_(optimizer)
        grads = [p.grad.clone() for p in model[1].parameters()]
        scaler.step(optimizer)
        scaler.update()
    return loss, grads, seen


def test_amp_float16_with_grad_scaler(device: str) -> None:
    """fp16 autocast + GradScaler (scale, backward, unscale, step, update): the PWLU sees and
    returns fp16, its parameter gradients are fp32, finite and match the reference's."""
    dev = torch_device(device)
    x = randn((2, 3, 12, 12), seed=32, device=dev)
    results = []
    for backend in ("triton", "reference"):
        model = _conv_pwlu_conv(dev, backend)
        before = [p.detach().clone() for p in model[1].parameters()]
        scaler = torch.amp.GradScaler(dev.type, init_scale=2.0**10)
        loss, grads, seen = _amp_step(model, x, torch.float16, scaler)
        assert seen == {"inp": torch.float16, "out": torch.float16}, seen
        assert scaler.get_scale() == 2.0**10  # no inf/NaN gradient: the step was taken
        after = list(model[1].parameters())
        assert any(not torch.equal(a, b) for a, b in zip(after, before, strict=True))
        assert all(g.dtype == torch.float32 and bool(torch.isfinite(g).all()) for g in grads)
        results.append((loss, grads))
    (loss, grads), (loss_ref, grads_ref) = results
    torch.testing.assert_close(loss, loss_ref, rtol=1e-3, atol=1e-5)
    for got, want in zip(grads, grads_ref, strict=True):
        torch.testing.assert_close(got, want, rtol=2e-2, atol=2e-3)


def test_bfloat16_autocast(device: str) -> None:
    """bf16 autocast: the PWLU sees and returns bf16; gradients match the reference's."""
    dev = torch_device(device)
    x = randn((2, 3, 12, 12), seed=33, device=dev)
    results = []
    for backend in ("triton", "reference"):
        model = _conv_pwlu_conv(dev, backend)
        loss, grads, seen = _amp_step(model, x, torch.bfloat16)
        assert seen == {"inp": torch.bfloat16, "out": torch.bfloat16}, seen
        results.append((loss, grads))
    (loss, grads), (loss_ref, grads_ref) = results
    torch.testing.assert_close(loss, loss_ref, rtol=1e-2, atol=1e-4)
    for got, want in zip(grads, grads_ref, strict=True):
        torch.testing.assert_close(got, want, rtol=5e-2, atol=5e-3)


# --------------------------------------------------------------------------------------------
# torch.compile and torch.export
# --------------------------------------------------------------------------------------------
# The interpreter's kernels run only eagerly (they read tensor memory through numpy, which
# fake tensors do not have), so the twins trace pwlu() through the op's fake implementation and
# autograd formula with the aot_eager backend (Dynamo + AOTAutograd without a C++ compile),
# whose graph then runs the op's CPU kernel: the Triton one, interpreted. On the GPU the backend
# is Inductor, which calls the op as an extern kernel.


def _counting_backend(device: str, graphs: list):
    backend = torch._dynamo.lookup_backend("inductor" if device == "cuda" else "aot_eager")

    def compile_graph(gm, example_inputs):
        graphs.append(gm)
        return backend(gm, example_inputs)

    return compile_graph


def _compiled_matches_eager(device: str, dynamic: bool, shapes) -> int:
    dev = torch_device(device)
    torch._dynamo.reset()
    ps = [p.requires_grad_() for p in params(6, seed=34, device=dev)]

    def f(x, *ps):
        return pwlu(x, *ps, channel_dim=1) * 2.0 + 1.0

    graphs: list = []
    compiled = torch.compile(
        f, backend=_counting_backend(device, graphs), fullgraph=True, dynamic=dynamic
    )
    for k, shape in enumerate(shapes):
        x = randn(shape, seed=35 + k, device=dev).requires_grad_()
        y = compiled(x, *ps)
        y_eager = f(x, *ps)
        torch.testing.assert_close(y, y_eager, rtol=1e-5, atol=1e-5)
        g = randn(shape, seed=50 + k, device=dev, scale=1.0)
        grads = torch.autograd.grad(y, [x, *ps], g)
        grads_eager = torch.autograd.grad(y_eager, [x, *ps], g)
        for got, want in zip(grads, grads_eager, strict=True):
            torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)
    return len(graphs)


def test_compile_fullgraph_static(device: str) -> None:
    """fullgraph (no graph break), static shapes: one graph, same values and grads as eager."""
    assert _compiled_matches_eager(device, False, [(2, 6, 5, 7), (2, 6, 5, 7)]) == 1


def test_compile_fullgraph_dynamic(device: str) -> None:
    """fullgraph with dynamic shapes: three batch and spatial sizes, one graph."""
    shapes = [(2, 6, 5, 7), (3, 6, 9, 4), (5, 6, 3, 3)]
    assert _compiled_matches_eager(device, True, shapes) == 1


def test_torch_export(device: str) -> None:
    """torch.export of a module with PWLU: the op is in the graph, the program runs and
    matches eager, with a dynamic batch size."""
    dev = torch_device(device)
    model = TritonPWLU(6).to(dev)
    x = randn((2, 6, 5, 7), seed=36, device=dev)
    batch = torch.export.Dim("batch", min=1, max=64)
    program = torch.export.export(model, (x,), dynamic_shapes=({0: batch},))
    code = program.graph_module.code
    assert "torch.ops.pwlu_det.pwlu_forward.default" in code, code  # the op, kept whole
    for shape in ((2, 6, 5, 7), (5, 6, 5, 7)):
        xs = randn(shape, seed=37, device=dev)
        torch.testing.assert_close(program.module()(xs), model(xs), rtol=1e-6, atol=1e-6)


# --------------------------------------------------------------------------------------------
# Determinism, gradients
# --------------------------------------------------------------------------------------------


def test_bitwise_determinism(device: str) -> None:
    """Two runs give bitwise identical outputs and gradients (no atomics in the backward)."""
    dev = torch_device(device)
    shapes = ((4, 16, 20, 20), (64, 32, 3, 3)) if device == "cuda" else ((2, 8, 9, 9),)
    for shape in shapes:
        ps = params(shape[1], seed=38, device=dev)
        x = randn(shape, seed=39, device=dev)
        g = randn(shape, seed=40, device=dev, scale=1.0)
        for transform in (None, lambda t: t.to(memory_format=torch.channels_last)):
            y1, g1 = run("triton", x, ps, 1, g, transform)
            y2, g2 = run("triton", x, ps, 1, g, transform)
            assert torch.equal(y1, y2)
            assert all(torch.equal(a, b) for a, b in zip(g1, g2, strict=True))


def test_gradients_float64_against_reference(device: str) -> None:
    """float64: every gradient equals autograd through the reference to 1e-10, in three
    layouts and both granularities."""
    dev = torch_device(device)
    for layerwise in (False, True):
        ps = params(4, dtype=torch.float64, layerwise=layerwise, seed=41, device=dev)
        x = randn((3, 4, 6, 5), torch.float64, seed=42, device=dev)
        for transform in (
            None,
            lambda t: t.to(memory_format=torch.channels_last),
            lambda t: t[:, :, 1:, ::2],
        ):
            check_against_reference(x, ps, 1, transform=transform, tol=1e-10)


def test_gradcheck(device: str) -> None:
    """Finite differences (torch.autograd.gradcheck) on the Triton op in float64, at points
    away from the kinks, for x and all five parameters."""
    dev = torch_device(device)
    f64 = torch.float64
    gen = torch.Generator().manual_seed(43)
    bl = torch.tensor([-1.0, -0.5], dtype=f64)
    br = torch.tensor([1.0, 1.5], dtype=f64)
    heights = torch.randn(2, 5, generator=gen, dtype=f64)
    kl = torch.tensor([0.2, -0.3], dtype=f64)
    kr = torch.tensor([1.1, 0.7], dtype=f64)
    x = torch.tensor(
        [[-3.0, -0.75, -0.25, 0.25, 0.75, 2.5], [-2.0, -0.25, 0.25, 0.75, 1.25, 4.0]], dtype=f64
    ).t()

    def f(x, bl, br, h, kl, kr):
        return pwlu(x, bl, br, h, kl, kr, channel_dim=1)

    inputs = [t.contiguous().to(dev).requires_grad_() for t in (x, bl, br, heights, kl, kr)]
    assert torch.autograd.gradcheck(f, inputs, eps=1e-6, atol=1e-7, rtol=1e-6)


# --------------------------------------------------------------------------------------------
# The training path: launches and host syncs
# --------------------------------------------------------------------------------------------


def test_launches_each_way(device: str) -> None:
    """Forward launches the forward kernel once; backward the main kernel and the finalize
    kernel once each; all with x's device current."""
    dev = torch_device(device)
    ps = params(4, seed=44, device=dev)
    x = randn((2, 4, 8, 8), seed=45, device=dev)
    with LaunchRecorder() as rec:
        run("triton", x, ps, 1, torch.ones_like(x))
    kernels = [launch["kernel"] for launch in rec.launches]
    assert kernels == [
        "_pwlu_forward_kernel",
        "_pwlu_backward_kernel",
        "_pwlu_param_grad_kernel",
    ], kernels
    assert all(launch["device"] == dev for launch in rec.launches)


@contextlib.contextmanager
def _no_host_sync(device: str):
    """On a GPU: CUDA's sync debug mode raises on any sync. On CPU: no op may read a value."""
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode("error")
        try:
            yield
        finally:
            torch.cuda.set_sync_debug_mode("default")
    else:
        with HostReads() as mode:
            yield
        assert mode.reads == [], mode.reads


def test_training_step_needs_no_host_sync(device: str) -> None:
    """Forward and backward of the op on the training path read nothing back to the host."""
    dev = torch_device(device)
    ps = [p.requires_grad_() for p in params(4, seed=46, device=dev)]
    x = randn((2, 4, 8, 8), seed=47, device=dev).requires_grad_()
    g = torch.ones_like(x)
    with _no_host_sync(device):
        y = pwlu(x, *ps, channel_dim=1)
        y.backward(g)
    assert x.grad is not None and all(p.grad is not None for p in ps)
    if device != "cuda":  # the CPU recorder sees a read when there is one
        with HostReads() as mode:
            bool(y.sum() > 0)
        assert mode.reads


def test_phase_one_statistics_need_no_host_sync(device: str) -> None:
    """The PWLU module in Phase I (ReLU, statistics) and Phase II on the op: no host sync,
    and the statistics are the first batch's, then the exponential average."""
    dev = torch_device(device)
    from pwlu_det.layers import PWLU

    act = PWLU(4, momentum=0.9).to(dev)
    act.start_statistics()
    act.train()
    mean = None
    for s in range(3):
        x = randn((2, 4, 6, 6), seed=48 + s, device=dev).requires_grad_()
        with _no_host_sync(device):
            act(x).sum().backward()
        batch_mean = x.detach().mean(dim=(0, 2, 3))
        mean = batch_mean if mean is None else 0.9 * mean + 0.1 * batch_mean
    torch.testing.assert_close(act.running_mean, mean, rtol=1e-5, atol=1e-6)
    act.realign()
    x = randn((2, 4, 6, 6), seed=60, device=dev).requires_grad_()
    with _no_host_sync(device):
        y = pwlu(x, *act.parameters(), channel_dim=1)
        y.sum().backward()
    torch.testing.assert_close(y, act(x), rtol=1e-6, atol=1e-6)


def test_opcheck_both_ops(device: str) -> None:
    """torch.library.opcheck on both ops with the Triton kernels: schema, autograd
    registration, fake tensors and AOT dispatch."""
    from pwlu_cases import sample_inputs

    for label, forward, backward in sample_inputs(torch_device(device)):
        for op, args in (
            (torch.ops.pwlu_det.pwlu_forward.default, forward),
            (torch.ops.pwlu_det.pwlu_backward.default, backward),
        ):
            result = torch.library.opcheck(op, args)
            assert set(result.values()) == {"SUCCESS"}, (label, op, result)
