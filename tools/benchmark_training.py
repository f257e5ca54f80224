#!/usr/bin/env python
"""Training-step time of several configs, measured in interleaved rounds in one process.

Each config gets its own PWLUTrainer (its model, optimizer, data loader and hooks: the
realignment, the curves, Detectron2's writers and checkpointer), stepped as Detectron2's
training loop steps it. After ``--warmup`` steps (past the PWLU realignment: the Phase II step
is the one a run spends most of its time in), the configs take turns, ``--steps`` steps each
per round, in an order that alternates between rounds. Printed: the median step time of each
config, and the median, quartiles and range over rounds of its ratio to the first config,
computed round by round, and the foreground RoIs per image each model sampled (the heads' work
depends on them). With ``--profile``, torch.profiler then records ``--steps`` steps of
each config and prints the share of the step spent in the PWLU op (forward, backward), the bound
projection, the hooks, and, for scale, SiLU (Swish's activation).

Example (the demo model against its Swish twin, 2 threads)::

    .venv/bin/python tools/benchmark_training.py --threads 2 --profile \
        --config-file configs/Shapes/mask_rcnn_R_18_FPN_swish.yaml \
        --config-file configs/Shapes/mask_rcnn_R_18_FPN_pwlu.yaml

A benchmark that prints numbers; nothing here is a test.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch
from tabulate import tabulate

from pwlu_det.config import load_pwlu_config
from pwlu_det.data import register_shapes_datasets
from pwlu_det.engine import PWLUTrainer
from pwlu_det.utils.machine import describe_machine, machine_info

#: Overrides of every config: a short Phase I (so the warm-up reaches Phase II), no evaluation,
#: no periodic checkpoint inside the measurement (the curves hook still draws at --period).
COMMON_OPTS = ["MODEL.PWLU.STATISTICS_ITERS", "2", "DATASETS.TEST", "()"]

#: Profiler event names (prefixes) of each PWLU share.
SHARES = {
    "PWLU forward": ("pwlu_det::pwlu_forward",),
    "PWLU backward": ("pwlu_det::pwlu_backward",),
    "bound projection": ("pwlu/project_bounds",),
    "SiLU forward+backward": ("aten::silu",),  # for scale: Swish's activation
    "hooks": ("hook/",),
}


class SteppedTrainer:
    """A trainer driven one step at a time, as ``TrainerBase.train`` drives it."""

    def __init__(self, config_file: str, opts: list[str], output_dir: str, period: int):
        from detectron2.utils.events import EventStorage

        cfg = load_pwlu_config(
            config_file,
            [*opts, *COMMON_OPTS, "OUTPUT_DIR", output_dir, "SOLVER.CHECKPOINT_PERIOD", period],
        )
        self.name = Path(config_file).stem
        self.trainer = PWLUTrainer(cfg)
        for hook in self.trainer._hooks:
            _label_hook(hook)
        self.storage = EventStorage(0)  # entered around each call: get_event_storage() is its
        self.trainer.storage = self.storage
        self.trainer.iter = self.trainer.start_iter = 0
        with self.storage:
            self.trainer.before_train()

    def step(self) -> float:
        """One training step with its hooks; returns its wall time in seconds."""
        start = time.perf_counter()
        with self.storage:
            self.storage.iter = self.trainer.iter
            self.trainer.before_step()
            self.trainer.run_step()
            self.trainer.after_step()
        self.trainer.iter += 1
        return time.perf_counter() - start


def _label_hook(hook) -> None:
    """Wrap the hook's per-step methods in profiler ranges named ``hook/<class>``."""
    name = f"hook/{type(hook).__name__}"
    for method in ("before_step", "after_step"):
        bound = getattr(hook, method)

        def labelled(bound=bound, label=f"{name}.{method}"):
            with torch.profiler.record_function(label):
                bound()

        setattr(hook, method, labelled)


