"""``PWLUTrainer``: Detectron2's ``DefaultTrainer`` with the PWLU learning method.

Differences from ``DefaultTrainer``, each the smallest override that does it:

- ``build_optimizer``: the PWLU learning-rate / weight-decay rules, and bounds projected back to
  ``MIN_WIDTH`` apart after every step (:func:`build_pwlu_optimizer`);
- ``build_hooks``: a :class:`PWLURealignHook` placed before the checkpointer, and a
  :class:`PWLUCurvesHook` (learned curves to TensorBoard at every checkpoint) before the writers;
  with ``MODEL.PWLU.DYNAMICS_PERIOD > 0``, a :class:`PWLUDynamicsHook` before the realignment;
- ``build_evaluator``: ``COCOEvaluator`` with Detectron2's fast C++ COCO evaluation where
  ``detectron2._C`` is built (a Detectron2 set up from source), through pycocotools otherwise
  (the v0.6 set-up does not build it);
- multi-process training on CPU: Detectron2 v0.6 gives ``DistributedDataParallel`` a
  ``device_ids`` argument, which CPU modules reject; it is dropped for CPU models;
- resume: v0.6's ``DefaultTrainer`` checkpoints neither the optimizer state (momentum) nor the
  AMP grad scaler, so a resumed run diverged from an uninterrupted one; they are saved here
  (Detectron2 main saves them itself, as ``_trainer`` too: then its copy is the only one);
- ``build_train_loader``: with ``SEED < 0`` the data order is random, as in v0.6 (Detectron2
  main seeds its training sampler with ``cfg.SEED`` itself, so ``-1`` gave one fixed order);
- checkpoints are written atomically (:class:`pwlu_det.checkpoint.AtomicDetectionCheckpointer`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import weakref

from detectron2.engine import DefaultTrainer, TrainerBase, hooks
from detectron2.engine import defaults as d2_defaults
from detectron2.evaluation import COCOEvaluator

from pwlu_det.checkpoint import AtomicDetectionCheckpointer

from .curves_hook import PWLUCurvesHook
from .dynamics_hook import PWLUDynamicsHook
from .optimizer import build_pwlu_optimizer
from .realign_hook import PWLURealignHook

__all__ = [
    "PWLUTrainer",
    "add_pwlu_hooks",
    "create_ddp_model_cpu_aware",
    "fast_coco_eval_available",
    "insert_before",
    "insert_before_checkpointer",
    "pwlu_hook_options",
]

logger = logging.getLogger(__name__)


def insert_before(hook_list: list, hook, kind: type) -> list:
    """Insert ``hook`` before the first hook of class ``kind`` (or at the end if none)."""
    for index, existing in enumerate(hook_list):
        if isinstance(existing, kind):
            return [*hook_list[:index], hook, *hook_list[index:]]
    return [*hook_list, hook]


def insert_before_checkpointer(hook_list: list, hook) -> list:
    """Insert ``hook`` before the first ``PeriodicCheckpointer`` (or at the end if none)."""
    return insert_before(hook_list, hook, hooks.PeriodicCheckpointer)


def add_pwlu_hooks(
    hook_list: list,
    model,
    *,
    statistics_iters: int,
    realign_mode: str,
    draw_curves: bool,
    dynamics_period: int,
    checkpoint_period: int,
    output_dir: str,
) -> list:
    """Detectron2's hooks plus the PWLU ones, each in its place (yacs and lazy training).

    - :class:`PWLURealignHook` before the checkpointer, so that a checkpoint taken at the
      realignment iteration holds the realigned units;
    - with ``draw_curves``, :class:`PWLUCurvesHook` before the writers;
    - with ``dynamics_period > 0``, :class:`PWLUDynamicsHook` before the realignment (a step's
      update must not include a realignment).

    Args:
        hook_list: Detectron2's hooks.
        model: the trained model (DDP-wrapped or not).
        statistics_iters, realign_mode: Phase I's length and the realignment mode
            (``MODEL.PWLU.STATISTICS_ITERS``, ``MODEL.PWLU.REALIGN_MODE``).
        draw_curves: draw the learned curves at each checkpoint (the model has PWLU units).
        dynamics_period: iterations between dynamics records, 0 for none
            (``MODEL.PWLU.DYNAMICS_PERIOD``).
        checkpoint_period: iterations between checkpoints (when the curves are drawn).
        output_dir: where the curves and dynamics go.

    :func:`pwlu_hook_options` reads the PWLU arguments from a yacs config.
    """
    hook_list = insert_before_checkpointer(
        hook_list, PWLURealignHook(model, statistics_iters, realign_mode)
    )
    if draw_curves:
        curves = PWLUCurvesHook(checkpoint_period, output_dir)
        hook_list = insert_before(hook_list, curves, hooks.PeriodicWriter)
    if dynamics_period > 0:
        dynamics = PWLUDynamicsHook(model, dynamics_period, output_dir)
        hook_list = insert_before(hook_list, dynamics, PWLURealignHook)
    return hook_list


def pwlu_hook_options(cfg) -> dict:
    """The PWLU keyword arguments of :func:`add_pwlu_hooks` from a yacs config."""
    p = cfg.MODEL.PWLU
    return {
        "statistics_iters": p.STATISTICS_ITERS,
        "realign_mode": p.REALIGN_MODE,
        "draw_curves": cfg.MODEL.ACTIVATION.NAME == "PWLU",
        "dynamics_period": p.DYNAMICS_PERIOD,
    }


def create_ddp_model_cpu_aware(model, **kwargs):
    """Detectron2's ``create_ddp_model``, without ``device_ids`` for a model on the CPU."""
    if next(model.parameters()).device.type == "cpu":
        kwargs.setdefault("device_ids", None)
    return _D2_CREATE_DDP_MODEL(model, **kwargs)


