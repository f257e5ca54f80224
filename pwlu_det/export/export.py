"""Export detectors to TorchScript (tracing or scripting) and ONNX, and check the result.

Follows Detectron2's deploy conventions: ``TracingAdapter`` flattens the model's inputs and
outputs for tracing and ONNX (TorchScript-based exporter, ``dynamo=False``); scripting goes
through ``scripting_with_instances``. What is exported is a converted copy of the model,
:func:`pwlu_det.layers.to_inference_form`: every PWLU replaced by its inference form (standard
ops only), or, for traced TorchScript on request (``pwlu_op="fused"``), by the fused C++ op with
frozen parameters: faster, but the file then needs ``import pwlu_det`` before
``torch.jit.load`` and runs on CPU only. The model passed in is not changed.

Every export is validated: the exported model runs on the sample image and its outputs (boxes,
scores, classes, mask probabilities) are compared with those of the converted copy in PyTorch
(the inference form matches the fused op to about 1e-6 per unit: compared with the original,
those rounding differences alone flip NMS and top-k ties in untrained models). A different
number of detections, an unmatched detection away from the score cut-off or a difference above
the tolerance raises :class:`ExportMismatchError`.
"""

from __future__ import annotations

import contextlib
import logging
import os
from dataclasses import dataclass, field

import torch
from detectron2.export import TracingAdapter, scripting_with_instances
from detectron2.modeling import GeneralizedRCNN
from detectron2.modeling.postprocessing import detector_postprocess
from detectron2.structures import Boxes, Instances
from torch import nn

from pwlu_det.layers import to_inference_form
from pwlu_det.layers.deploy import DEPLOY_OPS
from pwlu_det.utils.file_io import atomic_write
from pwlu_det.utils.user_errors import USAGE, user_errors

from .empty_rois import empty_safe_mask_head

__all__ = [
    "EXPORT_FORMATS",
    "ExportMismatchError",
    "ExportResult",
    "check_export_request",
    "export_model",
]

logger = logging.getLogger(__name__)

EXPORT_FORMATS = ("torchscript", "onnx")
EXPORT_METHODS = ("tracing", "scripting")
#: How PWLUs appear in the exported graph: standard ops, or the fused pwlu_det op.
PWLU_OPS = DEPLOY_OPS
#: Largest accepted difference between exported and PyTorch outputs, by output kind.
TOLERANCES = {"float": 1e-3, "boxes": 1e-2}  # boxes in pixels


class ExportMismatchError(RuntimeError):
    """The exported model's outputs differ from the PyTorch model's."""


@dataclass
class ExportResult:
    """Where an export went and how closely it matches the PyTorch model."""

    path: str
    format: str
    method: str
    num_detections: int
    max_abs_diff: dict[str, float] = field(default_factory=dict)


def _rcnn_inference(model, inputs):
    """GeneralizedRCNN without post-processing (its output sizes are those of the input)."""
    return [{"instances": model.inference(inputs, do_postprocess=False)[0]}]


def _instance_fields(model: nn.Module) -> dict[str, type]:
    fields = {"pred_boxes": Boxes, "scores": torch.Tensor, "pred_classes": torch.Tensor}
    if isinstance(model, GeneralizedRCNN):
        fields.update(proposal_boxes=Boxes, objectness_logits=torch.Tensor)
        if model.roi_heads.mask_on:
            fields["pred_masks"] = torch.Tensor
    return fields


def _flatten_instances(instances) -> dict[str, torch.Tensor]:
    out = {
        "boxes": instances.pred_boxes.tensor,
        "scores": instances.scores,
        "classes": instances.pred_classes,
    }
    if instances.has("pred_masks"):
        out["masks"] = instances.pred_masks
    return out


