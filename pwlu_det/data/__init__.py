"""Datasets: the embedded synthetic data and its registration with Detectron2."""

from .synthetic import make_synthetic_batch

__all__ = ["make_synthetic_batch"]
