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
                    "PWLU Phase I: %d units collect statistics through iteration %d, then realign",
                    len(fresh),
                    self._statistics_iters - 1,
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
        """Pool the statistics across workers, realign every unit in Phase I, clear optimizer
        state, and report per part of the model (:func:`_model_part`)."""
        units = self._units(Phase.STATISTICS)
        if not units:
            return
        _pool_statistics_across_workers([m for _, m in units])
        results = [m.realign(self._mode, name=name) for name, m in units]
        optimizer = getattr(self.trainer, "optimizer", None)
        if optimizer is not None:
            for _, module in units:
                for param in module.parameters():
                    optimizer.state.pop(param, None)
        widths = torch.cat([(r.right_bound - r.left_bound).reshape(-1) for r in results])
        max_jump = max(r.max_jump for r in results)
        fallbacks = sum(r.fallback_units for r in results)
        # Per part: modules, units, fallback units, batches used, empty and non-finite skipped.
        parts: dict[str, list[int]] = {}
        for (name, module), result in zip(units, results, strict=True):
            row = parts.setdefault(_model_part(name), [0] * 6)
            counts = (
                1,
                result.left_bound.numel(),
                result.fallback_units,
                int(module.num_batches_tracked),
                int(module.num_batches_empty),
                int(module.num_batches_nonfinite),
            )
            for i, count in enumerate(counts):
                row[i] += count
        empty = sum(row[4] for row in parts.values())
        nonfinite = sum(row[5] for row in parts.values())
        logger.info(
            "PWLU realignment (%s) at iteration %d: %d modules, %d units, bound width mean %.4g "
            "[%.4g, %.4g], max function jump %.4g, %d units on fallback bounds, Phase I inputs "
            "skipped: %d empty, %d non-finite",
            self._mode,
            self._statistics_iters - 1,  # also when a resume realigns before the next step
            len(units),
            widths.numel(),
            widths.mean().item(),
            widths.min().item(),
            widths.max().item(),
            max_jump,
            fallbacks,
            empty,
            nonfinite,
        )
        for part, row in parts.items():
            # Inputs are counted per module (and summed over workers).
            logger.log(
                logging.WARNING if row[5] else logging.INFO,
                "PWLU realignment, %s: %d modules, %d units, %d on fallback bounds; Phase I "
                "inputs: %d used, %d empty and %d non-finite skipped",
                part,
                *row,
            )
        storage = getattr(self.trainer, "storage", None)
        if storage is not None:
            storage.put_scalar("pwlu/mean_bound_width", widths.mean().item(), smoothing_hint=False)
            storage.put_scalar("pwlu/max_function_jump", max_jump, smoothing_hint=False)
            storage.put_scalar("pwlu/fallback_units", fallbacks, smoothing_hint=False)
            storage.put_scalar("pwlu/skipped_empty_inputs", empty, smoothing_hint=False)
            storage.put_scalar("pwlu/skipped_nonfinite_inputs", nonfinite, smoothing_hint=False)


def _model_part(name: str) -> str:
    """The part of the model a module belongs to: the first two components of its path
    (``"roi_heads.mask_head"`` for ``"roi_heads.mask_head.mask_fcn1.activation"``)."""
    return ".".join(name.split(".")[:2])


def _pool_statistics_across_workers(modules: list[PWLU]) -> None:
    """Replace every worker's Phase I statistics by those pooled over workers (in place).

    Each worker's statistics of a unit weigh by the batches it used (``num_batches_tracked``):
    the pooled mean is the weighted mean of the means, the pooled variance the weighted mean of
    ``std**2`` plus the spread of the means around the pooled mean. A worker that used no batch
    (or whose statistics are not finite) contributes nothing; a unit that no worker saw keeps
    the initial mean 0 and std 1. The batch and skip counters become sums over workers. One
    all-reduce, in float64.
    """
    world_size = comm.get_world_size()
    if world_size == 1 or not dist.is_initialized():
        return
    means = torch.cat([m.running_mean.reshape(-1).double() for m in modules])
    stds = torch.cat([m.running_std.reshape(-1).double() for m in modules])
    counts = torch.stack(
        [
            torch.stack([m.num_batches_tracked, m.num_batches_empty, m.num_batches_nonfinite])
            for m in modules
        ]
    ).double()  # (modules, 3)
    sizes = [m.running_mean.numel() for m in modules]
    weights = torch.cat([c.expand(n) for c, n in zip(counts[:, 0], sizes, strict=True)])
    finite = torch.isfinite(means) & torch.isfinite(stds)
    weights = torch.where(finite, weights, torch.zeros_like(weights))
    means = torch.where(finite, means, torch.zeros_like(means))
    stds = torch.where(finite, stds, torch.zeros_like(stds))
    flat = torch.cat(
        [weights, weights * means, weights * (stds.square() + means.square()), counts.reshape(-1)]
    )
    dist.all_reduce(flat)
    units = means.numel()
    total, mean_sum, square_sum = flat[:units], flat[units : 2 * units], flat[2 * units : 3 * units]
    pooled_mean = mean_sum / total  # NaN where no worker has data (0 / 0)
    pooled_std = (square_sum / total - pooled_mean.square()).clamp_min(0.0).sqrt()
    counts = flat[3 * units :].reshape(-1, 3)
    offset = 0
    for m, size, module_counts in zip(modules, sizes, counts, strict=True):
        unseen = module_counts[0] == 0
        for buffer, pooled, initial in (
            (m.running_mean, pooled_mean, 0.0),
            (m.running_std, pooled_std, 1.0),
        ):
            value = pooled[offset : offset + size].reshape(buffer.shape)
            buffer.copy_(torch.where(unseen, torch.full_like(value, initial), value))
        offset += size
        for buffer, count in zip(
            (m.num_batches_tracked, m.num_batches_empty, m.num_batches_nonfinite),
            module_counts,
            strict=True,
        ):
            buffer.copy_(count.round())
