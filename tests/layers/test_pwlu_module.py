"""The PWLU module: initial shape, Phase I statistics, realignment, checkpoints."""

import copy
import logging

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from pwlu_det.layers import (
    PWLU,
    STATE_NAMES,
    Phase,
    breakpoints,
    project_bounds,
    pwlu,
    pwlu_reference,
)
from pwlu_det.layers.pwlu_module import SKIP_COUNTER_NAMES


def _inputs(seed=0, shape=(8, 4, 6, 6), scale=1.5, shift=0.4):
    gen = torch.Generator().manual_seed(seed)
    return scale * torch.randn(shape, generator=gen) + shift


@pytest.mark.parametrize("channels", [None, 4])
@pytest.mark.parametrize("num_intervals", [1, 2, 7, 16])
def test_starts_as_exact_relu(channels, num_intervals):
    act = PWLU(channels, num_intervals=num_intervals)
    breaks = breakpoints(act.left_bound.detach(), act.right_bound.detach(), num_intervals)
    breaks = breaks.reshape(-1, num_intervals + 1)
    assert (breaks == 0).any(dim=1).all(), "0 must be a breakpoint"
    assert (act.left_slope == 0).all() and (act.right_slope == 1).all()
    x = torch.cat([_inputs().reshape(-1), breaks.reshape(-1), torch.tensor([-1e6, 1e6])])
    x = x[: x.numel() // 4 * 4].reshape(-1, 4)
    act.channel_dim = 1
    assert torch.equal(act(x), x.relu())


def test_parameters_and_buffers_have_the_documented_shapes():
    act = PWLU(5, num_intervals=8)
    shapes = {name: tuple(p.shape) for name, p in act.named_parameters()}
    assert shapes == {
        "left_bound": (5,),
        "right_bound": (5,),
        "heights": (5, 9),
        "left_slope": (5,),
        "right_slope": (5,),
    }
    assert set(dict(act.named_buffers())) == {
        "running_mean",
        "running_std",
        "num_batches_tracked",
        *SKIP_COUNTER_NAMES,
    }
    assert act.phase is Phase.INITIAL  # a Python value, in the state dict as a 0-d tensor
    assert list(act.state_dict()) == [*STATE_NAMES[:-1], *SKIP_COUNTER_NAMES, "phase"]
    assert act.state_dict()["phase"].dim() == 0
    layer = PWLU()
    assert layer.heights.shape == (17,) and layer.left_bound.dim() == 0
    text = repr(act)
    assert "N=8" in text and "5 channels" in text and "phase=initial" in text
    assert "phase=initial" in repr(layer) and "bounds=[-3, 3]" in repr(layer)


@pytest.mark.parametrize("channels", [None, 4])
def test_phase_one_is_relu_and_tracks_statistics(channels):
    act = PWLU(channels, momentum=0.9)
    act.start_statistics()
    act.train()
    batches = [_inputs(seed=s, shift=0.1 * s).requires_grad_() for s in range(5)]
    dims = (0, 1, 2, 3) if channels is None else (0, 2, 3)
    mean, std = None, None
    for x in batches:
        y = act(x)
        assert torch.equal(y, x.relu()), "Phase I must compute exactly ReLU"
        batch_std, batch_mean = torch.std_mean(x.detach().double(), dim=dims, correction=0)
        if mean is None:  # the first batch initialises the running statistics
            mean, std = batch_mean, batch_std
        else:
            mean = 0.9 * mean + 0.1 * batch_mean
            std = 0.9 * std + 0.1 * batch_std
    torch.testing.assert_close(act.running_mean.double(), mean, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(act.running_std.double(), std, rtol=1e-6, atol=1e-6)
    assert act.num_batches_tracked.item() == 5
    for buffer in (act.running_mean, act.running_std):
        assert buffer.grad_fn is None and not buffer.requires_grad

    act.eval()
    act(_inputs(seed=99, shift=5.0))
    torch.testing.assert_close(act.running_mean.double(), mean, rtol=1e-6, atol=1e-6)


class _ScalarReads(torch.utils._python_dispatch.TorchDispatchMode):
    """Records the ops that copy a tensor's value to Python (``.item()``, ``bool(t)``, ...)."""

    def __init__(self):
        super().__init__()
        self.reads = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func in (torch.ops.aten._local_scalar_dense.default, torch.ops.aten.item.default):
            self.reads.append(str(func))
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("channels", [None, 4])
def test_phase_one_needs_no_host_sync(channels):
    """Phase I reads no tensor value on the host (on a GPU each read is a sync), and keeps the
    first-batch-initialises, then-EMA arithmetic exactly (bitwise)."""
    act = PWLU(channels, momentum=0.9)
    act.start_statistics()
    act.train()
    dims = [0, 1, 2, 3] if channels is None else [0, 2, 3]
    mean = std = None
    for s in range(3):
        x = _inputs(seed=s, shift=0.2 * s).requires_grad_()
        with _ScalarReads() as mode:
            act(x).sum().backward()
        assert mode.reads == [], f"host reads in Phase I: {mode.reads}"
        batch_std, batch_mean = torch.std_mean(x.detach(), dim=dims, correction=0)
        if mean is None:
            mean, std = batch_mean, batch_std
        else:  # the arithmetic of the .item()-based version, in place
            mean = mean.clone().mul_(0.9).add_(batch_mean, alpha=1 - 0.9)
            std = std.clone().mul_(0.9).add_(batch_std, alpha=1 - 0.9)
        assert torch.equal(act.running_mean, mean) and torch.equal(act.running_std, std)
    assert int(act.num_batches_tracked) == 3
    # The recorder sees .item() (the check has teeth).
    with _ScalarReads() as mode:
        act.num_batches_tracked.item()
    assert mode.reads


def _fed(channels, batches):
    """A unit in Phase I (training mode) after ``batches``."""
    act = PWLU(channels, momentum=0.9)
    act.start_statistics()
    act.train()
    for x in batches:
        act(x)
    return act


def _counters(act):
    return [int(getattr(act, name)) for name in ("num_batches_tracked", *SKIP_COUNTER_NAMES)]


@pytest.mark.parametrize("channels", [None, 4])
def test_empty_input_leaves_the_statistics_of_the_other_batches(channels, recwarn):
    """The issue's sequence: non-empty, empty, non-empty gives the statistics of the two
    non-empty batches (bitwise), with no std_mean warning and no fallback at the realignment."""
    first, second = _inputs(seed=1, shape=(2, 4, 5, 5)), _inputs(seed=2, shape=(2, 4, 5, 5))
    empties = [torch.randn(0, 4, 5, 5), torch.randn(2, 4, 0, 5)]
    act = _fed(channels, [first, *empties, second])
    expected = _fed(channels, [first, second])
    assert torch.equal(act.running_mean, expected.running_mean)
    assert torch.equal(act.running_std, expected.running_std)
    assert _counters(act) == [2, 2, 0]
    assert torch.isfinite(act.running_mean).all() and torch.isfinite(act.running_std).all()
    assert not [w for w in recwarn if "degrees of freedom" in str(w.message)]
    result = act.realign("paper")
    assert result.fallback_units == 0
    torch.testing.assert_close(act.left_bound, expected.realign("paper").left_bound)

    # An empty first batch: the next non-empty one still initialises the statistics.
    act = _fed(channels, [empties[0], second])
    assert torch.equal(act.running_mean, _fed(channels, [second]).running_mean)
    assert _counters(act) == [1, 1, 0]


@pytest.mark.parametrize("channels", [None, 4])
@pytest.mark.parametrize("bad_value", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_batch_is_skipped_and_counted(channels, bad_value):
    good = [_inputs(seed=s, shape=(2, 4, 5, 5)) for s in range(3)]
    bad = _inputs(seed=9, shape=(2, 4, 5, 5))
    bad[1, 2, 3, 4] = bad_value  # one element of one channel
    for position in (0, 1, 3):  # first, middle, last
        batches = [*good]
        batches.insert(position, bad)
        act = _fed(channels, batches)
        expected = _fed(channels, good)
        assert torch.equal(act.running_mean, expected.running_mean), position
        assert torch.equal(act.running_std, expected.running_std), position
        assert _counters(act) == [3, 0, 1]
        assert act.realign().fallback_units == 0
    # Only non-finite batches: no statistics, and the realignment says so.
    act = _fed(channels, [bad, bad])
    assert _counters(act) == [0, 0, 2]
    assert act.realign().fallback_units == act.left_bound.numel()


@pytest.mark.parametrize("channels", [None, 4])
def test_skipping_needs_no_host_sync(channels):
    act = PWLU(channels)
    act.start_statistics()
    act.train()
    nan = _inputs(seed=3)
    nan[0, 0, 0, 0] = float("nan")
    for x in (torch.randn(0, 4, 6, 6), _inputs(seed=1), nan, torch.randn(3, 4, 0, 6)):
        with _ScalarReads() as mode:
            act(x.requires_grad_()).sum().backward()
        assert mode.reads == [], f"host reads in Phase I: {mode.reads}"
    assert _counters(act) == [1, 2, 1]


def test_skip_counters_reset_with_phase_one_and_survive_a_checkpoint():
    act = _fed(4, [_inputs(seed=1), torch.randn(0, 4, 6, 6)])
    nan = _inputs(seed=2)
    nan[0, 1] = float("nan")
    act(nan)
    restored = PWLU(4)
    restored.load_state_dict(copy.deepcopy(act.state_dict()))
    assert _counters(restored) == [1, 1, 1]
    restored.start_statistics()
    assert _counters(restored) == [0, 0, 0]


def test_checkpoint_without_skip_counters_loads_strictly_and_resumes():
    """A unit saved before the counters existed (mid Phase I): strict loading works, the
    counters start at 0 and Phase I continues exactly."""
    act = _fed(4, [_inputs(seed=1), _inputs(seed=2)])
    old = {k: v.clone() for k, v in act.state_dict().items() if k not in SKIP_COUNTER_NAMES}
    restored = PWLU(4)
    restored.num_batches_empty.fill_(5)  # whatever the module held is replaced by 0
    assert restored.load_state_dict(old, strict=True).missing_keys == []
    assert restored.phase == Phase.STATISTICS and _counters(restored) == [2, 0, 0]
    for x in (_inputs(seed=3), torch.randn(0, 4, 6, 6)):
        act(x)
        restored(x)
    for name, value in act.state_dict().items():
        assert torch.equal(restored.state_dict()[name], value), name

    # Nested, strict=False: only the counters of a unit with its other state are excused.
    net = torch.nn.Sequential(PWLU(4), PWLU(4))
    partial = {f"0.{k}": v for k, v in old.items()}
    missing = net.load_state_dict(partial, strict=False).missing_keys
    assert not [k for k in missing if k.startswith("0.")]
    assert {f"1.{name}" for name in SKIP_COUNTER_NAMES} <= set(missing)


def test_phase_one_gives_parameters_zero_gradients():
    # The parameters stay "used" (for DistributedDataParallel) but do not move.
    act = PWLU(4)
    act.start_statistics()
    act(_inputs().requires_grad_()).sum().backward()
    assert all(p.grad is not None and (p.grad == 0).all() for p in act.parameters())


@pytest.mark.parametrize("channels", [None, 4])
def test_paper_realignment_matches_independent_computation(channels):
    act = PWLU(channels, num_intervals=16, bound_std=3.0)
    act.start_statistics()
    for s in range(3):
        act(_inputs(seed=s))
    params_before = list(act.parameters())
    mean, std = act.running_mean.double().clone(), act.running_std.double().clone()
    result = act.realign("paper")
    assert all(a is b for a, b in zip(params_before, act.parameters(), strict=True))
    torch.testing.assert_close(act.left_bound.double(), mean - 3 * std)
    torch.testing.assert_close(act.right_bound.double(), mean + 3 * std)
    breaks = (mean - 3 * std).unsqueeze(-1) + torch.arange(17) * (6 * std / 16).unsqueeze(-1)
    torch.testing.assert_close(act.heights.double(), breaks.clamp(min=0), rtol=1e-6, atol=1e-6)
    assert (act.left_slope == 0).all() and (act.right_slope == 1).all()
    assert act.phase == Phase.TRAINING and "phase=training" in repr(act)

    # Jump: the reported maximum is exact (>= any sampled value, and attained near 0).
    low, high = (mean - 3 * std), (mean + 3 * std)
    grid = low.reshape(-1, 1) + torch.linspace(0, 1, 20001) * (high - low).reshape(-1, 1)
    grid = torch.cat([grid, torch.zeros(grid.shape[0], 1)], dim=1).t().contiguous()
    if channels is None:
        grid = grid.reshape(-1)
    params = [p.detach().double() for p in act.parameters()]
    sampled = (pwlu_reference(grid, *params, channel_dim=1) - grid.relu()).abs().max().item()
    assert sampled <= result.max_jump + 1e-12
    assert result.max_jump == pytest.approx(sampled, rel=1e-3)
    assert result.max_jump > 0


@pytest.mark.parametrize("channels", [None, 4])
def test_function_preserving_realignment_keeps_the_output(channels):
    act = PWLU(channels, num_intervals=16)
    act.start_statistics()
    for s in range(3):
        act(_inputs(seed=s))
    mean, std = act.running_mean.double().clone(), act.running_std.double().clone()
    act.eval()
    x = _inputs(seed=42, scale=4.0)
    before = act(x)
    result = act.realign("function_preserving")
    assert torch.equal(act(x), before), "the unit must stay exactly ReLU"
    assert result.max_jump <= 1e-12  # float64 rounding of the evaluation only
    # Same width up to the 8-bit rounding; moved by less than one interval.
    width = act.right_bound.double() - act.left_bound.double()
    torch.testing.assert_close(width, 6 * std, rtol=4e-3, atol=0)
    assert ((act.left_bound.double() - (mean - 3 * std)).abs() <= width / 16).all()


def test_realignment_jump_is_reported_for_both_modes():
    jumps = {}
    for mode in ("paper", "function_preserving"):
        act = PWLU(None, num_intervals=16)
        act.start_statistics()
        act(_inputs(shift=0.37))
        jumps[mode] = act.realign(mode).max_jump
    # Paper mode interpolates ReLU across the interval holding 0: at most a quarter interval.
    width = (6 * 1.5) / 16
    assert 0 < jumps["paper"] <= width / 4 * 1.1
    assert jumps["function_preserving"] <= 1e-12


def test_degenerate_statistics_fall_back_and_warn(caplog):
    act = PWLU(3, min_width=0.02)
    act.start_statistics()
    x = _inputs(shape=(4, 3, 5, 5))
    x[:, 1] = -2.0  # a dead channel: constant input, std 0
    act(x)
    act.running_mean[2] = float("nan")
    with caplog.at_level(logging.WARNING):
        act.realign("paper", name="backbone.res2.0.act")
    assert "backbone.res2.0.act" in caplog.text
    assert "Phase I: 1 batches used, 0 empty and 0 non-finite skipped" in caplog.text
    width = act.right_bound - act.left_bound
    assert torch.isfinite(act.left_bound).all() and (width > 0).all()
    torch.testing.assert_close(width[1:], torch.full((2,), 0.02))
    assert act.left_bound[1].item() == pytest.approx(-2.01)

    unseen = PWLU(None)
    unseen.start_statistics()  # no batch seen at all
    with caplog.at_level(logging.WARNING):
        result = unseen.realign("paper", name="head.act")
    assert result.fallback_units == 1 and "head.act" in caplog.text
    assert unseen.right_bound.item() > unseen.left_bound.item()


def test_state_dict_round_trip_mid_phase_one():
    act = PWLU(4)
    act.start_statistics()
    act(_inputs(seed=1))
    act(_inputs(seed=2))
    state = copy.deepcopy(act.state_dict())
    restored = PWLU(4)
    restored.load_state_dict(state)
    assert restored.phase == Phase.STATISTICS and "phase=statistics" in repr(restored)
    x = _inputs(seed=3)
    assert torch.equal(restored(x), x.relu())
    act(x)
    for name in ("running_mean", "running_std", "num_batches_tracked"):
        assert torch.equal(getattr(restored, name), getattr(act, name)), name
    assert torch.equal(restored.realign().left_bound, act.realign().left_bound)


def test_invalid_arguments_are_rejected():
    with pytest.raises(ValueError, match="num_intervals must be >= 1"):
        PWLU(num_intervals=0)
    with pytest.raises(ValueError, match="momentum must be in"):
        PWLU(momentum=1.0)
    with pytest.raises(ValueError, match="num_channels"):
        PWLU(0)
    with pytest.raises(ValueError, match="mode must be one of"):
        PWLU().realign("sideways")
    with pytest.raises(TypeError, match=r"num_intervals must be an int, got 2\.5 \(float\)"):
        PWLU(num_intervals=2.5)
    with pytest.raises(TypeError, match=r"num_channels must be an int, got '4' \(str\)"):
        PWLU("4")


def _error_of(call) -> tuple[type, str]:
    with pytest.raises((TypeError, ValueError, RuntimeError)) as info:
        call()
    return info.type, str(info.value)


@pytest.mark.parametrize("phase", ["initial", "statistics"])
@pytest.mark.parametrize(
    ("channels", "channel_dim", "x"),
    [
        (3, 1, torch.randn(2, 4, 5)),  # 4 channels, not 3
        (3, 3, torch.randn(2, 3, 5)),  # channel_dim out of range
        (3, 1, torch.ones(2, 3, 5, dtype=torch.long)),  # an int input
        (None, 1, torch.ones(2, 3, dtype=torch.int32)),
    ],
)
def test_the_module_raises_the_functions_errors(phase, channels, channel_dim, x):
    act = PWLU(channels, channel_dim=channel_dim).train()
    if phase == "statistics":
        act.start_statistics()
    expected = _error_of(lambda: pwlu(x, *act.op_params(), channel_dim=channel_dim))
    assert expected[0] in (TypeError, ValueError) and expected[1].startswith("pwlu: ")
    assert _error_of(lambda: act(x)) == expected


@pytest.mark.parametrize("bound", [float("nan"), 5.0])
def test_nan_or_crossed_bounds_are_a_value_error_on_cpu(bound):
    act = PWLU(2)
    with torch.no_grad():
        act.left_bound[1] = bound  # NaN, or above right_bound 3
    for call in (lambda x: act(x), lambda x: pwlu(x, *act.op_params())):
        with pytest.raises(ValueError, match="right_bound must exceed left_bound, unit 1"):
            call(torch.randn(2, 2, 3))


@pytest.mark.parametrize(("channels", "channel_dim"), [(None, 1), (4, 1), (4, -1)])
def test_forward_and_gradients_match_the_reference(channels, channel_dim):
    # The module calls the fused op directly (not through pwlu()): same function, same grads.
    act = PWLU(channels, num_intervals=6, channel_dim=channel_dim)
    with torch.no_grad():
        act.heights.add_(0.3 * torch.randn_like(act.heights))
        act.left_slope.fill_(0.2)
    x = _inputs(shape=(3, 4, 5, 4)).requires_grad_()
    params = [p.detach().double().requires_grad_() for p in act.op_params()]
    expected = pwlu_reference(x.detach().double(), *params, channel_dim=channel_dim)
    y = act(x)
    torch.testing.assert_close(y.double(), expected, rtol=1e-5, atol=1e-5)
    y.square().sum().backward()
    expected.square().sum().backward()
    for p, ref in zip(act.op_params(), params, strict=True):
        torch.testing.assert_close(p.grad.double(), ref.grad, rtol=1e-3, atol=1e-3)
    with pytest.raises(ValueError, match="channels"):
        PWLU(3)(torch.randn(2, 4, 5))


def _units_with_bad_bounds():
    """Units of two groups (N 4 and 8, min_width 0.1 and 0.5), layer- and channel-wise, whose
    bounds are fine, crossed, too close, huge or not finite."""
    units = [
        PWLU(None, num_intervals=4, min_width=0.1),
        PWLU(5, num_intervals=4, min_width=0.1),
        PWLU(3, num_intervals=8, min_width=0.1),
        PWLU(2, num_intervals=4, min_width=0.5),
    ]
    lefts = [[2.6], [-1.0, 2.6, 0.5, 3.0e7, -1.0], [0.0, 1.0, float("-inf")], [0.0, -3.0]]
    rights = [[2.5], [1.0, 2.6, float("nan"), -2.4e7, float("inf")], [0.05, 2.0, 0.0], [0.2, 3.0]]
    with torch.no_grad():
        for unit, left, right in zip(units, lefts, rights, strict=True):
            unit.left_bound.copy_(torch.tensor(left).reshape(unit.left_bound.shape))
            unit.right_bound.copy_(torch.tensor(right).reshape(unit.right_bound.shape))
    return units


def test_projecting_units_together_equals_projecting_each_alone():
    together = _units_with_bad_bounds()
    alone = copy.deepcopy(together)
    project_bounds(together)
    for unit in alone:
        project_bounds((unit,))
    for a, b in zip(together, alone, strict=True):
        for name, param in a.named_parameters():
            torch.testing.assert_close(param, getattr(b, name), rtol=0, atol=0, equal_nan=True)
        width = a.right_bound - a.left_bound
        assert (width >= a.min_width * (1 - 1e-6)).all()
    assert torch.equal(together[0].left_bound, torch.tensor(2.5))  # widened about its middle
    assert torch.isnan(together[2].heights[2]).all() and not together[2].heights[:2].isnan().any()


class _CountOps(TorchDispatchMode):
    """Counts the aten ops that are not views."""

    def __init__(self):
        super().__init__()
        self.count = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if not func.is_view:
            self.count += 1
        return func(*args, **(kwargs or {}))


def test_projection_takes_the_same_ops_for_two_units_or_forty():
    counts = []
    for repeat in (1, 20):
        units = [PWLU(c, num_intervals=4) for _ in range(repeat) for c in (None, 3)]
        with _CountOps() as ops:
            project_bounds(units)
        counts.append(ops.count)
    assert counts[0] == counts[1] and counts[0] < 40
