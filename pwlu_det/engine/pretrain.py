"""ImageNet-style pretraining of a detector's ResNet on the embedded classification dataset.

The classifier is the ResNet that a detection config builds (``MODEL.RESNETS``, pixel mean/std
and input format of that config) with trainable BatchNorm, ReLU, a global average pool and a
linear layer, as ImageNet backbones are trained. It trains on
:mod:`pwlu_det.data.classification` with Detectron2's ``SimpleTrainer`` and hooks (progress
with an ETA, periodic checkpoints with the optimizer and schedule), then writes its backbone as
a Detectron2 ``.pkl`` (:func:`pwlu_det.checkpoint.save_d2_pkl`, the form of
``tools/convert_torchvision_to_d2.py``) that ``MODEL.WEIGHTS`` loads into the detector's
backbone (BatchNorm becomes FrozenBN there).

Runs are deterministic on one machine: the model's initialisation comes from the seed, and the
batch of iteration ``t`` (its images and augmentation) is a function of the seed and ``t`` only,
so a run resumed from its checkpoint computes the same bits as an uninterrupted one.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from detectron2.config import CfgNode
from detectron2.engine import SimpleTrainer, hooks
from detectron2.layers import ShapeSpec
from detectron2.modeling.backbone.resnet import build_resnet_backbone
from detectron2.solver import LRMultiplier, WarmupParamScheduler, get_default_optimizer_params
from detectron2.utils.events import CommonMetricPrinter, JSONWriter
from fvcore.common.param_scheduler import CosineParamScheduler
from torch import nn

from pwlu_det.checkpoint import AtomicDetectionCheckpointer, save_d2_pkl
from pwlu_det.config import load_pwlu_config
from pwlu_det.data.classification import (
    CLASSIFICATION_CLASSES,
    CLASSIFICATION_SPLITS,
    ClassificationData,
    ensure_classification_split,
)
from pwlu_det.utils.file_io import atomic_write
from pwlu_det.utils.machine import machine_info
from pwlu_det.utils.user_errors import UserError

__all__ = [
    "DEFAULT_OUTPUT_DIR",
    "DEFAULT_WEIGHTS",
    "OPTIONS_FILE",
    "RESULT_FILE",
    "ClassificationBatches",
    "ClassifierPretrainer",
    "PretrainOptions",
    "ResNetClassifier",
    "backbone_weights",
    "evaluate_classifier",
    "pretrain_backbone",
]

logger = logging.getLogger(__name__)

DEFAULT_OUTPUT_DIR = "output/pretrain_backbone"
#: Where the default run writes the backbone; the ``configs/ShapesPretrained`` configs load it.
DEFAULT_WEIGHTS = f"{DEFAULT_OUTPUT_DIR}/R-18.pkl"
#: The options of the run in its output folder (a resumed run must have the same).
OPTIONS_FILE = "pretrain_options.json"
#: Held-out accuracy, times and machine of the finished run, in its output folder.
RESULT_FILE = "pretrain_result.json"


@dataclass(frozen=True)
class PretrainOptions:
    """What a pretraining run does; the defaults are the documented run.

    They fit 15 minutes on 2 cores: 1500 iterations of 64 images of 64 px (4 epochs of 24,000
    images) took 18.2 CPU-minutes on an AVX-512 Xeon (a shared, busy 2-core machine), 0.7 of
    them generating the data: an estimated 11 minutes on 2 idle cores. Held-out accuracy:
    15.9% top-1, 55.5% top-5 (80 classes).

    Attributes:
        config_file: the detection config whose ResNet (and input normalisation) is pretrained.
        output_dir: checkpoints, log, metrics, the backbone ``.pkl`` and the result.
        data_root: cache folder of the dataset (None: its default).
        image_size: side of the square training and held-out images.
        train_per_class, val_per_class: images per class of the training / held-out split.
        max_iter: training iterations.
        batch_size: images per iteration.
        base_lr: SGD learning rate after the warm-up (cosine decay to 0 at ``max_iter``).
        warmup_iters: linear warm-up from 0.1% of ``base_lr``.
        weight_decay: for conv and linear weights (none on BatchNorm).
        label_smoothing: of the cross-entropy loss.
        checkpoint_period: iterations between checkpoints (and the last one).
        seed: initialisation and data order.
    """

    config_file: str = "configs/ShapesPretrained/mask_rcnn_R_18_FPN_relu.yaml"
    output_dir: str = DEFAULT_OUTPUT_DIR
    data_root: str | None = None
    image_size: int = 64
    train_per_class: int = CLASSIFICATION_SPLITS["train"].per_class
    val_per_class: int = CLASSIFICATION_SPLITS["val"].per_class
    max_iter: int = 1500
    batch_size: int = 64
    base_lr: float = 0.05
    warmup_iters: int = 100
    weight_decay: float = 5e-5
    label_smoothing: float = 0.1
    checkpoint_period: int = 250
    seed: int = 0

    def weights_path(self, depth: int) -> Path:
        """The backbone ``.pkl`` of a ResNet of ``depth``: ``<output_dir>/R-<depth>.pkl``."""
        return Path(self.output_dir) / f"R-{depth}.pkl"


class ResNetClassifier(nn.Module):
    """A Detectron2 ResNet with global average pooling and a linear classifier.

    ``forward`` takes ``{"images": uint8 (N, H, W, 3) BGR, "labels": (N,)}``; in training mode it
    returns ``{"loss_cls": ...}``, in eval mode the logits (N, K).
    """

    def __init__(self, cfg: CfgNode, num_classes: int, label_smoothing: float = 0.0):
        super().__init__()
        cfg = cfg.clone()
        cfg.defrost()
        cfg.MODEL.RESNETS.NORM = "BN"  # trainable BatchNorm, as ImageNet backbones
        cfg.MODEL.BACKBONE.FREEZE_AT = 0
        cfg.MODEL.RESNETS.OUT_FEATURES = ["res5"]
        # channels-last: the images come as (N, H, W, 3), and oneDNN's CPU convolutions are
        # faster in that layout
        self.backbone = build_resnet_backbone(cfg, ShapeSpec(channels=3)).to(
            memory_format=torch.channels_last
        )
        self.head = nn.Linear(self.backbone.output_shape()["res5"].channels, num_classes)
        self.rgb = cfg.INPUT.FORMAT == "RGB"  # the images are BGR
        mean, std = (
            torch.tensor(v).view(1, 3, 1, 1) for v in (cfg.MODEL.PIXEL_MEAN, cfg.MODEL.PIXEL_STD)
        )
        self.register_buffer("pixel_mean", mean, persistent=False)
        self.register_buffer("pixel_std", std, persistent=False)
        self.label_smoothing = label_smoothing

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor] | torch.Tensor:
        x = batch["images"].permute(0, 3, 1, 2).float()  # (N, 3, H, W), channels-last
        if self.rgb:
            x = x.flip(1)
        x = (x - self.pixel_mean) / self.pixel_std
        logits = self.head(self.backbone(x)["res5"].mean(dim=(2, 3)))
        if not self.training:
            return logits
        loss = F.cross_entropy(logits, batch["labels"], label_smoothing=self.label_smoothing)
        return {"loss_cls": loss}


class ClassificationBatches:
    """Endless training batches; the batch of iteration ``t`` depends only on the seed and ``t``.

    Each epoch visits the images in an order drawn from ``(seed, epoch)`` (a last partial batch
    is dropped); each image is flipped horizontally with probability 1/2 and shifted by up to
    ``image_size / 16`` pixels (reflect padding), drawn from ``(seed, t)``.

    Iteration starts at :attr:`start_iter`, read when the first batch is drawn (set it when
    resuming, before training starts).
    """

    def __init__(self, data: ClassificationData, batch_size: int, seed: int):
        if len(data.labels) < batch_size:
            raise ValueError(
                f"{len(data.labels)} training images, fewer than a batch ({batch_size})"
            )
        self.data = data
        self.batch_size = batch_size
        self.seed = seed
        self.start_iter = 0
        self._order: tuple[int, np.ndarray] | None = None

    def batch(self, iteration: int) -> dict[str, torch.Tensor]:
        """The batch of ``iteration``."""
        per_epoch = len(self.data.labels) // self.batch_size
        epoch, step = divmod(iteration, per_epoch)
        if self._order is None or self._order[0] != epoch:
            order = np.random.default_rng([self.seed, 0, epoch]).permutation(len(self.data.labels))
            self._order = (epoch, order)
        index = np.sort(self._order[1][step * self.batch_size : (step + 1) * self.batch_size])
        images = self.data.images[index]
        rng = np.random.default_rng([self.seed, 1, iteration])
        size = images.shape[1]
        pad = max(1, size // 16)
        padded = np.pad(images, ((0, 0), (pad, pad), (pad, pad), (0, 0)), mode="reflect")
        shifts = rng.integers(0, 2 * pad + 1, size=(len(index), 2))
        flips = rng.random(len(index)) < 0.5
        for i, (dy, dx) in enumerate(shifts):
            crop = padded[i, dy : dy + size, dx : dx + size]
            images[i] = crop[:, ::-1] if flips[i] else crop
        return {
            "images": torch.from_numpy(images),
            "labels": torch.from_numpy(self.data.labels[index]),
        }

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        iteration = self.start_iter  # read at the first batch, after a resume set it
        while True:
            yield self.batch(iteration)
            iteration += 1


class ClassifierPretrainer(SimpleTrainer):
    """Detectron2's ``SimpleTrainer`` for :class:`ResNetClassifier`, as ``DefaultTrainer`` is
    for detectors: build, :meth:`resume_or_load`, :meth:`train`.

    Hooks: iteration timer, the learning-rate schedule, checkpoints every
    ``checkpoint_period`` (model, optimizer and schedule; the last one kept besides the final
    one) and, every 20 iterations, losses, learning rate and ETA to the log and ``metrics.json``.
    """

    def __init__(self, options: PretrainOptions, cfg: CfgNode, train_data: ClassificationData):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(options.seed)
            model = ResNetClassifier(cfg, len(CLASSIFICATION_CLASSES), options.label_smoothing)
        params = get_default_optimizer_params(
            model, base_lr=options.base_lr, weight_decay=options.weight_decay, weight_decay_norm=0.0
        )
        optimizer = torch.optim.SGD(params, lr=options.base_lr, momentum=0.9)
        super().__init__(
            model, ClassificationBatches(train_data, options.batch_size, options.seed), optimizer
        )
        schedule = WarmupParamScheduler(
            CosineParamScheduler(1.0, 0.0),
            warmup_factor=0.001,
            warmup_length=options.warmup_iters / options.max_iter,
        )
        self.scheduler = LRMultiplier(optimizer, schedule, options.max_iter)
        os.makedirs(options.output_dir, exist_ok=True)
        self.checkpointer = AtomicDetectionCheckpointer(
            model, options.output_dir, optimizer=optimizer, scheduler=self.scheduler
        )
        self.start_iter = 0
        self.max_iter = options.max_iter
        self.register_hooks(
            [
                hooks.IterationTimer(),
                hooks.LRScheduler(),
                hooks.PeriodicCheckpointer(
                    self.checkpointer,
                    options.checkpoint_period,
                    max_iter=options.max_iter,
                    max_to_keep=1,
                ),
                hooks.PeriodicWriter(
                    [
                        CommonMetricPrinter(options.max_iter),
                        JSONWriter(os.path.join(options.output_dir, "metrics.json")),
                    ],
                    period=20,
                ),
            ]
        )

    def resume_or_load(self, resume: bool = True) -> None:
        """Continue from the last checkpoint in the output folder if ``resume`` and there is
        one; else start at iteration 0 (from the seeded initialisation)."""
        checkpoint = self.checkpointer.resume_or_load("", resume=resume)
        self.start_iter = checkpoint.get("iteration", -1) + 1
        self.data_loader.start_iter = self.start_iter

    def train(self) -> None:
        """Train from :attr:`start_iter` to :attr:`max_iter` (nothing if already there)."""
        if self.start_iter < self.max_iter:
            super().train(self.start_iter, self.max_iter)


@torch.no_grad()
def evaluate_classifier(
    model: ResNetClassifier, data: ClassificationData, batch_size: int = 256
) -> dict[str, float]:
    """Top-1 and top-5 accuracy (in %) of ``model`` on ``data``, in eval mode."""
    was_training = model.training
    model.eval()
    top1 = top5 = 0
    for start in range(0, len(data.labels), batch_size):
        images = torch.from_numpy(data.images[start : start + batch_size])
        labels = torch.from_numpy(data.labels[start : start + batch_size])
        best = model({"images": images}).topk(5, dim=1).indices
        top1 += int((best[:, 0] == labels).sum())
        top5 += int((best == labels[:, None]).any(dim=1).sum())
    model.train(was_training)
    count = len(data.labels)
    return {"top1": 100.0 * top1 / count, "top5": 100.0 * top5 / count}


def backbone_weights(model: ResNetClassifier) -> dict[str, np.ndarray]:
    """The backbone's state in Detectron2's ImageNet naming (``stem.conv1.weight``,
    ``res2.0.conv1.norm.running_var``, ...) as numpy arrays, BatchNorm counters dropped."""
    return {
        key: value.detach().cpu().contiguous().numpy()
        for key, value in model.backbone.state_dict().items()
        if not key.endswith(".num_batches_tracked")
    }


def _write_backbone(model: ResNetClassifier, path: Path) -> None:
    """:func:`save_d2_pkl` of the backbone, through a temporary file renamed into place."""
    partial = path.with_name(f".{path.stem}.partial.pkl")
    save_d2_pkl(backbone_weights(model), partial, author="pwlu_det pretrain_backbone")
    os.replace(partial, path)


def _check_options(options: PretrainOptions) -> None:
    """Record the options in the output folder, or refuse a run whose folder has others."""
    path = Path(options.output_dir) / OPTIONS_FILE
    recorded = dataclasses.asdict(options)
    if path.is_file():
        previous = json.loads(path.read_text())
        if previous != recorded:
            changed = sorted(k for k in recorded if previous.get(k) != recorded[k])
            raise UserError(
                f"{options.output_dir} holds a pretraining run with other options "
                f"({', '.join(changed)}); use another --output-dir, or delete it to start again"
            )
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    data = json.dumps(recorded, indent=2).encode()
    atomic_write(path, lambda f: f.write(data))


def pretrain_backbone(options: PretrainOptions, resume: bool = True) -> dict[str, Any]:
    """Generate (or load) the data, train or resume, evaluate, write the backbone and result.

    Args:
        options: the run.
        resume: continue from the output folder's last checkpoint if there is one.

    Returns:
        The result, also written to ``<output_dir>/pretrain_result.json``: held-out top-1 and
        top-5 accuracy, the ``weights`` path, the iterations and minutes of this invocation
        (wall and process CPU time) and the machine.

    Raises:
        UserError: the output folder holds a run with other options.
    """
    start, cpu_start = time.perf_counter(), time.process_time()
    cfg = load_pwlu_config(options.config_file)
    _check_options(options)
    splits = {
        name: dataclasses.replace(CLASSIFICATION_SPLITS[name], per_class=per_class)
        for name, per_class in (("train", options.train_per_class), ("val", options.val_per_class))
    }
    data = {
        name: ensure_classification_split(options.data_root, spec, options.image_size)
        for name, spec in splits.items()
    }
    trainer = ClassifierPretrainer(options, cfg, data["train"])
    trainer.resume_or_load(resume=resume)
    first_iter = trainer.start_iter
    trainer.train()

    accuracy = evaluate_classifier(trainer.model, data["val"])
    weights = options.weights_path(cfg.MODEL.RESNETS.DEPTH)
    _write_backbone(trainer.model, weights)
    result = {
        "heldout_top1": round(accuracy["top1"], 2),
        "heldout_top5": round(accuracy["top5"], 2),
        "heldout_images": len(data["val"].labels),
        "classes": len(CLASSIFICATION_CLASSES),
        "weights": str(weights),
        "iterations_run": options.max_iter - first_iter,
        "wall_minutes": round((time.perf_counter() - start) / 60, 2),
        "cpu_minutes": round((time.process_time() - cpu_start) / 60, 2),
        "machine": machine_info(),
    }
    encoded = json.dumps(result, indent=2).encode()
    atomic_write(Path(options.output_dir) / RESULT_FILE, lambda f: f.write(encoded))
    logger.info(
        "held-out accuracy (%d images, %d classes): top-1 %.2f%%, top-5 %.2f%%; backbone: %s",
        result["heldout_images"],
        result["classes"],
        result["heldout_top1"],
        result["heldout_top5"],
        weights,
    )
    return result
