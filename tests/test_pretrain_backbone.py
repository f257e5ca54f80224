"""The pretraining tool on a tiny budget (80 classes x 1 image of 32 px, 3 iterations of 8):
its checkpoint format, resume and determinism, its dataset, and the proxy configs that load
its backbone."""

from __future__ import annotations

import dataclasses
import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from detectron2.engine import HookBase
from detectron2.layers import FrozenBatchNorm2d
from detectron2.modeling import build_model
from test_pretrained_weights import pwlu_state
from tool_runs import ROOT, run_tool

from pwlu_det.checkpoint import AtomicDetectionCheckpointer, pwlu_state_keys
from pwlu_det.config import load_pwlu_config
from pwlu_det.data import SHAPE_CLASSES
from pwlu_det.data.classification import (
    CLASSIFICATION_CLASSES,
    CLASSIFICATION_SPLITS,
    OBJECT_SHAPES,
    PHOTOS,
    ClassificationSplit,
    classification_split_path,
    ensure_classification_split,
    render_classification_image,
)
from pwlu_det.engine import pretrain
from pwlu_det.engine.pretrain import (
    DEFAULT_WEIGHTS,
    ClassifierPretrainer,
    PretrainOptions,
    ResNetClassifier,
    pretrain_backbone,
)
from pwlu_det.layers import PWLU
from pwlu_det.utils.user_errors import UserError

PROXY = ROOT / "configs" / "ShapesPretrained"
#: The proxy configs (configs/ShapesPretrained/mask_rcnn_R_18_FPN_<name>.yaml) -> activation.
PROXY_CONFIGS = {"relu": "relu", "swish": "swish", "pwlu": "pwlu", "pwlu_old_coco": "pwlu"}
TINY = {
    "image_size": 32,
    "train_per_class": 1,
    "val_per_class": 1,
    "max_iter": 3,
    "batch_size": 8,
    "warmup_iters": 1,
    "checkpoint_period": 2,  # after iteration 1, and the final one
}
HEADS = ("backbone.fpn_", "backbone.top_block.", "proposal_generator.", "roi_heads.")


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("classification_data")


def tiny_options(output_dir: Path, data_root: Path, **changes) -> PretrainOptions:
    config = str(PROXY / "mask_rcnn_R_18_FPN_relu.yaml")
    options = dict(TINY, config_file=config, output_dir=str(output_dir), data_root=str(data_root))
    return PretrainOptions(**{**options, **changes})


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, data_root) -> dict:
    """One uninterrupted tiny run: its options and result."""
    options = tiny_options(tmp_path_factory.mktemp("tiny_run"), data_root)
    return {"options": options, "result": pretrain_backbone(options)}


def read_pkl(path: str | Path) -> dict:
    with open(path, "rb") as f:
        return pickle.load(f)


# --- the backbone file ----------------------------------------------------------------------------


def test_writes_a_detectron2_backbone_pkl(tiny_run):
    options, result = tiny_run["options"], tiny_run["result"]
    assert result["weights"] == str(Path(options.output_dir) / "R-18.pkl")
    data = read_pkl(result["weights"])
    # the form tools/convert_torchvision_to_d2.py writes: Detectron2 renames nothing
    assert data["__author__"] == "pwlu_det pretrain_backbone"
    assert data["matching_heuristics"] is True
    weights = data["model"]
    assert all(isinstance(v, np.ndarray) and v.dtype == np.float32 for v in weights.values())
    classifier = ResNetClassifier(load_pwlu_config(options.config_file), 80)
    expected = {k for k in classifier.backbone.state_dict() if "num_batches_tracked" not in k}
    assert set(weights) == expected  # Detectron2's ImageNet names, no classifier, no counters
    assert {"stem.conv1.weight", "res2.0.conv1.norm.running_var", "res3.0.shortcut.weight"} <= (
        set(weights)
    )
    assert weights["stem.conv1.weight"].shape == (64, 3, 7, 7)
    assert weights["res5.1.conv2.weight"].shape == (512, 512, 3, 3)

    recorded = json.loads((Path(options.output_dir) / pretrain.RESULT_FILE).read_text())
    assert recorded == json.loads(json.dumps(result))
    assert 0 <= result["heldout_top1"] <= result["heldout_top5"] <= 100
    assert result["heldout_images"] == 80 and result["classes"] == 80
    assert result["iterations_run"] == 3


def test_default_weights_are_where_the_proxy_configs_look():
    options = PretrainOptions()
    assert str(options.weights_path(18)) == DEFAULT_WEIGHTS
    for name in PROXY_CONFIGS:
        cfg = load_pwlu_config(str(PROXY / f"mask_rcnn_R_18_FPN_{name}.yaml"))
        assert cfg.MODEL.WEIGHTS == DEFAULT_WEIGHTS
    assert Path(ROOT / options.config_file).is_file()


# --- determinism and resume -----------------------------------------------------------------------


