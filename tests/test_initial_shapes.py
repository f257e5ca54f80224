"""MODEL.PWLU.INIT_SHAPE: the shape a unit starts from, and resets to at the realignment."""

import pytest
import torch
import torch.nn.functional as F

from pwlu_det.config import default_pwlu_config, validate_pwlu_config
from pwlu_det.layers import PWLU, breakpoints, to_inference_form
from pwlu_det.modeling.activation import activation_factory


@pytest.mark.parametrize("shape, function", [("relu", F.relu), ("swish", F.silu)])
def test_phase_one_computes_the_initial_shape_and_realignment_resets_to_it(shape, function):
    unit = PWLU(6, num_intervals=8, init_shape=shape)
    x = 1.5 * torch.randn(4, 6, 5, 5) + 0.3
    unit.start_statistics()
    unit.train()
    assert torch.equal(unit(x), function(x))
    unit.realign("function_preserving" if shape == "relu" else "paper")
    grid = breakpoints(unit.left_bound.double(), unit.right_bound.double(), unit.num_intervals)
    expected = function(grid).float()
    torch.testing.assert_close(unit.heights.detach(), expected, rtol=0, atol=1e-6)
    assert torch.all(unit.left_slope == 0) and torch.all(unit.right_slope == 1)
    # Between breakpoints the unit interpolates the shape: exact for ReLU (0 a breakpoint).
    gap = (unit(x) - function(x)).abs().max().item()
    width = (unit.right_bound - unit.left_bound).max().item() / unit.num_intervals
    # Linear interpolation error is at most d^2 / 8 * max|f"|, and max|silu"| = 1/2.
    assert gap < 1e-5 if shape == "relu" else 1e-4 < gap <= width**2 / 16


def test_swish_phase_one_survives_scripting():
    unit = PWLU(3, num_intervals=4, init_shape="swish").eval()
    unit.start_statistics()
    x = torch.randn(2, 3, 4, 4)
    torch.testing.assert_close(torch.jit.script(to_inference_form(unit))(x), F.silu(x))


def test_bad_initial_shapes_are_refused():
    with pytest.raises(ValueError, match="init_shape must be one of"):
        PWLU(2, init_shape="gelu")
    unit = PWLU(2, init_shape="swish")
    unit.start_statistics()
    with pytest.raises(ValueError, match="function_preserving.*init_shape 'relu'"):
        unit.realign("function_preserving")
    cfg = default_pwlu_config()
    cfg.MODEL.PWLU.INIT_SHAPE = "swish"
    validate_pwlu_config(cfg)
    cfg.MODEL.PWLU.REALIGN_MODE = "function_preserving"
    with pytest.raises(ValueError, match="MODEL.PWLU.INIT_SHAPE = 'swish' is invalid"):
        validate_pwlu_config(cfg)


def test_factory_passes_the_initial_shape_and_relu_stays_the_default():
    cfg = default_pwlu_config()
    assert activation_factory(cfg, "backbone")(4).init_shape == "relu"
    cfg.MODEL.PWLU.INIT_SHAPE = "swish"
    assert activation_factory(cfg, "head")(4).init_shape == "swish"