def _match_detections(expected: dict, actual: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """Pairs (expected index, actual index) of the same detections.

    Detections come sorted by score, and float rounding (about 1e-6) may reorder two with
    nearly equal scores, or swap which of them is kept at the cut-off (the lowest kept score,
    when ``max_detections_per_image`` is reached). So each expected detection is matched to an
    unused actual one of the same class with score and box within the tolerances; a detection
    left unmatched must lie at the cut-off in both outputs.

    Raises:
        ExportMismatchError: a detection away from the cut-off has no counterpart.
    """
    tol = TOLERANCES["float"]
    scores, classes, boxes = actual["scores"], actual["classes"], actual["boxes"]
    used = torch.zeros(len(scores), dtype=torch.bool)
    pairs = []
    for i in range(len(expected["scores"])):
        distance = (boxes - expected["boxes"][i]).abs().amax(dim=1)
        same = (
            ~used
            & (classes.to(expected["classes"].dtype) == expected["classes"][i])
            & ((scores - expected["scores"][i]).abs() <= tol)
            & (distance <= TOLERANCES["boxes"])
        )
        candidates = same.nonzero().flatten()
        if len(candidates) == 0:
            continue
        j = int(candidates[distance[candidates].argmin()])
        used[j] = True
        pairs.append((i, j))
    matched = torch.tensor([i for i, _ in pairs], dtype=torch.long)
    lost = [i for i in range(len(expected["scores"])) if i not in set(matched.tolist())]
    cut = min(expected["scores"].min().item(), scores.min().item()) if len(scores) else 0.0
    for i in lost + (~used).nonzero().flatten().tolist():
        score = (expected["scores"][i] if i in lost else scores[i]).item()
        if score > cut + tol:
            raise ExportMismatchError(
                f"a detection with score {score:.4f} (class "
                f"{int(expected['classes'][i] if i in lost else classes[i])}) has no counterpart"
            )
    return matched, torch.tensor([j for _, j in pairs], dtype=torch.long)


def _compare(name: str, expected: dict, actual: dict) -> dict[str, float]:
    """Max |difference| per output; raises ExportMismatchError if they do not match."""
    actual = {key: torch.as_tensor(value) for key, value in actual.items()}
    for key, ref in expected.items():
        if tuple(actual[key].shape) != tuple(ref.shape):
            raise ExportMismatchError(
                f"{name}: output '{key}' has shape {tuple(actual[key].shape)}, PyTorch gives "
                f"{tuple(ref.shape)} (a different number of detections)"
            )
    try:
        rows, order = _match_detections(expected, actual)
    except ExportMismatchError as e:
        raise ExportMismatchError(f"{name}: {e}") from None
    diffs = {}
    for key, ref in expected.items():
        ref = ref[rows]
        got = actual[key][order].to(ref.dtype)
        if key == "classes":
            diffs[key] = 0.0  # equal by construction of the matching
            continue
        diff = (got - ref).abs().max().item() if ref.numel() else 0.0
        tolerance = TOLERANCES["boxes" if key == "boxes" else "float"]
        if not diff <= tolerance:
            raise ExportMismatchError(
                f"{name}: output '{key}' differs from PyTorch's by {diff:.3g} "
                f"(tolerance {tolerance})"
            )
        diffs[key] = diff
    diffs["unmatched_at_cutoff"] = float(len(expected["scores"]) - len(rows))
    return diffs


def _export_onnx(adapter: nn.Module, image: torch.Tensor, f) -> None:
    torch.onnx.export(
        adapter,
        (image,),
        f,
        dynamo=False,
        opset_version=16,
        training=torch.onnx.TrainingMode.EVAL,
        input_names=["image"],
        dynamic_axes={"image": {1: "height", 2: "width"}},
    )


def _export_traced(model, image, fmt, path) -> tuple[dict[str, float], int]:
    inference = _rcnn_inference if isinstance(model, GeneralizedRCNN) else None
    # A new nn.Module starts in training mode, which the ONNX exporter restores afterwards
    # (recursively, into the model): keep everything in eval mode.
    adapter = TracingAdapter(model, [{"image": image}], inference).eval()
    # ONNX: a graph that also runs when no RoI reaches the mask head.
    rois = empty_safe_mask_head if fmt == "onnx" else contextlib.nullcontext
    with torch.no_grad(), rois(model):
        flat = adapter(image)  # the first call also sets adapter.outputs_schema
        reference = _flatten_instances(adapter.outputs_schema(flat)[0]["instances"])
        if fmt == "torchscript":
            traced = torch.jit.trace(adapter, (image,))
        else:
            atomic_write(path, lambda f: _export_onnx(adapter, image, f))
    if fmt == "torchscript":
        atomic_write(path, lambda f: torch.jit.save(traced, f))
        loaded = torch.jit.load(path)
        with torch.no_grad():
            outputs = adapter.outputs_schema(loaded(image))
    else:
        import onnxruntime

        session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
        flat = session.run(None, {session.get_inputs()[0].name: image.numpy()})
        outputs = adapter.outputs_schema([torch.from_numpy(a) for a in flat])
    diffs = _compare(f"{fmt} (tracing)", reference, _flatten_instances(outputs[0]["instances"]))
    return diffs, len(reference["scores"])


def _eager_instances(scripted) -> Instances:
    """A scripted model's ``Instances`` as an eager one, with the fields the script set.

    (``detectron2.utils.testing`` has this too, but importing it imports the model zoo, whose
    ``pkg_resources`` is gone from current setuptools on Detectron2 main.)
    """
    fields = {name: getattr(scripted, "_" + name) for name in scripted._field_names}
    return Instances(scripted.image_size, **{k: v for k, v in fields.items() if v is not None})


def _export_scripted(model, image, path) -> tuple[dict[str, float], int]:
    inputs = [{"image": image}]
    rcnn = isinstance(model, GeneralizedRCNN)
    with torch.no_grad():
        reference = _flatten_instances(
            model.inference(inputs, do_postprocess=False)[0]
            if rcnn
            else model(inputs)[0]["instances"]
        )
    scripted = scripting_with_instances(model, _instance_fields(model))
    atomic_write(path, lambda f: torch.jit.save(scripted, f))
    loaded = torch.jit.load(path)
    with torch.no_grad():
        if rcnn:
            result = loaded.inference(inputs, do_postprocess=False)[0]
        else:
            # A scripted RetinaNet returns its raw results; eager mode post-processes them
            # (clipping, and dropping empty boxes): do the same before comparing.
            raw = _eager_instances(loaded(inputs)[0])
            result = detector_postprocess(raw, image.shape[1], image.shape[2])
    actual = {
        "boxes": result.pred_boxes.tensor,
        "scores": result.scores,
        "classes": result.pred_classes,
    }
    if "masks" in reference:
        actual["masks"] = result.pred_masks
    return _compare("torchscript (scripting)", reference, actual), len(reference["scores"])


def check_export_request(fmt: str, method: str, pwlu_op: str = "standard") -> None:
    """Raise unless ``export_model`` can export in ``fmt`` by ``method`` with ``pwlu_op``.

    Raises:
        ValueError: (a usage error of the tools) an unknown format, method or PWLU op, ONNX
            by scripting, or the fused op outside traced TorchScript.
    """
    with user_errors(ValueError, status=USAGE):
        _check_request(fmt, method, pwlu_op)


def _check_request(fmt: str, method: str, pwlu_op: str) -> None:
    if fmt not in EXPORT_FORMATS or method not in EXPORT_METHODS:
        raise ValueError(
            f"export: format must be in {EXPORT_FORMATS} and method in "
            f"{EXPORT_METHODS}, got {fmt!r}, {method!r}"
        )
    if fmt == "onnx" and method == "scripting":
        raise ValueError("export: ONNX export works by tracing; use --export-method tracing")
    if pwlu_op not in PWLU_OPS:
        raise ValueError(f"export: pwlu_op must be one of {PWLU_OPS}, got {pwlu_op!r}")
    if pwlu_op == "fused" and (fmt, method) != ("torchscript", "tracing"):
        raise ValueError(
            "export: the fused PWLU op exports to traced TorchScript only; ONNX and scripted "
            "models use the standard-op form"
        )


def export_model(
    model: nn.Module,
    image: torch.Tensor,
    output_dir: str,
    fmt: str = "torchscript",
    method: str = "tracing",
    pwlu_op: str = "standard",
) -> ExportResult:
    """Export ``model`` and check the exported file against it on ``image``.

    What is exported (and compared with) is ``to_inference_form(model, pwlu_op)``, a copy.

    Args:
        model: a Detectron2 GeneralizedRCNN or RetinaNet (any activation), on CPU.
        image: ``(3, H, W)`` tensor in the model's input format (e.g. BGR uint8).
        output_dir: where ``model.ts`` or ``model.onnx`` is written (atomically).
        fmt: ``"torchscript"`` or ``"onnx"``.
        method: ``"tracing"`` or ``"scripting"`` (scripting: TorchScript only).
        pwlu_op: ``"standard"`` (PWLUs as standard ops) or ``"fused"`` (traced TorchScript
            only: PWLUs as the ``pwlu_det::pwlu_forward`` op; load with ``import pwlu_det``).

    Raises:
        ValueError: unknown format/method/pwlu_op, ONNX with scripting, or a fused op outside
            traced TorchScript.
        ExportMismatchError: the exported model does not reproduce the PyTorch outputs.
    """
    check_export_request(fmt, method, pwlu_op)
    if image.dim() != 3 or image.shape[0] != 3:
        raise ValueError(f"export: image must be (3, H, W), got {tuple(image.shape)}")
    deployed = to_inference_form(model, pwlu_op).eval()
    os.makedirs(output_dir, exist_ok=True)
    path = os.path.join(output_dir, "model.onnx" if fmt == "onnx" else "model.ts")
    if method == "tracing":
        diffs, count = _export_traced(deployed, image, fmt, path)
    else:
        diffs, count = _export_scripted(deployed, image, path)
    logger.info("exported %s (%s) to %s; max differences %s", fmt, method, path, diffs)
    return ExportResult(path, fmt, method, count, diffs)


def load_model_for_export(
    config_file: str, opts: list[str] | None = None
) -> tuple[nn.Module, object]:
    """Build the model of ``config_file`` on CPU and load ``MODEL.WEIGHTS``; returns (model, cfg).

    The checkpoint must hold every parameter and buffer of the model with the model's shapes.

    Raises:
        ValueError: an invalid PWLU config value, ``MODEL.WEIGHTS`` is empty, or the checkpoint
            does not fit the model (the message lists the keys).
        FileNotFoundError: the checkpoint does not exist.
    """
    from detectron2.modeling import build_model

    from pwlu_det.checkpoint import AtomicDetectionCheckpointer, check_checkpoint_exists
    from pwlu_det.config import load_pwlu_config

    cfg = load_pwlu_config(config_file, [*(opts or []), "MODEL.DEVICE", "cpu"])
    if not cfg.MODEL.WEIGHTS:
        with user_errors(ValueError, status=USAGE):
            raise ValueError("export: set MODEL.WEIGHTS to the checkpoint to export")
    check_checkpoint_exists(cfg.MODEL.WEIGHTS, "MODEL.WEIGHTS")  # before building the model
    model = build_model(cfg)
    AtomicDetectionCheckpointer(model, complete=True).load(cfg.MODEL.WEIGHTS)
    return model.eval(), cfg
