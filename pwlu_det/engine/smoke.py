"""A short real training run of a Detectron2 model on a synthetic batch, on CPU.

This is what ``make demo`` runs until the PWLU detectors and the embedded dataset land: it
proves that Detectron2, as installed, trains and runs inference here. It reports measured
losses, never fixed numbers.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field

import torch
from detectron2 import model_zoo
from detectron2.config import CfgNode, get_cfg
from detectron2.modeling import build_model
from detectron2.utils.events import EventStorage

from pwlu_det.data.synthetic import make_synthetic_batch

__all__ = ["SmokeRunResult", "build_zoo_model", "run_smoke_training"]

logger = logging.getLogger(__name__)


def zoo_config(config_path: str, num_classes: int = 3, min_size: int = 128) -> CfgNode:
    """A CPU, no-weights config from Detectron2's bundled ``config_path``, sized for small inputs.

    Args:
        config_path: relative to Detectron2's ``configs/``, e.g.
            ``"COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_1x.yaml"``.
        num_classes: number of foreground classes of the heads.
        min_size: shortest image side used at train and test time.
    """
    cfg = get_cfg()
    cfg.merge_from_file(model_zoo.get_config_file(config_path))
    cfg.MODEL.DEVICE = "cpu"
    cfg.MODEL.WEIGHTS = ""
    # Without pre-trained weights FrozenBN normalises nothing and activations overflow; GN
    # keeps a randomly initialised ResNet finite in training and inference alike.
    cfg.MODEL.RESNETS.NORM = "GN"
    cfg.MODEL.ROI_HEADS.NUM_CLASSES = num_classes
    cfg.MODEL.RETINANET.NUM_CLASSES = num_classes
    cfg.INPUT.MIN_SIZE_TRAIN = (min_size,)
    cfg.INPUT.MIN_SIZE_TEST = min_size
    cfg.MODEL.RPN.POST_NMS_TOPK_TRAIN = 200
    cfg.MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE = 64
    return cfg


def build_zoo_model(config_path: str, num_classes: int = 3, seed: int = 0) -> torch.nn.Module:
    """Build a randomly initialised CPU model from a bundled Detectron2 config (no download)."""
    torch.manual_seed(seed)
    return build_model(zoo_config(config_path, num_classes))


@dataclass
class SmokeRunResult:
    """What a smoke run measured."""

    config_path: str
    losses: list[float] = field(default_factory=list)
    seconds_per_iter: float = 0.0
    num_predictions: list[int] = field(default_factory=list)


def run_smoke_training(
    config_path: str, iterations: int = 3, lr: float = 0.002, seed: int = 0
) -> SmokeRunResult:
    """Train a bundled Detectron2 model for a few SGD steps on one synthetic batch, then infer.

    Args:
        config_path: a Detectron2 model-zoo config (see :func:`zoo_config`).
        iterations: SGD steps on the same batch of two 128x160 images.
        lr: learning rate of the plain SGD optimizer.
        seed: seeds the weights and the batch.

    Returns:
        The total loss of every step, seconds per step, and the instance count per image.

    Raises:
        FloatingPointError: a loss became NaN or infinite.
    """
    model = build_zoo_model(config_path, seed=seed)
    batch = make_synthetic_batch(num_images=2, seed=seed)
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    result = SmokeRunResult(config_path)
    model.train()
    start = time.perf_counter()
    with EventStorage(0):
        for _ in range(iterations):
            loss = sum(model(batch).values())
            if not math.isfinite(loss.item()):
                raise FloatingPointError(f"{config_path}: loss became {loss.item()}")
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            result.losses.append(loss.item())
    result.seconds_per_iter = (time.perf_counter() - start) / iterations
    model.eval()
    with torch.no_grad():
        outputs = model(batch)
    result.num_predictions = [len(output["instances"]) for output in outputs]
    logger.info("smoke run of %s: losses %s", config_path, result.losses)
    return result
