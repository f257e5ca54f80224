"""Deployed forms of a model: every PWLU replaced by a frozen module that computes the same
function (timm's ``reparameterize_model`` pattern).

:func:`to_inference_form` returns a converted copy of a model, the original stays trainable:

- ``op="standard"``: each unit becomes a :class:`PWLUInference` (a slope/intercept table in
  standard ops), for TorchScript scripting or tracing and ONNX;
- ``op="fused"``: each unit becomes a :class:`PWLUFusedOp`, the fused C++ op with the unit's
  parameters frozen as buffers, for a traced TorchScript file that runs at the op's speed (on
  CPU, where ``pwlu_det`` is imported before ``torch.jit.load``).

A unit in Phase I computes exactly its initial shape, so it becomes ``nn.ReLU`` or ``nn.SiLU``.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from . import pwlu_cpp
from .pwlu_inference import PWLUInference, inference_tables
from .pwlu_module import PWLU, Phase
from .pwlu_op import PARAM_NAMES, canonical_params

__all__ = ["DEPLOY_OPS", "PWLUFusedOp", "to_inference_form"]

#: The forms :func:`to_inference_form` converts to.
DEPLOY_OPS = ("standard", "fused")
#: The module of each initial shape (what a unit in Phase I computes).
_INIT_SHAPE_MODULES = {"relu": nn.ReLU, "swish": nn.SiLU}  # the keys of INIT_SHAPES


class PWLUFusedOp(nn.Module):
    """P units as the fused op ``pwlu_det::pwlu_forward`` with frozen parameters.

    A trace records the op itself, so the TorchScript file needs ``import pwlu_det`` before
    ``torch.jit.load``.

    Args:
        params: the five parameters in the op's canonical form (see
            :func:`pwlu_det.layers.pwlu_op.canonical_params`).
        channel_dim: channel dimension of the input (any value for one layer-wise unit).
    """

    def __init__(self, params: tuple[torch.Tensor, ...], channel_dim: int):
        super().__init__()
        self.channel_dim = channel_dim
        for name, value in zip(PARAM_NAMES, params, strict=True):
            self.register_buffer(name, value.detach().clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``f(x)``, same shape as ``x``."""
        params = (getattr(self, name) for name in PARAM_NAMES)
        channel_dim = self.channel_dim % x.dim() if self.heights.shape[0] > 1 else 0
        return torch.ops.pwlu_det.pwlu_forward(x, *params, channel_dim)


def _deployed(unit: PWLU, op: str) -> nn.Module:
    """The module that replaces ``unit`` in the form ``op``."""
    if unit.phase == Phase.STATISTICS:
        return _INIT_SHAPE_MODULES[unit.init_shape]()
    with torch.no_grad():
        if op == "fused":
            return PWLUFusedOp(canonical_params(*unit.op_params()), unit.channel_dim)
        tables = inference_tables(*unit.op_params())
    return PWLUInference(*tables, None if unit.num_channels is None else unit.channel_dim)


def _refuse_onnx(graph, *args):
    raise RuntimeError(
        "a PWLU has no ONNX form: export pwlu_det.layers.to_inference_form(model) instead, which "
        "replaces every PWLU by its inference form in standard ops"
    )


# An ONNX export of a model that still holds PWLUs reaches the op: say what to do instead.
torch.onnx.register_custom_op_symbolic("pwlu_det::pwlu_forward", _refuse_onnx, 9)


def to_inference_form(model: nn.Module, op: str = "standard") -> nn.Module:
    """A copy of ``model`` with every PWLU replaced by its frozen deployed form.

    Args:
        model: any module (a PWLU itself too); it is not changed.
        op: ``"standard"`` (:class:`PWLUInference`) or ``"fused"`` (:class:`PWLUFusedOp`).

    Returns:
        The converted copy, in ``model``'s training mode; it holds no PWLU.

    Raises:
        ValueError: an unknown ``op``.
        RuntimeError: ``op="fused"`` without the C++ extension.
    """
    if op not in DEPLOY_OPS:
        raise ValueError(f"to_inference_form: op must be one of {DEPLOY_OPS}, got {op!r}")
    if op == "fused" and not pwlu_cpp.available():
        raise RuntimeError(f"the fused PWLU op is unavailable: {pwlu_cpp.unavailable_reason()}")
    if isinstance(model, PWLU):
        return _deployed(model, op).train(model.training)
    converted = copy.deepcopy(model)
    replacements: dict[int, nn.Module] = {}  # a unit used in two places is converted once
    for name, unit in list(converted.named_modules(remove_duplicate=False)):
        if isinstance(unit, PWLU):
            if id(unit) not in replacements:
                replacements[id(unit)] = _deployed(unit, op).train(unit.training)
            parent_name, _, child = name.rpartition(".")
            setattr(converted.get_submodule(parent_name), child, replacements[id(unit)])
    return converted
