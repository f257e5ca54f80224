"""``make demo``: train and evaluate a detector on the embedded shapes dataset, on CPU."""

from __future__ import annotations

import os
import time

from .cli import argument_parser, main, output_dir_of

__all__ = ["DEFAULT_DEMO_CONFIG", "format_ap_table", "run_demo"]

DEFAULT_DEMO_CONFIG = "configs/Shapes/mask_rcnn_R_18_FPN_pwlu.yaml"
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


def run_demo(config_file: str = DEFAULT_DEMO_CONFIG, opts: list[str] | None = None) -> dict:
    """Train ``config_file`` (resuming a run already in its OUTPUT_DIR), then evaluate.

    Returns:
        ``{"results": COCO AP dict, "output_dir": str, "seconds": float}``.
    """
    args = argument_parser().parse_args(["--config-file", config_file, "--resume", *(opts or [])])
    start = time.perf_counter()
    results = main(args)
    return {
        "results": results,
        "output_dir": output_dir_of(args),
        "seconds": time.perf_counter() - start,
    }


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