def test_same_options_same_bits(tiny_run, tmp_path, data_root):
    again = pretrain_backbone(tiny_options(tmp_path / "again", data_root))
    first = Path(tiny_run["result"]["weights"]).read_bytes()
    assert Path(again["weights"]).read_bytes() == first
    assert again["heldout_top1"] == tiny_run["result"]["heldout_top1"]


def assert_same(a, b, where: str) -> None:
    """``a`` and ``b`` (nested dicts, lists, tensors) are equal, tensors bit for bit."""
    assert type(a) is type(b), where
    if isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for key in a:
            assert_same(a[key], b[key], f"{where}.{key}")
    elif isinstance(a, list | tuple):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            assert_same(x, y, f"{where}[{i}]")
    elif isinstance(a, torch.Tensor):
        assert torch.equal(a, b), where
    else:
        assert a == b, where


class Interrupt(HookBase):
    """Stops training with an error after iteration ``at`` (after its checkpoint)."""

    def __init__(self, at: int):
        self.at = at

    def after_step(self):
        if self.trainer.iter == self.at:
            raise RuntimeError("interrupted")


def test_resumed_run_equals_uninterrupted_run(tiny_run, tmp_path, data_root):
    options = tiny_options(tmp_path / "interrupted", data_root)
    cfg = load_pwlu_config(options.config_file)
    train = ensure_classification_split(
        data_root, dataclasses.replace(CLASSIFICATION_SPLITS["train"], per_class=1), 32
    )
    trainer = ClassifierPretrainer(options, cfg, train)
    trainer.register_hooks([Interrupt(at=1)])
    trainer.resume_or_load(resume=True)
    with pytest.raises(RuntimeError, match="interrupted"):
        trainer.train()
    assert (tmp_path / "interrupted" / "last_checkpoint").read_text() == "model_0000001.pth"

    resumed = pretrain_backbone(options)

    assert resumed["iterations_run"] == 1  # iteration 2 only
    first = Path(tiny_run["result"]["weights"]).read_bytes()
    assert Path(resumed["weights"]).read_bytes() == first
    final = torch.load(tmp_path / "interrupted" / "model_final.pth", weights_only=False)
    expected = torch.load(
        Path(tiny_run["options"].output_dir) / "model_final.pth", weights_only=False
    )
    for key in ("model", "optimizer", "scheduler", "iteration"):  # momentum and schedule too
        assert_same(final[key], expected[key], key)


def test_a_finished_run_is_not_trained_again(tiny_run):
    again = pretrain_backbone(tiny_run["options"])  # the same command once more
    assert again["iterations_run"] == 0
    assert Path(again["weights"]).read_bytes() == Path(tiny_run["result"]["weights"]).read_bytes()


def test_refuses_to_resume_with_other_options(tiny_run):
    options = dataclasses.replace(tiny_run["options"], max_iter=4)
    with pytest.raises(UserError, match=r"holds a pretraining run with other options \(max_iter\)"):
        pretrain_backbone(options)


def test_tool_shows_progress_and_reproduces_the_run(tiny_run, tmp_path, data_root):
    flags = ["--image-size", 32, "--train-per-class", 1, "--val-per-class", 1, "--iters", 3]
    flags += ["--batch-size", 8, "--warmup-iters", 1, "--checkpoint-period", 2]
    flags += ["--data-root", data_root, "--output-dir", tmp_path / "tool"]
    result = run_tool("pretrain_backbone.py", *flags)

    assert result.returncode == 0, result.stdout[-3000:]
    assert "eta: " in result.stdout and "iter: 2" in result.stdout
    assert "held-out accuracy: top-1 " in result.stdout
    assert f"backbone: {tmp_path / 'tool' / 'R-18.pkl'}" in result.stdout
    assert "generating" not in result.stdout  # the cached data
    tool_bits = (tmp_path / "tool" / "R-18.pkl").read_bytes()
    assert tool_bits == Path(tiny_run["result"]["weights"]).read_bytes()  # same bits
    assert (tmp_path / "tool" / "log.txt").is_file()


# --- the dataset ----------------------------------------------------------------------------------


def test_dataset_is_deterministic_balanced_and_cached(tmp_path, monkeypatch):
    spec = ClassificationSplit("train", per_class=2, seed=100)
    data = ensure_classification_split(tmp_path / "a", spec, 24)
    assert data.images.shape == (160, 24, 24, 3) and data.images.dtype == np.uint8
    assert np.array_equal(np.bincount(data.labels), np.full(80, 2))  # balanced
    assert np.array_equal(data.labels, np.arange(160) % 80)

    again = ensure_classification_split(tmp_path / "b", spec, 24)
    assert np.array_equal(again.images, data.images)
    path = classification_split_path(tmp_path / "a", "train", 24)
    assert path.read_bytes() == classification_split_path(tmp_path / "b", "train", 24).read_bytes()
    image, label = render_classification_image(100, "train", 83, 24)
    assert np.array_equal(image, data.images[83]) and label == 3

    def fail(*args):
        raise AssertionError("regenerated")

    monkeypatch.setattr("pwlu_det.data.classification.generate_classification_split", fail)
    cached = ensure_classification_split(tmp_path / "a", spec, 24)  # from the file
    assert np.array_equal(cached.images, data.images)
    with pytest.raises(AssertionError, match="regenerated"):  # other parameters, same file
        ensure_classification_split(tmp_path / "a", dataclasses.replace(spec, seed=7), 24)


