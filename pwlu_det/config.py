"""PWLU config keys for Detectron2 (``add_pwlu_config``) and their validation."""

from __future__ import annotations

import yaml
from detectron2.config import CfgNode as CN
from detectron2.config import get_cfg

from pwlu_det.layers import ACTIVATION_LAYERS, INIT_SHAPES, REALIGN_MODES
from pwlu_det.utils.user_errors import USAGE, user_errors

SCOPES = ("backbone", "all")

__all__ = ["add_pwlu_config", "default_pwlu_config", "load_pwlu_config", "validate_pwlu_config"]

GRANULARITIES = ("channel", "layer")


def add_pwlu_config(cfg: CN) -> None:
    """Add the ``MODEL.ACTIVATION`` and ``MODEL.PWLU`` keys, with defaults, to ``cfg``."""
    cfg.MODEL.ACTIVATION = CN()
    # Activation of the pwlu_det backbones and heads: "PWLU", "Swish" (= "SiLU") or "ReLU".
    cfg.MODEL.ACTIVATION.NAME = "PWLU"
    # Where it is used: "backbone" (ResNet + FPN; heads keep ReLU) or "all" (backbone + heads).
    cfg.MODEL.ACTIVATION.SCOPE = "all"
    # Whether the activations of the stages frozen by MODEL.BACKBONE.FREEZE_AT learn (their convs
    # and norms stay frozen). False: a PWLU there stays exactly ReLU, as pretrained.
    cfg.MODEL.ACTIVATION.LEARN_IN_FROZEN_STAGES = False
    cfg.MODEL.PWLU = CN()
    # N: number of uniform intervals between the bounds (paper default 16).
    cfg.MODEL.PWLU.NUM_INTERVALS = 16
    # "channel": one unit (N + 5 parameters) per channel; "layer": one unit per activation layer.
    cfg.MODEL.PWLU.GRANULARITY = "channel"
    # Phase I running statistics: stat <- MOMENTUM * stat + (1 - MOMENTUM) * batch_stat.
    cfg.MODEL.PWLU.MOMENTUM = 0.9
    # Phase II bounds: running_mean -/+ BOUND_STD * running_std (paper: 3).
    cfg.MODEL.PWLU.BOUND_STD = 3.0
    # Bounds at construction: about -INIT_BOUND and +INIT_BOUND (the unit is exactly ReLU).
    cfg.MODEL.PWLU.INIT_BOUND = 3.0
    # Smallest bound width a realignment produces (dead channels, degenerate statistics).
    cfg.MODEL.PWLU.MIN_WIDTH = 0.01
    # Phase I length in iterations: statistics are collected on iterations [0, STATISTICS_ITERS)
    # while units compute ReLU, and the realignment runs after iteration STATISTICS_ITERS - 1.
    # 0 disables Phase I: units train from their initial ReLU shape on [-INIT_BOUND, INIT_BOUND].
    cfg.MODEL.PWLU.STATISTICS_ITERS = 1000
    # "paper": bounds exactly mean -/+ BOUND_STD * std, ReLU interpolated on the new grid;
    # "function_preserving": same width, grid shifted (< 1 interval) so 0 stays a breakpoint
    # and the network computes exactly the same function across the realignment.
    cfg.MODEL.PWLU.REALIGN_MODE = "paper"
    # The units' initial shape: what they compute in Phase I and are reset to (interpolated on
    # the realigned grid) in Phase II. "relu" is the paper's; "swish" starts every unit from
    # x * sigmoid(x) instead. "function_preserving" needs "relu".
    cfg.MODEL.PWLU.INIT_SHAPE = "relu"
    # Weight decay of PWLU parameters (bounds, heights, slopes); the paper gives no rule.
    cfg.MODEL.PWLU.WEIGHT_DECAY = 0.0
    # Learning rate of PWLU parameters = SOLVER.BASE_LR * LR_FACTOR. 0 freezes the units at the
    # shape the realignment gives them (the comparison's frozen ablation,
    # configs/Shapes/mask_rcnn_R_18_FPN_pwlu_frozen.yaml).
    cfg.MODEL.PWLU.LR_FACTOR = 1.0
    # Every DYNAMICS_PERIOD iterations, write gradient and update sizes of the PWLU parameters
    # and of the conv weights beside them to OUTPUT_DIR/pwlu_dynamics.json and TensorBoard
    # (PWLUDynamicsHook; tabulated by tools/pwlu_dynamics.py); 0: off.
    cfg.MODEL.PWLU.DYNAMICS_PERIOD = 0


def _fail(key: str, value, requirement: str) -> None:
    raise ValueError(f"MODEL.PWLU.{key} = {value!r} is invalid: {requirement}")


