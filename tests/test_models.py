"""PWLU / Swish / ReLU detectors: configs, activation placement, training steps, freezing."""

from pathlib import Path

import pytest
import torch
from detectron2.modeling import build_model
from detectron2.utils.events import EventStorage
from torch import nn

from pwlu_det.config import load_pwlu_config
from pwlu_det.data import make_synthetic_batch
from pwlu_det.layers import ACTIVATION_LAYERS, PWLU
from pwlu_det.lazy import pwlu_options

CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"
ALL_CONFIGS = sorted(p for p in CONFIG_DIR.rglob("*.yaml") if not p.name.startswith("Base-"))
MASK_RCNN = CONFIG_DIR / "COCO-InstanceSegmentation" / "mask_rcnn_R_50_FPN_1x_pwlu.yaml"
RETINANET = CONFIG_DIR / "COCO-Detection" / "retinanet_R_50_FPN_1x_pwlu.yaml"
ACTIVATION_TYPES = dict(ACTIVATION_LAYERS)  # PWLU, Swish (= SiLU), ReLU and the learned ones


def load_cfg(path, *opts):
    return load_pwlu_config(path, ["MODEL.DEVICE", "cpu", *opts])


def count(module: nn.Module, kind: type) -> int:
    return sum(isinstance(m, kind) for m in module.modules())


@pytest.mark.parametrize("path", ALL_CONFIGS, ids=lambda p: str(p.relative_to(CONFIG_DIR)))
def test_every_config_parses_and_builds(path):
    cfg = load_cfg(path)
    model = build_model(cfg)
    expected = ACTIVATION_TYPES[cfg.MODEL.ACTIVATION.NAME]
    assert count(model, expected) > 0
    others = [t for t in set(ACTIVATION_TYPES.values()) if t is not expected]
    assert all(count(model, t) == 0 for t in others), "scope 'all': one activation everywhere"
    if "1x" in path.name:  # Detectron2's 1x recipes
        assert cfg.SOLVER.MAX_ITER == 90000 and cfg.SOLVER.IMS_PER_BATCH == 16
        assert (0.02 if "mask_rcnn" in path.name else 0.01) == cfg.SOLVER.BASE_LR


def test_mask_rcnn_activation_counts():
    model = build_model(load_cfg(MASK_RCNN))
    assert count(model.backbone, PWLU) == 49
    assert count(model.proposal_generator.rpn_head, PWLU) == 1
    assert count(model.roi_heads.box_head, PWLU) == 2
    assert count(model.roi_heads.mask_head, PWLU) == 5
    assert count(model, PWLU) == 57


def test_retinanet_activation_counts():
    model = build_model(load_cfg(RETINANET))
    assert count(model.backbone.bottom_up, PWLU) == 49
    assert isinstance(model.backbone.top_block.act, PWLU)
    assert count(model.head, PWLU) == 8
    assert count(model, PWLU) == 58


def test_backbone_scope_keeps_relu_in_the_heads():
    model = build_model(load_cfg(MASK_RCNN, "MODEL.ACTIVATION.SCOPE", "backbone"))
    assert count(model.backbone, PWLU) == 49 and count(model, PWLU) == 49
    assert count(model.roi_heads.mask_head, nn.ReLU) == 5
    assert count(model.proposal_generator.rpn_head, nn.ReLU) == 1


def _structure(model: nn.Module) -> list[tuple[str, str]]:
    """(name, type) of every non-activation module."""
    kinds = tuple(ACTIVATION_TYPES.values())
    return [(n, type(m).__name__) for n, m in model.named_modules() if not isinstance(m, kinds)]


@pytest.mark.parametrize("config", [MASK_RCNN, RETINANET], ids=["mask_rcnn", "retinanet"])
def test_baselines_differ_only_in_the_activation(config):
    models = {}
    for act in ("pwlu", "swish", "relu"):
        path = config.with_name(config.name.replace("_pwlu", f"_{act}"))
        models[act] = build_model(load_cfg(path))
    structures = {act: _structure(m) for act, m in models.items()}
    assert structures["pwlu"] == structures["swish"] == structures["relu"]
    units = tuple(n + "." for n, m in models["pwlu"].named_modules() if isinstance(m, PWLU))
    pwlu_keys = {k for k in models["pwlu"].state_dict() if not k.startswith(units)}
    assert pwlu_keys == set(models["relu"].state_dict()) == set(models["swish"].state_dict())


def test_frozen_stages_keep_exact_relu():
    # FREEZE_AT = 2: stem and res2, with their units frozen at the ReLU start
    frozen_relu = (
        "MODEL.ACTIVATION.LEARN_IN_FROZEN_STAGES",
        False,
        "MODEL.PWLU.INIT_SHAPE",
        "relu",
    )
    model = build_model(load_cfg(MASK_RCNN, *frozen_relu))
    bottom_up = model.backbone.bottom_up
    frozen = [m for m in bottom_up.modules() if isinstance(m, PWLU) and not m.heights.requires_grad]
    assert len(frozen) == 1 + 3 * 3
    assert all(m in list(bottom_up.stem.modules()) + list(bottom_up.res2.modules()) for m in frozen)
    assert all(
        p.requires_grad
        for m in bottom_up.res3.modules()
        if isinstance(m, PWLU)
        for p in m.parameters()
    )
    x = torch.randn(2, 64, 16, 16)
    assert torch.equal(bottom_up.stem.act(x), x.relu())


