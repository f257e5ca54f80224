"""The LazyConfig python configs: they load and build on CPU, hold PWLU units where the yaml
models do (RegNet included), differ from their Swish/ReLU twins only in the activation, take
the ``pwlu`` options validated, and train a step."""

import math
from pathlib import Path

import pytest
import torch
from detectron2.config import LazyCall as L
from detectron2.config import LazyConfig, instantiate
from detectron2.modeling.backbone.regnet import SE, RegNet, ResBottleneckBlock, SimpleStem
from detectron2.utils.events import EventStorage
from torch import nn

from pwlu_det.config import load_pwlu_config
from pwlu_det.data import make_synthetic_batch
from pwlu_det.engine import PWLUTrainer
from pwlu_det.layers import PWLU
from pwlu_det.lazy import pwlu_cfg, pwlu_options, with_activation
from pwlu_det.modeling import ActivationFactory
from pwlu_det.modeling.regnet import ActRegNet

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
PY_CONFIGS = sorted(CONFIGS.rglob("*.py"))
ACTIVATIONS = {"pwlu": PWLU, "swish": nn.SiLU, "relu": nn.ReLU}


def count(module: nn.Module, kind: type) -> int:
    return sum(isinstance(m, kind) for m in module.modules())


def load(rel: str, *overrides: str):
    cfg = LazyConfig.load(str(CONFIGS / rel))
    return LazyConfig.apply_overrides(cfg, list(overrides))


def build(rel: str, *overrides: str) -> nn.Module:
    return instantiate(load(rel, *overrides).model)


@pytest.mark.parametrize("path", PY_CONFIGS, ids=lambda p: str(p.relative_to(CONFIGS)))
def test_every_config_loads_and_builds_with_its_activation(path):
    cfg = LazyConfig.load(str(path))
    pwlu_cfg(cfg.pwlu)  # valid options
    model = instantiate(cfg.model)
    activation = path.stem.rsplit("_", 1)[1]
    expected = ACTIVATIONS[activation]
    assert count(model, expected) > 0
    others = [kind for kind in ACTIVATIONS.values() if kind is not expected]
    # Only the RegNetY SE modules keep Detectron2's ReLU (pwlu_det/modeling/regnet.py).
    relu_in_se = sum(count(m, nn.ReLU) for m in model.modules() if isinstance(m, SE))
    assert sum(count(model, kind) for kind in others if kind is not nn.ReLU) == 0
    if activation != "relu":
        assert count(model, nn.ReLU) == relu_in_se


def _structure(model: nn.Module) -> list[tuple[str, str]]:
    """(name, type) of every module, activations all named alike."""
    kinds = tuple(ACTIVATIONS.values())
    return [
        (name, "act" if isinstance(m, kinds) else type(m).__name__)
        for name, m in model.named_modules()
    ]


@pytest.mark.parametrize(
    "stem",
    [
        "COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_1x",
        "COCO-Detection/retinanet_R_50_FPN_1x",
        "new_baselines/mask_rcnn_regnety_4gf_dds_FPN_100ep_LSJ",
    ],
)
def test_twins_differ_only_in_the_activation(stem):
    configs = {act: load(f"{stem}_{act}.py") for act in ACTIVATIONS}
    structures = {act: _structure(instantiate(cfg.model)) for act, cfg in configs.items()}
    assert structures["pwlu"] == structures["swish"] == structures["relu"]
    names = {act: cfg.pwlu.ACTIVATION.NAME for act, cfg in configs.items()}
    assert names == {"pwlu": "PWLU", "swish": "Swish", "relu": "ReLU"}
    for act in ("swish", "relu"):
        configs[act].pwlu.ACTIVATION.NAME = "PWLU"
        for key in ("pwlu", "train", "lr_multiplier"):
            assert configs[act][key] == configs["pwlu"][key], key


def test_unit_counts_match_the_yaml_models():
    mask = build("COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_1x_pwlu.py")
    assert count(mask.backbone, PWLU) == 49
    assert count(mask.proposal_generator.rpn_head, PWLU) == 1
    assert count(mask.roi_heads.box_head, PWLU) == 2
    assert count(mask.roi_heads.mask_head, PWLU) == 5
    retina = build("COCO-Detection/retinanet_R_50_FPN_1x_pwlu.py")
    assert count(retina.backbone.bottom_up, PWLU) == 49
    assert count(retina.backbone.top_block, PWLU) == 1
    assert count(retina.head, PWLU) == 8
    lsj = build("new_baselines/mask_rcnn_R_50_FPN_100ep_LSJ_pwlu.py")
    # 2 RPN convs, 4conv1fc box head, 4 convs + deconv in the mask head
    assert [count(lsj.backbone, PWLU), count(lsj.proposal_generator, PWLU)] == [49, 2]
    assert [count(lsj.roi_heads.box_head, PWLU), count(lsj.roi_heads.mask_head, PWLU)] == [5, 5]


