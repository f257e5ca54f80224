"""The public ``pwlu`` op: the reference against finite differences, the C++ backend against the
reference, dispatch, bad input, torch.compile / torch.export and saved-for-backward memory."""

import logging
import math
import os
import subprocess
import sys

import pytest
import torch
from pwlu_cases import (
    input_with_specials,
    make_params,
    op_with_grads,
    reference_with_grads,
    sample_inputs,
)

from pwlu_det.layers import pwlu, pwlu_cpp, pwlu_op, pwlu_reference

pytestmark = pytest.mark.skipif(
    not pwlu_cpp.available(), reason=f"C++ extension not built: {pwlu_cpp.unavailable_reason()}"
)

ISAS = ("avx512", "avx2", "scalar")
NUM_INTERVALS = (1, 2, 16, 64)


def _use_isa(name):
    """Sets the kernel's instruction set for one test (skipped where unusable), then resets it."""
    usable = pwlu_cpp.cpu_capabilities()
    if name not in usable:
        cap = os.environ.get(pwlu_cpp.CAPABILITY_VARIABLE)
        why = f"{pwlu_cpp.CAPABILITY_VARIABLE}={cap} caps it" if cap else "this CPU lacks it"
        pytest.skip(f"{name}: {why}; the {usable[0]} cases run instead")
    pwlu_cpp.set_cpu_capability(name)
    yield name
    pwlu_cpp.set_cpu_capability("best")


@pytest.fixture(params=ISAS)
def isa(request):
    """Runs a test once per instruction set of the kernel; skips those the CPU lacks or that
    ``PWLU_DET_CPU_CAPABILITY`` caps, saying which one runs instead."""
    yield from _use_isa(request.param)


@pytest.fixture(params=[name for name in ISAS if name != "scalar"])
def vector_isa(request):
    """As ``isa``, for the vector instruction sets only."""
    yield from _use_isa(request.param)


def _hardware_isas() -> list[str]:
    """The kernel's instruction sets this CPU has, from the Linux CPU flags."""
    with open("/proc/cpuinfo") as f:
        flags = set(next(line for line in f if line.startswith("flags")).split())
    has = {"avx512": "avx512f" in flags, "avx2": {"avx2", "fma"} <= flags, "scalar": True}
    return [isa for isa in ISAS if has[isa]]


def _kernel_isa_in_child(cap: str) -> subprocess.CompletedProcess:
    code = (
        "from pwlu_det.layers import pwlu_cpp\n"
        "print(pwlu_cpp.cpu_capability())\n"
        "print(','.join(pwlu_cpp.cpu_capabilities()))\n"
        "try:\n"
        "    pwlu_cpp.set_cpu_capability('avx512')\n"
        "except ValueError as e:\n"
        "    print(e)\n"
    )
    env = {**os.environ, pwlu_cpp.CAPABILITY_VARIABLE: cap}
    return subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120
    )


@pytest.mark.skipif(not os.path.exists("/proc/cpuinfo"), reason="reads the Linux CPU flags")
@pytest.mark.parametrize("cap", ISAS)
def test_the_capability_variable_caps_the_kernel_isa_or_says_the_cpu_lacks_it(cap):
    child = _kernel_isa_in_child(cap)
    hardware = _hardware_isas()
    if cap not in hardware:  # e.g. avx512 on an AMD EPYC with AVX2 only
        assert child.returncode != 0
        last_line = child.stderr.strip().splitlines()[-1]
        assert "ValueError" in last_line
        assert f"PWLU_DET_CPU_CAPABILITY={cap}, but this CPU does not support {cap}" in last_line
        return
    assert child.returncode == 0, child.stderr
    active, usable, *refusal = child.stdout.splitlines()
    assert active == cap
    assert usable.split(",") == hardware[hardware.index(cap) :]
    if cap == "avx512":
        assert refusal == []  # set_cpu_capability('avx512') was allowed
        return
    (message,) = refusal
    assert message.startswith("pwlu_det: cannot use avx512: ")
    if "avx512" in hardware:
        assert message.endswith(f"PWLU_DET_CPU_CAPABILITY={cap} caps it below avx512")
    else:
        assert "this CPU does not support avx512" in message


