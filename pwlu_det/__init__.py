"""pwlu_det: Piecewise Linear Units (PWLU, ICCV 2021) for Detectron2 detectors."""

__version__ = "0.1.0"

from . import modeling  # noqa: E402, F401  (registers the backbones, heads, meta-architectures)
from .config import add_pwlu_config, validate_pwlu_config  # noqa: E402
from .layers import PWLU, pwlu  # noqa: E402

__all__ = ["PWLU", "__version__", "add_pwlu_config", "pwlu", "validate_pwlu_config"]