def test_units_in_frozen_stages_learn_when_asked():
    cfg = load_cfg(MASK_RCNN, "MODEL.ACTIVATION.LEARN_IN_FROZEN_STAGES", True)
    bottom_up = build_model(cfg).backbone.bottom_up
    frozen_stages = [bottom_up.stem, bottom_up.res2]
    units = [m for part in frozen_stages for m in part.modules() if isinstance(m, PWLU)]
    assert len(units) == 1 + 3 * 3
    assert all(p.requires_grad for m in units for p in m.parameters())
    # Their convs and norms stay frozen; the gradient reaches the stem's unit through them.
    others = [
        p
        for part in frozen_stages
        for name, p in part.named_parameters()
        if not any(name.startswith(n + ".") for n, m in part.named_modules() if isinstance(m, PWLU))
    ]
    assert others and not any(p.requires_grad for p in others)
    bottom_up(torch.randn(1, 3, 64, 64))["res3"].sum().backward()
    assert bottom_up.stem.act.heights.grad.abs().sum() > 0


def test_learn_in_frozen_stages_must_be_a_bool():
    with pytest.raises(ValueError, match="MODEL.ACTIVATION.LEARN_IN_FROZEN_STAGES"):
        load_cfg(MASK_RCNN, "MODEL.ACTIVATION.LEARN_IN_FROZEN_STAGES", "yes")
    with pytest.raises(ValueError, match="LEARN_IN_FROZEN_STAGES = 'yes' is invalid"):
        pwlu_options(LEARN_IN_FROZEN_STAGES="yes")  # LazyConfig: no yacs type check


SMALL = [
    "MODEL.RESNETS.DEPTH",
    18,
    "MODEL.RESNETS.RES2_OUT_CHANNELS",
    64,
    "MODEL.RESNETS.NORM",
    "GN",
    "MODEL.FPN.OUT_CHANNELS",
    64,
    "MODEL.WEIGHTS",
    "",
    "MODEL.BACKBONE.FREEZE_AT",
    0,
    "MODEL.ROI_HEADS.NUM_CLASSES",
    3,
    "MODEL.RETINANET.NUM_CLASSES",
    3,
    "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE",
    64,
    "MODEL.RPN.POST_NMS_TOPK_TRAIN",
    200,
    "INPUT.MIN_SIZE_TEST",
    128,
]


@pytest.mark.parametrize("activation", ["PWLU", "Swish", "ReLU"])
@pytest.mark.parametrize("config", [MASK_RCNN, RETINANET], ids=["mask_rcnn", "retinanet"])
def test_one_training_step(config, activation):
    torch.manual_seed(0)
    cfg = load_cfg(config, *SMALL, "MODEL.ACTIVATION.NAME", activation)
    model = build_model(cfg)
    model.train()
    batch = make_synthetic_batch(num_images=2, num_classes=3, seed=2)
    with EventStorage(0):
        losses = model(batch)
    assert losses and all(torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    if activation == "PWLU":
        units = [m for m in model.modules() if isinstance(m, PWLU)]
        assert all(m.heights.grad is not None for m in units)
        assert sum(m.heights.grad.abs().sum().item() for m in units) > 0
    model.eval()
    with torch.no_grad():
        outputs = model(batch)
    assert len(outputs) == 2 and all("instances" in o for o in outputs)


@pytest.mark.parametrize(
    ("ours", "detectron2_base", "opts"),
    [
        (RETINANET, "Base-RetinaNet.yaml", ["MODEL.RETINANET.SCORE_THRESH_TEST", 0.0]),
        (MASK_RCNN, "Base-RCNN-FPN.yaml", ["MODEL.MASK_ON", True]),
    ],
    ids=["retinanet", "mask_rcnn"],
)
def test_relu_models_compute_what_detectron2_computes(ours, detectron2_base, opts):
    # Same weights in Detectron2's own model: every feature map and detection is identical
    # (this caught an in-place ReLU on P6, which RetinaNet also returns as a feature map).
    relu = ours.with_name(ours.name.replace("_pwlu", "_relu"))
    model = build_model(load_cfg(relu, *SMALL, *opts)).eval()
    reference = build_model(load_cfg(CONFIG_DIR / detectron2_base, *SMALL, *opts)).eval()
    reference.load_state_dict(model.state_dict())
    image = make_synthetic_batch(1, 160, 192, num_classes=3, seed=4)[0]["image"]
    with torch.no_grad():
        features = model.backbone(model.preprocess_image([{"image": image}]).tensor)
        expected_features = reference.backbone(
            reference.preprocess_image([{"image": image}]).tensor
        )
        assert features.keys() == expected_features.keys()
        for name in features:
            assert torch.equal(features[name], expected_features[name]), name
        got = model([{"image": image}])[0]["instances"]
        expected = reference([{"image": image}])[0]["instances"]
    assert len(expected) > 0
    assert torch.equal(got.pred_boxes.tensor, expected.pred_boxes.tensor)
    assert torch.equal(got.scores, expected.scores)
    if got.has("pred_masks"):
        assert torch.equal(got.pred_masks, expected.pred_masks)
