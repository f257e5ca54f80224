"""ReLU-pretrained backbones load exactly into PWLU detectors; misfit checkpoints raise."""

import argparse
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.config import get_cfg
from detectron2.layers import FrozenBatchNorm2d
from detectron2.modeling import build_model
from tool_runs import run_tool
from torch import nn

from pwlu_det import add_pwlu_config, validate_pwlu_config
from pwlu_det.checkpoint import (
    TORCHVISION_CONFIG,
    AtomicDetectionCheckpointer,
    convert_torchvision_resnet,
    save_d2_pkl,
    torchvision_to_d2_key,
)
from pwlu_det.engine import cli
from pwlu_det.export import load_model_for_export
from pwlu_det.layers import PWLU, STATE_NAMES, Phase
from pwlu_det.layers.pwlu_module import SKIP_COUNTER_NAMES

CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "COCO-InstanceSegmentation"
FEATURES = ("res2", "res3", "res4", "res5")
R18 = ["MODEL.RESNETS.DEPTH", 18, "MODEL.RESNETS.RES2_OUT_CHANNELS", 64]
TORCHVISION = {18: torchvision.models.resnet18, 50: torchvision.models.resnet50}


#: The PWLU units' ReLU start: these tests load ReLU weights into units that compute exactly ReLU
#: (the COCO config itself starts them as Swish).
RELU_START = ["MODEL.PWLU.INIT_SHAPE", "relu"]


def mask_rcnn(activation: str, *opts) -> nn.Module:
    """The COCO R-50-FPN Mask R-CNN recipe (FrozenBN, FREEZE_AT 2), no weights, eval mode; a
    PWLU one with the ReLU start."""
    cfg = get_cfg()
    add_pwlu_config(cfg)
    cfg.merge_from_file(str(CONFIGS / f"mask_rcnn_R_50_FPN_1x_{activation}.yaml"))
    start = RELU_START if activation == "pwlu" else []
    cfg.merge_from_list(["MODEL.DEVICE", "cpu", "MODEL.WEIGHTS", "", *start, *opts])
    validate_pwlu_config(cfg)
    assert cfg.MODEL.RESNETS.NORM == "FrozenBN"
    return build_model(cfg).eval()


def randomize_norms(module: nn.Module) -> None:
    """Non-trivial affine parameters and running statistics in every (frozen) BatchNorm."""
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, nn.BatchNorm2d | FrozenBatchNorm2d):
                m.weight.uniform_(0.5, 1.5)
                m.bias.normal_(0.0, 0.2)
                m.running_mean.normal_(0.0, 0.5)
                m.running_var.uniform_(0.5, 2.0)


def torchvision_resnet(depth: int) -> nn.Module:
    model = TORCHVISION[depth](weights=None)
    randomize_norms(model)
    return model.eval()


