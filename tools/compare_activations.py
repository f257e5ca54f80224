#!/usr/bin/env python
"""Compare activations: train configs over seeds through train_net's path, tabulate AP.

Examples::

    # Shapes PWLU, Swish and ReLU x 3 seeds, every one at its config's base LR
    tools/compare_activations.py --results-dir out/ \
        --config-file configs/Shapes/mask_rcnn_R_18_FPN_{pwlu,swish,relu}.yaml
    # COCO on 8 GPUs (set DETECTRON2_DATASETS first)
    tools/compare_activations.py --num-gpus 8 --work-dir output/compare_coco \\
        --config-file configs/COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_1x_{pwlu,swish,relu}.yaml

    # the embedded default (``make compare``), all 8 Shapes rows with equal tuning: every config
    # at 3 base LRs on shapes_tune (seed 0, and seed 1 for the two best LRs of a config when
    # they are within 2 box AP), then each at its best LR, 3 seeds, on shapes_val
    tools/compare_activations.py --grid SOLVER.BASE_LR=0.02,0.04,0.08 --results-dir out/

Every run trains into ``<work-dir>/<config name>/seed<k>`` (sweep runs into
``<work-dir>/sweep/<point>/<config name>/seed<k>``); a finished run is reused and an interrupted
one resumes, so the same command continues a comparison. Trailing ``KEY VALUE`` arguments
override every run's config. Each run is train_net (``python -m pwlu_det.engine.cli``) in a
child process, its console output in the run folder. Writes results.csv, results.md and
results.png, and with ``--grid`` sweep.csv and sweep.md.
"""

from __future__ import annotations

import argparse
import io
import os
import shlex
import statistics
import subprocess
import sys
from collections.abc import Sequence
from typing import IO

from pwlu_det.engine.compare import (
    Launcher,
    RunSpec,
    compare_activations,
    rows_by_config,
    run_metrics,
    write_reports,
)
from pwlu_det.engine.sweep import parse_grid, run_best_points, run_sweep, write_sweep_reports
from pwlu_det.utils.file_io import atomic_write
from pwlu_det.utils.user_errors import (
    USAGE,
    UserError,
    add_debug_argument,
    exit_on_user_error,
    user_errors,
)

#: The embedded comparison's rows: the fixed baselines, the learned activations the paper
#: compared with (and ACON-C), PWLU frozen at its realigned Swish start (the ablation), PWLU.
SHAPES_CONFIGS = [
    f"configs/Shapes/mask_rcnn_R_18_FPN_{name}.yaml"
    for name in ("relu", "swish", "prelu", "aconc", "frelu", "pau", "pwlu_frozen", "pwlu")
]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--config-file", nargs="+", default=SHAPES_CONFIGS, help="configs to compare"
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="SEED values")
    parser.add_argument("--work-dir", default="output/compare", help="parent of the run folders")
    parser.add_argument(
        "--results-dir", default=None, help="where the reports go (default: --work-dir)"
    )
    parser.add_argument("--num-gpus", type=int, default=1, help="processes per machine")
    parser.add_argument("--num-machines", type=int, default=1)
    parser.add_argument("--machine-rank", type=int, default=0)
    parser.add_argument("--dist-url", default="auto")
    parser.add_argument(
        "--grid",
        nargs="+",
        metavar="KEY=V1,V2",
        help="sweep these config values (Cartesian product) on --tune-set for every config, "
        "then run each config at its best point over --seeds",
    )
    parser.add_argument(
        "--tune-set", default="shapes_tune", help="test set of the sweep runs (not shapes_val)"
    )
    parser.add_argument(
        "--tune-seeds", type=int, nargs="+", default=[0], help="seeds of every sweep point"
    )
    parser.add_argument(
        "--tie-seeds",
        type=int,
        nargs="*",
        default=[1],
        help="extra seeds for a config's two best points when they are within --tie-margin",
    )
    parser.add_argument("--tie-margin", type=float, default=2.0, help="box AP (default 2.0)")
    parser.add_argument(
        "--sweep-only",
        action="store_true",
        help="with --grid: stop after the sweep and its reports (a study on --tune-set)",
    )
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides for every run")
    add_debug_argument(parser)
    return parser.parse_args(argv)


def train_net_launcher(
    num_gpus: int, num_machines: int, machine_rank: int, dist_url: str
) -> Launcher:
    """Each run is ``python -m pwlu_det.engine.cli --resume`` (train_net) in a child process."""

    def launch(spec: RunSpec, opts: list[str], console: IO[bytes]) -> int:
        command = [
            sys.executable,
            "-m",
            "pwlu_det.engine.cli",
            "--config-file",
            spec.config_file,
            "--resume",
            "--num-gpus",
            str(num_gpus),
            "--num-machines",
            str(num_machines),
            "--machine-rank",
            str(machine_rank),
            "--dist-url",
            dist_url,
            *opts,
        ]
        return subprocess.call(command, stdout=console, stderr=subprocess.STDOUT)

    return launch


