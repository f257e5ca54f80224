"""A Detectron2 hook that shows the learned PWLU curves in TensorBoard while a model trains."""

from __future__ import annotations

import logging
import os

import cv2
from detectron2.engine import HookBase
from detectron2.utils import comm

from pwlu_det.utils import plot_pwlu_activations

from .realign_hook import trainable_pwlus

__all__ = ["PWLUCurvesHook"]

logger = logging.getLogger(__name__)

#: Folder (in OUTPUT_DIR) of the figures, one per drawing, and the TensorBoard image tag.
CURVES_FOLDER = "pwlu_curves"
IMAGE_TAG = "pwlu/curves"


class PWLUCurvesHook(HookBase):
    """Every ``period`` iterations and after the last one, plot the PWLU curves of the model.

    The figure (:func:`pwlu_det.utils.plot_pwlu_activations`) is written to
    ``<output_dir>/pwlu_curves/iter_<N>.png`` and put into the ``EventStorage`` as the image
    ``pwlu/curves``, which Detectron2's TensorBoard writer records at that iteration. N is
    Detectron2's iteration number (``trainer.iter``, from 0), as in the ``model_<N>.pth`` that
    ``PeriodicCheckpointer`` saves at the same step. A resumed run first draws the figure of the
    checkpoint it resumes from if it is missing (the process was killed while drawing it). Only
    the main process draws. Place it before the ``PeriodicWriter`` (as
    ``PWLUTrainer.build_hooks`` does).

    Args:
        period: iterations between figures, e.g. ``SOLVER.CHECKPOINT_PERIOD``; 0 disables.
        output_dir: where the PNG goes.
        max_layers: panels per figure (the first PWLU modules in model order).
    """

    def __init__(self, period: int, output_dir: str, max_layers: int | None = 24):
        if period < 0:
            raise ValueError(f"PWLUCurvesHook: period must be >= 0, got {period}")
        self._period = period
        self._folder = os.path.join(output_dir, CURVES_FOLDER)
        self._max_layers = max_layers

    def _draws_at(self, iteration: int) -> bool:
        return (iteration + 1) % self._period == 0 or iteration == self.trainer.max_iter - 1

    def _path(self, iteration: int) -> str:
        return os.path.join(self._folder, f"iter_{iteration:07d}.png")

    def before_train(self) -> None:
        if not self._period or not comm.is_main_process():
            return
        resumed_from = self.trainer.start_iter - 1  # the iteration of the loaded checkpoint
        lost = resumed_from >= 0 and self._draws_at(resumed_from)
        if lost and not os.path.exists(self._path(resumed_from)):
            logger.info(
                "PWLU curves of iteration %d are missing (interrupted run): drawing them from "
                "the checkpoint",
                resumed_from,
            )
            self.draw(resumed_from)

    def after_step(self) -> None:
        if not self._period or not comm.is_main_process():
            return
        if self._draws_at(self.trainer.iter):
            self.draw(self.trainer.iter)

    def draw(self, iteration: int) -> None:
        """Plot the curves of the model as it is now, as those of ``iteration``, and put the
        figure into the trainer's storage."""
        if not trainable_pwlus(self.trainer.model):
            return
        plot = plot_pwlu_activations(
            getattr(self.trainer.model, "module", self.trainer.model),
            self._path(iteration),
            max_layers=self._max_layers,
            dpi=60,
            title=f"PWLU curves at iteration {iteration}",
        )
        image = cv2.cvtColor(cv2.imread(os.fspath(plot.path)), cv2.COLOR_BGR2RGB)
        self.trainer.storage.put_image(IMAGE_TAG, image.transpose(2, 0, 1))
