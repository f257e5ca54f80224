"""Optimizer for models with PWLUs: Detectron2's defaults plus the PWLU learning-rate and
weight-decay rules of ``MODEL.PWLU``, and bounds that cannot cross.

Bounds: a step may push a unit's bounds together or past each other (measured: a diverging
R50-FPN RetinaNet step left ``left_bound=3.0e7 > right_bound=-2.4e7``); then the unit is no
function, and the op's kernels disagree on what to do with it. So every optimizer from
:func:`build_pwlu_optimizer` (and the lazy trainer's, see :func:`keep_bounds_apart`) projects
its units back after each step: ``right_bound - left_bound >= MIN_WIDTH``
(:func:`pwlu_det.layers.project_bounds`), on the device, without a host sync, in a fixed
number of ops for all units of the model.

A projection rather than a parametrization (say ``right = left + MIN_WIDTH + softplus(w)``): it
keeps the parameters, their names in checkpoints and their gradients as the paper defines them,
and costs nothing while the bounds stay apart, which is almost always; a parametrization would
rename the state-dict entries (old checkpoints, the optimizer rules by name, the export) and
change every step. A unit whose bounds stopped being finite outputs NaN after the projection,
so a run that really diverges still ends with Detectron2's FloatingPointError on the losses.
"""

from __future__ import annotations

import torch
from detectron2.config import CfgNode
from detectron2.solver.build import get_default_optimizer_params, maybe_add_gradient_clipping
from torch import nn
from torch.utils.hooks import RemovableHandle

from pwlu_det.layers import PARAM_NAMES, PWLU, project_bounds

__all__ = [
    "build_pwlu_optimizer",
    "keep_bounds_apart",
    "pwlu_optimizer_rules",
    "pwlu_param_overrides",
]


def pwlu_param_overrides(
    model: nn.Module, base_lr: float, *, lr_factor: float, weight_decay: float
) -> dict[str, dict]:
    """The ``overrides`` of ``get_default_optimizer_params`` that apply the PWLU rules.

    PWLU parameters get ``base_lr * lr_factor`` and ``weight_decay`` (``MODEL.PWLU.LR_FACTOR``
    and ``MODEL.PWLU.WEIGHT_DECAY``: :func:`pwlu_optimizer_rules`). The yacs path
    (:func:`build_pwlu_optimizer`) and the lazy one both use this.

    Raises:
        ValueError: a non-PWLU module has a parameter named like a PWLU parameter (the rules
            are applied by parameter name).
    """
    clashes = {
        f"{module_name}.{name}"
        for module_name, module in model.named_modules()
        if not isinstance(module, PWLU)
        for name, _ in module.named_parameters(recurse=False)
        if name in PARAM_NAMES
    }
    if clashes:
        raise ValueError(
            f"build_pwlu_optimizer: non-PWLU parameters {sorted(clashes)} share names with PWLU "
            "parameters, so the PWLU rules would apply to them too; rename them"
        )
    rules = {"lr": base_lr * lr_factor, "weight_decay": weight_decay}
    return {name: dict(rules) for name in PARAM_NAMES}


def pwlu_optimizer_rules(cfg: CfgNode) -> dict[str, float]:
    """The keyword arguments of :func:`pwlu_param_overrides` from a yacs config."""
    return {"lr_factor": cfg.MODEL.PWLU.LR_FACTOR, "weight_decay": cfg.MODEL.PWLU.WEIGHT_DECAY}


def build_pwlu_optimizer(cfg: CfgNode, model: nn.Module) -> torch.optim.Optimizer:
    """SGD as Detectron2's ``build_optimizer``, with the PWLU rules of
    :func:`pwlu_param_overrides` and the bounds kept apart after each step
    (:func:`keep_bounds_apart`).

    Raises:
        ValueError: see :func:`pwlu_param_overrides`.
    """
    params = get_default_optimizer_params(
        model,
        base_lr=cfg.SOLVER.BASE_LR,
        weight_decay_norm=cfg.SOLVER.WEIGHT_DECAY_NORM,
        bias_lr_factor=cfg.SOLVER.BIAS_LR_FACTOR,
        weight_decay_bias=cfg.SOLVER.WEIGHT_DECAY_BIAS,
        overrides=pwlu_param_overrides(model, cfg.SOLVER.BASE_LR, **pwlu_optimizer_rules(cfg)),
    )
    optimizer = maybe_add_gradient_clipping(cfg, torch.optim.SGD)(
        params,
        lr=cfg.SOLVER.BASE_LR,
        momentum=cfg.SOLVER.MOMENTUM,
        nesterov=cfg.SOLVER.NESTEROV,
        weight_decay=cfg.SOLVER.WEIGHT_DECAY,
    )
    keep_bounds_apart(optimizer, model)
    return optimizer


def keep_bounds_apart(optimizer: torch.optim.Optimizer, model: nn.Module) -> RemovableHandle:
    """After every ``optimizer.step()``, project the bounds of the PWLUs it trains back to
    ``right_bound - left_bound >= min_width`` (:func:`pwlu_det.layers.project_bounds`).

    Args:
        optimizer: the optimizer of ``model``'s parameters.
        model: the model (a ``DistributedDataParallel`` wrapper is unwrapped).

    Returns:
        The handle of the optimizer's step post-hook (``.remove()`` undoes this).
    """
    model = getattr(model, "module", model)
    trained = {id(p) for group in optimizer.param_groups for p in group["params"]}
    units = [
        m
        for m in model.modules()
        if isinstance(m, PWLU) and {id(m.left_bound), id(m.right_bound)} & trained
    ]

    def project(*_) -> None:
        with torch.profiler.record_function("pwlu/project_bounds"):
            project_bounds(units)

    return optimizer.register_step_post_hook(project)