def test_an_unknown_capability_variable_fails_at_import_naming_it():
    child = _kernel_isa_in_child("avx1024")
    assert child.returncode != 0
    last_line = child.stderr.strip().splitlines()[-1]
    assert last_line == (
        "ValueError: pwlu_det: PWLU_DET_CPU_CAPABILITY='avx1024' is not a CPU capability; "
        "use avx512, avx2 or scalar, or unset it"
    )


def test_set_cpu_capability_refuses_unknown_names_with_value_error():
    with pytest.raises(ValueError, match="unknown CPU capability 'sse9'"):
        pwlu_cpp.set_cpu_capability("sse9")
    assert pwlu_cpp.cpu_capability() == pwlu_cpp.cpu_capabilities()[0]


def cpp(x, *params, channel_dim=1):
    return pwlu(x, *params, channel_dim=channel_dim)  # CPU tensors: the C++ kernel


def _assert_all_close(actual, expected, rtol, atol, equal_nan=False):
    names = (
        "output",
        "grad x",
        "grad left_bound",
        "grad right_bound",
        "grad heights",
        "grad left_slope",
        "grad right_slope",
    )
    for name, a, e in zip(names, actual, expected, strict=True):
        assert a.dtype == e.dtype and a.shape == e.shape, name
        torch.testing.assert_close(
            a, e, rtol=rtol, atol=atol, equal_nan=equal_nan, msg=lambda m, name=name: f"{name}: {m}"
        )


def _compare(x, params, channel_dim, dtype, rtol, atol, equal_nan=False):
    grad = torch.randn(x.shape, dtype=x.dtype, generator=torch.Generator().manual_seed(1))
    y, grads = op_with_grads(lambda *a: cpp(*a, channel_dim=channel_dim), x, params, grad)
    y_ref, grads_ref = reference_with_grads(x, params, grad, channel_dim, dtype=dtype)
    _assert_all_close((y, *grads), (y_ref.to(y.dtype), *grads_ref), rtol, atol, equal_nan)


# ------------------------------------------------------------------------------------------
# The reference is the oracle: check it against finite differences first.


@pytest.mark.parametrize("channels", [None, 3])
@pytest.mark.parametrize("num_intervals", [1, 2, 16])
def test_reference_gradients_match_finite_differences(channels, num_intervals):
    params = make_params(channels, num_intervals, seed=num_intervals)
    x = 3 * torch.randn(2, 3, 4, 5, dtype=torch.float64)
    inputs = [t.clone().requires_grad_() for t in (x, *params)]
    assert torch.autograd.gradcheck(lambda *a: pwlu_reference(*a, channel_dim=1), inputs)


def test_reference_starts_as_relu_when_initialised_like_relu():
    n = 16
    breaks = torch.linspace(-3, 3, n + 1, dtype=torch.float64)
    params = (
        torch.tensor(-3.0),
        torch.tensor(3.0),
        breaks.clamp(min=0),
        torch.tensor(0.0),
        torch.tensor(1.0),
    )
    x = torch.cat([torch.linspace(-10, 10, 1001), breaks]).double()
    torch.testing.assert_close(pwlu_reference(x, *[p.double() for p in params], 0), x.relu())


# ------------------------------------------------------------------------------------------
# The C++ backend against the reference.


