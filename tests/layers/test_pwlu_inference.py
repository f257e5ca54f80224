"""The PWLU inference form (TorchScript / ONNX path) against the reference, and its export."""

import io

import numpy as np
import onnx
import onnxruntime
import pytest
import torch
from pwlu_cases import input_with_specials, make_params

from pwlu_det.layers import (
    PARAM_NAMES,
    PWLU,
    Phase,
    PWLUInference,
    pwlu_reference,
    to_inference_form,
)
from pwlu_det.layers.pwlu_inference import inference_tables, pwlu_inference

# (shape, channel_dim): NCHW, (N, C) like a linear layer, channels last, channels first.
LAYOUTS = [((2, 5, 7, 9), 1), ((11, 5), 1), ((3, 4, 5), -1), ((5, 3, 4), 0)]


def _inference(x, params, channel_dim):
    layer_wise = params[2].dim() == 1
    num_intervals = params[2].shape[-1] - 1
    return pwlu_inference(
        x, *inference_tables(*params), None if layer_wise else channel_dim, num_intervals
    )


@pytest.mark.parametrize("channels", [None, 5])
@pytest.mark.parametrize(("shape", "channel_dim"), LAYOUTS)
@pytest.mark.parametrize("num_intervals", [1, 16])
def test_matches_reference(channels, shape, channel_dim, num_intervals):
    if channels is not None and shape[channel_dim] != channels:
        shape = list(shape)
        shape[channel_dim] = channels
    params = make_params(channels, num_intervals, seed=num_intervals)
    x = input_with_specials(tuple(shape), params, torch.float64, channel_dim=channel_dim)
    expected = pwlu_reference(x, *params, channel_dim=channel_dim)
    # Breakpoints may land in the neighbouring piece: equal values up to rounding.
    torch.testing.assert_close(_inference(x, params, channel_dim), expected, rtol=1e-9, atol=1e-9)


def test_nan_and_infinities():
    params = make_params(3, 8)
    x = torch.tensor([[float("nan"), float("inf"), -float("inf")]]).double().expand(4, 3)
    x = x.clone()
    x[1:] = torch.tensor([-1e30, 1e30, 0.5], dtype=torch.float64)
    torch.testing.assert_close(
        _inference(x, params, 1), pwlu_reference(x, *params, channel_dim=1), equal_nan=True
    )


def _trained_looking_unit(channels: int | None, num_intervals: int = 16) -> PWLU:
    """A unit in phase TRAINING with random parameters (not ReLU)."""
    unit = PWLU(channels, num_intervals=num_intervals).eval()
    state = unit.state_dict()
    params = make_params(channels, num_intervals, dtype=torch.float32, seed=3)
    state.update(zip(PARAM_NAMES, params, strict=True))
    state["phase"] = torch.tensor(Phase.TRAINING)
    unit.load_state_dict(state)
    return unit


def test_scripted_and_traced_module_match_the_fused_op():
    unit = _trained_looking_unit(6)
    x = 2 * torch.randn(2, 6, 5, 7)
    deployed = to_inference_form(unit)
    assert isinstance(deployed, PWLUInference)
    with torch.no_grad():
        fused = unit(x)
        scripted = torch.jit.script(deployed)(x)
        traced = torch.jit.trace(deployed, (x,))
        # The trace holds the tables: no parameter arithmetic left per call.
        assert "aten::cat" not in str(traced.graph)
        torch.testing.assert_close(scripted, fused, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(traced(x), fused, rtol=1e-5, atol=1e-5)
        other_batch = torch.randn(3, 6, 4, 4)
        torch.testing.assert_close(traced(other_batch), unit(other_batch), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("channels", [None, 6])
def test_onnx_export_uses_int32_gather_elements_and_matches(channels, tmp_path):
    unit = _trained_looking_unit(channels)
    x = 2 * torch.randn(2, 6, 5, 7)
    path = str(tmp_path / "pwlu.onnx")
    deployed = to_inference_form(unit)
    with torch.no_grad():
        torch.onnx.export(
            deployed,
            (x,),
            path,
            opset_version=16,
            dynamo=False,
            input_names=["x"],
            dynamic_axes={"x": {0: "batch", 2: "height", 3: "width"}},
        )
        expected = deployed(x)
    graph = onnx.load(path).graph
    ops = [node.op_type for node in graph.node]
    assert ops.count("GatherElements") == 2
    # Gather only picks dimensions out of shapes (never values out of a table).
    shape_outputs = {out for n in graph.node if n.op_type == "Shape" for out in n.output}
    assert all(n.input[0] in shape_outputs for n in graph.node if n.op_type == "Gather")
    casts = [n for n in graph.node if n.op_type == "Cast"]
    assert [a.i for n in casts for a in n.attribute if a.name == "to"] == [onnx.TensorProto.INT32]
    session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
    out = session.run(None, {"x": x.numpy()})[0]
    np.testing.assert_allclose(out, expected.numpy(), rtol=1e-6, atol=1e-6)
    # Another shape through the same graph; NaN stays NaN and does not break the lookup.
    y = torch.randn(1, 6, 3, 2)
    y[0, 0, 0, 0] = float("nan")
    out = session.run(None, {"x": y.numpy()})[0]
    assert np.isnan(out[0, 0, 0, 0]) and np.isfinite(out.reshape(-1)[1:]).all()
    with torch.no_grad():  # the fused op: other rounding
        np.testing.assert_allclose(out, unit(y).numpy(), rtol=1e-5, atol=1e-5)


def test_to_inference_form_converts_a_copy_and_leaves_no_pwlu():
    torch.manual_seed(0)
    trained, collecting = _trained_looking_unit(6), PWLU(6, init_shape="swish")
    collecting.start_statistics()
    model = torch.nn.Sequential(trained, torch.nn.Conv2d(6, 6, 1), collecting, trained).eval()
    deployed = to_inference_form(model)
    assert not any(isinstance(m, PWLU) for m in deployed.modules())
    assert isinstance(deployed[0], PWLUInference) and deployed[3] is deployed[0]  # shared once
    assert isinstance(deployed[2], torch.nn.SiLU)  # Phase I: exactly the initial shape
    assert all(isinstance(m, PWLU) for m in (model[0], model[2], model[3]))  # unchanged
    x = torch.randn(2, 6, 4, 4)
    with torch.no_grad():
        torch.testing.assert_close(deployed(x), model(x), rtol=1e-5, atol=1e-5)
        model[0].heights.add_(1.0)  # the copy is frozen: training the model does not move it
        assert not torch.allclose(deployed(x), model(x), rtol=1e-3, atol=1e-3)
    with pytest.raises(ValueError, match="op must be one of"):
        to_inference_form(model, "tensorrt")


def test_a_pwlu_itself_is_refused_by_scripting_and_onnx_with_the_fix():
    unit = _trained_looking_unit(6)
    with pytest.raises(TypeError, match="to_inference_form"):
        torch.jit.script(unit)
    with pytest.raises(RuntimeError, match="to_inference_form"):
        torch.onnx.export(unit, (torch.randn(1, 6, 2, 2),), io.BytesIO(), dynamo=False)
