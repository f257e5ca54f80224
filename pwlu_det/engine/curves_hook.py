"""A Detectron2 hook that shows the learned PWLU curves in TensorBoard while a model trains."""

from __future__ import annotations

import logging
import os
from concurrent.futures import Future, ThreadPoolExecutor

import cv2
import torch
from detectron2.engine import HookBase
from detectron2.utils import comm

from pwlu_det.layers import PWLU
from pwlu_det.utils import plot_pwlu_activations

from .realign_hook import trainable_pwlus

__all__ = ["PWLUCurvesHook"]

logger = logging.getLogger(__name__)

#: Folder (in OUTPUT_DIR) of the figures, one per drawing, and the TensorBoard image tag.
CURVES_FOLDER = "pwlu_curves"
IMAGE_TAG = "pwlu/curves"


def pwlu_state_snapshot(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """A copy of the state of every PWLU module of ``model`` (keys as in its state dict): what
    :func:`~pwlu_det.utils.plot_pwlu_activations` draws, and nothing else (a few KB)."""
    model = getattr(model, "module", model)
    return {
        f"{name}.{key}": value.detach().to("cpu", copy=True)
        for name, module in model.named_modules()
        if isinstance(module, PWLU)
        for key, value in module.state_dict().items()
    }


class PWLUCurvesHook(HookBase):
    """Every ``period`` iterations and after the last one, plot the PWLU curves of the model.

    The figure (:func:`pwlu_det.utils.plot_pwlu_activations`) is written to
    ``<output_dir>/pwlu_curves/iter_<N>.png`` and put into the ``EventStorage`` as the image
    ``pwlu/curves``, which Detectron2's TensorBoard writer records. N is Detectron2's iteration
    number (``trainer.iter``, from 0), as in the ``model_<N>.pth`` that ``PeriodicCheckpointer``
    saves at the same step.

    The training thread only copies the PWLU units' state (:func:`pwlu_state_snapshot`);
    matplotlib draws in a background thread, one figure at a time. A finished figure goes into
    the storage, at iteration N, at the next step, and the last ones when training ends, which
    waits for them. A resumed run first
    draws the figure of the checkpoint it resumes from if it is missing (the process was killed
    before it was written). Only the main process draws. Place it before the
    ``PeriodicWriter`` (as ``PWLUTrainer.build_hooks`` does).

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
        self._drawer: ThreadPoolExecutor | None = None
        self._pending: list[tuple[int, Future]] = []

    def _draws_at(self, iteration: int) -> bool:
        return (iteration + 1) % self._period == 0 or iteration == self.trainer.max_iter - 1

    def _path(self, iteration: int) -> str:
        return os.path.join(self._folder, f"iter_{iteration:07d}.png")

    def _active(self) -> bool:
        return bool(self._period) and comm.is_main_process()

    def before_train(self) -> None:
        if not self._active():
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
        if not self._active():
            return
        self._publish(wait=False)
        if self._draws_at(self.trainer.iter):
            self.draw(self.trainer.iter)

    def after_train(self) -> None:
        if self._drawer is not None:
            self._publish(wait=True)
            self._drawer.shutdown()
            self._drawer = None

    def draw(self, iteration: int) -> None:
        """Copy the PWLU units' state now and draw it, as the curves of ``iteration``, in the
        background; :meth:`after_train` (or a later step) puts it into the storage."""
        if not trainable_pwlus(self.trainer.model):
            return
        if self._drawer is None:
            self._drawer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="pwlu_curves")
        state = pwlu_state_snapshot(self.trainer.model)
        self._pending.append((iteration, self._drawer.submit(self._render, state, iteration)))

    def _render(self, state: dict[str, torch.Tensor], iteration: int):
        plot = plot_pwlu_activations(
            state,
            self._path(iteration),
            max_layers=self._max_layers,
            dpi=60,
            title=f"PWLU curves at iteration {iteration}",
        )
        image = cv2.cvtColor(cv2.imread(os.fspath(plot.path)), cv2.COLOR_BGR2RGB)
        return image.transpose(2, 0, 1)

    def _publish(self, wait: bool) -> None:
        """Put the finished figures into the storage, each at the iteration it shows (all of
        them, waiting, if ``wait``); a drawing that failed raises here, on the training
        thread."""
        storage, still = self.trainer.storage, []
        for iteration, future in self._pending:
            if not (wait or future.done()):
                still.append((iteration, future))
                continue
            now = storage.iter
            storage.iter = iteration  # the writer records the image at the iteration drawn
            try:
                storage.put_image(IMAGE_TAG, future.result())
            finally:
                storage.iter = now
        self._pending = still
