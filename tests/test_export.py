"""Export of PWLU / Swish / ReLU detectors to TorchScript and ONNX, checked by onnxruntime."""

from pathlib import Path

import onnx
import pytest
import torch
from detectron2.modeling import build_model

from pwlu_det.config import load_pwlu_config
from pwlu_det.data import make_synthetic_batch
from pwlu_det.export import ExportMismatchError, export_model
from pwlu_det.export.export import _compare
from pwlu_det.layers import PWLU

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
ARCHS = {
    "mask_rcnn": CONFIGS / "Shapes" / "mask_rcnn_R_18_FPN_pwlu.yaml",
    "retinanet": CONFIGS / "COCO-Detection" / "retinanet_R_50_FPN_1x_pwlu.yaml",
}
SMALL_RETINANET = [
    "MODEL.RESNETS.DEPTH",
    18,
    "MODEL.RESNETS.RES2_OUT_CHANNELS",
    64,
    "MODEL.RESNETS.NORM",
    "GN",
    "MODEL.WEIGHTS",
    "",
    "MODEL.RETINANET.NUM_CLASSES",
    3,
    "MODEL.BACKBONE.FREEZE_AT",
    0,
    # Random weights: a larger prior keeps scores above the threshold, so there are detections.
    "MODEL.RETINANET.PRIOR_PROB",
    0.1,
]


def _model(arch: str, activation: str) -> torch.nn.Module:
    opts = SMALL_RETINANET if arch == "retinanet" else []
    cfg = load_pwlu_config(
        ARCHS[arch], [*opts, "MODEL.DEVICE", "cpu", "MODEL.ACTIVATION.NAME", activation]
    )
    torch.manual_seed(0)
    model = build_model(cfg)
    units = [m for m in model.modules() if isinstance(m, PWLU)]
    model.eval()
    if units:  # realigned on real statistics, with learned-looking heights: not plain ReLU
        for unit in units:
            unit.start_statistics()
            unit.train()  # only the PWLUs: they collect statistics during an inference pass
        with torch.no_grad():
            model([{"image": image} for image in _images(2, seed=5)])
            for unit in units:
                unit.realign("paper")
                # Move heights by a fraction of an interval: slopes change by O(0.3), as in
                # training (a fixed 0.05 on a 0.004-wide interval would make slopes of ~10
                # that amplify float rounding through the network).
                step = ((unit.right_bound - unit.left_bound) / unit.num_intervals).unsqueeze(-1)
                unit.heights.add_(0.3 * step * torch.randn_like(unit.heights))
                unit.eval()
    if arch == "retinanet":
        # Random heads give near-equal scores everywhere; a trained model's scores spread out,
        # and so must these, or float rounding alone decides which of many ties is kept.
        torch.nn.init.normal_(model.head.cls_score.weight, std=0.05)
    return model.eval()


def _images(count: int, seed: int) -> list[torch.Tensor]:
    return [b["image"] for b in make_synthetic_batch(count, 256, 320, num_classes=3, seed=seed)]


def _image() -> torch.Tensor:
    return _images(1, seed=3)[0]


@pytest.mark.parametrize(
    ("arch", "fmt", "method"),
    [
        ("mask_rcnn", "torchscript", "tracing"),
        ("mask_rcnn", "torchscript", "scripting"),
        ("mask_rcnn", "onnx", "tracing"),
        ("retinanet", "torchscript", "tracing"),
        ("retinanet", "torchscript", "scripting"),
        ("retinanet", "onnx", "tracing"),
    ],
)
def test_pwlu_detectors_export_and_match(arch, fmt, method, tmp_path):
    result = export_model(_model(arch, "PWLU"), _image(), str(tmp_path), fmt, method)
    assert Path(result.path).is_file() and result.num_detections > 0
    assert set(result.max_abs_diff) >= {"boxes", "scores", "classes"}
    if fmt == "onnx":
        graph = onnx.load(result.path).graph
        ops = {node.op_type for node in graph.node}
        domains = {node.domain for node in graph.node}
        assert domains <= {"", "ai.onnx"}, f"custom op domains in the graph: {domains}"
        assert not any("pwlu" in op.lower() for op in ops)
        assert {"GatherElements", "Clip", "Cast"} <= ops  # the PWLU inference form


@pytest.mark.parametrize("activation", ["Swish", "ReLU"])
@pytest.mark.parametrize("arch", sorted(ARCHS))
def test_baseline_detectors_export_to_onnx(arch, activation, tmp_path):
    result = export_model(_model(arch, activation), _image(), str(tmp_path), "onnx", "tracing")
    assert result.num_detections > 0


