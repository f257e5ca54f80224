"""What ``tools/train_net.py`` does: config set-up, training, evaluation.

The command line is Detectron2's (``--config-file``, ``--resume``, ``--eval-only``,
``--num-gpus``, ``--num-machines``, ``--machine-rank``, ``--dist-url`` and trailing ``opts``),
plus ``--debug``. On a machine without CUDA, ``--num-gpus N`` starts N CPU processes that train
together (gloo).

A user error (a bad config file, key or value, missing dataset files, a checkpoint that is
missing, damaged or of another activation, an output folder that holds a run) ends the command
with one line and exit status 2 (config) or 1, before a model is built, data is generated or
anything is written (a checkpoint of ``--eval-only`` is checked against the built model, still
before anything is written); ``--debug`` or ``PWLU_DET_DEBUG=1`` shows the traceback.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Callable, Sequence

from detectron2.checkpoint import DetectionCheckpointer
from detectron2.config import CfgNode
from detectron2.engine import default_argument_parser, default_setup
from detectron2.evaluation import verify_results
from detectron2.modeling import build_model
from detectron2.utils import comm
from detectron2.utils.logger import setup_logger

from pwlu_det.checkpoint import AtomicDetectionCheckpointer, check_checkpoint_exists
from pwlu_det.config import load_pwlu_config
from pwlu_det.data import SHAPES_SPLITS, check_dataset_files, register_shapes_datasets
from pwlu_det.utils.file_io import atomic_write
from pwlu_det.utils.user_errors import (
    USAGE,
    add_debug_argument,
    exit_on_user_error,
    user_errors,
)

from .launch import launch
from .trainer import PWLUTrainer

__all__ = [
    "FINAL_RESULTS",
    "argument_parser",
    "check_before_work",
    "check_command_line",
    "launch_from_command_line",
    "load_config",
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
    """Detectron2's training argument parser, plus ``--debug`` (tracebacks of user errors)."""
    return add_debug_argument(
        default_argument_parser(
            epilog="Example: tools/train_net.py --config-file "
            "configs/Shapes/mask_rcnn_R_18_FPN_pwlu.yaml OUTPUT_DIR output/shapes_pwlu"
        )
    )


def _uses_cuda(cfg: CfgNode) -> bool:
    return str(cfg.MODEL.DEVICE).startswith("cuda")


def load_config(args: argparse.Namespace) -> CfgNode:
    """The config of ``args`` (file and overrides), validated and frozen.

    Raises:
        AssertionError, KeyError, ValueError, yaml.YAMLError: the file does not exist, or a
            key, value or the file is bad (marked as usage errors, status 2).
    """
    cfg = load_pwlu_config(args.config_file, args.opts)
    if not _uses_cuda(cfg) and cfg.MODEL.DEVICE != "cpu":
        with user_errors(ValueError, status=USAGE):
            raise ValueError(f"MODEL.DEVICE = {cfg.MODEL.DEVICE!r}: expected 'cpu' or 'cuda[:N]'")
    cfg.freeze()
    return cfg


def check_before_work(
    output_dir: str,
    datasets: Sequence[str],
    weights: str,
    *,
    eval_only: bool,
    resume: bool,
    setting: str = "OUTPUT_DIR",
    weights_setting: str = "MODEL.WEIGHTS",
) -> None:
    """The checks of a run that need no model and write nothing, so that a refused run leaves
    no trace: its output folder (:func:`refuse_to_overwrite`, training only), the files of the
    datasets it needs other than the shapes splits (generated when missing) and the checkpoint
    file it starts from, if it is a local path.

    Args:
        output_dir: the run's folder; ``setting`` names it in the message.
        datasets: the datasets the run needs.
        weights: the checkpoint to start from (``weights_setting``), used unless ``resume``
            finds a checkpoint in ``output_dir``.
        eval_only, resume: the command-line flags.

    Raises:
        FileExistsError: training into a folder that holds a run, without ``--resume``.
        FileNotFoundError: dataset files, or the checkpoint, are missing.
        DatasetNotRegisteredError: an unknown dataset name.
    """
    if not eval_only:
        refuse_to_overwrite(output_dir, resume, setting)
    check_dataset_files([name for name in datasets if name not in SHAPES_SPLITS])
    resumes = resume and DetectionCheckpointer(None, output_dir).has_checkpoint()
    if weights and not resumes:
        check_checkpoint_exists(weights, weights_setting)


def _check(cfg: CfgNode, args: argparse.Namespace) -> None:
    datasets = [*([] if args.eval_only else cfg.DATASETS.TRAIN), *cfg.DATASETS.TEST]
    check_before_work(
        cfg.OUTPUT_DIR, datasets, cfg.MODEL.WEIGHTS, eval_only=args.eval_only, resume=args.resume
    )


def check_command_line(args: argparse.Namespace) -> None:
    """:func:`load_config` and :func:`check_before_work` for ``args``: run in the launching
    process, before any worker starts, so that user errors come out as one line."""
    _check(load_config(args), args)