def test_dataset_splits_differ_and_images_vary():
    train = [render_classification_image(100, "train", i, 32)[0] for i in range(80, 90)]
    val = [render_classification_image(101, "val", i, 32)[0] for i in range(80, 90)]
    assert not any(np.array_equal(a, b) for a in train for b in val)
    assert len({image.tobytes() for image in train}) == len(train)


def test_dataset_is_distinct_from_the_detection_data():
    assert len(CLASSIFICATION_CLASSES) == 80 == len(set(CLASSIFICATION_CLASSES))
    assert not set(OBJECT_SHAPES) & set(SHAPE_CLASSES)  # no circle, square, triangle, star
    assert CLASSIFICATION_SPLITS["train"].seed not in (0, 1, 2)  # shapes_* seeds
    # the photographs are inside the scikit-image wheel (nothing is downloaded)
    import skimage

    photo_dir = Path(skimage.__file__).parent / "data"
    assert all((photo_dir / name).is_file() for name in PHOTOS)


# --- the proxy configs ----------------------------------------------------------------------------


@pytest.mark.parametrize("name", PROXY_CONFIGS)
def test_proxy_config_loads_the_backbone_with_only_heads_missing(tiny_run, name):
    activation = PROXY_CONFIGS[name]
    weights = tiny_run["result"]["weights"]
    config = str(PROXY / f"mask_rcnn_R_18_FPN_{name}.yaml")
    cfg = load_pwlu_config(config, ["MODEL.WEIGHTS", weights])
    assert cfg.MODEL.RESNETS.NORM == "FrozenBN" and cfg.MODEL.BACKBONE.FREEZE_AT == 2
    assert cfg.MODEL.ACTIVATION.NAME.lower() == activation
    model = build_model(cfg).eval()
    units_before = pwlu_state(model)
    AtomicDetectionCheckpointer(model).resume_or_load(cfg.MODEL.WEIGHTS, resume=False)

    file_weights = read_pkl(weights)["model"]
    state = model.state_dict()
    loaded = {"backbone.bottom_up." + key: value for key, value in file_weights.items()}
    assert not set(loaded) - set(state)  # nothing unexpected
    counters = {
        f"{name}.num_batches_tracked"
        for name, m in model.named_modules()
        if isinstance(m, FrozenBatchNorm2d)
    }
    missing = set(state) - set(loaded) - pwlu_state_keys(state) - counters
    assert missing and all(key.startswith(HEADS) for key in missing), sorted(missing)[:5]
    for key, value in loaded.items():
        assert torch.equal(state[key], torch.from_numpy(value)), key
    assert all(torch.equal(v, units_before[k]) for k, v in pwlu_state(model).items())
    if activation == "pwlu":
        units = [m for m in model.backbone.bottom_up.modules() if isinstance(m, PWLU)]
        frozen = [u for u in units if not any(p.requires_grad for p in u.parameters())]
        # the stem's and res2's stay ReLU unless the config lets them learn
        learn = cfg.MODEL.ACTIVATION.LEARN_IN_FROZEN_STAGES
        assert len(units) == 17 and len(frozen) == (0 if learn else 5)


@pytest.mark.parametrize("name", PROXY_CONFIGS)
def test_proxy_backbone_computes_the_pretrained_classifier_features(tiny_run, name):
    activation = PROXY_CONFIGS[name]
    options = tiny_run["options"]
    cfg = load_pwlu_config(str(PROXY / f"mask_rcnn_R_18_FPN_{name}.yaml"))
    cfg.merge_from_list(["MODEL.WEIGHTS", tiny_run["result"]["weights"]])
    detector = build_model(cfg).eval()
    AtomicDetectionCheckpointer(detector).load(cfg.MODEL.WEIGHTS)
    classifier = ResNetClassifier(load_pwlu_config(options.config_file), 80).eval()
    file_weights = read_pkl(tiny_run["result"]["weights"])["model"]
    classifier.backbone.load_state_dict(
        {k: torch.from_numpy(v) for k, v in file_weights.items()}, strict=False
    )

    x = torch.randn(2, 3, 64, 64) * 50
    with torch.no_grad():
        expected = classifier.backbone(x)["res5"]
        got = detector.backbone.bottom_up(x)["res5"]
    close = torch.allclose(got, expected, rtol=1e-4, atol=1e-4 * expected.abs().max().item())
    # A PWLU with the ReLU start computes exactly the weights' ReLU; the Swish start does not.
    starts_as_relu = activation == "relu" or cfg.MODEL.PWLU.INIT_SHAPE == "relu"
    assert close == (activation != "swish" and starts_as_relu)