def test_mismatches_are_errors():
    expected = {
        "boxes": torch.tensor([[0.0, 0.0, 10.0, 10.0], [5.0, 5.0, 20.0, 20.0]]),
        "scores": torch.tensor([0.9, 0.8]),
        "classes": torch.tensor([1, 2]),
    }
    assert _compare("same", expected, dict(expected))["boxes"] == 0.0
    swapped = {k: v.flip(0) for k, v in expected.items()}  # order alone is not a mismatch
    assert _compare("swapped", expected, swapped)["scores"] == 0.0
    moved = dict(expected, boxes=expected["boxes"] + 0.5)
    with pytest.raises(ExportMismatchError, match="score 0.9000 .class 1. has no counterpart"):
        _compare("moved", expected, moved)
    fewer = {k: v[:1] for k, v in expected.items()}
    with pytest.raises(ExportMismatchError, match="different number of detections"):
        _compare("fewer", expected, fewer)
    relabelled = dict(expected, classes=torch.tensor([2, 2]))
    with pytest.raises(ExportMismatchError, match="score 0.9000 .class 1. has no counterpart"):
        _compare("relabelled", expected, relabelled)
    # Only a detection at the cut-off (the lowest score) may be swapped for another one.
    at_cut = {k: v.clone() for k, v in expected.items()}
    at_cut["boxes"][1] = torch.tensor([50.0, 50.0, 60.0, 60.0])
    at_cut["scores"][1] = 0.8000001
    assert _compare("cut", expected, at_cut)["unmatched_at_cutoff"] == 1.0


def test_bad_export_requests(tmp_path):
    model = _model("retinanet", "ReLU")
    with pytest.raises(ValueError, match="ONNX export works by tracing"):
        export_model(model, _image(), str(tmp_path), "onnx", "scripting")
    with pytest.raises(ValueError, match=r"\(3, H, W\)"):
        export_model(model, _image()[None], str(tmp_path))


def test_traced_export_holds_the_pwlu_tables_frozen(tmp_path, monkeypatch):
    # Tables are computed once per unit, by the conversion to the inference form; the trace
    # then reads the frozen ones (no per-call table arithmetic in the exported graph).
    from pwlu_det.layers import deploy

    calls = []
    real = deploy.inference_tables
    monkeypatch.setattr(deploy, "inference_tables", lambda *p: calls.append(1) or real(*p))
    model = _model("mask_rcnn", "PWLU")
    units = sum(isinstance(m, PWLU) for m in model.modules())
    export_model(model, _image(), str(tmp_path), "torchscript", "tracing")
    assert len(calls) == units
    assert sum(isinstance(m, PWLU) for m in model.modules()) == units  # the model is unchanged


def test_fused_op_export_to_traced_torchscript(tmp_path):
    model = _model("mask_rcnn", "PWLU")
    result = export_model(model, _image(), str(tmp_path), "torchscript", "tracing", "fused")
    assert result.num_detections > 0 and result.max_abs_diff["boxes"] < 1e-3
    calls = []
    for unit in (m for m in model.modules() if isinstance(m, PWLU)):
        unit.register_forward_hook(lambda *_: calls.append(1))
    with torch.no_grad():
        model.inference([{"image": _image()}], do_postprocess=False)
    graph = str(torch.jit.load(result.path).inlined_graph)
    assert graph.count("pwlu_det::pwlu_forward") == len(calls)  # every PWLU call
    with pytest.raises(ValueError, match="traced TorchScript only"):
        export_model(model, _image(), str(tmp_path), "onnx", "tracing", "fused")
    with pytest.raises(ValueError, match="traced TorchScript only"):
        export_model(model, _image(), str(tmp_path), "torchscript", "scripting", "fused")


def test_fused_op_torchscript_loads_after_import_pwlu_det(tmp_path):
    # The documented recipe in a fresh interpreter: `import pwlu_det`, then torch.jit.load.
    import subprocess
    import sys

    from pwlu_det.layers import to_inference_form

    unit = to_inference_form(PWLU(4).eval(), "fused")
    x = torch.randn(2, 4, 3, 3)
    with torch.no_grad():
        torch.jit.save(torch.jit.trace(unit, (x,)), str(tmp_path / "unit.ts"))
    torch.save(x, tmp_path / "x.pt")
    script = (
        "import sys, torch, pwlu_det; m = torch.jit.load(sys.argv[1]); "
        "x = torch.load(sys.argv[2]); assert torch.equal(m(x), x.relu()); print('ok')"
    )
    run = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path / "unit.ts"), str(tmp_path / "x.pt")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0 and run.stdout.strip() == "ok", run.stderr[-2000:]
