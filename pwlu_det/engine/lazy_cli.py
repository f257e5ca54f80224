"""What ``tools/lazyconfig_train_net.py`` does: Detectron2's lazy training loop with PWLU.

Detectron2's own ``tools/lazyconfig_train_net.py`` (``do_train``, ``do_test``), plus what
``train_net.py`` has, shared with it:

- the PWLU options come from the config's ``pwlu`` node, validated as the yacs keys are
  (:func:`pwlu_det.lazy.pwlu_cfg`);
- the PWLU optimizer rules (:func:`pwlu_param_overrides`) join ``optimizer.params.overrides``,
  and the optimizer keeps the bounds apart (:func:`keep_bounds_apart`);
- the PWLU hooks (:func:`add_pwlu_hooks`): the realignment before the checkpointer;
- atomic, strict checkpoints (:class:`AtomicDetectionCheckpointer`); ``--resume`` continues a
  run exactly where it stopped, and a run into a folder that holds one is refused without it;
- ``--eval-only`` loads strictly and completely; COCO evaluation uses Detectron2's fast C++
  evaluation where ``detectron2._C`` is built, pycocotools otherwise;
- the shapes dataset is registered (and generated once) when the config names a split;
- ``--num-gpus N`` on a CPU-only machine trains in N gloo processes;
- user errors (config, overrides, datasets, checkpoint, output folder) end the command with one
  line, exit status 2 (config) or 1, before any work; ``--debug`` shows the traceback.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

from detectron2.config import LazyConfig, instantiate
from detectron2.engine import (
    AMPTrainer,
    SimpleTrainer,
    default_argument_parser,
    default_setup,
    default_writers,
    hooks,
)
from detectron2.evaluation import COCOEvaluator, inference_on_dataset, print_csv_format
from detectron2.utils import comm
from hydra.errors import HydraException
from omegaconf import DictConfig
from omegaconf.errors import OmegaConfBaseException

from pwlu_det.checkpoint import AtomicDetectionCheckpointer
from pwlu_det.lazy import lazy_target, pwlu_cfg, pwlu_options
from pwlu_det.utils.user_errors import USAGE, add_debug_argument, user_errors

from .cli import (
    check_before_work,
    launch_from_command_line,
    prepare_datasets,
    write_final_results,
)
from .optimizer import keep_bounds_apart, pwlu_optimizer_rules, pwlu_param_overrides
from .trainer import (
    add_pwlu_hooks,
    create_ddp_model_cpu_aware,
    fast_coco_eval_available,
    pwlu_hook_options,
)

__all__ = [
    "argument_parser",
    "check_command_line",
    "do_test",
    "do_train",
    "load_config",
    "main",
    "run",
    "setup",
]

logger = logging.getLogger(__name__)

# What loading a lazy config and its overrides raises for a bad file, key or value.
_CONFIG_ERRORS = (
    FileNotFoundError,
    SyntaxError,
    KeyError,
    ValueError,
    AssertionError,
    HydraException,
    OmegaConfBaseException,
)


def argument_parser() -> argparse.ArgumentParser:
    """Detectron2's argument parser (``opts`` are LazyConfig overrides, ``key=value``), plus
    ``--debug`` (tracebacks of user errors)."""
    return add_debug_argument(
        default_argument_parser(
            epilog="Example: tools/lazyconfig_train_net.py --config-file "
            "configs/Shapes/mask_rcnn_R_18_FPN_pwlu.py train.output_dir=output/lazy_shapes"
        )
    )


def _dataset_names(node) -> list[str]:
    names = node.dataset.names if "dataset" in node and "names" in node.dataset else []
    return [names] if isinstance(names, str) else list(names)


def load_config(args: argparse.Namespace) -> DictConfig:
    """The lazy config of ``args`` with its overrides, and its ``pwlu`` node validated.

    Raises:
        FileNotFoundError, SyntaxError, KeyError, ValueError, AssertionError, HydraException,
            OmegaConfBaseException: the file does not exist or does not load, or an override
            or a ``pwlu`` value is bad (marked as usage errors, status 2).
    """
    with user_errors(*_CONFIG_ERRORS, status=USAGE):
        if not os.path.isfile(args.config_file):
            raise FileNotFoundError(f"config file not found: {args.config_file}")
        cfg = LazyConfig.load(args.config_file)
        cfg = LazyConfig.apply_overrides(cfg, args.opts)
        if "pwlu" not in cfg:
            cfg.pwlu = pwlu_options()
        pwlu_cfg(cfg.pwlu)
    return cfg


def _check(cfg: DictConfig, args: argparse.Namespace) -> None:
    datasets = _dataset_names(cfg.dataloader.test)
    if not args.eval_only:
        datasets = _dataset_names(cfg.dataloader.train) + datasets
    check_before_work(
        cfg.train.output_dir,
        datasets,
        cfg.train.init_checkpoint,
        eval_only=args.eval_only,
        resume=args.resume,
        setting="train.output_dir",
        weights_setting="train.init_checkpoint",
    )


def check_command_line(args: argparse.Namespace) -> None:
    """:func:`load_config` and the checks before work (see
    :func:`pwlu_det.engine.cli.check_before_work`), in the launching process."""
    _check(load_config(args), args)


def setup(args: argparse.Namespace) -> DictConfig:
    """The lazy config of ``args`` (:func:`load_config`), the checks that need no model, then
    Detectron2's logging set up and the datasets registered and checked.

    A training run into a folder that holds one is refused (without ``--resume``) before
    anything is written there.

    Raises:
        ValueError: an invalid ``pwlu`` value.
        FileExistsError: ``train.output_dir`` holds a training run and ``--resume`` was not given.
        FileNotFoundError: a dataset's files are missing.
    """
    cfg = load_config(args)
    _check(cfg, args)
    _set_up(cfg, args)
    return cfg


def _set_up(cfg: DictConfig, args: argparse.Namespace) -> None:
    default_setup(cfg, args)
    prepare_datasets(
        _dataset_names(cfg.dataloader.train), _dataset_names(cfg.dataloader.test), args.eval_only
    )


def do_test(cfg: DictConfig, model) -> dict:
    """Evaluate ``model`` on ``dataloader.test`` with ``dataloader.evaluator`` (if any)."""
    if "evaluator" not in cfg.dataloader:
        return {}
    evaluator = cfg.dataloader.evaluator
    if lazy_target(evaluator) is COCOEvaluator and "use_fast_impl" not in evaluator:
        evaluator.use_fast_impl = fast_coco_eval_available()
    results = inference_on_dataset(
        model, instantiate(cfg.dataloader.test), instantiate(cfg.dataloader.evaluator)
    )
    print_csv_format(results)
    return results


def _build_model(cfg: DictConfig):
    model = instantiate(cfg.model)
    model.to(cfg.train.device)
    return model


def do_train(cfg: DictConfig, resume: bool) -> dict:
    """Train as Detectron2's lazy ``do_train``, with the PWLU method; returns the last
    evaluation's results."""
    pwlu = pwlu_cfg(cfg.pwlu)  # validated once; the hooks and rules take its values
    model = _build_model(cfg)
    logger.info("Model:\n%s", model)
    overrides = dict(cfg.optimizer.params.get("overrides") or {})
    overrides.update(pwlu_param_overrides(model, cfg.optimizer.lr, **pwlu_optimizer_rules(pwlu)))
    cfg.optimizer.params.overrides = overrides
    cfg.optimizer.params.model = model
    optimizer = instantiate(cfg.optimizer)
    keep_bounds_apart(optimizer, model)
    train_loader = instantiate(cfg.dataloader.train)

    model = create_ddp_model_cpu_aware(model, **cfg.train.ddp)
    trainer_class = AMPTrainer if cfg.train.amp.enabled else SimpleTrainer
    trainer = trainer_class(model, train_loader, optimizer)
    output_dir = cfg.train.output_dir
    checkpointer = AtomicDetectionCheckpointer(model, output_dir, trainer=trainer)
    results = {}

    def evaluate():
        results.update(do_test(cfg, model))
        return results

    main_process = comm.is_main_process()
    hook_list = [
        hooks.IterationTimer(),
        hooks.LRScheduler(scheduler=instantiate(cfg.lr_multiplier)),
        hooks.PeriodicCheckpointer(checkpointer, **cfg.train.checkpointer)
        if main_process
        else None,
        hooks.EvalHook(cfg.train.eval_period, evaluate),
        hooks.PeriodicWriter(
            default_writers(output_dir, cfg.train.max_iter), period=cfg.train.log_period
        )
        if main_process
        else None,
    ]
    hook_list = add_pwlu_hooks(
        [h for h in hook_list if h is not None],
        model,
        **pwlu_hook_options(pwlu),
        checkpoint_period=cfg.train.checkpointer.period,
        output_dir=output_dir,
    )
    trainer.register_hooks(hook_list)
    checkpointer.resume_or_load(cfg.train.init_checkpoint, resume=resume)
    # The checkpoint holds the iteration that had just finished.
    start_iter = trainer.iter + 1 if resume and checkpointer.has_checkpoint() else 0
    if start_iter >= cfg.train.max_iter:
        logger.info("%s: training already finished; evaluating", output_dir)
        return evaluate()
    trainer.train(start_iter, cfg.train.max_iter)
    return results


def main(args: argparse.Namespace) -> dict:
    """Train (or with ``--eval-only`` evaluate) as ``args`` say; returns the results.

    With ``--eval-only`` the checkpoint is loaded (and refused if it does not fit) before
    anything is written or generated.
    """
    if not args.eval_only:
        cfg = setup(args)
        results = do_train(cfg, args.resume)
        if comm.is_main_process():
            write_final_results(cfg.train.output_dir, cfg.train.max_iter, results)
        return results
    cfg = load_config(args)
    _check(cfg, args)
    model = create_ddp_model_cpu_aware(_build_model(cfg))
    # complete: a tensor missing from the checkpoint would be evaluated at random values
    checkpointer = AtomicDetectionCheckpointer(model, save_dir=cfg.train.output_dir, complete=True)
    checkpointer.resume_or_load(cfg.train.init_checkpoint, resume=args.resume)
    _set_up(cfg, args)
    return do_test(cfg, model)


def run(argv: list[str] | None = None) -> None:
    """``tools/lazyconfig_train_net.py``: :func:`main` from the command line."""
    launch_from_command_line(main, argument_parser(), argv, check=check_command_line)


if __name__ == "__main__":  # python -m pwlu_det.engine.lazy_cli
    run(sys.argv[1:])
