"""The Detectron2 hook that runs the paper's two-phase PWLU learning method."""

from __future__ import annotations

import logging

import torch
import torch.distributed as dist
from detectron2.engine import HookBase
from detectron2.utils import comm
from torch import nn

from pwlu_det.layers import PWLU, REALIGN_MODES, Phase

__all__ = ["PWLURealignHook", "trainable_pwlus"]

logger = logging.getLogger(__name__)


def trainable_pwlus(model: nn.Module) -> list[tuple[str, PWLU]]:
    """(name, module) of every PWLU in ``model`` whose parameters train (not frozen)."""
    model = getattr(model, "module", model)  # unwrap DistributedDataParallel
    return [
        (name, m)
        for name, m in model.named_modules()
        if isinstance(m, PWLU) and m.heights.requires_grad
    ]


class PWLURealignHook(HookBase):
    """Phase I from the first iteration, realignment after iteration ``statistics_iters - 1``.

    Place it before the ``PeriodicCheckpointer`` (like ``PreciseBN``), so that the checkpoint
    of the realignment iteration holds the realigned parameters. Phase and statistics live in
    the modules' buffers, so resuming before, at or after the realignment continues exactly.
    Frozen PWLUs (parameters without ``requires_grad``, e.g. under ``FREEZE_AT``) are left in
    their initial, exactly-ReLU state.

    Args:
        model: the model (or its DDP wrapper) holding the PWLUs.
        statistics_iters: Phase I length; 0 disables both phases.
        mode: realignment mode, ``"paper"`` or ``"function_preserving"``.
    """

    def __init__(self, model: nn.Module, statistics_iters: int, mode: str = "paper"):
        if statistics_iters < 0:
            raise ValueError(
                f"PWLURealignHook: statistics_iters must be >= 0, got {statistics_iters}"
            )
        if mode not in REALIGN_MODES:
            raise ValueError(f"PWLURealignHook: mode must be one of {REALIGN_MODES}, got {mode!r}")
        self._model = model
        self._statistics_iters = statistics_iters
        self._mode = mode
        self._trainable: list[tuple[str, PWLU]] | None = None

    def _trainable_units(self) -> list[tuple[str, PWLU]]:
        # Found once: after_step visits them every iteration, without walking the model again.
        if self._trainable is None:
            self._trainable = trainable_pwlus(self._model)
        return self._trainable

    def _units(self, phase: Phase) -> list[tuple[str, PWLU]]:
        return [(n, m) for n, m in self._trainable_units() if m.phase == phase]

    def before_train(self) -> None:
        if self._statistics_iters == 0:
            return
        units = self._trainable_units()
        if not units:
            logger.warning("PWLURealignHook: the model has no trainable PWLU; nothing to do")
            return
        start = self.trainer.start_iter
        if start < self._statistics_iters:
            fresh = self._units(Phase.INITIAL)
            for _, module in fresh:
                module.start_statistics()
            if fresh:
                logger.info(
                    "PWLU Phase I: %d units collect statistics until iteration %d",
                    len(fresh),
                    self._statistics_iters,
                )
        elif self._units(Phase.STATISTICS):
            # Resumed from a checkpoint written after Phase I but before its realignment.
            self.realign()
        if self._statistics_iters >= self.trainer.max_iter:
            logger.warning(
                "PWLU: STATISTICS_ITERS=%d >= MAX_ITER=%d: the realignment never runs",
                self._statistics_iters,
                self.trainer.max_iter,
            )

    def after_step(self) -> None:
        if self.trainer.iter + 1 == self._statistics_iters:
            self.realign()

    @torch.no_grad()
    def realign(self) -> None:
        """All-reduce the statistics, realign every unit in Phase I, clear optimizer state."""
        units = self._units(Phase.STATISTICS)
        if not units:
            return
        _average_statistics_across_workers([m for _, m in units])
        results = [m.realign(self._mode, name=name) for name, m in units]
        optimizer = getattr(self.trainer, "optimizer", None)
        if optimizer is not None:
            for _, module in units:
                for param in module.parameters():
                    optimizer.state.pop(param, None)
        widths = torch.cat([(r.right_bound - r.left_bound).reshape(-1) for r in results])
        max_jump = max(r.max_jump for r in results)
        fallbacks = sum(r.fallback_units for r in results)
        logger.info(
            "PWLU realignment (%s) at iteration %d: %d modules, %d units, bound width mean %.4g "
            "[%.4g, %.4g], max function jump %.4g, %d units on fallback bounds",
            self._mode,
            self.trainer.iter,
            len(units),
            widths.numel(),
            widths.mean().item(),
            widths.min().item(),
            widths.max().item(),
            max_jump,
            fallbacks,
        )
        storage = getattr(self.trainer, "storage", None)
        if storage is not None:
            storage.put_scalar("pwlu/mean_bound_width", widths.mean().item(), smoothing_hint=False)
            storage.put_scalar("pwlu/max_function_jump", max_jump, smoothing_hint=False)
            storage.put_scalar("pwlu/fallback_units", fallbacks, smoothing_hint=False)


def _average_statistics_across_workers(modules: list[PWLU]) -> None:
    """Replace every worker's running statistics by their mean over workers (in place)."""
    world_size = comm.get_world_size()
    if world_size == 1 or not dist.is_initialized():
        return
    buffers = [b for m in modules for b in (m.running_mean, m.running_std)]
    counts = torch.stack([m.num_batches_tracked for m in modules]).double()
    flat = torch.cat([b.reshape(-1).double() for b in buffers] + [counts])
    dist.all_reduce(flat)
    flat /= world_size
    offset = 0
    for b in buffers:
        b.copy_(flat[offset : offset + b.numel()].reshape(b.shape))
        offset += b.numel()
    for m, count in zip(modules, flat[offset:], strict=True):
        m.num_batches_tracked.fill_(int(round(count.item() * world_size)))