@pytest.mark.parametrize(
    ("variant", "blocks", "se"), [("x", [2, 5, 14, 2], 0), ("y", [2, 6, 12, 2], 22)]
)
def test_regnet_4gf_unit_counts_per_part(variant, blocks, se):
    model = build(f"new_baselines/mask_rcnn_regnet{variant}_4gf_dds_FPN_100ep_LSJ_pwlu.py")
    regnet = model.backbone.bottom_up
    per_part = {
        part: count(getattr(regnet, part), PWLU) for part in ("stem", "s1", "s2", "s3", "s4")
    }
    assert per_part == {"stem": 1, **{f"s{k}": 3 * n for k, n in enumerate(blocks, 1)}}
    assert count(model, PWLU) == 1 + 3 * sum(blocks) + 12  # heads: RPN 2, box 5, mask 5
    assert count(regnet, nn.ReLU) == se  # one ReLU per SE module, kept


@pytest.mark.parametrize(
    ("lazy", "yaml"),
    [
        ("Shapes/mask_rcnn_R_18_FPN_pwlu.py", "Shapes/mask_rcnn_R_18_FPN_pwlu.yaml"),
        (
            "COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_1x_pwlu.py",
            "COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_1x_pwlu.yaml",
        ),
    ],
)
def test_lazy_model_is_the_yaml_model(lazy, yaml):
    cfg = load(lazy)
    ours = instantiate(cfg.model)
    yacs = load_pwlu_config(str(CONFIGS / yaml), ["MODEL.DEVICE", "cpu", "MODEL.WEIGHTS", ""])
    theirs = PWLUTrainer.build_model(yacs)
    shapes = {k: tuple(v.shape) for k, v in ours.state_dict().items()}
    assert shapes == {k: tuple(v.shape) for k, v in theirs.state_dict().items()}
    assert pwlu_cfg(cfg.pwlu).MODEL.PWLU == yacs.MODEL.PWLU
    assert pwlu_cfg(cfg.pwlu).MODEL.ACTIVATION == yacs.MODEL.ACTIVATION
    trainable = [n for n, p in ours.named_parameters() if p.requires_grad]
    assert trainable == [n for n, p in theirs.named_parameters() if p.requires_grad]


def test_overrides_reach_every_unit_and_are_validated():
    model = build("Shapes/mask_rcnn_R_18_FPN_pwlu.py", "pwlu.PWLU.NUM_INTERVALS=8")
    units = [m for m in model.modules() if isinstance(m, PWLU)]
    assert units and all(m.num_intervals == 8 for m in units)
    layer = build("Shapes/mask_rcnn_R_18_FPN_pwlu.py", "pwlu.PWLU.GRANULARITY=layer")
    assert all(m.heights.dim() == 1 for m in layer.modules() if isinstance(m, PWLU))
    backbone_only = build("Shapes/mask_rcnn_R_18_FPN_pwlu.py", "pwlu.ACTIVATION.SCOPE=backbone")
    assert count(backbone_only.roi_heads, PWLU) == 0 and count(backbone_only.roi_heads, nn.ReLU)

    bad = load("Shapes/mask_rcnn_R_18_FPN_pwlu.py", "pwlu.PWLU.NUM_INTERVALS=0")
    with pytest.raises(ValueError, match="pwlu node: MODEL.PWLU.NUM_INTERVALS = 0"):
        pwlu_cfg(bad.pwlu)
    with pytest.raises(ValueError, match="NUM_INTERVALS"):
        instantiate(bad.model)
    unknown = load("Shapes/mask_rcnn_R_18_FPN_pwlu.py", "pwlu.PWLU.NUM_INTERVAL=8")
    with pytest.raises(ValueError, match="pwlu.PWLU.NUM_INTERVAL is not a pwlu_det option"):
        pwlu_cfg(unknown.pwlu)
    with pytest.raises(ValueError, match="'STATS_ITERS' is in neither"):
        pwlu_options(STATS_ITERS=10)
    assert pwlu_options(LR_FACTOR=10).PWLU.LR_FACTOR == 10.0


def test_with_activation_refuses_a_model_without_activation_places():
    with pytest.raises(ValueError, match="no activation was replaced"):
        with_activation(L(nn.Linear)(in_features=2, out_features=2))


def _regnet(se_ratio: float = 0.0, **kwargs) -> dict:
    """RegNetX-200MF (with ``se_ratio`` 0.25: RegNetY-200MF), 4 stages, small widths."""
    return dict(
        stem_class=SimpleStem,
        stem_width=32,
        block_class=ResBottleneckBlock,
        depth=13,
        w_a=36.44,
        w_0=24,
        w_m=2.49,
        group_width=8,
        se_ratio=se_ratio,
        norm="BN",
        out_features=["s1", "s2", "s3", "s4"],
        **kwargs,
    )


