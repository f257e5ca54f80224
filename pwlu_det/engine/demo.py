"""``make demo``: train and evaluate a detector on the embedded shapes dataset, on CPU.

Besides the AP table, the demo draws its predictions on validation images and the learned PWLU
curves, and compares its AP with the figures documented for it (the row of its config at its
seed in :data:`DOCUMENTED_RESULTS`, written by ``make compare``), so that a changed result is
reported instead of going unnoticed.
"""

from __future__ import annotations

import argparse
import csv
import os
import time
from pathlib import Path

from pwlu_det.model_zoo import documented_results_file, get_config_file
from pwlu_det.utils.machine import describe_machine, machine_differences, machine_info

from . import cli
from .compare import resumed_at

__all__ = [
    "DEFAULT_DEMO_CONFIG",
    "DOCUMENTED_RESULTS",
    "compare_with_documented",
    "demo_argument_parser",
    "parse_demo_args",
    "describe_outputs",
    "documented_result",
    "format_ap_table",
    "main",
    "run_demo",
    "write_demo_pictures",
]

#: The demo's config, as named in the repository's configs/ and installed in pwlu_det.model_zoo.
DEFAULT_DEMO_CONFIG = "Shapes/mask_rcnn_R_18_FPN_pwlu.yaml"
#: The measured comparison (``make compare``) that README quotes; the demo is one of its rows.
DOCUMENTED_RESULTS = documented_results_file()
#: Largest |AP difference| (AP points) still reported as the documented result: the CSV rounds
#: to 3 decimals.
MATCH_TOLERANCE = 0.001
_COLUMNS = ("AP", "AP50", "AP75", "APs", "APm", "APl")


def format_ap_table(results: dict) -> str:
    """COCO AP numbers per task ("bbox", "segm") as a fixed-width text table."""
    lines = [f"{'task':<6}" + "".join(f"{c:>8}" for c in _COLUMNS)]
    for task, metrics in results.items():
        if isinstance(metrics, dict) and "AP" in metrics:
            lines.append(
                f"{task:<6}" + "".join(f"{metrics.get(c, float('nan')):>8.2f}" for c in _COLUMNS)
            )
    return "\n".join(lines)


def demo_argument_parser() -> argparse.ArgumentParser:
    """The demo's own command line: config overrides only (``tools/demo.py --help``)."""
    parser = argparse.ArgumentParser(
        prog="tools/demo.py",
        description=(
            "Train PWLU Mask R-CNN R18-FPN on the embedded shapes dataset on CPU (generated if "
            f"absent; config {DEFAULT_DEMO_CONFIG}), evaluate COCO box and mask AP on "
            "shapes_val, compare them with the documented run and draw the predictions and the "
            "learned curves. A finished run in OUTPUT_DIR is reused and an interrupted one "
            "resumed. For other configs, evaluation only, or several GPUs, use "
            "tools/train_net.py."
        ),
        epilog=(
            "Example: tools/demo.py SOLVER.MAX_ITER 100 OUTPUT_DIR output/demo_short "
            "(a run with overrides is not compared with the documented figures)."
        ),
    )
    parser.add_argument(
        "opts",
        nargs="*",
        metavar="KEY VALUE",
        help="Detectron2 config overrides, in pairs, e.g. SOLVER.MAX_ITER 100",
    )
    return parser


def parse_demo_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse the demo's arguments; a usage error exits with status 2 and one message."""
    parser = demo_argument_parser()
    args = parser.parse_args(argv)
    if len(args.opts) % 2:
        parser.error(
            f"config overrides come in KEY VALUE pairs; got {len(args.opts)} word(s): "
            + " ".join(args.opts)
        )
    return args


def run_demo(config_file: str, opts: list[str] | None = None) -> dict:
    """Train ``config_file`` (resuming a run already in its OUTPUT_DIR), then evaluate.

    Returns:
        ``{"results": COCO AP dict, "output_dir": str, "seconds": float}``.
    """
    args = cli.argument_parser().parse_args(
        ["--config-file", config_file, "--resume", *(opts or [])]
    )
    start = time.perf_counter()
    results = cli.main(args)
    return {
        "results": results,
        "output_dir": cli.output_dir_of(args),
        "seconds": time.perf_counter() - start,
    }


def write_demo_pictures(config_file: str, opts: list[str] | None = None) -> list[str]:
    """Draw the trained model of ``config_file``: predictions on the first 8 images of its
    test set (``predictions.png``) and, for PWLU, its learned curves (``pwlu_curves.png``, and
    ``pwlu_curves_residual.png`` with f(x) - ReLU(x)), all in its OUTPUT_DIR.

    Returns:
        The paths written.
    """
    from pwlu_det.checkpoint import AtomicDetectionCheckpointer
    from pwlu_det.config import load_pwlu_config
    from pwlu_det.utils import plot_pwlu_activations
    from pwlu_det.utils.prediction_grid import draw_prediction_grid

    from .trainer import PWLUTrainer

    cfg = load_pwlu_config(config_file, opts)
    weights = os.path.join(cfg.OUTPUT_DIR, "model_final.pth")
    model = PWLUTrainer.build_model(cfg)
    AtomicDetectionCheckpointer(model, complete=True).load(weights)
    folder = Path(cfg.OUTPUT_DIR)
    paths = [
        str(draw_prediction_grid(cfg, model, cfg.DATASETS.TEST[0], folder / "predictions.png"))
    ]
    if cfg.MODEL.ACTIVATION.NAME == "PWLU":
        for name, residual in (("pwlu_curves.png", False), ("pwlu_curves_residual.png", True)):
            plot = plot_pwlu_activations(weights, folder / name, residual=residual)
            paths.append(os.fspath(plot))
    return paths


