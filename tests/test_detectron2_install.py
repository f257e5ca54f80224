"""Detectron2, as set up by dev/setup_env.py, trains and infers on CPU."""

import math

import pytest
import torch
from detectron2 import model_zoo
from detectron2.config import get_cfg
from detectron2.modeling import build_model
from detectron2.structures import Instances
from detectron2.utils.events import EventStorage

from pwlu_det.data import make_synthetic_batch

CONFIGS = {
    "mask_rcnn": "COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_1x.yaml",
    "retinanet": "COCO-Detection/retinanet_R_50_FPN_1x.yaml",
}


def zoo_config(config_path: str, num_classes: int = 3, min_size: int = 128):
    """A CPU, no-weights config from Detectron2's bundled config, sized for small inputs."""
    cfg = get_cfg()
    cfg.merge_from_file(model_zoo.get_config_file(config_path))
    cfg.MODEL.DEVICE = "cpu"
    cfg.MODEL.WEIGHTS = ""
    # Without pre-trained weights FrozenBN normalises nothing and activations overflow.
    cfg.MODEL.RESNETS.NORM = "GN"
    cfg.MODEL.ROI_HEADS.NUM_CLASSES = num_classes
    cfg.MODEL.RETINANET.NUM_CLASSES = num_classes
    cfg.INPUT.MIN_SIZE_TRAIN = (min_size,)
    cfg.INPUT.MIN_SIZE_TEST = min_size
    cfg.MODEL.RPN.POST_NMS_TOPK_TRAIN = 200
    cfg.MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE = 64
    return cfg


EXPECTED_LOSSES = {
    "mask_rcnn": {"loss_rpn_cls", "loss_rpn_loc", "loss_cls", "loss_box_reg", "loss_mask"},
    "retinanet": {"loss_cls", "loss_box_reg"},
}


@pytest.mark.parametrize("arch", sorted(CONFIGS))
def test_one_training_step_and_inference(arch):
    cfg = zoo_config(CONFIGS[arch], num_classes=3)
    cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST = 0.0
    cfg.MODEL.RETINANET.SCORE_THRESH_TEST = 0.0
    model = build_model(cfg)
    batch = make_synthetic_batch(num_images=2, num_classes=3, seed=1)
    assert all(len(x["instances"]) > 0 and x["instances"].has("gt_masks") for x in batch)

    model.train()
    with EventStorage(0):
        losses = model(batch)
    assert set(losses) == EXPECTED_LOSSES[arch]
    assert all(math.isfinite(v.item()) for v in losses.values()), losses
    sum(losses.values()).backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad and p.grad is not None]
    assert len(grads) > 100
    assert all(torch.isfinite(g).all() for g in grads)
    assert sum(g.abs().sum().item() for g in grads) > 0

    model.eval()
    with torch.no_grad():
        outputs = model(batch)
    assert len(outputs) == 2
    for output, inputs in zip(outputs, batch, strict=True):
        instances = output["instances"]
        assert isinstance(instances, Instances)
        assert instances.image_size == (inputs["height"], inputs["width"])
        assert len(instances) > 0
        assert torch.isfinite(instances.pred_boxes.tensor).all()
        assert ((instances.scores >= 0) & (instances.scores <= 1)).all()
        if arch == "mask_rcnn":
            assert instances.pred_masks.shape[1:] == (inputs["height"], inputs["width"])


def test_model_zoo_configs_are_installed():
    for path in CONFIGS.values():
        cfg_file = model_zoo.get_config_file(path)
        assert cfg_file.endswith(path)


def test_modules_that_use_the_cpp_extension_import():
    # They import detectron2._C: built from a source tree, absent from the patched v0.6 install.
    import detectron2.evaluation.fast_eval_api  # noqa: F401
    import detectron2.export
    import detectron2.layers.deform_conv  # noqa: F401

    assert hasattr(detectron2.export, "TracingAdapter")