def git_commit() -> str:
    """``git describe`` of the checkout this tool runs from, or "unknown"."""
    try:
        out = subprocess.run(
            ["git", "describe", "--always", "--dirty", "--abbrev=12"],
            capture_output=True,
            text=True,
            check=True,
            cwd=os.path.dirname(os.path.abspath(__file__)),
        )
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return out.stdout.strip()


def plot_comparison(rows: Sequence[dict], path: str) -> None:
    """``results.png``: box and mask AP per seed with the mean of each config, and every
    run's total loss."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    groups = rows_by_config(rows)
    palette = [f"C{i % 10}" for i in range(len(groups))]
    colors = dict(zip(groups, palette, strict=True))
    fig = Figure(figsize=(15, 4.2))
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, 3)
    for ax, task, title in ((axes[0], "bbox", "box AP"), (axes[1], "segm", "mask AP")):
        for x, (config, group) in enumerate(groups.items()):
            values = [r[f"{task}_AP"] for r in group if r[f"{task}_AP"] is not None]
            if not values:
                continue
            ax.scatter([x] * len(values), values, color=colors[config], zorder=3)
            ax.hlines(statistics.fmean(values), x - 0.25, x + 0.25, color=colors[config], lw=2)
        ax.set_xticks(range(len(groups)))
        ax.set_xticklabels([g[0]["activation"] for g in groups.values()], rotation=30)
        ax.set_title(f"{title} per seed (bar: mean)")
        ax.grid(axis="y", alpha=0.3)
    for config, group in groups.items():
        for n, row in enumerate(group):
            points = [
                (m["iteration"], m["total_loss"])
                for m in run_metrics(row["output_dir"])
                if "total_loss" in m
            ]
            if points:
                xs, ys = zip(*points, strict=True)
                label = config if n == 0 else None
                axes[2].plot(xs, ys, color=colors[config], alpha=0.7, label=label)
    axes[2].set_title("total loss (metrics.json)")
    axes[2].set_xlabel("iteration")
    axes[2].legend(fontsize=8)
    axes[2].grid(alpha=0.3)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    atomic_write(path, lambda f: f.write(buffer.getvalue()))


def _print_reports(paths: dict[str, str]) -> None:
    with open(paths["md"]) as f:
        print("\n" + f.read())
    print("Wrote " + ", ".join(paths.values()))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    command = shlex.join(
        ["tools/compare_activations.py", *(argv if argv is not None else sys.argv[1:])]
    )
    return exit_on_user_error(lambda: run(args, command), debug=args.debug)


def run(args: argparse.Namespace, command: str) -> int:
    """The comparison (or sweep) that ``args`` asks for; ``command`` goes into the reports."""
    if args.grid and args.num_machines > 1:
        raise UserError("a --grid sweep runs on one machine (--num-machines 1)", USAGE)
    if args.sweep_only and not args.grid:
        raise UserError("--sweep-only needs --grid", USAGE)
    results_dir = args.results_dir or args.work_dir
    launch = {
        "launch": train_net_launcher(
            args.num_gpus, args.num_machines, args.machine_rank, args.dist_url
        ),
        "machine_rank": args.machine_rank,
        "progress": lambda line: print(line, flush=True),
    }
    if args.grid:
        with user_errors(ValueError, status=USAGE):
            points = parse_grid(args.grid)
        tune_opts = [*args.opts, "DATASETS.TEST", f"('{args.tune_set}',)"]
        sweep_rows = run_sweep(
            args.config_file,
            points,
            args.tune_seeds,
            args.work_dir,
            tune_opts,
            tie_seeds=args.tie_seeds,
            tie_margin=args.tie_margin,
            **launch,
        )
        if args.machine_rank == 0:
            _print_reports(write_sweep_reports(sweep_rows, results_dir, command))
        if args.sweep_only:
            return 0
        rows = run_best_points(
            args.config_file, points, sweep_rows, args.seeds, args.work_dir, args.opts, **launch
        )
    else:
        rows = compare_activations(
            args.config_file, args.seeds, args.work_dir, opts=args.opts, **launch
        )
    if args.machine_rank != 0:
        return 0
    paths = write_reports(rows, results_dir, command, commit=git_commit())
    paths["png"] = os.path.join(results_dir, "results.png")
    plot_comparison(rows, paths["png"])
    _print_reports(paths)
    return 0


if __name__ == "__main__":
    sys.exit(main())
