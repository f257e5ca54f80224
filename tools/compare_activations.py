#!/usr/bin/env python
"""Compare activations: train configs over seeds through train_net's path, tabulate AP.

Examples::

    # the embedded default (``make compare``): Shapes PWLU, Swish and ReLU x 3 seeds
    tools/compare_activations.py --results-dir benchmarks/results/shapes
    # COCO on 8 GPUs (set DETECTRON2_DATASETS first)
    tools/compare_activations.py --num-gpus 8 --work-dir output/compare_coco \\
        --config-file configs/COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_1x_{pwlu,swish,relu}.yaml

Every run trains into ``<work-dir>/<config name>/seed<k>``; a finished run is reused and an
interrupted one resumes, so the same command continues a comparison. Trailing ``KEY VALUE``
arguments override every run's config. Writes results.csv, results.md and results.png.
"""

from __future__ import annotations

import argparse
import shlex
import sys

from pwlu_det.engine.compare import compare_activations, write_reports

SHAPES_CONFIGS = [
    f"configs/Shapes/mask_rcnn_R_18_FPN_{name}.yaml" for name in ("pwlu", "swish", "relu")
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
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides for every run")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    rows = compare_activations(
        args.config_file,
        args.seeds,
        args.work_dir,
        opts=args.opts,
        num_gpus=args.num_gpus,
        num_machines=args.num_machines,
        machine_rank=args.machine_rank,
        dist_url=args.dist_url,
        progress=lambda line: print(line, flush=True),
    )
    if args.machine_rank != 0:
        return 0
    command = shlex.join(
        ["tools/compare_activations.py", *(argv if argv is not None else sys.argv[1:])]
    )
    paths = write_reports(rows, args.results_dir or args.work_dir, command)
    with open(paths["md"]) as f:
        print("\n" + f.read())
    print("Wrote " + ", ".join(paths.values()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