def validate_pwlu_config(cfg: CN) -> None:
    """Reject invalid ``MODEL.PWLU`` values with a message naming the key.

    Raises:
        KeyError: ``add_pwlu_config`` was not called on ``cfg``.
        ValueError: a value is out of range or of the wrong type.
    """
    if "PWLU" not in cfg.MODEL or "ACTIVATION" not in cfg.MODEL:
        raise KeyError("cfg has no MODEL.PWLU: call pwlu_det.add_pwlu_config(cfg) first")
    if cfg.MODEL.ACTIVATION.NAME not in ACTIVATION_LAYERS:
        raise ValueError(
            f"MODEL.ACTIVATION.NAME = {cfg.MODEL.ACTIVATION.NAME!r} is invalid: "
            f"one of {tuple(ACTIVATION_LAYERS)}"
        )
    if cfg.MODEL.ACTIVATION.SCOPE not in SCOPES:
        raise ValueError(
            f"MODEL.ACTIVATION.SCOPE = {cfg.MODEL.ACTIVATION.SCOPE!r} is invalid: one of {SCOPES}"
        )
    if not isinstance(cfg.MODEL.ACTIVATION.LEARN_IN_FROZEN_STAGES, bool):
        raise ValueError(
            "MODEL.ACTIVATION.LEARN_IN_FROZEN_STAGES = "
            f"{cfg.MODEL.ACTIVATION.LEARN_IN_FROZEN_STAGES!r} is invalid: True or False"
        )
    c = cfg.MODEL.PWLU
    if not isinstance(c.NUM_INTERVALS, int) or c.NUM_INTERVALS < 1:
        _fail("NUM_INTERVALS", c.NUM_INTERVALS, "an integer >= 1")
    if c.GRANULARITY not in GRANULARITIES:
        _fail("GRANULARITY", c.GRANULARITY, f"one of {GRANULARITIES}")
    if not 0.0 <= c.MOMENTUM < 1.0:
        _fail("MOMENTUM", c.MOMENTUM, "in [0, 1)")
    for key in ("BOUND_STD", "INIT_BOUND", "MIN_WIDTH"):
        if not c[key] > 0:
            _fail(key, c[key], "> 0")
    if not isinstance(c.STATISTICS_ITERS, int) or c.STATISTICS_ITERS < 0:
        _fail("STATISTICS_ITERS", c.STATISTICS_ITERS, "an integer >= 0")
    if c.REALIGN_MODE not in REALIGN_MODES:
        _fail("REALIGN_MODE", c.REALIGN_MODE, f"one of {REALIGN_MODES}")
    if c.INIT_SHAPE not in INIT_SHAPES:
        _fail("INIT_SHAPE", c.INIT_SHAPE, f"one of {tuple(INIT_SHAPES)}")
    if c.REALIGN_MODE == "function_preserving" and c.INIT_SHAPE != "relu":
        _fail(
            "INIT_SHAPE",
            c.INIT_SHAPE,
            "'relu' with REALIGN_MODE 'function_preserving' (only ReLU is kept exactly)",
        )
    if not c.WEIGHT_DECAY >= 0:
        _fail("WEIGHT_DECAY", c.WEIGHT_DECAY, ">= 0")
    if not isinstance(c.DYNAMICS_PERIOD, int) or c.DYNAMICS_PERIOD < 0:
        _fail("DYNAMICS_PERIOD", c.DYNAMICS_PERIOD, "an integer >= 0")
    if not c.LR_FACTOR >= 0:
        _fail("LR_FACTOR", c.LR_FACTOR, ">= 0")


def default_pwlu_config() -> CN:
    """Detectron2's defaults plus the pwlu_det keys (``add_pwlu_config``)."""
    cfg = get_cfg()
    add_pwlu_config(cfg)
    return cfg


def load_pwlu_config(config_file: str, opts: list | None = None) -> CN:
    """Detectron2's defaults plus the pwlu_det keys, merged with ``config_file`` and ``opts``
    (``KEY VALUE ...`` overrides), then validated.

    Errors in the file or the overrides are usage errors of the tools
    (:mod:`pwlu_det.utils.user_errors`).

    Raises:
        AssertionError: the file does not exist, an override key does not exist, or the
            overrides are not pairs (yacs).
        KeyError: a key of the file does not exist.
        ValueError: a value of the wrong type, or an invalid ``MODEL.PWLU`` /
            ``MODEL.ACTIVATION`` value.
        yaml.YAMLError: the file is not valid YAML.
    """
    cfg = default_pwlu_config()
    with user_errors(AssertionError, KeyError, ValueError, yaml.YAMLError, status=USAGE):
        cfg.merge_from_file(str(config_file))
        cfg.merge_from_list(list(opts or []))
        validate_pwlu_config(cfg)
    return cfg
