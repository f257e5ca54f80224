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

from detectron2.checkpoint import DetectionCheckpointer
from detectron2.config import CfgNode
from detectron2.engine import default_argument_parser, default_setup
from detectron2.evaluation import verify_results
from detectron2.utils import comm
from detectron2.utils.logger import setup_logger

from pwlu_det.config import load_pwlu_config
from pwlu_det.data import SHAPES_SPLITS, check_dataset_files, register_shapes_datasets

from .checkpoint import AtomicDetectionCheckpointer, atomic_write
from .launch import launch
from .trainer import PWLUTrainer

__all__ = ["FINAL_RESULTS", "argument_parser", "main", "run", "setup"]

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

    Raises:
        ValueError: an invalid ``MODEL.PWLU`` / ``MODEL.ACTIVATION`` value.
        FileNotFoundError: a dataset's files are missing (the message says how to get them).
    """
    cfg = load_pwlu_config(args.config_file, args.opts)
    if not _uses_cuda(cfg) and cfg.MODEL.DEVICE != "cpu":
        raise ValueError(f"MODEL.DEVICE = {cfg.MODEL.DEVICE!r}: expected 'cpu' or 'cuda[:N]'")
    cfg.freeze()
    default_setup(cfg, args)
    setup_logger(cfg.OUTPUT_DIR, distributed_rank=comm.get_rank(), name="pwlu_det")
    names = [*cfg.DATASETS.TRAIN, *cfg.DATASETS.TEST]
    if any(name in SHAPES_SPLITS for name in names):
        if comm.is_main_process():
            register_shapes_datasets(generate=True)
        comm.synchronize()
        register_shapes_datasets(generate=False)
    check_dataset_files(cfg.DATASETS.TEST if args.eval_only else names)
    return cfg


def _refuse_to_overwrite(cfg: CfgNode, resume: bool) -> None:
    checkpointer = DetectionCheckpointer(None, cfg.OUTPUT_DIR)
    if not resume and checkpointer.has_checkpoint():
        raise FileExistsError(
            f"{cfg.OUTPUT_DIR} already holds a training run (last checkpoint: "
            f"{checkpointer.get_checkpoint_file()}); pass --resume to continue it, or set "
            "OUTPUT_DIR to another folder. Nothing was overwritten."
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
    _refuse_to_overwrite(cfg, args.resume)
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
        _write_final_results(cfg, results)
    return results


def _write_final_results(cfg: CfgNode, results: dict) -> None:
    payload = {"iterations": cfg.SOLVER.MAX_ITER, "results": results}
    path = os.path.join(cfg.OUTPUT_DIR, FINAL_RESULTS)
    atomic_write(path, lambda f: f.write(json.dumps(payload, indent=1).encode()))


def output_dir_of(args: argparse.Namespace) -> str:
    """OUTPUT_DIR that ``args`` select (without building anything)."""
    return os.path.abspath(load_pwlu_config(args.config_file, args.opts).OUTPUT_DIR)


def run(argv: list[str] | None = None) -> None:
    """``tools/train_net.py``: parse Detectron2's command line, launch :func:`main` in
    ``--num-gpus`` processes per machine."""
    args = argument_parser().parse_args(argv)
    print("Command Line Args:", args)
    launch(
        main,
        args.num_gpus,
        num_machines=args.num_machines,
        machine_rank=args.machine_rank,
        dist_url=args.dist_url,
        args=(args,),
    )


if __name__ == "__main__":  # python -m pwlu_det.engine.cli: the same as tools/train_net.py
    run(sys.argv[1:])
