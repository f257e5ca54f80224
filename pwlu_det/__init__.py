"""pwlu_det: Piecewise Linear Units (PWLU, ICCV 2021) for Detectron2 detectors."""

import importlib
import importlib.util
import warnings

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


def _import_without_jit_script_warning(*names: str) -> None:
    """Import third-party modules that call ``torch.jit.script`` at import time without the
    deprecation warning torch gives for each call: two lines of start-up noise in every tool.

    Only that FutureWarning, and only during these imports, is filtered: fvcore's focal loss
    (``fvcore.nn``) and Detectron2's box regression (``detectron2.modeling``) script functions
    when imported. Later ``torch.jit.script`` calls (export by scripting) still warn.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore",
            message=r"`torch\.jit\.script` is deprecated",
            category=FutureWarning,
            module=r"torch\.jit\._script",
        )
        for name in names:
            importlib.import_module(name)


# The op and the module (pwlu_det.layers) need only torch and Triton, so GPU machines without
# Detectron2 can import them; the registrations and the config need Detectron2 itself.
if _detectron2_installed():
    _import_without_jit_script_warning("fvcore.nn", "detectron2.modeling")
    from . import modeling  # noqa: E402, F401  (registers the backbones, heads, meta-architectures)
    from .config import add_pwlu_config, validate_pwlu_config  # noqa: E402

    __all__ += ["add_pwlu_config", "validate_pwlu_config"]