_D2_CREATE_DDP_MODEL = d2_defaults.create_ddp_model
# Detectron2 main's DefaultTrainer saves and loads SimpleTrainer's state (optimizer, grad
# scaler) as "_trainer" itself; v0.6's does not. Detected by feature: both report version 0.6.
_D2_TRAINER_SAVES_ITS_STATE = "state_dict" in vars(DefaultTrainer)


@contextlib.contextmanager
def _cpu_aware_ddp():
    d2_defaults.create_ddp_model = create_ddp_model_cpu_aware
    try:
        yield
    finally:
        d2_defaults.create_ddp_model = _D2_CREATE_DDP_MODEL


class PWLUTrainer(DefaultTrainer):
    """DefaultTrainer plus the PWLU optimizer rules, realignment hook and CPU-friendly DDP."""

    def __init__(self, cfg):
        with _cpu_aware_ddp():
            super().__init__(cfg)

    def state_dict(self) -> dict:
        state = super().state_dict()
        if not _D2_TRAINER_SAVES_ITS_STATE:
            state["_trainer"] = self._trainer.state_dict()  # optimizer (and grad scaler)
        return state

    def load_state_dict(self, state_dict: dict) -> None:
        if "_trainer" not in state_dict:
            logger.warning(
                "The checkpoint has no optimizer state (written by Detectron2 v0.6's "
                "DefaultTrainer?): momentum restarts from zero"
            )
            # TrainerBase's part only: main's DefaultTrainer would require "_trainer".
            TrainerBase.load_state_dict(self, state_dict)
            return
        super().load_state_dict(state_dict)
        if not _D2_TRAINER_SAVES_ITS_STATE:
            self._trainer.load_state_dict(state_dict["_trainer"])

    @classmethod
    def build_train_loader(cls, cfg):
        if cfg.SEED < 0:  # "random": the sampler must not get -1 as its seed (main passes it)
            cfg = cfg.clone()
            cfg.defrost()
            cfg.SEED = None
        return super().build_train_loader(cfg)

    @classmethod
    def build_optimizer(cls, cfg, model):
        return build_pwlu_optimizer(cfg, model)

    def build_hooks(self):
        # DefaultTrainer made its checkpointer just before calling build_hooks; the
        # PeriodicCheckpointer built below must get the atomic one.
        self.checkpointer = AtomicDetectionCheckpointer(
            self.checkpointer.model, self.cfg.OUTPUT_DIR, trainer=weakref.proxy(self)
        )
        return add_pwlu_hooks(
            super().build_hooks(),
            self.model,
            **pwlu_hook_options(self.cfg),
            checkpoint_period=self.cfg.SOLVER.CHECKPOINT_PERIOD,
            output_dir=self.cfg.OUTPUT_DIR,
        )

    @classmethod
    def build_evaluator(cls, cfg, dataset_name, output_folder=None):
        output_folder = output_folder or os.path.join(cfg.OUTPUT_DIR, "inference")
        return COCOEvaluator(
            dataset_name, output_dir=output_folder, use_fast_impl=fast_coco_eval_available()
        )


def fast_coco_eval_available() -> bool:
    """Whether Detectron2's C++ COCO evaluation (``detectron2._C``) is built."""
    try:
        from detectron2 import _C
    except ImportError:
        return False
    return hasattr(_C, "COCOevalEvaluateImages")
