"""Exported mask heads that also run when nothing was detected.

A traced mask head flattens its RoI features (GroupNorm, and a PWLU's inference form) with
``Reshape(x, [0, C, -1])``. When no RoI reaches it, onnxruntime cannot infer the ``-1`` of an
empty tensor and fails, and an explicit size does not help: the exporter folds it back into
``-1``. While exporting, the head's per-RoI layers therefore see one extra all-zero RoI, which
is dropped again: every RoI is computed independently, so the results are unchanged, at the
cost of one RoI.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import torch
from torch import nn

__all__ = ["empty_safe_mask_head", "with_padding_roi"]


def with_padding_roi(layers: Callable[[torch.Tensor], torch.Tensor]):
    """``layers`` (per-RoI: ``(R, C, H, W) -> (R, ...)``) applied with one zero RoI appended."""

    def padded(x: torch.Tensor) -> torch.Tensor:
        return layers(torch.cat([x, x.new_zeros((1, *x.shape[1:]))]))[:-1]

    return padded


@contextlib.contextmanager
def empty_safe_mask_head(model: nn.Module):
    """Within the block, the mask head of ``model`` (if any) runs its layers with a padding RoI
    (:func:`with_padding_roi`)."""
    head = getattr(getattr(model, "roi_heads", None), "mask_head", None)
    if head is None or not hasattr(head, "layers"):
        yield model
        return
    head.layers = with_padding_roi(head.layers)
    try:
        yield model
    finally:
        del head.layers  # the class's method again
