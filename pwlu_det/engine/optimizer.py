"""Optimizer for models with PWLUs: Detectron2's defaults plus the PWLU learning-rate and
weight-decay rules of ``MODEL.PWLU``."""

from __future__ import annotations

import torch
from detectron2.config import CfgNode
from detectron2.solver.build import get_default_optimizer_params, maybe_add_gradient_clipping
from torch import nn

from pwlu_det.layers.pwlu_module import PWLU

__all__ = ["build_pwlu_optimizer", "pwlu_param_overrides"]


def pwlu_param_overrides(model: nn.Module, base_lr: float, cfg: CfgNode) -> dict[str, dict]:
    """The ``overrides`` of ``get_default_optimizer_params`` that apply the PWLU rules.

    PWLU parameters get ``base_lr * MODEL.PWLU.LR_FACTOR`` and ``MODEL.PWLU.WEIGHT_DECAY``.
    The yacs path (:func:`build_pwlu_optimizer`) and the lazy one both use this.

    Raises:
        ValueError: a non-PWLU module has a parameter named like a PWLU parameter (the rules
            are applied by parameter name).
    """
    clashes = {
        f"{module_name}.{name}"
        for module_name, module in model.named_modules()
        if not isinstance(module, PWLU)
        for name, _ in module.named_parameters(recurse=False)
        if name in PWLU.PARAM_NAMES
    }
    if clashes:
        raise ValueError(
            f"build_pwlu_optimizer: non-PWLU parameters {sorted(clashes)} share names with PWLU "
            "parameters, so the PWLU rules would apply to them too; rename them"
        )
    rules = {"lr": base_lr * cfg.MODEL.PWLU.LR_FACTOR, "weight_decay": cfg.MODEL.PWLU.WEIGHT_DECAY}
    return {name: dict(rules) for name in PWLU.PARAM_NAMES}


def build_pwlu_optimizer(cfg: CfgNode, model: nn.Module) -> torch.optim.Optimizer:
    """SGD as Detectron2's ``build_optimizer``, with the PWLU rules of
    :func:`pwlu_param_overrides`.

    Raises:
        ValueError: see :func:`pwlu_param_overrides`.
    """
    params = get_default_optimizer_params(
        model,
        base_lr=cfg.SOLVER.BASE_LR,
        weight_decay_norm=cfg.SOLVER.WEIGHT_DECAY_NORM,
        bias_lr_factor=cfg.SOLVER.BIAS_LR_FACTOR,
        weight_decay_bias=cfg.SOLVER.WEIGHT_DECAY_BIAS,
        overrides=pwlu_param_overrides(model, cfg.SOLVER.BASE_LR, cfg),
    )
    return maybe_add_gradient_clipping(cfg, torch.optim.SGD)(
        params,
        lr=cfg.SOLVER.BASE_LR,
        momentum=cfg.SOLVER.MOMENTUM,
        nesterov=cfg.SOLVER.NESTEROV,
        weight_decay=cfg.SOLVER.WEIGHT_DECAY,
    )
