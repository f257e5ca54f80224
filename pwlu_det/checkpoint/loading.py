"""Strict checks that a checkpoint fits a model, before any weight is loaded.

Detectron2 v0.6 loads ``MODEL.WEIGHTS`` leniently: a parameter whose shape differs is skipped
with a logged warning, and a file that matches nothing (wrong file, wrong architecture) leaves
the model at its random initialisation with a warning. :func:`check_checkpoint_fits` turns
both cases into a ``ValueError`` that lists what does not fit.

Missing keys that are expected when loading a ReLU-pretrained backbone do not count: the PWLU
state (a unit starts as exact ReLU), and everything outside the backbone (heads, FPN when the
file is an ImageNet classifier). Only a checkpoint in which *nothing* of the backbone was found
is an error.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any

from torch import nn

from pwlu_det.layers import STATE_NAMES
from pwlu_det.layers.pwlu_module import SKIP_COUNTER_NAMES

from .state_dict import find_pwlu_units

__all__ = [
    "ShapeMismatch",
    "check_checkpoint_complete",
    "check_checkpoint_fits",
    "check_same_activation",
    "find_shape_mismatches",
    "missing_backbone_keys",
    "pwlu_state_keys",
]

logger = logging.getLogger(__name__)

BACKBONE_PREFIX = "backbone."
_SHOWN = 10  # keys listed in an error message before "... and N more"
_TORCHVISION_KEY = re.compile(r"^(module\.)?layer[1-4]\.\d+\.")


@dataclass(frozen=True)
class ShapeMismatch:
    """A checkpoint tensor that would load into a model tensor of another shape."""

    checkpoint_key: str
    model_key: str
    checkpoint_shape: tuple[int, ...]
    model_shape: tuple[int, ...]

    def __str__(self) -> str:
        where = "" if self.model_key == self.checkpoint_key else f" (model: {self.model_key})"
        return (
            f"{self.checkpoint_key}: {self.checkpoint_shape} in the checkpoint, "
            f"{self.model_shape} in the model{where}"
        )


def pwlu_state_keys(keys: Collection[str]) -> set[str]:
    """The keys among ``keys`` that hold PWLU state, which ReLU-pretrained files do not have.

    These are the keys of the units :func:`~pwlu_det.checkpoint.find_pwlu_units` finds, with
    their skipped-input counters where ``keys`` has them.
    """
    units = find_pwlu_units(dict.fromkeys(keys))
    names = (*STATE_NAMES, *SKIP_COUNTER_NAMES)  # the counters: not in older checkpoints
    found = {f"{module}.{name}".lstrip(".") for module in units for name in names}
    return found & set(keys)


def _shape(value: Any) -> tuple[int, ...] | None:
    """Shape of a tensor or array (None for anything else, which the loader rejects itself)."""
    shape = getattr(value, "shape", None)
    return None if shape is None else tuple(shape)


def _shapes(model_state: Mapping[str, Any]) -> dict[str, tuple[int, ...]]:
    # Lazy modules' parameters have no shape yet; like fvcore, accept anything for them.
    return {
        key: tuple(value.shape)
        for key, value in model_state.items()
        if not isinstance(value, nn.parameter.UninitializedParameter)
    }


def find_shape_mismatches(
    model_shapes: Mapping[str, tuple[int, ...]],
    checkpoint_state: Mapping[str, Any],
    *,
    suffix_matching: bool,
) -> list[ShapeMismatch]:
    """Checkpoint tensors whose shape differs from the model tensor they are meant for.

    Args:
        model_shapes: model key -> shape.
        checkpoint_state: checkpoint key -> tensor or array. For a file loaded with Detectron2's
            matching heuristics, the state *after* ``align_and_update_state_dicts``: matched
            tensors carry the model's key, while a tensor the heuristics skipped because of its
            shape keeps its checkpoint key.
        suffix_matching: also look for those skipped tensors: for a model key the checkpoint
            lacks, the longest unmatched checkpoint key that is a dot-separated suffix of it
            (Detectron2's matching rule) is the tensor meant for it.

    Returns:
        One :class:`ShapeMismatch` per model key, in model-key order.
    """
    unmatched = [key for key in checkpoint_state if key not in model_shapes]
    mismatches = []
    for model_key, model_shape in model_shapes.items():
        if model_key in checkpoint_state:
            checkpoint_key = model_key
        elif suffix_matching:
            candidates = [k for k in unmatched if model_key.endswith("." + k)]
            if not candidates:
                continue
            checkpoint_key = max(candidates, key=len)
        else:
            continue
        checkpoint_shape = _shape(checkpoint_state[checkpoint_key])
        if checkpoint_shape is not None and checkpoint_shape != model_shape:
            mismatches.append(
                ShapeMismatch(checkpoint_key, model_key, checkpoint_shape, model_shape)
            )
    return mismatches


def missing_backbone_keys(
    model_shapes: Mapping[str, tuple[int, ...]], checkpoint_state: Mapping[str, Any]
) -> list[str]:
    """The model's backbone keys, if the checkpoint has none of them with the right shape.

    The backbone is everything under ``backbone.`` (the whole model if nothing is), PWLU state
    (:func:`pwlu_state_keys`) excluded.

    Returns:
        All backbone keys, sorted, when none was found in ``checkpoint_state`` (the file does
        not belong to this architecture), else an empty list: a partial match is normal (an ImageNet
        classifier has no FPN).
    """
    pwlu_keys = pwlu_state_keys(model_shapes)
    keys = [k for k in model_shapes if k not in pwlu_keys]
    backbone = [k for k in keys if k.startswith(BACKBONE_PREFIX)] or keys
    found = any(
        key in checkpoint_state and _shape(checkpoint_state[key]) == model_shapes[key]
        for key in backbone
    )
    return [] if found else sorted(backbone)


def _listing(items: list[Any]) -> str:
    lines = [f"    {item}" for item in items[:_SHOWN]]
    if len(items) > _SHOWN:
        lines.append(f"    ... and {len(items) - _SHOWN} more")
    return "\n".join(lines)


def check_checkpoint_fits(
    model_state: Mapping[str, Any],
    checkpoint_state: Mapping[str, Any],
    *,
    suffix_matching: bool,
    source: str = "the checkpoint",
) -> None:
    """Raise if ``checkpoint_state`` does not fit the model whose state is ``model_state``.

    Args:
        model_state: ``model.state_dict()``.
        checkpoint_state: the checkpoint's model state with keys as they will be loaded (for
            Detectron2's matching heuristics: after ``align_and_update_state_dicts``).
        suffix_matching: the checkpoint went through Detectron2's matching heuristics (see
            :func:`find_shape_mismatches`).
        source: names the checkpoint in the message (its path).

    Raises:
        ValueError: some tensors have a shape different from the model's (each listed with
            both shapes), or nothing of the model's backbone was found (the missing keys are
            listed, with a few checkpoint keys for comparison).
    """
    model_shapes = _shapes(model_state)
    problems = []
    mismatches = find_shape_mismatches(
        model_shapes, checkpoint_state, suffix_matching=suffix_matching
    )
    if mismatches:
        problems.append(
            f"{len(mismatches)} tensor(s) have a different shape in the checkpoint and in the "
            f"model:\n{_listing(mismatches)}"
        )
    missing = missing_backbone_keys(model_shapes, checkpoint_state)
    if missing:
        sample = list(checkpoint_state)[:_SHOWN]
        problems.append(
            f"none of the model's {len(missing)} backbone parameters and buffers was found; "
            f"missing:\n{_listing(missing)}\n"
            f"  the checkpoint has {len(checkpoint_state)} key(s), e.g. {sample}"
        )
        if any(_TORCHVISION_KEY.match(key) for key in checkpoint_state):
            problems.append(
                "the checkpoint looks like a torchvision ResNet: convert it with "
                "tools/convert_torchvision_to_d2.py and load the .pkl"
            )
    if problems:
        message = f"{source} does not fit the model:\n- " + "\n- ".join(problems)
        raise ValueError(
            message + "\n(Detectron2 would load the rest and only log warnings; "
            "AtomicDetectionCheckpointer(..., strict=False) does that.)"
        )
    logger.debug("%s fits the model", source)


def check_checkpoint_complete(
    missing_keys: list[str], source: str = "the checkpoint", *, checkpoint_has_pwlu: bool = True
) -> None:
    """Raise if loading a checkpoint left some of the model's tensors out (``missing_keys``).

    For evaluation and export, where such tensors would silently stay randomly initialised.

    Args:
        missing_keys: the model's keys that the checkpoint lacks.
        source: names the checkpoint in the message (its path).
        checkpoint_has_pwlu: whether the checkpoint has PWLU units; if not, and only PWLU state
            is missing, the message says that it is a checkpoint of another activation.

    Raises:
        ValueError: the missing keys are listed; or one line: "... has no PWLU units ...".
    """
    missing_pwlu = pwlu_state_keys(missing_keys)
    if missing_keys and not checkpoint_has_pwlu and set(missing_keys) <= missing_pwlu:
        units = find_pwlu_units(dict.fromkeys(missing_keys))
        raise ValueError(
            f"{source} has no PWLU units, and the model has {len(units)} (e.g. "
            f"{next(iter(units))}.left_bound): it is a checkpoint of another activation; "
            "evaluate or export it with a config of that activation (ReLU, Swish)"
        )
    if missing_keys:
        raise ValueError(
            f"{source} lacks {len(missing_keys)} of the model's parameters and buffers (they "
            f"would stay randomly initialised):\n{_listing(missing_keys)}\n"
            "Is it a trained checkpoint of this config (and not, say, an ImageNet backbone)?"
        )


def check_same_activation(
    model_keys: Collection[str], checkpoint_keys: Collection[str], source: str = "the checkpoint"
) -> None:
    """Raise if the checkpoint has PWLU units that the model lacks (before loading it).

    For evaluation and export: the conv weights of a PWLU checkpoint compute nonsense with
    another activation, and Detectron2 would load one into a Swish model with only a warning
    about unused keys (``*.left_bound``, ``*.heights``, ...). The other way round, a checkpoint
    without PWLU units for a PWLU model, is refused by :func:`check_checkpoint_complete`.

    Args:
        model_keys: the model's state-dict keys.
        checkpoint_keys: the checkpoint's keys, as they will be loaded.
        source: names the checkpoint in the message (its path).

    Raises:
        ValueError: one line: "... is a PWLU checkpoint ...: use a PWLU config ...".
    """
    model_units = find_pwlu_units(dict.fromkeys(model_keys))
    checkpoint_units = list(find_pwlu_units(dict.fromkeys(checkpoint_keys)))
    unused = [unit for unit in checkpoint_units if unit not in model_units]
    if not unused:
        return
    if model_units:
        what = f"{len(unused)} PWLU unit(s) that the model does not have"
        config = "a PWLU config that matches it"
    else:
        what = f"{len(checkpoint_units)} PWLU units, and the model none"
        config = "a PWLU config"
    raise ValueError(
        f"{source} is a PWLU checkpoint ({what}, e.g. {unused[0]}.left_bound): use {config} "
        "(the config it was trained with) to evaluate or export it"
    )
