"""Export to TorchScript and ONNX, with the exported model checked against PyTorch."""

from .export import (
    EXPORT_FORMATS,
    ExportMismatchError,
    ExportResult,
    check_export_request,
    export_model,
    load_model_for_export,
)

__all__ = [
    "EXPORT_FORMATS",
    "ExportMismatchError",
    "ExportResult",
    "check_export_request",
    "export_model",
    "load_model_for_export",
]
