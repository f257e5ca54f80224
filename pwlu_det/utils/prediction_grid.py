"""A PNG grid of a detector's predictions (boxes, classes, masks) on images of a dataset."""

from __future__ import annotations

import math
import os
from pathlib import Path

import cv2
import numpy as np
import torch
from detectron2.config import CfgNode
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data import transforms as T
from detectron2.data.detection_utils import read_image
from detectron2.utils.visualizer import Visualizer
from torch import nn

from pwlu_det.utils.file_io import atomic_write

__all__ = ["draw_prediction_grid"]


def _predict(cfg: CfgNode, model: nn.Module, image_bgr: np.ndarray):
    """The model's instances on one BGR image, in its own pixel coordinates (CPU)."""
    height, width = image_bgr.shape[:2]
    resize = T.ResizeShortestEdge([cfg.INPUT.MIN_SIZE_TEST] * 2, cfg.INPUT.MAX_SIZE_TEST)
    image = resize.get_transform(image_bgr).apply_image(image_bgr)
    if cfg.INPUT.FORMAT == "RGB":
        image = image[:, :, ::-1]
    tensor = torch.as_tensor(np.ascontiguousarray(image.transpose(2, 0, 1)).astype("float32"))
    with torch.no_grad():
        outputs = model([{"image": tensor, "height": height, "width": width}])
    return outputs[0]["instances"].to("cpu")


def draw_prediction_grid(
    cfg: CfgNode,
    model: nn.Module,
    dataset_name: str,
    output_png: str | os.PathLike,
    num_images: int = 8,
    columns: int = 4,
    score_threshold: float = 0.5,
) -> Path:
    """Draw the predictions on the first ``num_images`` images of ``dataset_name`` as a grid.

    Each tile is Detectron2's ``Visualizer.draw_instance_predictions`` (boxes, class names and
    scores, masks) of the detections scoring at least ``score_threshold``.

    Args:
        cfg: the model's config (test-time resize and input format).
        model: a trained detector; it is put in eval mode.
        dataset_name: a registered dataset with ``thing_classes`` metadata.
        output_png: the PNG to write (atomically).
        num_images: tiles; fewer if the dataset is smaller.
        columns: tiles per row.
        score_threshold: lowest score drawn.

    Returns:
        The path of the PNG.

    Raises:
        ValueError: ``num_images`` or ``columns`` below 1, or an empty dataset.
    """
    if num_images < 1 or columns < 1:
        raise ValueError(f"num_images and columns must be >= 1, got {num_images}, {columns}")
    dicts = DatasetCatalog.get(dataset_name)[:num_images]
    if not dicts:
        raise ValueError(f"dataset {dataset_name!r} has no images")
    metadata = MetadataCatalog.get(dataset_name)
    model.eval()
    tiles = []
    for record in dicts:
        image = read_image(record["file_name"], format="BGR")
        instances = _predict(cfg, model, image)
        instances = instances[instances.scores >= score_threshold]
        drawn = Visualizer(image[:, :, ::-1], metadata).draw_instance_predictions(instances)
        tiles.append(drawn.get_image())  # RGB
    height = max(t.shape[0] for t in tiles)
    width = max(t.shape[1] for t in tiles)
    columns = min(columns, len(tiles))
    rows = math.ceil(len(tiles) / columns)
    grid = np.full((rows * height, columns * width, 3), 255, dtype=np.uint8)
    for index, tile in enumerate(tiles):
        top, left = (index // columns) * height, (index % columns) * width
        grid[top : top + tile.shape[0], left : left + tile.shape[1]] = tile
    ok, encoded = cv2.imencode(".png", grid[:, :, ::-1])
    if not ok:  # pragma: no cover - OpenCV always encodes a uint8 image
        raise RuntimeError("OpenCV could not encode the prediction grid")
    output = Path(output_png)
    output.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(os.fspath(output), lambda f: f.write(encoded.tobytes()))
    return output