def setup(args: argparse.Namespace) -> CfgNode:
    """Config from ``args`` (validated), checks, logging set up, datasets registered.

    Everything that can refuse the run without a model (:func:`check_before_work`) is checked
    before anything is written: Detectron2's ``default_setup`` writes ``config.yaml`` and
    ``log.txt`` into ``OUTPUT_DIR``, and the shapes dataset is generated when a split is named.

    Raises:
        ValueError: an invalid ``MODEL.PWLU`` / ``MODEL.ACTIVATION`` value.
        FileExistsError: ``OUTPUT_DIR`` holds a training run and ``--resume`` was not given.
        FileNotFoundError: a dataset's files are missing (the message says how to get them).
    """
    cfg = load_config(args)
    _check(cfg, args)
    _set_up(cfg, args)
    return cfg


def _set_up(cfg: CfgNode, args: argparse.Namespace) -> None:
    default_setup(cfg, args)
    setup_logger(cfg.OUTPUT_DIR, distributed_rank=comm.get_rank(), name="pwlu_det")
    prepare_datasets(cfg.DATASETS.TRAIN, cfg.DATASETS.TEST, args.eval_only)


def prepare_datasets(train: Sequence[str], test: Sequence[str], eval_only: bool) -> None:
    """Register (generating it once, on the main process) the shapes dataset if a split is
    named, then check that the files of the datasets the run needs exist.

    The other datasets' files are checked first: a run that would fail on them generates
    nothing.

    Raises:
        FileNotFoundError: a dataset's files are missing (the message says how to get them).
    """
    names = [*test] if eval_only else [*train, *test]
    check_dataset_files([name for name in names if name not in SHAPES_SPLITS])
    if any(name in SHAPES_SPLITS for name in [*train, *test]):
        if comm.is_main_process():
            register_shapes_datasets(generate=True)
        comm.synchronize()
        register_shapes_datasets(generate=False)
    check_dataset_files(names)


def refuse_to_overwrite(output_dir: str, resume: bool, setting: str = "OUTPUT_DIR") -> None:
    """Raise unless ``resume`` when ``output_dir`` already holds a training run.

    Raises:
        FileExistsError: naming the last checkpoint, ``--resume`` and ``setting`` (a user
            error).
    """
    checkpointer = DetectionCheckpointer(None, output_dir)
    if not resume and checkpointer.has_checkpoint():
        with user_errors(FileExistsError):
            raise FileExistsError(
                f"{output_dir} already holds a training run (last checkpoint: "
                f"{checkpointer.get_checkpoint_file()}); pass --resume to continue it, or set "
                f"{setting} to another folder. Nothing was overwritten."
            )


def main(args: argparse.Namespace) -> dict:
    """Train (or with ``--eval-only`` evaluate) as ``args`` says; returns the evaluation results.

    With ``--eval-only`` the checkpoint is loaded (and refused if it does not fit) before
    anything is written or generated.
    """
    if not args.eval_only:
        return _train(setup(args), args)
    cfg = load_config(args)
    _check(cfg, args)
    model = build_model(cfg)
    # complete: a tensor missing from the checkpoint would be evaluated at random values
    AtomicDetectionCheckpointer(model, save_dir=cfg.OUTPUT_DIR, complete=True).resume_or_load(
        cfg.MODEL.WEIGHTS, resume=args.resume
    )
    _set_up(cfg, args)
    logger.info("Model:\n%s", model)
    results = PWLUTrainer.test(cfg, model)
    if comm.is_main_process():
        verify_results(cfg, results)
    return results


def _train(cfg: CfgNode, args: argparse.Namespace) -> dict:
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
    main_func,
    parser: argparse.ArgumentParser,
    argv: list[str] | None = None,
    check: Callable[[argparse.Namespace], None] | None = None,
) -> None:
    """Parse Detectron2's command line and run ``main_func(args)`` in ``--num-gpus``
    processes per machine (``--num-machines``, ``--machine-rank``, ``--dist-url``).

    ``check(args)`` runs first, in this process. A user error (a bad config, a refused output
    folder, missing data, an unusable checkpoint) ends the command with one line and exit
    status 2 (command line, config) or 1, unless ``--debug``
    (:mod:`pwlu_det.utils.user_errors`).
    """
    args = parser.parse_args(argv)

    def work() -> None:
        if check is not None:
            check(args)
        print("Command Line Args:", args)
        launch(
            main_func,
            args.num_gpus,
            num_machines=args.num_machines,
            machine_rank=args.machine_rank,
            dist_url=args.dist_url,
            args=(args,),
        )

    exit_on_user_error(work, debug=getattr(args, "debug", False))


def run(argv: list[str] | None = None) -> None:
    """``tools/train_net.py``: :func:`main` from the command line."""
    launch_from_command_line(main, argument_parser(), argv, check=check_command_line)


if __name__ == "__main__":  # python -m pwlu_det.engine.cli: the same as tools/train_net.py
    run(sys.argv[1:])