@pytest.mark.parametrize("channels", [None, 5])
@pytest.mark.parametrize("num_intervals", NUM_INTERVALS)
def test_cpp_matches_reference_float64(isa, channels, num_intervals):
    params = make_params(channels, num_intervals, seed=num_intervals)
    # 5 x 37 x 41 elements per channel: long runs (vector loops) and ragged tails.
    x = input_with_specials((2, 5, 37, 41), params, torch.float64)
    _compare(x, params, 1, torch.float64, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("channels", [None, 5])
@pytest.mark.parametrize("num_intervals", NUM_INTERVALS)
def test_cpp_matches_reference_float32(isa, channels, num_intervals):
    # Same compute type on both sides, so both put every element in the same bin; the
    # differences are rounding: the kernel sums in float64, the reference's autograd in float32.
    params = make_params(channels, num_intervals, dtype=torch.float32, seed=num_intervals)
    x = input_with_specials((2, 5, 37, 41), params, torch.float32)
    _compare(x, params, 1, torch.float32, rtol=1e-4, atol=2e-3)


def test_cpp_gradcheck_float64():
    for channels in (None, 3):
        params = make_params(channels, 4, seed=3)
        x = 3 * torch.randn(2, 3, 7, 5, dtype=torch.float64)
        inputs = [t.clone().requires_grad_() for t in (x, *params)]
        assert torch.autograd.gradcheck(lambda *a: cpp(*a), inputs)


@pytest.mark.parametrize(
    "layout", ["channels_last", "channel_dim_last", "non_contiguous", "channel_dim_0", "transposed"]
)
def test_cpp_memory_layouts_and_channel_dims(isa, layout):
    channel_dim = {"channel_dim_last": 3, "channel_dim_0": 0}.get(layout, 1)
    shape = {"channel_dim_last": (2, 9, 11, 6), "channel_dim_0": (6, 2, 9, 11)}.get(
        layout, (2, 6, 9, 11)
    )
    params = make_params(6, 16, seed=7)
    x = input_with_specials(shape, params, torch.float64, channel_dim=channel_dim)
    if layout == "channels_last":
        x = x.to(memory_format=torch.channels_last)
    elif layout == "non_contiguous":
        x = input_with_specials((2, 6, 18, 11), params, torch.float64)[:, :, ::2]
    elif layout == "transposed":
        x = x.transpose(2, 3)
    y = cpp(x, *params, channel_dim=channel_dim)
    if layout == "channels_last":
        assert y.is_contiguous(memory_format=torch.channels_last)
    _compare(x, params, channel_dim, torch.float64, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("channels", [None, 4])
def test_cpp_empty_input(channels):
    params = make_params(channels, 8)
    x = torch.empty(0, 4, 3, dtype=torch.float64, requires_grad=True)
    inputs = [p.clone().requires_grad_() for p in params]
    y = cpp(x, *inputs)
    assert y.shape == x.shape
    y.sum().backward()
    assert all(p.grad is not None and (p.grad == 0).all() for p in inputs)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_cpp_nan_and_inf_like_reference(isa, dtype):
    params = make_params(3, 16, dtype=dtype)
    x = torch.randn(2, 3, 300, dtype=dtype)
    x[0, :, 5] = float("nan")
    x[1, :, 7] = float("inf")
    x[1, :, 9] = -float("inf")
    _compare(x, params, 1, dtype, rtol=1e-4, atol=2e-3, equal_nan=True)
    # A NaN input gives a NaN output; gradients of intervals it does not touch stay finite.
    y, grads = op_with_grads(cpp, x, params, torch.ones_like(x))
    assert y[0, :, 5].isnan().all() and not y[0, :, 6].isnan().any()
    assert torch.isfinite(grads[3][:, 3:]).all()


# Float32 shapes of a small Mask R-CNN at inference, in the layouts the kernel treats
# differently: (N, C) has channel stride 1 (vectors of consecutive channels, cut where a row of
# channels ends), NCHW has runs of H * W elements of one channel with ragged vector tails.
INFERENCE_SHAPES = {
    "fc_37": (250, 37),  # each row: 16 + 16 + 5 channels
    "fc_512": (3, 512),
    "fc_3": (101, 3),  # fewer channels than vector lanes
    "nchw_14x14": (3, 7, 14, 14),  # runs of 196 = 12 * 16 + 4
    "nchw_2x2": (5, 7, 2, 2),  # runs shorter than a vector
}


def _inference_input(shape, params):
    """Random float32 input with special values, NaN and +-inf (also on the last elements)."""
    x = input_with_specials(shape, params, torch.float32)
    flat = x.view(-1)
    flat[[3, -1, -6]] = float("nan")
    flat[[4, -2, -9]] = float("inf")
    flat[[6, -3]] = -float("inf")
    return x


@pytest.mark.parametrize("case", INFERENCE_SHAPES)
def test_cpp_float32_inference_shapes_match_reference(isa, case):
    shape = INFERENCE_SHAPES[case]
    params = make_params(shape[1], 16, dtype=torch.float32, seed=11)
    x = _inference_input(shape, params)
    # The float32 reference puts every element in the same bin; forward and backward agree.
    _compare(x, params, 1, torch.float32, rtol=1e-4, atol=2e-3, equal_nan=True)
    y = cpp(x, *params)
    y_ref32 = pwlu_reference(x, *params, channel_dim=1)
    torch.testing.assert_close(y, y_ref32, rtol=1e-5, atol=1e-5, equal_nan=True)
    # The float64 reference on the same float32 values: f is continuous, so an element that
    # float64 puts in the neighbouring bin still gives nearly the same value.
    y_ref64 = pwlu_reference(x.double(), *[p.double() for p in params], channel_dim=1)
    torch.testing.assert_close(y.double(), y_ref64, rtol=1e-5, atol=1e-5, equal_nan=True)
    assert y.view(-1)[[3, -1, -6]].isnan().all() and not y.view(-1)[[0, -4]].isnan().any()


@pytest.mark.parametrize("case", INFERENCE_SHAPES)
def test_cpp_float32_forward_is_the_same_in_every_layout(isa, case):
    # Interleaved channels and runs of one channel are different loops of one instruction set:
    # they must give identical bits. (N, C) vs its transpose, NCHW vs channels_last.
    shape = INFERENCE_SHAPES[case]
    params = make_params(shape[1], 16, dtype=torch.float32, seed=12)
    x = _inference_input(shape, params)
    y = cpp(x, *params)
    if x.dim() == 2:
        other = cpp(x.t().contiguous(), *params, channel_dim=0).t()
    else:
        other = cpp(x.to(memory_format=torch.channels_last), *params)
        assert other.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(other, y, rtol=0, atol=0, equal_nan=True)


@pytest.mark.parametrize("num_intervals", [1, 5, 16, 30, 31])
def test_cpp_float32_long_runs_match_reference(isa, num_intervals):
    # Runs of 2 * 1024 + 37 elements of one channel: the vector backward's staged blocks (64
    # elements) and its scalar tail, at bin counts (N + 2) either side of the forward's
    # in-register tables (32 bins), with NaN and infinities inside the runs.
    params = make_params(3, num_intervals, dtype=torch.float32, seed=21)
    gen = torch.Generator().manual_seed(22)
    x = torch.rand((2, 3, 2085), generator=gen) * 7.0 - 3.5  # beyond both bounds too
    x.view(-1)[[5, 1500, -4]] = float("nan")
    x.view(-1)[[7, -2]] = float("inf")
    x.view(-1)[[9, 3000]] = -float("inf")
    _compare(x, params, 1, torch.float32, rtol=1e-4, atol=2e-3, equal_nan=True)


@pytest.mark.parametrize("run_length", [256, 100])
@pytest.mark.parametrize("second", [4, 1])
def test_cpp_backward_adds_each_bin_in_a_fixed_order(isa, second, run_length):
    # Every committed PWLU result depends on the last bits of the parameter gradients, hence on
    # the order of the per-bin double sums (docs/decisions.md). A run of 256 elements or more
    # adds element k into copy k % 4 (vector ISAs), each copy in element order, then the copies
    # in turn; shorter runs (here 2 channels x 3 images of 100), and every run on the scalar
    # ISA, add into their unit's sums in element order, run after run. All elements lie in the
    # left bin with w = x - B_L = -1; in channel 0, g is 2**60 at element 0, 1 at element
    # `second`, -2**60 at element 8: in one copy the 1 is absorbed by 2**60 and lost, in another
    # it survives.
    x = torch.full((3, 2, run_length), -4.0)
    g = torch.zeros_like(x)
    g[0, 0, [0, second, 8]] = torch.tensor([2.0**60, 1.0, -(2.0**60)])
    params = [torch.tensor([-3.0, -3.0]), torch.tensor([3.0, 3.0]), torch.zeros(2, 17)]
    params += [torch.tensor([0.5, 0.5]), torch.tensor([1.0, 1.0])]
    grads = torch.ops.pwlu_det.pwlu_backward(g, x, *params, 1)
    in_order = isa == "scalar" or run_length < 256 or second % 4 == 0
    assert grads[4].tolist() == [0.0 if in_order else -1.0, 0.0]  # left slope: sum of g * w


@pytest.mark.parametrize("case", [*INFERENCE_SHAPES, "fc_37_two_chunks"])
def test_cpp_interleaved_backward_equals_the_scalar_loop_bit_for_bit(vector_isa, case):
    # Interleaved channels ((N, C) and channels_last): the vector loops stage up to 16 (8)
    # channels of a row, then add each element's (g, g * w) into its unit's bin sums in element
    # order, as the scalar loop does; grad x and all five parameter gradients must be the same
    # bits. "fc_37_two_chunks": two threads, the second chunk starting mid-row.
    shape = (1801, 37) if case == "fc_37_two_chunks" else INFERENCE_SHAPES[case]
    params = make_params(shape[1], 16, dtype=torch.float32, seed=14)
    x = _inference_input(shape, params)
    if x.dim() == 4:
        x = x.to(memory_format=torch.channels_last)
    g = torch.randn(shape, generator=torch.Generator().manual_seed(15))
    g.view(-1)[[1, -5]] = float("nan")
    g = g.to(memory_format=torch.channels_last if x.dim() == 4 else torch.contiguous_format)
    op_params = pwlu_op.canonical_params(*params)
    threads = torch.get_num_threads()
    torch.set_num_threads(2 if case == "fc_37_two_chunks" else 1)
    try:
        vector = torch.ops.pwlu_det.pwlu_backward(g, x, *op_params, 1)
        pwlu_cpp.set_cpu_capability("scalar")
        scalar = torch.ops.pwlu_det.pwlu_backward(g, x, *op_params, 1)
    finally:
        torch.set_num_threads(threads)
        pwlu_cpp.set_cpu_capability(vector_isa)
    for v, s in zip(vector, scalar, strict=True):
        torch.testing.assert_close(v, s, rtol=0, atol=0, equal_nan=True)
    assert not vector[0].isnan().all() and not vector[3].isnan().all()


def test_cpp_float32_chunks_start_mid_row(isa):
    # 1801 x 37 elements split into two chunks (of at least 2**15 elements, one per thread)
    # at element 33318, channel 18 of a row: the interleaved loop starts mid-row.
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        params = make_params(37, 16, dtype=torch.float32, seed=13)
        x = _inference_input((1801, 37), params)
        y = cpp(x, *params)
        runs = cpp(x.t().contiguous(), *params, channel_dim=0).t()
        torch.testing.assert_close(runs, y, rtol=0, atol=0, equal_nan=True)
        y_ref = pwlu_reference(x, *params, channel_dim=1)
        torch.testing.assert_close(y, y_ref, rtol=1e-5, atol=1e-5, equal_nan=True)
        _compare(x, params, 1, torch.float32, rtol=1e-4, atol=2e-3, equal_nan=True)
    finally:
        torch.set_num_threads(threads)


def test_cpp_zero_outer_slope_at_infinity_is_nan_like_reference():
    params = make_params(None, 4)
    params = (*params[:3], torch.tensor(0.0, dtype=torch.float64), params[4])
    x = torch.tensor([-math.inf, 0.0], dtype=torch.float64)
    y = cpp(x, *params)
    assert y[0].isnan() and torch.equal(y.isnan(), pwlu_reference(x, *params, 0).isnan())


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_cpp_half_precision_computed_in_float32(dtype):
    params = make_params(4, 16, dtype=torch.float32)
    x = (2 * torch.randn(2, 4, 50, 3)).to(dtype)
    grad = torch.randn(x.shape).to(dtype)
    y, grads = op_with_grads(cpp, x, params, grad)
    assert y.dtype == dtype and grads[0].dtype == dtype
    assert all(g.dtype == torch.float32 for g in grads[1:])
    # Oracle: the reference on the same values in float32.
    y_ref, grads_ref = reference_with_grads(x, params, grad, 1, dtype=torch.float32)
    torch.testing.assert_close(y, y_ref.to(dtype))
    torch.testing.assert_close(grads[0], grads_ref[0].to(dtype))
    for g, g_ref in zip(grads[1:], grads_ref[1:], strict=True):
        torch.testing.assert_close(g, g_ref, rtol=1e-4, atol=1e-3)


def test_cpp_large_tensor_float32_against_float64_reference():
    # More than 2**24 elements: float32 can no longer count them, and int32-sized bugs in
    # indexing or accumulation would show. The kernel sums in float64 per chunk.
    numel = (1 << 24) + 12345
    params = make_params(None, 16, dtype=torch.float32, seed=5)
    x = (2 * torch.randn(numel)).float()
    grad = torch.rand(numel).float()
    y, grads = op_with_grads(lambda *a: cpp(*a, channel_dim=0), x, params, grad)
    # Per element: the float32 reference (same compute type, so the same bin for every element).
    y_ref, grads_ref = reference_with_grads(x, params, grad, 0, dtype=torch.float32)
    torch.testing.assert_close(y, y_ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(grads[0], grads_ref[0], rtol=1e-5, atol=1e-5)
    # Sums over 1.7e7 terms: the float64 reference, within 1e-5 of their scale (a float32
    # running sum would be off by far more; a few elements next to breakpoints may fall in the
    # neighbouring bin in float64, which moves a sum by about one term).
    _, grads_ref = reference_with_grads(x, params, grad, 0, dtype=torch.float64)
    for g, g_ref in zip(grads[1:], grads_ref[1:], strict=True):
        scale = g_ref.abs().max().item()
        assert (g.double() - g_ref).abs().max().item() <= 1e-5 * scale


def test_cpp_is_deterministic():
    params = make_params(None, 16, dtype=torch.float32)
    x = torch.randn(300_000)
    grad = torch.randn(300_000)
    first = op_with_grads(lambda *a: cpp(*a, channel_dim=0), x, params, grad)
    second = op_with_grads(lambda *a: cpp(*a, channel_dim=0), x, params, grad)
    for a, b in zip((first[0], *first[1]), (second[0], *second[1]), strict=True):
        assert torch.equal(a, b)


def test_cpp_rejects_bounds_in_the_wrong_order():
    params = make_params(None, 4)
    params = (params[1], params[0], *params[2:])
    with pytest.raises(ValueError, match="right_bound must exceed left_bound"):
        cpp(torch.randn(10, dtype=torch.float64), *params)


def test_cpp_saves_only_the_input_for_backward():
    params = [p.float().requires_grad_() for p in make_params(8, 16)]
    x = torch.randn(4, 8, 32, 32, requires_grad=True)
    saved = []

    def pack(t):
        saved.append(t)
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        cpp(x, *params)
    large = [t for t in saved if t.numel() >= x.numel()]
    assert len(large) == 1 and large[0].data_ptr() == x.data_ptr()
    assert sum(t.numel() for t in saved) == x.numel() + sum(p.numel() for p in params)


# ------------------------------------------------------------------------------------------
# Dispatch.


def test_one_op_per_direction_with_a_kernel_per_device():
    dispatch = torch._C._dispatch_has_kernel_for_dispatch_key
    for op in ("pwlu_det::pwlu_forward", "pwlu_det::pwlu_backward"):
        assert dispatch(op, "CPU") and dispatch(op, "CUDA"), op
    assert dispatch("pwlu_det::pwlu_forward", "Autograd")
    assert not hasattr(torch.ops.pwlu_det, "pwlu_triton_forward")
    assert (
        pwlu_op.has_kernel("cpu") and pwlu_op.has_kernel("cuda") and not pwlu_op.has_kernel("mps")
    )


def test_cpu_runs_the_cpp_kernel_and_tracing_the_reference():
    params = make_params(None, 4, dtype=torch.float32)
    x = torch.randn(3, 4)
    canonical = pwlu_op.canonical_params(*params)
    assert torch.equal(pwlu(x, *params), torch.ops.pwlu_det.pwlu_forward(x, *canonical, 0))

    traced = torch.jit.trace(lambda t: pwlu(t, *params), (x,))
    graph = str(traced.graph)
    assert "pwlu_det::" not in graph and "aten::floor" in graph
    torch.testing.assert_close(traced(x), pwlu_reference(x, *params))


@pytest.mark.parametrize("case", range(len(sample_inputs("cpu"))))
def test_opcheck_both_ops_on_cpu(case):
    """torch.library.opcheck: schema, autograd registration, fake tensors and AOT dispatch of
    both ops, with the CPU kernel (the C++ one)."""
    label, forward, backward = sample_inputs("cpu")[case]
    for op, args in (
        (torch.ops.pwlu_det.pwlu_forward.default, forward),
        (torch.ops.pwlu_det.pwlu_backward.default, backward),
    ):
        result = torch.library.opcheck(op, args)
        assert set(result.values()) == {"SUCCESS"}, (label, op, result)


@pytest.mark.skipif(not pwlu_cpp.available(), reason="needs the C++ extension")
def test_cpu_autograd_is_the_cpp_kernel_with_the_formula_of_the_python_one():
    """CPU tensors take the C++ autograd kernel (AutogradCPU), which must save the same tensors
    and call the same backward op as the Python formula: the same gradients, bit for bit."""
    assert torch._C._dispatch_has_kernel_for_dispatch_key("pwlu_det::pwlu_forward", "AutogradCPU")
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, 5, 4, generator=gen, requires_grad=True)
    params = [
        torch.full((3,), -2.0), torch.full((3,), 2.0), torch.randn(3, 9, generator=gen),
        torch.full((3,), 0.1), torch.full((3,), 0.9),
    ]  # fmt: skip
    params = [p.requires_grad_() for p in params]
    y = torch.ops.pwlu_det.pwlu_forward(x, *params, 1)
    assert "CppNode" in y.grad_fn.name()  # Python's is GeneratedBackwardFor_pwlu_det...
    grad_y = torch.randn(y.shape, generator=gen)
    got = torch.autograd.grad(y, [x, *params], grad_y)
    with torch.no_grad():
        expected = torch.ops.pwlu_det.pwlu_backward(grad_y, x, *params, 1)
    for name, g, e in zip(("x", *pwlu_op.PARAM_NAMES), got, expected, strict=True):
        assert torch.equal(g, e), name


# A Triton that is installed (find_spec finds it) but fails to import, as a broken libtriton
# would; then the op's check, a CPU call under the interpreter and a direct op call.
_BROKEN_TRITON = """
import importlib.abc, importlib.machinery, logging, sys
class _Broken(importlib.abc.Loader):
    def create_module(self, spec):
        return None
    def exec_module(self, module):
        raise ImportError("libtriton.so: cannot open shared object file (simulated)")
class _Finder(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "triton":
            return importlib.machinery.ModuleSpec("triton", _Broken())
sys.meta_path.insert(0, _Finder())
logging.basicConfig(level=logging.WARNING)
import torch
from pwlu_det.layers import has_kernel, pwlu, pwlu_reference
print("cuda kernel:", has_kernel("cuda"))
print("cpu kernel:", has_kernel("cpu"))
x = torch.randn(3, 4)
params = (torch.tensor(-2.0), torch.tensor(2.0), torch.linspace(-1, 1, 5), torch.tensor(0.5),
          torch.tensor(1.5))
torch.testing.assert_close(pwlu(x, *params), pwlu_reference(x, *params))
has = torch._C._dispatch_has_kernel_for_dispatch_key
print("registered:", has("pwlu_det::pwlu_forward", "CPU"), has("pwlu_det::pwlu_forward", "CUDA"))
"""


@pytest.mark.parametrize("interpret", ["0", "1"])
def test_a_triton_that_fails_to_import_means_no_triton_kernel(interpret):
    """Triton installed but broken: no Triton kernel is registered, the op says why, and
    ``pwlu()`` computes the reference (on CPU under the interpreter too) instead of failing
    inside the Triton host code."""
    env = {**os.environ, "TRITON_INTERPRET": interpret}
    proc = subprocess.run(
        [sys.executable, "-c", _BROKEN_TRITON], env=env, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "cuda kernel: False" in proc.stdout
    if interpret == "1":  # the Triton kernels were the CPU kernels: the reference runs instead
        assert "cpu kernel: False" in proc.stdout
        assert "registered: False False" in proc.stdout
        assert "using the slow reference" in proc.stderr and "(simulated)" in proc.stderr
    else:  # the C++ kernel runs on CPU; no CUDA kernel is registered
        assert "cpu kernel: True" in proc.stdout
        assert "registered: True False" in proc.stdout


def test_a_device_without_kernel_falls_back_to_reference_with_one_warning(monkeypatch, caplog):
    monkeypatch.setattr(pwlu_op, "_MISSING_KERNELS", {"cpu": "pretend it was not built"})
    monkeypatch.setattr(pwlu_op, "_warned", set())
    params = make_params(None, 4, dtype=torch.float32)
    x = torch.randn(3, 4)
    with caplog.at_level(logging.WARNING, logger="pwlu_det.layers.pwlu_op"):
        y1 = pwlu(x, *params)
        pwlu(x, *params)
    warnings = [r for r in caplog.records if "pretend it was not built" in r.getMessage()]
    assert len(warnings) == 1
    torch.testing.assert_close(y1, pwlu_reference(x, *params))
    channel = make_params(4, 4, dtype=torch.float32)  # one unit per channel, and one unit
    for ps in (channel, [p[:1] for p in channel]):
        xc = torch.randn(2, 4, 3) if ps is channel else torch.randn(2, 1, 3)
        torch.testing.assert_close(pwlu(xc, *ps), pwlu_reference(xc, *ps))


def test_the_op_checks_canonical_arguments():
    params = pwlu_op.canonical_params(*make_params(3, 4, dtype=torch.float32))
    x = torch.randn(2, 3, 5)
    op = torch.ops.pwlu_det.pwlu_forward
    with pytest.raises(RuntimeError, match="3 parameter sets for 5 channels"):
        op(x, *params, 2)
    with pytest.raises(RuntimeError, match="left_bound must have shape"):
        op(x, params[0][:2], *params[1:], 1)


# ------------------------------------------------------------------------------------------
# Bad input.


def test_bad_inputs_name_the_argument():
    x = torch.randn(2, 3, 4)
    layer = make_params(None, 4, dtype=torch.float32)
    channel = make_params(3, 4, dtype=torch.float32)
    with pytest.raises(ValueError, match=r"heights \(3, 5\) has 3 rows but x \(2, 4, 4\)"):
        pwlu(torch.randn(2, 4, 4), *channel)
    with pytest.raises(ValueError, match=r"channel-wise left_slope must have shape \(3,\)"):
        pwlu(x, *channel[:3], torch.zeros(4), channel[4])
    with pytest.raises(ValueError, match=r"layer-wise heights \(5,\) need a 0-d right_bound"):
        pwlu(x, layer[0], torch.zeros(3), *layer[2:])
    with pytest.raises(ValueError, match="heights must be"):
        pwlu(x, *layer[:2], torch.zeros(1), *layer[3:])
    with pytest.raises(TypeError, match="x must be a floating-point tensor, got torch.int64"):
        pwlu(torch.arange(6), *layer)
    with pytest.raises(TypeError, match="heights must be a floating-point tensor"):
        pwlu(x, *layer[:2], torch.arange(5), *layer[3:])
    with pytest.raises(TypeError, match="left_bound must be a tensor"):
        pwlu(x, -1.0, *layer[1:])
    with pytest.raises(ValueError, match="channel_dim=3 is out of range for x of shape"):
        pwlu(x, *channel, channel_dim=3)


# ------------------------------------------------------------------------------------------
# torch.compile and torch.export see one opaque op with a fake implementation.


class _TinyNet(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, 3, padding=1)
        self.params = torch.nn.ParameterList(
            [torch.nn.Parameter(p) for p in make_params(4, 8, dtype=torch.float32)]
        )

    def forward(self, x):
        return pwlu(self.conv(x), *self.params).sum(dim=(2, 3))


@pytest.mark.slow
def test_torch_compile_matches_eager():
    torch._dynamo.reset()
    model = _TinyNet()
    x = torch.randn(2, 3, 8, 8)
    eager = model(x)
    eager_grads = torch.autograd.grad(eager.sum(), list(model.parameters()))
    compiled = torch.compile(model, fullgraph=True)
    out = compiled(x)
    grads = torch.autograd.grad(out.sum(), list(model.parameters()))
    torch.testing.assert_close(out, eager)
    for g, e in zip(grads, eager_grads, strict=True):
        torch.testing.assert_close(g, e)


def test_torch_export_keeps_the_op():
    model = _TinyNet()
    x = torch.randn(2, 3, 8, 8)
    exported = torch.export.export(model, (x,))
    assert "pwlu_det.pwlu_forward" in str(exported.graph)
    torch.testing.assert_close(exported.module()(x), model(x))
