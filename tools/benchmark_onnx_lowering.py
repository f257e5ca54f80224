#!/usr/bin/env python
"""Candidate ONNX lowerings of a channel-wise PWLU, and the cost of each pass, in onnxruntime.

Every candidate is a small graph built with ``onnx.helper`` from one trained-like unit's
inference tables (:func:`pwlu_det.layers.inference_tables`), checked against PyTorch's
``PWLUInference`` (max abs diff) and timed in onnxruntime on a (1, 64, 128, 128) input:

- ``shipped``: the ops ``torch.onnx.export`` writes for ``PWLUInference`` (the shipped lowering:
  float Clip, truncating Cast to int32, a Clip of the int (NaN safety), two GatherElements);
- ``no int clip``: the same without the int Clip (NaN inputs would read out of bounds);
- ``floor, int64``: Floor, Clip, Cast to int64 (the textbook lowering);
- ``flat gather``: the bin plus the channel's offset, then Gather from flat (P * (N + 2)) tables;

and Swish (Sigmoid, Mul) as the baseline. A second table times single passes over the same
tensor (a Mul, a Clip, a Cast, a GatherElements, ...), each in a graph that reshapes x to
(1, P, H * W) and back as the lowerings do: read them as differences from the reshape-only
graph. From them follows the floor of any lowering that needs a bin, two lookups and a
multiply-add. Sessions run one after another (as an
application runs one model), in ``--rounds`` rounds; medians and min-max over rounds.

Example::

    .venv/bin/python tools/benchmark_onnx_lowering.py --threads 2

A benchmark that prints numbers; nothing here is a test.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import onnx
import onnxruntime
import torch
from benchmark_export import trained_like_unit  # tools/ is on sys.path when run as a script
from onnx import TensorProto, helper, numpy_helper
from tabulate import tabulate

from pwlu_det.layers import to_inference_form

SHAPE = (1, 64, 128, 128)
N = 16


def _const(name: str, array: np.ndarray) -> onnx.NodeProto:
    return helper.make_node("Constant", [], [name], value=numpy_helper.from_array(array, name))


def _model(nodes: list[onnx.NodeProto], name: str) -> onnx.ModelProto:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, SHAPE)
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, SHAPE)
    graph = helper.make_graph(nodes, name, [x], [y])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 16)])


def lowerings(inference) -> dict[str, onnx.ModelProto]:
    """The candidate graphs of one ``PWLUInference`` (x viewed as (1, P, H * W))."""
    p = SHAPE[1]
    inner = SHAPE[2] * SHAPE[3]
    scale = inference.scale.numpy().reshape(1, p, 1).astype(np.float32)
    shift = inference.shift.numpy().reshape(1, p, 1).astype(np.float32)
    slope = inference.slope.numpy().reshape(1, p, N + 2).astype(np.float32)
    intercept = inference.intercept.numpy().reshape(1, p, N + 2).astype(np.float32)
    common = [
        _const("shape3", np.array([1, p, inner], np.int64)),
        _const("shape4", np.array(SHAPE, np.int64)),
        _const("scale", scale),
        _const("shift", shift),
        _const("zero", np.array(0.0, np.float32)),
        _const("last", np.array(float(N + 1), np.float32)),
        helper.make_node("Reshape", ["x", "shape3"], ["x3"]),
        helper.make_node("Mul", ["x3", "scale"], ["scaled"]),
        helper.make_node("Add", ["scaled", "shift"], ["position"]),
        helper.make_node("Clip", ["position", "zero", "last"], ["clipped"]),
    ]
    lookup = [
        _const("slope", slope),
        _const("intercept", intercept),
        helper.make_node("GatherElements", ["slope", "bins"], ["k"], axis=2),
        helper.make_node("GatherElements", ["intercept", "bins"], ["b"], axis=2),
    ]
    finish = [
        helper.make_node("Mul", ["k", "x3"], ["kx"]),
        helper.make_node("Add", ["kx", "b"], ["y3"]),
        helper.make_node("Reshape", ["y3", "shape4"], ["y"]),
    ]
    int_clip = [
        _const("zero_i", np.array(0, np.int32)),
        _const("last_i", np.array(N + 1, np.int32)),
        helper.make_node("Cast", ["clipped"], ["bins_raw"], to=TensorProto.INT32),
        helper.make_node("Clip", ["bins_raw", "zero_i", "last_i"], ["bins"]),
    ]
    flat = [
        _const("offsets", (np.arange(p, dtype=np.int32) * (N + 2)).reshape(1, p, 1)),
        _const("slope_flat", slope.reshape(-1)),
        _const("intercept_flat", intercept.reshape(-1)),
        helper.make_node("Add", ["bins", "offsets"], ["flat_bins"]),
        helper.make_node("Gather", ["slope_flat", "flat_bins"], ["k"], axis=0),
        helper.make_node("Gather", ["intercept_flat", "flat_bins"], ["b"], axis=0),
    ]
    return {
        "shipped": _model(common + int_clip + lookup + finish, "shipped"),
        "no int clip": _model(
            common
            + [helper.make_node("Cast", ["clipped"], ["bins"], to=TensorProto.INT32)]
            + lookup
            + finish,
            "no_int_clip",
        ),
        "floor, int64": _model(
            common[:-1]
            + [
                helper.make_node("Floor", ["position"], ["floored"]),
                helper.make_node("Clip", ["floored", "zero", "last"], ["clipped"]),
                helper.make_node("Cast", ["clipped"], ["bins"], to=TensorProto.INT64),
            ]
            + lookup
            + finish,
            "floor_int64",
        ),
        "flat gather": _model(common + int_clip + flat + finish, "flat_gather"),
    }


def single_passes(inference) -> dict[str, onnx.ModelProto]:
    """One pass each over the (1, P, H * W) view (reshapes are free)."""
    p = SHAPE[1]
    inner = SHAPE[2] * SHAPE[3]
    table = inference.slope.numpy().reshape(1, p, N + 2).astype(np.float32)
    head = [
        _const("shape3", np.array([1, p, inner], np.int64)),
        _const("shape4", np.array(SHAPE, np.int64)),
        helper.make_node("Reshape", ["x", "shape3"], ["x3"]),
    ]
    tail = [helper.make_node("Reshape", ["y3", "shape4"], ["y"])]
    bins_of_x = [
        _const("lo", np.array(0.0, np.float32)),
        _const("hi", np.array(float(N + 1), np.float32)),
        helper.make_node("Clip", ["x3", "lo", "hi"], ["clipped"]),
        helper.make_node("Cast", ["clipped"], ["bins"], to=TensorProto.INT32),
    ]
    bodies = {
        "Reshape there and back (nothing else)": [helper.make_node("Identity", ["x3"], ["y3"])],
        "Sigmoid": [helper.make_node("Sigmoid", ["x3"], ["y3"])],
        "Mul (by a per-channel constant)": [
            _const("c", table[:, :, :1]),
            helper.make_node("Mul", ["x3", "c"], ["y3"]),
        ],
        "Clip (scalar bounds)": [
            *bins_of_x[:2],
            helper.make_node("Clip", ["x3", "lo", "hi"], ["y3"]),
        ],
        "Cast to int32 and back": [
            helper.make_node("Cast", ["x3"], ["i"], to=TensorProto.INT32),
            helper.make_node("Cast", ["i"], ["y3"], to=TensorProto.FLOAT),
        ],
        "Clip, Cast to int32, GatherElements": [
            *bins_of_x,
            _const("table", table),
            helper.make_node("GatherElements", ["table", "bins"], ["y3"], axis=2),
        ],
        "Clip, Cast to int32, Cast back": [
            *bins_of_x,
            helper.make_node("Cast", ["bins"], ["y3"], to=TensorProto.FLOAT),
        ],
    }
    models = {name: _model(head + body + tail, name) for name, body in bodies.items()}
    models["Mul, on x itself (no reshapes)"] = _model(
        [helper.make_node("Mul", ["x", "x"], ["y"])], "mul_4d"
    )
    return models


def _session(model: onnx.ModelProto, threads: int) -> onnxruntime.InferenceSession:
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    return onnxruntime.InferenceSession(
        model.SerializeToString(), options, providers=["CPUExecutionProvider"]
    )


def time_sessions(
    models: dict[str, onnx.ModelProto], x: np.ndarray, threads: int, rounds: int, calls: int
) -> dict[str, list[float]]:
    """Per model, the median ms of ``calls`` runs in each of ``rounds`` rounds."""
    sessions = {name: _session(model, threads) for name, model in models.items()}
    times: dict[str, list[float]] = {name: [] for name in models}
    for r in range(rounds):
        order = list(sessions) if r % 2 == 0 else list(sessions)[::-1]
        for name in order:
            session = sessions[name]
            for _ in range(3):
                session.run(None, {"x": x})
            samples = []
            for _ in range(calls):
                start = time.perf_counter()
                session.run(None, {"x": x})
                samples.append(1e3 * (time.perf_counter() - start))
            times[name].append(statistics.median(samples))
    return times


def _cell(values: list[float]) -> str:
    return f"{statistics.median(values):.3f} ({min(values):.3f}-{max(values):.3f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--calls", type=int, default=30, help="runs per session per round")
    args = parser.parse_args()

    torch.manual_seed(0)
    unit = trained_like_unit(SHAPE[1], N)
    inference = to_inference_form(torch.nn.Sequential(unit))[0]
    torch.manual_seed(1)
    x = 3 * torch.randn(SHAPE)
    with torch.no_grad():
        expected = inference(x).numpy()
    swish = _model(
        [
            helper.make_node("Sigmoid", ["x"], ["s"]),
            helper.make_node("Mul", ["x", "s"], ["y"]),
        ],
        "swish",
    )
    candidates = {"Swish": swish, **lowerings(inference)}
    times = time_sessions(candidates, x.numpy(), args.threads, args.rounds, args.calls)
    swish_ms = statistics.median(times["Swish"])
    rows = []
    for name, model in candidates.items():
        out = _session(model, args.threads).run(None, {"x": x.numpy()})[0]
        diff = "" if name == "Swish" else f"{np.abs(out - expected).max():.1e}"
        rows.append(
            [name, _cell(times[name]), f"{statistics.median(times[name]) / swish_ms:.2f}", diff]
        )
    print(
        f"onnxruntime {onnxruntime.__version__}, {args.threads} threads, input {SHAPE}, "
        f"channel-wise N = {N}; ms: median (min-max) over {args.rounds} rounds of "
        f"{args.calls} runs"
    )
    print(tabulate(rows, ["lowering", "ms", "x Swish", "max abs diff"], disable_numparse=True))
    passes = time_sessions(
        single_passes(inference), x.numpy(), args.threads, args.rounds, args.calls
    )
    print("\nsingle passes over the same tensor (one session each)")
    print(
        tabulate(
            [[name, _cell(values)] for name, values in passes.items()],
            ["pass", "ms"],
            disable_numparse=True,
        )
    )


if __name__ == "__main__":
    main()
