"""pwlu_det: Piecewise Linear Units (PWLU, ICCV 2021) for Detectron2 detectors."""

__version__ = "0.1.0"

__all__ = ["__version__"]
