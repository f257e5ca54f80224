"""Datasets: the embedded synthetic data and its registration with Detectron2."""

from .catalog import DatasetNotRegisteredError, check_dataset_files, register_shapes_datasets
from .shapes import (
    SHAPE_CLASSES,
    SHAPES_SPLITS,
    ensure_shapes_dataset,
    generate_shapes_split,
    render_shapes_image,
)
from .synthetic import make_synthetic_batch

__all__ = [
    "SHAPES_SPLITS",
    "SHAPE_CLASSES",
    "DatasetNotRegisteredError",
    "check_dataset_files",
    "ensure_shapes_dataset",
    "generate_shapes_split",
    "make_synthetic_batch",
    "register_shapes_datasets",
    "render_shapes_image",
]
