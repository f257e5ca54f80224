"""Optimizer for models with PWLUs: Detectron2's defaults plus the PWLU learning-rate and
weight-decay rules of ``MODEL.PWLU``."""

from __future__ import annotations

import torch
from detectron2.config import CfgNode
from detectron2.solver.build import get_default_optimizer_params, maybe_add_gradient_clipping
from torch import nn

from pwlu_det.layers.pwlu_module import PWLU

__all__ = ["build_pwlu_optimizer"]


def build_pwlu_optimizer(cfg: CfgNode, model: nn.Module) -> torch.optim.Optimizer:
    """SGD as Detectron2's ``build_optimizer``, with PWLU parameters at
    ``BASE_LR * MODEL.PWLU.LR_FACTOR`` and weight decay ``MODEL.PWLU.WEIGHT_DECAY``.

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
    pwlu_rules = {
        "lr": cfg.SOLVER.BASE_LR * cfg.MODEL.PWLU.LR_FACTOR,
        "weight_decay": cfg.MODEL.PWLU.WEIGHT_DECAY,
    }
    params = get_default_optimizer_params(
        model,
        base_lr=cfg.SOLVER.BASE_LR,
        weight_decay_norm=cfg.SOLVER.WEIGHT_DECAY_NORM,
        bias_lr_factor=cfg.SOLVER.BIAS_LR_FACTOR,
        weight_decay_bias=cfg.SOLVER.WEIGHT_DECAY_BIAS,
        overrides={name: dict(pwlu_rules) for name in PWLU.PARAM_NAMES},
    )
    return maybe_add_gradient_clipping(cfg, torch.optim.SGD)(
        params,
        lr=cfg.SOLVER.BASE_LR,
        momentum=cfg.SOLVER.MOMENTUM,
        nesterov=cfg.SOLVER.NESTEROV,
        weight_decay=cfg.SOLVER.WEIGHT_DECAY,
    )
