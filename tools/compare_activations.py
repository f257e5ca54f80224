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
override every run's config. Writes results.csv, results.md and results.png, and with
``--grid`` sweep.csv and sweep.md.
"""

from __future__ import annotations

import argparse
import shlex
import sys

from pwlu_det.engine.compare import compare_activations, write_reports
from pwlu_det.engine.sweep import parse_grid, run_best_points, run_sweep, write_sweep_reports

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
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides for every run")
    return parser.parse_args(argv)


def _print_reports(paths: dict[str, str]) -> None:
    with open(paths["md"]) as f:
        print("\n" + f.read())
    print("Wrote " + ", ".join(paths.values()))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.grid and args.num_machines > 1:
        raise SystemExit("compare: a --grid sweep runs on one machine (--num-machines 1)")
    command = shlex.join(
        ["tools/compare_activations.py", *(argv if argv is not None else sys.argv[1:])]
    )
    results_dir = args.results_dir or args.work_dir
    launch = {
        "num_gpus": args.num_gpus,
        "num_machines": args.num_machines,
        "machine_rank": args.machine_rank,
        "dist_url": args.dist_url,
        "progress": lambda line: print(line, flush=True),
    }
    if args.grid:
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
        rows = run_best_points(
            args.config_file, points, sweep_rows, args.seeds, args.work_dir, args.opts, **launch
        )
    else:
        rows = compare_activations(
            args.config_file, args.seeds, args.work_dir, opts=args.opts, **launch
        )
    if args.machine_rank != 0:
        return 0
    _print_reports(write_reports(rows, results_dir, command))
    return 0


if __name__ == "__main__":
    sys.exit(main())
