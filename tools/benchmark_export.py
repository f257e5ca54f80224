#!/usr/bin/env python
"""CPU inference latency of exported PWLU, Swish and ReLU detectors, measured in one run.

The three models differ only in their activation (same config, same random weights for the
shared layers, same input); detection post-processing is made equal by keeping every detection
(score threshold 0, at most TEST.DETECTIONS_PER_IMAGE). Prints, per model, the median latency
of PyTorch eager, TorchScript (traced; PWLUs as standard ops, and as the fused op: "ts fused
op", see tools/export_model.py --pwlu-op) and onnxruntime, and the ratio to Swish; the models
are timed in rounds where that is fair (see interleaved_medians). A second table times the
activation alone on one (1, 64, 128, 128) tensor in each runtime: eager runs the fused C++ op,
the exported models the inference form in standard ops, whose cost (several passes over memory
and table lookups per element, against one pass for Swish) bounds what export can reach.

Target: PWLU <= 1.10x Swish.

Examples (the default config is the demo Mask R-CNN R18-FPN)::

    .venv/bin/python tools/benchmark_export.py --threads 2 --repeats 10
    .venv/bin/python tools/benchmark_export.py --config-file \
        configs/COCO-Detection/retinanet_R_50_FPN_1x_pwlu.yaml MODEL.RESNETS.DEPTH 18 \
        MODEL.RESNETS.RES2_OUT_CHANNELS 64 MODEL.RESNETS.NORM GN
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable

import onnxruntime
import torch

from pwlu_det.config import load_pwlu_config
from pwlu_det.data import make_synthetic_batch
from pwlu_det.export import export_model
from pwlu_det.layers import PWLU, Phase, to_inference_form

CONFIG = "configs/Shapes/mask_rcnn_R_18_FPN_pwlu.yaml"
ACTIVATIONS = ("Swish", "ReLU", "PWLU")


def build(config_file: str, activation: str, opts: list[str]) -> torch.nn.Module:
    """The model of ``config_file`` with ``activation``, random weights (seed 0), keeping
    every detection (score thresholds 0)."""
    # Detectron2 after pwlu_det, whose import of it leaves out the torch.jit.script warnings.
    from detectron2.modeling import build_model

    cfg = load_pwlu_config(
        config_file,
        [
            *opts,
            "MODEL.DEVICE",
            "cpu",
            "MODEL.ACTIVATION.NAME",
            activation,
            "MODEL.ROI_HEADS.SCORE_THRESH_TEST",
            0.0,
            "MODEL.RETINANET.SCORE_THRESH_TEST",
            0.0,
        ],
    )
    torch.manual_seed(0)
    return build_model(cfg).eval()


def eager_inference(model: torch.nn.Module, image: torch.Tensor) -> object:
    """What the exported model computes, in PyTorch (R-CNN: without resizing the outputs)."""
    from detectron2.modeling import GeneralizedRCNN

    if isinstance(model, GeneralizedRCNN):
        return model.inference([{"image": image}], do_postprocess=False)
    return model([{"image": image}])


def _session(path: str, threads: int) -> onnxruntime.InferenceSession:
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    return onnxruntime.InferenceSession(path, options, providers=["CPUExecutionProvider"])


def trained_like_unit(channels: int, num_intervals: int = 16) -> PWLU:
    """A channel-wise PWLU in Phase II with its heights moved off the initial shape (by the
    global RNG), as training leaves one, in eval mode."""
    unit = PWLU(channels, num_intervals=num_intervals).eval()
    state = unit.state_dict()
    state["heights"] = state["heights"] + 0.1 * torch.randn_like(state["heights"])
    state["phase"] = torch.tensor(Phase.TRAINING)
    unit.load_state_dict(state)
    return unit


def activation_only(threads: int, repeats: int, tmp: str) -> dict[str, dict[str, float]]:
    """Median milliseconds of Swish and of a channel-wise PWLU (N = 16) alone, per runtime."""
    x = torch.randn(1, 64, 128, 128)
    unit = trained_like_unit(64)
    rows = {}
    for name, module in (("Swish", torch.nn.SiLU()), ("PWLU", unit)):
        path = f"{tmp}/{name}.onnx"
        deployed = to_inference_form(module)
        with torch.no_grad():
            traced = torch.jit.trace(deployed, (x,))
            torch.onnx.export(deployed, (x,), path, opset_version=16, dynamo=False)
        session = _session(path, threads)
        feed = {session.get_inputs()[0].name: x.numpy()}
        rows[name] = {
            "eager": lambda m=module: m(x),
            "torchscript": lambda t=traced: t(x),
            "onnxruntime": lambda s=session, f=feed: s.run(None, f),
        }
    with torch.no_grad():
        return interleaved_medians(rows, repeats)


def interleaved_medians(
    runners: dict[str, dict[str, Callable[[], object]]], repeats: int, warmup: int = 2
) -> dict[str, dict[str, float]]:
    """Median milliseconds of every runner, one runtime after the other.

    PyTorch runs are timed in rounds (one call of each activation per round), so that drifts
    of the machine's speed hit all activations alike. onnxruntime sessions are timed one after
    the other, as an application runs one model: a session's idle threads spin for a while
    after a run (its default) and would slow down another session's run.
    """
    rows: dict[str, dict[str, float]] = {activation: {} for activation in runners}
    for key in next(iter(runners.values())):
        times: dict[str, list[float]] = {activation: [] for activation in runners}
        if key == "onnxruntime":
            order = [a for a in runners for _ in range(warmup + repeats)]
        else:
            order = [a for _ in range(warmup + repeats) for a in runners]
        for activation in order:
            start = time.perf_counter()
            runners[activation][key]()
            times[activation].append(1e3 * (time.perf_counter() - start))
        for activation, values in times.items():
            rows[activation][key] = statistics.median(values[warmup:])
    return rows


def print_rows(title: str, rows: dict[str, dict[str, float]], extra: str | None = None) -> None:
    print(title)
    keys = [k for k in next(iter(rows.values())) if k != extra]
    header = f"{'activation':<11}" + "".join(f"{k + ' ms':>16}{'x Swish':>9}" for k in keys)
    print(header + (f"{extra:>12}" if extra else ""))
    for activation, row in rows.items():
        line = f"{activation:<11}"
        for key in keys:
            line += f"{row[key]:>16.2f}{row[key] / rows['Swish'][key]:>9.2f}"
        print(line + (f"{row[extra]:>12}" if extra else ""))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--config-file", default=CONFIG, help=f"default: {CONFIG}")
    parser.add_argument("--size", type=int, default=256, help="input image: size x size")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides KEY VALUE ...")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    image = make_synthetic_batch(1, args.size, args.size, num_classes=4, seed=0)[0]["image"]
    runners, detections = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        for activation in ACTIVATIONS:
            model = build(args.config_file, activation, args.opts)
            ts = export_model(model, image, f"{tmp}/{activation}_ts", "torchscript", "tracing")
            fused = export_model(
                model, image, f"{tmp}/{activation}_fused", "torchscript", "tracing", "fused"
            )
            onnx = export_model(model, image, f"{tmp}/{activation}_onnx", "onnx", "tracing")
            traced, traced_fused = torch.jit.load(ts.path), torch.jit.load(fused.path)
            session = _session(onnx.path, args.threads)
            feed = {session.get_inputs()[0].name: image.numpy()}
            runners[activation] = {
                "eager": lambda m=model: eager_inference(m, image),
                "torchscript": lambda t=traced: t(image),
                "ts fused op": lambda t=traced_fused: t(image),
                "onnxruntime": lambda s=session, f=feed: s.run(None, f),
            }
            detections[activation] = onnx.num_detections
        with torch.no_grad():
            rows = interleaved_medians(runners, args.repeats)
        for activation, row in rows.items():
            row["detections"] = detections[activation]
        alone = activation_only(args.threads, 5 * args.repeats, tmp)
    print_rows(
        f"{args.config_file} {' '.join(map(str, args.opts))}, one {args.size}x{args.size} "
        f"image, {args.threads} threads, medians of {args.repeats}",
        rows,
        extra="detections",
    )
    print()
    print_rows(f"The activation alone on (1, 64, 128, 128), medians of {5 * args.repeats}", alone)


if __name__ == "__main__":
    main()