def test_regnet_units_are_channel_wise_at_every_activation():
    reference = RegNet(**_regnet(se_ratio=0.25))
    factory = ActivationFactory("PWLU", num_intervals=4)
    model = ActRegNet(**_regnet(se_ratio=0.25), activation=factory)
    blocks = [m for m in model.modules() if isinstance(m, ResBottleneckBlock)]
    per_part = {
        part: count(getattr(model, part), PWLU) for part in ("stem", "s1", "s2", "s3", "s4")
    }
    stage_blocks = [len(list(getattr(model, f"s{k}").children())) for k in range(1, 5)]
    assert per_part == {"stem": 1, **{f"s{k}": 3 * n for k, n in enumerate(stage_blocks, 1)}}
    assert sum(per_part.values()) == 1 + 3 * len(blocks)
    for block in blocks:  # each unit has one parameter set per channel of its input
        assert block.f.a_af.heights.shape[0] == block.f.a.out_channels
        assert block.f.b_af.heights.shape[0] == block.f.b.out_channels
        assert block.af.heights.shape[0] == block.f.c.out_channels
        assert isinstance(block.f.se.f_ex[1], nn.ReLU)  # SE keeps ReLU by default
    with_se = ActRegNet(**_regnet(se_ratio=0.25), activation=factory, se_activation=True)
    assert count(with_se, PWLU) == count(model, PWLU) + len(blocks)
    # The units start as exact ReLU, so the network computes what Detectron2's does.
    reference.load_state_dict(model.state_dict(), strict=False)
    reference.eval()
    model.eval()
    x = torch.randn(1, 3, 64, 64)
    for name, out in model(x).items():
        torch.testing.assert_close(out, reference(x)[name], rtol=1e-4, atol=1e-5)


def test_regnet_frozen_stages_get_frozen_units():
    factory = ActivationFactory("PWLU", num_intervals=4)
    model = ActRegNet(**_regnet(freeze_at=2), activation=factory)
    for part in ("stem", "s1"):
        units = [m for m in getattr(model, part).modules() if isinstance(m, PWLU)]
        assert units and not any(p.requires_grad for u in units for p in u.parameters())
    assert all(p.requires_grad for p in model.s2.parameters())
    model = ActRegNet(**_regnet(freeze_at=2), activation=factory, learn_in_frozen_stages=True)
    units = [m for m in model.stem.modules() if isinstance(m, PWLU)]
    assert units and all(p.requires_grad for u in units for p in u.parameters())
    assert not any(p.requires_grad for p in model.stem.conv.parameters())


def test_lazy_pwlu_options_let_units_in_frozen_stages_learn():
    rel = "COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_1x_pwlu.py"
    for learn in (False, True):
        cfg = load(rel)
        cfg.pwlu = pwlu_options(NAME="PWLU", LEARN_IN_FROZEN_STAGES=learn)
        stem = instantiate(cfg.model).backbone.bottom_up.stem
        assert stem.act.heights.requires_grad is learn
        assert not stem.conv1.weight.requires_grad


def _small(cfg, num_classes: int = 3):
    """No weights, BatchNorm instead of FrozenBN/SyncBN, 3 classes: trainable from scratch."""
    bottom_up = cfg.model.backbone.bottom_up
    if "stem" in bottom_up:  # ResNet
        bottom_up.stem.norm = bottom_up.stages.norm = "BN"
    else:  # RegNet
        bottom_up.norm = "BN"
    if "roi_heads" in cfg.model:
        cfg.model.roi_heads.num_classes = num_classes
        cfg.model.roi_heads.box_head.conv_norm = cfg.model.roi_heads.mask_head.conv_norm = "BN"
    else:
        cfg.model.num_classes = num_classes
    if cfg.model.backbone.get("norm"):
        cfg.model.backbone.norm = "BN"
    return cfg


@pytest.mark.parametrize(
    "rel",
    [
        "Shapes/mask_rcnn_R_18_FPN_pwlu.py",
        "COCO-Detection/retinanet_R_50_FPN_1x_pwlu.py",
        "new_baselines/mask_rcnn_regnety_4gf_dds_FPN_100ep_LSJ_pwlu.py",
    ],
)
def test_one_training_step(rel):
    torch.manual_seed(0)
    model = instantiate(_small(load(rel)).model)
    model.train()
    batch = make_synthetic_batch(num_images=2, num_classes=3, seed=2)
    with EventStorage(0):
        losses = model(batch)
    assert losses and all(math.isfinite(v.item()) for v in losses.values()), losses
    sum(losses.values()).backward()
    units = [m for m in model.modules() if isinstance(m, PWLU)]
    assert units and all(m.heights.grad is not None for m in units if m.heights.requires_grad)
    assert sum(m.heights.grad.abs().sum().item() for m in units if m.heights.grad is not None)