@torch.no_grad()
def torchvision_features(model: nn.Module, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """layer1..layer4 outputs of a torchvision ResNet, named as Detectron2's res2..res5."""
    y = model.maxpool(model.relu(model.bn1(model.conv1(x))))
    out = {}
    layers = (model.layer1, model.layer2, model.layer3, model.layer4)
    for name, layer in zip(FEATURES, layers, strict=True):
        y = out[name] = layer(y)
    return out


@torch.no_grad()
def backbone_features(model: nn.Module, x: torch.Tensor) -> dict[str, torch.Tensor]:
    return model.backbone.bottom_up(x)


def max_abs_diffs(a: dict, b: dict) -> dict[str, float]:
    return {k: (a[k] - b[k]).abs().max().item() for k in FEATURES}


def pwlu_state(model: nn.Module) -> dict[str, torch.Tensor]:
    units = tuple(n + "." for n, m in model.named_modules() if isinstance(m, PWLU))
    return {k: v.clone() for k, v in model.state_dict().items() if k.startswith(units)}


def write_pkl(path: Path, weights: dict) -> str:
    with open(path, "wb") as f:
        pickle.dump({"model": weights, "__author__": "test", "matching_heuristics": True}, f)
    return str(path)


# --- Detectron2 ImageNet .pkl ---------------------------------------------------------------------


@pytest.mark.parametrize("checkpointer", [DetectionCheckpointer, AtomicDetectionCheckpointer])
def test_relu_backbone_pkl_loads_exactly_into_pwlu_model(tmp_path, checkpointer):
    relu = mask_rcnn("relu", *R18)
    randomize_norms(relu.backbone.bottom_up)
    weights = {k: v.numpy() for k, v in relu.backbone.bottom_up.state_dict().items()}
    assert {"stem.conv1.weight", "res2.0.conv1.norm.running_var", "res3.0.shortcut.weight"} <= set(
        weights
    )  # Detectron2's ImageNet names: no "backbone.bottom_up." prefix
    path = write_pkl(tmp_path / "R-18.pkl", weights)

    torch.manual_seed(1)
    pwlu = mask_rcnn("pwlu", *R18)
    units_before = pwlu_state(pwlu)
    head_before = pwlu.roi_heads.box_predictor.cls_score.weight.clone()
    x = torch.randn(2, 3, 64, 96)
    expected = backbone_features(relu, x)
    assert all(d > 0.1 for d in max_abs_diffs(backbone_features(pwlu, x), expected).values())

    checkpointer(pwlu).resume_or_load(path, resume=False)

    got = backbone_features(pwlu, x)
    assert all(torch.equal(got[k], expected[k]) for k in FEATURES), max_abs_diffs(got, expected)
    state = pwlu_state(pwlu)  # 17 units in the R-18, 8 in the heads: untouched (exact ReLU)
    per_unit = len(STATE_NAMES) + len(SKIP_COUNTER_NAMES)
    assert len(state) == per_unit * (17 + 8)
    assert all(torch.equal(state[k], units_before[k]) for k in state)
    assert torch.equal(pwlu.roi_heads.box_predictor.cls_score.weight, head_before)


def caffe2_name(d2_key: str) -> str | None:
    """The name of ``d2_key`` in Detectron2's MSRA ImageNet .pkl (Caffe2: BN folded in s/b)."""
    module, field = d2_key.rsplit(".", 1)
    if field not in ("weight", "bias"):
        return None  # no running statistics
    norm = module.endswith(".norm")
    module = module.removesuffix(".norm")
    branch = {"conv1": "branch2a", "conv2": "branch2b", "conv3": "branch2c", "shortcut": "branch1"}
    if module == "stem.conv1":
        module = "res_conv1" if norm else "conv1"
    else:
        stage, block, conv = module.split(".")
        module = f"{stage}_{block}_{branch[conv]}"
    return f"{module}_bn_{'s' if field == 'weight' else 'b'}" if norm else f"{module}_{field[0]}"


def test_msra_caffe2_pkl_of_the_coco_configs_passes_the_strict_check(tmp_path):
    relu = mask_rcnn("relu")
    blobs = {caffe2_name(k): v.numpy() for k, v in relu.backbone.bottom_up.state_dict().items()}
    blobs.pop(None)
    assert {"conv1_w", "res_conv1_bn_s", "res2_0_branch1_bn_b", "res5_2_branch2c_w"} <= set(blobs)
    blobs.update(fc1000_w=np.ones((1000, 2048), np.float32), fc1000_b=np.ones(1000, np.float32))
    with open(tmp_path / "R-50.pkl", "wb") as f:
        pickle.dump(blobs, f)  # no "__author__": read as Caffe2 and renamed

    pwlu = mask_rcnn("pwlu")
    AtomicDetectionCheckpointer(pwlu).load(str(tmp_path / "R-50.pkl"))
    loaded, expected = pwlu.backbone.bottom_up.state_dict(), relu.backbone.bottom_up.state_dict()
    in_file = [k for k in expected if caffe2_name(k)]
    assert len(in_file) == len(blobs) - 2 and all(
        torch.equal(loaded[k], expected[k]) for k in in_file
    )


# --- torchvision ResNet -> Detectron2 -------------------------------------------------------------


@pytest.mark.parametrize("depth", [18, 50])
def test_torchvision_resnet_converts_exactly(tmp_path, depth):
    torchvision_model = torchvision_resnet(depth)
    weights = convert_torchvision_resnet(torchvision_model.state_dict())
    dropped = [
        k for k in torchvision_model.state_dict() if k.startswith("fc.") or "num_batches" in k
    ]
    assert len(weights) == len(torchvision_model.state_dict()) - len(dropped)
    save_d2_pkl(weights, tmp_path / f"R-{depth}.pkl")

    opts = (R18 if depth == 18 else []) + TORCHVISION_CONFIG  # the options the tool prints
    pwlu = mask_rcnn("pwlu", *opts)
    assert pwlu.input_format == "RGB"  # and torchvision's ImageNet normalisation, in 0-255 units
    assert torch.allclose(pwlu.pixel_std.flatten(), 255 * torch.tensor([0.229, 0.224, 0.225]))
    x = torch.randn(1, 3, 64, 96)  # one normalised tensor into both backbones
    expected = torchvision_features(torchvision_model, x)
    assert all(d > 0.1 for d in max_abs_diffs(backbone_features(pwlu, x), expected).values())

    AtomicDetectionCheckpointer(pwlu).resume_or_load(str(tmp_path / f"R-{depth}.pkl"))

    got = backbone_features(pwlu, x)
    assert all(torch.equal(got[k], expected[k]) for k in FEATURES), max_abs_diffs(got, expected)


def test_stride_in_1x1_matters_for_torchvision_r50(tmp_path):
    torchvision_model = torchvision_resnet(50)
    save_d2_pkl(convert_torchvision_resnet(torchvision_model.state_dict()), tmp_path / "R-50.pkl")
    pwlu = mask_rcnn("pwlu")  # Detectron2's default STRIDE_IN_1X1 True (MSRA weights)
    AtomicDetectionCheckpointer(pwlu).load(str(tmp_path / "R-50.pkl"))
    x = torch.randn(1, 3, 64, 64)
    diffs = max_abs_diffs(backbone_features(pwlu, x), torchvision_features(torchvision_model, x))
    assert diffs["res2"] == 0 and diffs["res3"] > 1e-3  # loads, but computes something else


def test_key_mapping():
    assert torchvision_to_d2_key("conv1.weight") == "stem.conv1.weight"
    assert torchvision_to_d2_key("bn1.running_var") == "stem.conv1.norm.running_var"
    assert torchvision_to_d2_key("layer4.2.bn3.bias") == "res5.2.conv3.norm.bias"
    assert torchvision_to_d2_key("layer2.0.downsample.0.weight") == "res3.0.shortcut.weight"
    assert torchvision_to_d2_key("layer2.0.downsample.1.weight") == "res3.0.shortcut.norm.weight"
    assert torchvision_to_d2_key("fc.weight") is None
    assert torchvision_to_d2_key("layer1.0.bn1.num_batches_tracked") is None
    for key in ("backbone.conv1.weight", "layer5.0.conv1.weight", "layer1.0.conv1.bias"):
        with pytest.raises(ValueError, match="not a key of a torchvision ResNet"):
            torchvision_to_d2_key(key)


def test_cli_writes_a_detectron2_pkl(tmp_path):
    torchvision_model = torchvision_resnet(18)
    torch.save({"state_dict": torchvision_model.state_dict()}, tmp_path / "r18.pth")
    result = run_tool("convert_torchvision_to_d2.py", tmp_path / "r18.pth", tmp_path / "r18.pkl")
    assert result.returncode == 0, result.stdout

    with open(tmp_path / "r18.pkl", "rb") as f:
        data = pickle.load(f)
    assert data["__author__"] == "torchvision" and data["matching_heuristics"] is True
    model = data["model"]
    assert all(isinstance(v, np.ndarray) for v in model.values())
    assert not any(k.startswith("fc") or "layer" in k for k in model)
    assert "res2.0.shortcut.weight" not in model and "res3.0.shortcut.weight" in model
    assert np.array_equal(model["stem.conv1.norm.running_var"], torchvision_model.bn1.running_var)
    assert 'MODEL.RESNETS.STRIDE_IN_1X1 "False"' in result.stdout


def test_save_d2_pkl_refuses_names_detectron2_would_misread(tmp_path):
    with pytest.raises(ValueError, match=".pkl"):
        save_d2_pkl({}, tmp_path / "weights.pth")
    with pytest.raises(ValueError, match="Caffe2"):
        save_d2_pkl({}, tmp_path / "weights.pkl", author="Caffe2")


# --- strict checks --------------------------------------------------------------------------------


def test_r50_weights_into_r18_model_raise_with_shapes(tmp_path):
    save_d2_pkl(
        convert_torchvision_resnet(torchvision_resnet(50).state_dict()), tmp_path / "R-50.pkl"
    )
    model = mask_rcnn("pwlu", *R18)
    stem_before = model.backbone.bottom_up.stem.conv1.weight.clone()  # same shape in R-50

    with pytest.raises(ValueError) as error:
        AtomicDetectionCheckpointer(model).load(str(tmp_path / "R-50.pkl"))
    message = str(error.value)
    assert "R-50.pkl does not fit the model" in message
    assert (
        "res2.0.conv1.weight: (64, 64, 1, 1) in the checkpoint, (64, 64, 3, 3) in the model "
        "(model: backbone.bottom_up.res2.0.conv1.weight)" in message
    )
    assert "none of the model's" not in message  # the stem matched: it is the right family
    assert torch.equal(model.backbone.bottom_up.stem.conv1.weight, stem_before)  # nothing loaded

    AtomicDetectionCheckpointer(model, strict=False).load(str(tmp_path / "R-50.pkl"))
    assert not torch.equal(model.backbone.bottom_up.stem.conv1.weight, stem_before)


@pytest.mark.parametrize("suffix", [".pkl", ".pth"])
def test_unrelated_checkpoint_raises_naming_missing_backbone_keys(tmp_path, suffix):
    path = tmp_path / f"other{suffix}"
    unrelated = {"classifier.weight": np.ones((10, 4), np.float32)}
    if suffix == ".pkl":
        write_pkl(path, unrelated)
    else:
        torch.save({"model": {k: torch.from_numpy(v) for k, v in unrelated.items()}}, path)
    model = mask_rcnn("pwlu", *R18)
    backbone = [k for k in model.state_dict() if k.startswith("backbone.")]
    expected_count = len([k for k in backbone if ".act" not in k])

    with pytest.raises(ValueError) as error:
        AtomicDetectionCheckpointer(model).load(str(path))
    message = str(error.value)
    assert f"none of the model's {expected_count} backbone parameters" in message
    assert "backbone.bottom_up.res2.0.conv1.weight" in message
    assert f"... and {expected_count - 10} more" in message
    assert "['classifier.weight']" in message
    assert "torchvision" not in message


def test_unconverted_torchvision_file_gets_a_hint(tmp_path):
    torch.save(torchvision_resnet(18).state_dict(), tmp_path / "resnet18.pth")
    with pytest.raises(ValueError, match="convert it with tools/convert_torchvision_to_d2.py"):
        AtomicDetectionCheckpointer(mask_rcnn("pwlu", *R18)).load(str(tmp_path / "resnet18.pth"))


def test_pwlu_checkpoint_round_trip_is_strict_but_accepted(tmp_path):
    model = mask_rcnn("pwlu", *R18)
    unit = model.backbone.bottom_up.res3[0].act1
    unit.start_statistics()
    unit.train()(torch.randn(2, unit.num_channels, 4, 4))
    unit.realign()
    AtomicDetectionCheckpointer(model, str(tmp_path)).save("model_final")

    restored = mask_rcnn("pwlu", *R18)
    AtomicDetectionCheckpointer(restored, str(tmp_path)).resume_or_load("", resume=True)
    restored_unit = restored.backbone.bottom_up.res3[0].act1
    assert restored_unit.phase == Phase.TRAINING
    assert torch.equal(restored_unit.left_bound, unit.left_bound)

    other = mask_rcnn("pwlu", *R18, "MODEL.PWLU.NUM_INTERVALS", 8)
    with pytest.raises(ValueError, match=r"heights: \(64, 17\) in the checkpoint, \(64, 9\) in"):
        AtomicDetectionCheckpointer(other).load(str(tmp_path / "model_final.pth"))


def test_eval_only_loads_strictly(tmp_path, monkeypatch):
    weights = write_pkl(tmp_path / "other.pkl", {"classifier.weight": np.ones(3, np.float32)})
    cfg = get_cfg()
    add_pwlu_config(cfg)
    cfg.merge_from_file(str(CONFIGS / "mask_rcnn_R_50_FPN_1x_pwlu.yaml"))
    cfg.merge_from_list(["MODEL.DEVICE", "cpu", "MODEL.WEIGHTS", weights, *R18])
    cfg.OUTPUT_DIR = str(tmp_path / "eval")
    cfg.DATASETS.TEST = ()  # no COCO files here
    monkeypatch.setattr(cli, "load_config", lambda args: cfg)
    monkeypatch.setattr(cli.PWLUTrainer, "test", classmethod(lambda *a: pytest.fail("evaluated")))

    with pytest.raises(ValueError, match="other.pkl does not fit the model"):
        cli.main(argparse.Namespace(eval_only=True, resume=False))
    assert not (tmp_path / "eval").exists()  # refused before anything was written


def test_export_and_eval_need_a_complete_checkpoint(tmp_path, monkeypatch):
    # A backbone-only file is fine to start training from, not to evaluate or export.
    model = mask_rcnn("pwlu", *R18)
    backbone = {k: v for k, v in model.state_dict().items() if k.startswith("backbone.")}
    torch.save({"model": backbone}, tmp_path / "backbone_only.pth")
    AtomicDetectionCheckpointer(mask_rcnn("pwlu", *R18)).load(str(tmp_path / "backbone_only.pth"))
    complete = AtomicDetectionCheckpointer(mask_rcnn("pwlu", *R18), complete=True)
    with pytest.raises(ValueError, match=r"lacks \d+ of the model's .*\n    proposal_generator"):
        complete.load(str(tmp_path / "backbone_only.pth"))
    weights = str(tmp_path / "backbone_only.pth")
    with pytest.raises(ValueError, match="would stay randomly initialised"):
        load_model_for_export(
            str(CONFIGS / "mask_rcnn_R_50_FPN_1x_pwlu.yaml"), ["MODEL.WEIGHTS", weights, *R18]
        )
    torch.save({"model": model.state_dict()}, tmp_path / "full.pth")
    AtomicDetectionCheckpointer(mask_rcnn("pwlu", *R18), complete=True).load(
        str(tmp_path / "full.pth")
    )


def test_evaluation_refuses_a_checkpoint_of_another_activation(tmp_path):
    # Training may start from ReLU weights (units start as ReLU); evaluation and export may not.
    relu = mask_rcnn("relu", *R18)
    torch.save({"model": relu.state_dict()}, tmp_path / "relu.pth")
    AtomicDetectionCheckpointer(mask_rcnn("pwlu", *R18)).load(str(tmp_path / "relu.pth"))
    complete = AtomicDetectionCheckpointer(mask_rcnn("pwlu", *R18), complete=True)
    with pytest.raises(ValueError, match=r"relu.pth has no PWLU units, and the model has 25 "):
        complete.load(str(tmp_path / "relu.pth"))
    backbone = {k: v for k, v in relu.state_dict().items() if k.startswith("backbone.")}
    torch.save({"model": backbone}, tmp_path / "relu_backbone.pth")
    with pytest.raises(ValueError, match=r"relu_backbone.pth lacks \d+ of the model's"):
        complete.load(str(tmp_path / "relu_backbone.pth"))  # incomplete, whatever activation

    torch.save({"model": mask_rcnn("pwlu", *R18).state_dict()}, tmp_path / "pwlu.pth")
    for model, refusal in (
        (relu, r"pwlu.pth is a PWLU checkpoint \(25 PWLU units, and the model none, e\.g\. "),
        (
            mask_rcnn("pwlu", *R18, "MODEL.ACTIVATION.SCOPE", "backbone"),
            r"\(8 PWLU unit\(s\) that the model does not have, e\.g\. proposal_generator\.",
        ),
    ):
        with pytest.raises(ValueError, match=refusal):
            AtomicDetectionCheckpointer(model, complete=True).load(str(tmp_path / "pwlu.pth"))
