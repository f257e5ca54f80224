"""Exported mask heads with no RoI: a padding RoI keeps onnxruntime's reshapes valid."""

import io

import onnxruntime
import pytest
import torch
from torch import nn

from pwlu_det.export.empty_rois import empty_safe_mask_head, with_padding_roi
from pwlu_det.layers import PWLU, to_inference_form


def _layers():
    torch.manual_seed(0)
    unit = PWLU(8, num_intervals=4)
    with torch.no_grad():
        unit.heights.add_(0.3 * torch.randn_like(unit.heights))  # not ReLU
    return nn.Sequential(nn.Conv2d(8, 8, 3, padding=1), nn.GroupNorm(4, 8), unit).eval()


def _run_onnx(model, example, x):
    f = io.BytesIO()
    torch.onnx.export(
        to_inference_form(model), (example,), f, dynamo=False, opset_version=16,
        input_names=["x"], dynamic_axes={"x": {0: "rois"}},
    )  # fmt: skip
    session = onnxruntime.InferenceSession(f.getvalue(), providers=["CPUExecutionProvider"])
    return torch.from_numpy(session.run(None, {"x": x.numpy()})[0])


class _Padded(nn.Module):
    def __init__(self, layers):
        super().__init__()
        self.inner = layers

    def forward(self, x):
        return with_padding_roi(self.inner)(x)


def test_padded_layers_export_and_run_without_rois():
    layers = _layers()
    empty = torch.zeros(0, 8, 14, 14)
    with pytest.raises(Exception, match="Reshape"):  # the failure being worked around
        _run_onnx(layers, empty, empty)
    padded = _Padded(layers)
    assert _run_onnx(padded, empty, empty).shape == (0, 8, 14, 14)
    x = torch.randn(3, 8, 14, 14)
    with torch.no_grad():
        torch.testing.assert_close(padded(x), layers(x))  # RoIs are independent
        torch.testing.assert_close(_run_onnx(padded, x, x), layers(x), rtol=1e-4, atol=1e-4)


def test_the_mask_head_is_restored_afterwards():
    class Head(nn.Module):
        def layers(self, x):
            return x * 2

    model = nn.Module()
    model.roi_heads = nn.Module()
    model.roi_heads.mask_head = Head()
    with empty_safe_mask_head(model):
        assert model.roi_heads.mask_head.layers(torch.ones(0, 2)).shape == (0, 2)
        assert "layers" in vars(model.roi_heads.mask_head)
    assert "layers" not in vars(model.roi_heads.mask_head)
    with empty_safe_mask_head(nn.Linear(1, 1)):  # no mask head: nothing to do
        pass