def documented_result(
    config_file: str, seed: int, table: str | os.PathLike = DOCUMENTED_RESULTS
) -> dict | None:
    """The row of ``table`` (a ``results.csv`` of the comparison) for ``config_file`` at
    ``seed``, with AP values as floats; None if there is none."""
    if not os.path.isfile(table):
        return None
    with open(table, newline="") as f:
        for row in csv.DictReader(f):
            if row["config"] == Path(config_file).stem and int(row["seed"]) == seed:
                return {
                    k: float(v) if k.startswith(("bbox_", "segm_")) else v for k, v in row.items()
                }
    return None


def compare_with_documented(
    results: dict,
    config_file: str,
    seed: int,
    table: str | os.PathLike = DOCUMENTED_RESULTS,
    machine: dict | None = None,
) -> tuple[bool | None, str]:
    """Compare a run's box and mask AP, and its machine, with :func:`documented_result`.

    Args:
        machine: this run's :func:`~pwlu_det.utils.machine.machine_info` (default: this
            process's).

    Returns:
        ``(True, message)`` when both APs agree to :data:`MATCH_TOLERANCE`, ``(False, message)``
        naming the differences, or ``(None, message)`` when nothing is documented. The message
        names the documented run's machine and says whether this machine differs from it: CPU
        training reproduces to the last digit only on the same CPU, ISA and thread count.
    """
    documented = documented_result(config_file, seed, table)
    if documented is None:
        return None, f"no documented result for {Path(config_file).stem} at seed {seed} in {table}"
    machine = machine_info() if machine is None else machine
    differences = []
    for task in ("bbox", "segm"):
        measured = results.get(task, {}).get("AP")
        expected = documented[f"{task}_AP"]
        if measured is None or abs(measured - expected) > MATCH_TOLERANCE:
            differences.append(f"{task} AP {measured} (documented {expected:.2f})")
    where = f"{os.path.relpath(table)} ({Path(config_file).stem}, seed {seed})"
    if not documented.get("cpu"):
        machine_text = "the documented run's machine was not recorded"
        same_machine = False
    else:
        changed = machine_differences(documented, machine)
        same_machine = not changed
        machine_text = f"documented on {describe_machine(documented)}; " + (
            "this run on the same machine"
            if same_machine
            else f"this run on {describe_machine(machine)} (differs: {'; '.join(changed)})"
        )
    if not differences:
        return True, f"matches the documented result in {where} (machine: {machine_text})"
    if same_machine:
        advice = (
            "The machine is the same, so the code or its configuration changed the numbers: "
            "re-measure with `make compare`."
        )
    else:
        advice = (
            "On another machine (CPU, ISA or thread count) training takes other rounding paths: "
            "expect a difference of the order of the seed-to-seed spread (README, "
            "reproducibility), not the same digits."
        )
    return False, (
        f"DIFFERS from the documented result in {where}: {'; '.join(differences)}. "
        f"Machine: {machine_text}. {advice}"
    )


def describe_outputs(output_dir: str) -> list[str]:
    """The files a training run leaves in ``output_dir`` that a user looks for."""
    wanted = (
        "model_final.pth",
        "last_checkpoint",
        "metrics.json",
        "config.yaml",
        "inference/coco_instances_results.json",
    )
    found = [name for name in wanted if os.path.exists(os.path.join(output_dir, name))]
    events = [n for n in os.listdir(output_dir) if n.startswith("events.out.tfevents")]
    return found + ([f"{len(events)} TensorBoard event file(s)"] if events else [])


def main(argv: list[str] | None = None) -> None:
    """``tools/demo.py`` and ``python -m pwlu_det.engine.demo``: train, evaluate, compare with
    the documented row, draw. Paths (data, outputs) are relative to the working directory."""
    opts = parse_demo_args(argv).opts
    config_file = get_config_file(DEFAULT_DEMO_CONFIG)
    outcome = run_demo(config_file, opts)
    print(
        f"\nPWLU Mask R-CNN R18-FPN on shapes_val ({DEFAULT_DEMO_CONFIG}), "
        f"{outcome['seconds'] / 60:.1f} min:"
    )
    print(format_ap_table(outcome["results"]))
    if opts:
        print("\nConfig overrides given: not compared with the documented figures.")
    else:
        from pwlu_det.config import load_pwlu_config

        seed = load_pwlu_config(config_file).SEED
        _, message = compare_with_documented(outcome["results"], config_file, seed)
        print(f"\nAP {message}")
        if resumed := resumed_at(outcome["output_dir"]):
            print(
                f"This run's training was resumed from iteration {resumed[0]}: Detectron2 "
                "restarts the data order on resume, so it is not the documented run's training "
                f"(delete {outcome['output_dir']} and run again to reproduce it)."
            )
    print(
        f"\nOutputs in {outcome['output_dir']}: "
        + ", ".join(describe_outputs(outcome["output_dir"]))
    )
    print("Pictures:")
    for path in write_demo_pictures(config_file, opts):
        print(f"  {path}")


if __name__ == "__main__":  # python -m pwlu_det.engine.demo: the same as tools/demo.py
    main()
