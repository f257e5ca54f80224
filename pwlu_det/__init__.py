"""pwlu_det: Piecewise Linear Units (PWLU, ICCV 2021) for Detectron2 detectors."""

import importlib.util

__version__ = "0.1.0"

from .layers import PWLU, pwlu  # noqa: E402

__all__ = ["PWLU", "__version__", "pwlu"]


def _detectron2_installed() -> bool:
    # Only the spec lookup is guarded: a finder that blocks the name raises ModuleNotFoundError
    # instead of returning None. Import errors in our own modules below still surface.
    try:
        return importlib.util.find_spec("detectron2") is not None
    except ModuleNotFoundError:
        return False


# The op and the module (pwlu_det.layers) need only torch and Triton, so GPU machines without
# Detectron2 can import them; the registrations and the config need Detectron2 itself.
if _detectron2_installed():
    from . import modeling  # noqa: E402, F401  (registers the backbones, heads, meta-architectures)
    from .config import add_pwlu_config, validate_pwlu_config  # noqa: E402

    __all__ += ["add_pwlu_config", "validate_pwlu_config"]
