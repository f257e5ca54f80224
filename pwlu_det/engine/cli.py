"""What ``tools/train_net.py`` does: config set-up, training, evaluation.

The command line is Detectron2's (``--config-file``, ``--resume``, ``--eval-only``,
``--num-gpus``, ``--num-machines``, ``--machine-rank``, ``--dist-url`` and trailing ``opts``).
On a machine without CUDA, ``--num-gpus N`` starts N CPU processes that train together (gloo).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Sequence

from detectron2.checkpoint import DetectionCheckpointer
from detectron2.config import CfgNode
from detectron2.engine import default_argument_parser, default_setup
from detectron2.evaluation import verify_results
from detectron2.utils import comm
from detectron2.utils.logger import setup_logger

from pwlu_det.checkpoint import AtomicDetectionCheckpointer
from pwlu_det.config import load_pwlu_config
from pwlu_det.data import SHAPES_SPLITS, check_dataset_files, register_shapes_datasets
from pwlu_det.utils.file_io import atomic_write

from .launch import launch
from .trainer import PWLUTrainer

__all__ = [
    "FINAL_RESULTS",
    "argument_parser",
    "launch_from_command_line",
    "main",
    "prepare_datasets",
    "refuse_to_overwrite",
    "run",
    "setup",
    "write_final_results",
]

#: File in OUTPUT_DIR with the evaluation results of a finished training run (main process).
FINAL_RESULTS = "final_results.json"

logger = logging.getLogger(__name__)


def argument_parser() -> argparse.ArgumentParser:
    """Detectron2's training argument parser."""
    return default_argument_parser(
        epilog="Example: tools/train_net.py --config-file "
        "configs/Shapes/mask_rcnn_R_18_FPN_pwlu.yaml OUTPUT_DIR output/shapes_pwlu"
    )


def _uses_cuda(cfg: CfgNode) -> bool:
    return str(cfg.MODEL.DEVICE).startswith("cuda")


def setup(args: argparse.Namespace) -> CfgNode:
    """Config from ``args`` (validated), datasets registered and checked, logging set up.

    A training run into a folder that holds one is refused (without ``--resume``) before
    anything is written there: Detectron2's ``default_setup`` writes ``config.yaml`` and
    ``log.txt``.

    Raises:
        ValueError: an invalid ``MODEL.PWLU`` / ``MODEL.ACTIVATION`` value.
        FileExistsError: ``OUTPUT_DIR`` holds a training run and ``--resume`` was not given.
        FileNotFoundError: a dataset's files are missing (the message says how to get them).
    """
    cfg = load_pwlu_config(args.config_file, args.opts)
    if not _uses_cuda(cfg) and cfg.MODEL.DEVICE != "cpu":
        raise ValueError(f"MODEL.DEVICE = {cfg.MODEL.DEVICE!r}: expected 'cpu' or 'cuda[:N]'")
    cfg.freeze()
    if not args.eval_only:
        refuse_to_overwrite(cfg.OUTPUT_DIR, args.resume)
    default_setup(cfg, args)
    setup_logger(cfg.OUTPUT_DIR, distributed_rank=comm.get_rank(), name="pwlu_det")
    prepare_datasets(cfg.DATASETS.TRAIN, cfg.DATASETS.TEST, args.eval_only)
    return cfg


def prepare_datasets(train: Sequence[str], test: Sequence[str], eval_only: bool) -> None:
    """Register (generating it once, on the main process) the shapes dataset if a split is
    named, then check that the files of the datasets the run needs exist.

    Raises:
        FileNotFoundError: a dataset's files are missing (the message says how to get them).
    """
    names = [*train, *test]
    if any(name in SHAPES_SPLITS for name in names):
        if comm.is_main_process():
            register_shapes_datasets(generate=True)
        comm.synchronize()
        register_shapes_datasets(generate=False)
    check_dataset_files(list(test) if eval_only else names)


def refuse_to_overwrite(output_dir: str, resume: bool, setting: str = "OUTPUT_DIR") -> None:
    """Raise unless ``resume`` when ``output_dir`` already holds a training run.

    Raises:
        FileExistsError: naming the last checkpoint, ``--resume`` and ``setting``.
    """
    checkpointer = DetectionCheckpointer(None, output_dir)
    if not resume and checkpointer.has_checkpoint():
        raise FileExistsError(
            f"{output_dir} already holds a training run (last checkpoint: "
            f"{checkpointer.get_checkpoint_file()}); pass --resume to continue it, or set "
            f"{setting} to another folder. Nothing was overwritten."
        )


def main(args: argparse.Namespace) -> dict:
    """Train (or with ``--eval-only`` evaluate) as ``args`` says; returns the evaluation results."""
    cfg = setup(args)
    if args.eval_only:
        model = PWLUTrainer.build_model(cfg)
        # complete: a tensor missing from the checkpoint would be evaluated at random values
        AtomicDetectionCheckpointer(model, save_dir=cfg.OUTPUT_DIR, complete=True).resume_or_load(
            cfg.MODEL.WEIGHTS, resume=args.resume
        )
        results = PWLUTrainer.test(cfg, model)
        if comm.is_main_process():
            verify_results(cfg, results)
        return results
    trainer = PWLUTrainer(cfg)
    trainer.resume_or_load(resume=args.resume)
    if trainer.start_iter >= trainer.max_iter:
        logger.info(
            "%s: training already finished at iteration %d; evaluating",
            cfg.OUTPUT_DIR,
            trainer.max_iter,
        )
        results = PWLUTrainer.test(cfg, trainer.model)
    else:
        trainer.train()
        results = getattr(trainer, "_last_eval_results", {}) or {}
    if comm.is_main_process():
        write_final_results(cfg.OUTPUT_DIR, cfg.SOLVER.MAX_ITER, results)
    return results


def write_final_results(output_dir: str, iterations: int, results: dict) -> None:
    """Write :data:`FINAL_RESULTS` (the iterations trained and the evaluation results)."""
    payload = {"iterations": iterations, "results": results}
    path = os.path.join(output_dir, FINAL_RESULTS)
    atomic_write(path, lambda f: f.write(json.dumps(payload, indent=1).encode()))


def output_dir_of(args: argparse.Namespace) -> str:
    """OUTPUT_DIR that ``args`` select (without building anything)."""
    return os.path.abspath(load_pwlu_config(args.config_file, args.opts).OUTPUT_DIR)


def launch_from_command_line(
    main_func, parser: argparse.ArgumentParser, argv: list[str] | None = None
) -> None:
    """Parse Detectron2's command line and run ``main_func(args)`` in ``--num-gpus``
    processes per machine (``--num-machines``, ``--machine-rank``, ``--dist-url``)."""
    args = parser.parse_args(argv)
    print("Command Line Args:", args)
    launch(
        main_func,
        args.num_gpus,
        num_machines=args.num_machines,
        machine_rank=args.machine_rank,
        dist_url=args.dist_url,
        args=(args,),
    )


def run(argv: list[str] | None = None) -> None:
    """``tools/train_net.py``: :func:`main` from the command line."""
    launch_from_command_line(main, argument_parser(), argv)


if __name__ == "__main__":  # python -m pwlu_det.engine.cli: the same as tools/train_net.py
    run(sys.argv[1:])
