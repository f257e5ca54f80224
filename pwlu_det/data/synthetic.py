"""Synthetic detection batches built in memory, for smoke runs and tests."""

from __future__ import annotations

import numpy as np
import torch
from detectron2.structures import Boxes, Instances, PolygonMasks

__all__ = ["make_synthetic_batch"]


def _polygon(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """A random convex quadrilateral or triangle, as a flat (x0, y0, x1, y1, ...) array."""
    size = rng.uniform(0.2, 0.5) * min(height, width)
    cx = rng.uniform(size / 2, width - size / 2)
    cy = rng.uniform(size / 2, height - size / 2)
    num_corners = int(rng.integers(3, 5))
    angles = np.sort(rng.uniform(0, 2 * np.pi, num_corners))
    xs = np.clip(cx + size / 2 * np.cos(angles), 0, width - 1)
    ys = np.clip(cy + size / 2 * np.sin(angles), 0, height - 1)
    return np.stack([xs, ys], axis=1).reshape(-1)


def _fill(image: np.ndarray, polygon: np.ndarray, color: np.ndarray) -> None:
    """Paint ``polygon`` (flat x/y array) into ``image`` (H, W, 3) in place."""
    import cv2

    points = np.round(polygon.reshape(-1, 2)).astype(np.int32)
    cv2.fillPoly(image, [points], color.tolist())


def make_synthetic_batch(
    num_images: int = 2,
    height: int = 128,
    width: int = 160,
    num_classes: int = 3,
    max_objects: int = 3,
    seed: int = 0,
) -> list[dict]:
    """Build a batch in Detectron2's model input format, with boxes and polygon masks.

    Args:
        num_images: images in the batch.
        height, width: image size in pixels.
        num_classes: classes are drawn from ``range(num_classes)``, each with its own colour.
        max_objects: each image gets 1 to ``max_objects`` filled polygons.
        seed: the batch is a deterministic function of all arguments.

    Returns:
        A list of dicts with ``"image"`` (uint8 tensor (3, H, W), BGR), ``"height"``,
        ``"width"`` and ``"instances"`` (``gt_boxes``, ``gt_classes``, ``gt_masks``).
    """
    if num_images < 1 or num_classes < 1 or max_objects < 1:
        raise ValueError(
            f"num_images, num_classes and max_objects must be >= 1, got "
            f"{num_images}, {num_classes}, {max_objects}"
        )
    rng = np.random.default_rng(seed)
    colors = rng.integers(40, 256, size=(num_classes, 3))
    batch = []
    for _ in range(num_images):
        image = np.zeros((height, width, 3), dtype=np.uint8)
        polygons, classes = [], []
        for _ in range(int(rng.integers(1, max_objects + 1))):
            polygon = _polygon(rng, height, width)
            category = int(rng.integers(num_classes))
            _fill(image, polygon, colors[category])
            polygons.append([polygon])
            classes.append(category)
        instances = Instances((height, width))
        masks = PolygonMasks(polygons)
        instances.gt_masks = masks
        instances.gt_boxes = Boxes(masks.get_bounding_boxes().tensor)
        instances.gt_classes = torch.tensor(classes, dtype=torch.int64)
        batch.append(
            {
                "image": torch.from_numpy(image).permute(2, 0, 1).contiguous(),
                "height": height,
                "width": width,
                "instances": instances,
            }
        )
    return batch