def interleaved(trainers: list[SteppedTrainer], rounds: int, steps: int) -> list[list[float]]:
    """Median step time of each trainer in each round (order alternating between rounds).

    Each turn starts with one untimed step: the first step after another trainer's turn pays
    for bringing this trainer's memory back (tens of thousands of page faults, up to twice a
    step's time, measured with ``getrusage``)."""
    medians = [[] for _ in trainers]
    for r in range(rounds):
        order = list(range(len(trainers)))
        if r % 2:
            order.reverse()
        for i in order:
            trainers[i].step()
            medians[i].append(statistics.median(trainers[i].step() for _ in range(steps)))
    return medians


def foreground_rois(trainer: SteppedTrainer, first_iter: int) -> float:
    """Mean foreground RoIs per image the box head sampled from step ``first_iter`` on. The mask
    head's convolutions and RoIAlign's backward grow with them, so two models at different
    points of learning do different amounts of work per step."""
    history = trainer.storage.histories().get("roi_head/num_fg_samples")
    values = [v for v, it in history.values() if it >= first_iter] if history else []
    return statistics.mean(values) if values else float("nan")


def profile_shares(trainer: SteppedTrainer, steps: int) -> dict[str, float]:
    """Share of the profiled steps' wall time in each of :data:`SHARES` (CPU self time of the
    op events, total time of the ranges)."""
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        start = time.perf_counter()
        for _ in range(steps):
            trainer.step()
        wall_us = (time.perf_counter() - start) * 1e6
    shares = dict.fromkeys(SHARES, 0.0)
    for event in prof.key_averages():
        for share, prefixes in SHARES.items():
            if event.key.startswith(prefixes):
                ranges = share in ("bound projection", "hooks")
                shares[share] += event.cpu_time_total if ranges else event.self_cpu_time_total
    return {share: value / wall_us for share, value in shares.items()}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--config-file", action="append", required=True, help="repeat; first = baseline"
    )
    parser.add_argument("--warmup", type=int, default=6, help="steps before timing (default 6)")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument(
        "--steps", type=int, default=4, help="timed steps per config per round (after one untimed)"
    )
    parser.add_argument("--period", type=int, default=1000, help="SOLVER.CHECKPOINT_PERIOD")
    parser.add_argument("--threads", type=int, default=None, help="torch threads")
    parser.add_argument("--profile", action="store_true", help="then profile each config")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides of every run")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    register_shapes_datasets()
    with tempfile.TemporaryDirectory() as work:
        trainers = [
            SteppedTrainer(config, args.opts, str(Path(work) / str(i)), args.period)
            for i, config in enumerate(args.config_file)
        ]
        for trainer in trainers:
            for _ in range(args.warmup):
                trainer.step()
        medians = interleaved(trainers, args.rounds, args.steps)
        base = medians[0]
        rows = []
        for trainer, times in zip(trainers, medians, strict=True):
            ratios = [t / b for t, b in zip(times, base, strict=True)]
            quartiles = statistics.quantiles(ratios, n=4) if len(ratios) > 1 else ratios * 3
            rows.append(
                [
                    trainer.name,
                    f"{statistics.median(times) * 1e3:.0f}",
                    f"{min(times) * 1e3:.0f}-{max(times) * 1e3:.0f}",
                    f"{statistics.median(ratios):.3f}",
                    f"{quartiles[0]:.3f}-{quartiles[2]:.3f}",
                    f"{min(ratios):.3f}-{max(ratios):.3f}",
                    f"{foreground_rois(trainer, args.warmup):.1f}",
                ]
            )
        print(f"Machine: {describe_machine(machine_info())}")
        print(
            f"{args.rounds} rounds x {args.steps} steps per config, after {args.warmup} warm-up "
            f"steps (Phase II); ratios to {trainers[0].name}, round by round\n"
        )
        headers = [
            "config",
            "step ms (median)",
            "range",
            "ratio (median)",
            "ratio quartiles",
            "ratio range",
            "fg RoIs / image",
        ]
        print(tabulate(rows, headers=headers, tablefmt="github"))
        if args.profile:
            table = []
            for trainer in trainers:
                shares = profile_shares(trainer, args.steps)
                table.append([trainer.name, *(f"{100 * v:.2f}%" for v in shares.values())])
            print(f"\nShare of the step (torch.profiler, {args.steps} steps each)\n")
            print(tabulate(table, headers=["config", *SHARES], tablefmt="github"))


if __name__ == "__main__":
    main()
