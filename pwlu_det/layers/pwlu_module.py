"""The PWLU module: learnable parameters, Phase I statistics and the realignment (Phase II).

A unit's phase (:class:`Phase`, the attribute ``phase``) is saved in its state dict under
``phase``, so a checkpoint says where training is:

- ``Phase.INITIAL``: a plain PWLU with its current parameters (at construction: its initial
  shape, exactly ReLU by default).
- ``Phase.STATISTICS`` (Phase I, :meth:`PWLU.start_statistics`): the output is exactly the
  initial shape (ReLU or Swish) and, in training mode, running statistics of the input are
  updated. An empty input, or one whose batch statistics are not finite, is skipped and
  counted (``num_batches_empty``, ``num_batches_nonfinite``).
- ``Phase.TRAINING`` (Phase II, :meth:`PWLU.realign`): bounds moved to
  ``mean -/+ bound_std * std``, heights and slopes reset to the initial shape on the new grid,
  then a plain PWLU that trains.

The module computes with the fused op only. Deployed forms (standard ops for TorchScript and
ONNX, or the fused op frozen for a traced TorchScript file) are other modules that replace it:
see :func:`pwlu_det.layers.to_inference_form`.
"""

from __future__ import annotations

import enum
import logging
import operator
from collections.abc import Iterable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .pwlu_op import PARAM_NAMES, canonical_params, check_inputs, pwlu_canonical
from .pwlu_reference import breakpoints, pwlu_reference

__all__ = [
    "INIT_SHAPES",
    "PWLU",
    "REALIGN_MODES",
    "SKIP_COUNTER_NAMES",
    "STATE_NAMES",
    "Phase",
    "RealignResult",
    "project_bounds",
]

logger = logging.getLogger(__name__)


class Phase(enum.IntEnum):
    """Where a unit is in the paper's learning method (the value saved in its state dict)."""

    INITIAL = 0
    STATISTICS = 1
    TRAINING = 2


#: The state-dict entries that make a unit, in every checkpoint version: its five parameters,
#: three statistics buffers and its phase (last in the state dict).
STATE_NAMES = (*PARAM_NAMES, "running_mean", "running_std", "num_batches_tracked", "phase")
#: Phase I inputs skipped (empty; non-finite batch statistics): state-dict entries after
#: ``num_batches_tracked``, absent from older checkpoints (loaded as 0).
SKIP_COUNTER_NAMES = ("num_batches_empty", "num_batches_nonfinite")
REALIGN_MODES = ("paper", "function_preserving")
#: Initial shapes: what a unit computes in Phase I and is reset to (interpolated on its grid)
#: at the realignment. "relu" is the paper's; "swish" is x * sigmoid(x).
INIT_SHAPES = {"relu": F.relu, "swish": F.silu}


@dataclass
class RealignResult:
    """What :meth:`PWLU.realign` did.

    Attributes:
        left_bound, right_bound: the new bounds, shaped like the parameters.
        max_jump: max |f_after(x) - f_before(x)| over the collected range mean -/+ bound_std*std.
        fallback_units: number of units whose statistics were degenerate.
    """

    left_bound: torch.Tensor
    right_bound: torch.Tensor
    max_jump: float
    fallback_units: int


class PWLU(nn.Module):
    """Piecewise Linear Unit with the paper's statistic-based realignment.

    Args:
        num_channels: None for one layer-wise unit; an int C for channel-wise units (one per
            channel of dim ``channel_dim``).
        num_intervals: N, the number of uniform intervals between the bounds.
        channel_dim: channel dimension of the input (channel-wise only).
        momentum: weight of the running statistics in Phase I (the paper's 0.9):
            ``mean <- momentum * mean + (1 - momentum) * batch_mean``, same for std. The first
            batch initialises them.
        bound_std: the realigned bounds are ``mean -/+ bound_std * std``.
        init_bound: bounds at construction, about ``-init_bound`` and ``+init_bound`` (snapped
            so that 0 is a breakpoint and the unit is exactly ReLU).
        min_width: smallest bound width: what a realignment gives for degenerate statistics,
            and what :func:`project_bounds` restores after an optimizer step.
        init_shape: a key of :data:`INIT_SHAPES`: the function of Phase I, and the shape the
            heights are set to at construction and realignment (``"relu"``: the paper's;
            outer slopes 0 and 1 for both).
    """

    def __init__(
        self,
        num_channels: int | None = None,
        num_intervals: int = 16,
        channel_dim: int = 1,
        momentum: float = 0.9,
        bound_std: float = 3.0,
        init_bound: float = 3.0,
        min_width: float = 1e-2,
        init_shape: str = "relu",
    ):
        super().__init__()
        for name, value in (("num_channels", num_channels), ("num_intervals", num_intervals)):
            if value is None and name == "num_channels":
                continue
            try:
                operator.index(value)
            except TypeError:
                raise TypeError(
                    f"PWLU: {name} must be an int, got {value!r} ({type(value).__name__})"
                ) from None
        if init_shape not in INIT_SHAPES:
            raise ValueError(
                f"PWLU: init_shape must be one of {tuple(INIT_SHAPES)}, got {init_shape!r}"
            )
        if num_channels is not None and num_channels < 1:
            raise ValueError(f"PWLU: num_channels must be None or >= 1, got {num_channels}")
        if num_intervals < 1:
            raise ValueError(f"PWLU: num_intervals must be >= 1, got {num_intervals}")
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"PWLU: momentum must be in [0, 1), got {momentum}")
        if not (bound_std > 0 and init_bound > 0 and min_width > 0):
            raise ValueError(
                "PWLU: bound_std, init_bound and min_width must be > 0, got "
                f"{bound_std}, {init_bound}, {min_width}"
            )
        self.num_channels = num_channels
        self.num_intervals = num_intervals
        self.channel_dim = channel_dim
        self.momentum = momentum
        self.bound_std = bound_std
        self.min_width = min_width
        self.init_shape = init_shape
        shape = () if num_channels is None else (num_channels,)
        self.left_bound = nn.Parameter(torch.full(shape, -float(init_bound)))
        self.right_bound = nn.Parameter(torch.full(shape, float(init_bound)))
        self.heights = nn.Parameter(torch.zeros(*shape, num_intervals + 1))
        self.left_slope = nn.Parameter(torch.zeros(shape))
        self.right_slope = nn.Parameter(torch.ones(shape))
        self.register_buffer("running_mean", torch.zeros(shape))
        self.register_buffer("running_std", torch.ones(shape))
        self.register_buffer("num_batches_tracked", torch.tensor(0, dtype=torch.long))
        for counter in SKIP_COUNTER_NAMES:
            self.register_buffer(counter, torch.tensor(0, dtype=torch.long))
        # A Python value, for control flow without device syncs; saved as "phase" in the state
        # dict (see _save_to_state_dict).
        self.phase = Phase.INITIAL
        with torch.no_grad():  # the grid is snapped so that 0 is a breakpoint: exactly ReLU
            left, right = self._snap_to_zero_breakpoint(
                self.left_bound.double(), self.right_bound.double()
            )
            self._reset_to_shape(left.float(), right.float())

    # ---------------------------------------------------------------------------------------
    # Forward.

    def op_params(self) -> tuple[torch.Tensor, ...]:
        """The five parameters, in the op's order (:data:`PARAM_NAMES`)."""
        registered = self._parameters  # one dict read each, not nn.Module.__getattr__'s search
        try:
            return tuple(registered[name] for name in PARAM_NAMES)
        except KeyError:  # e.g. parametrized: not in _parameters
            return tuple(getattr(self, name) for name in PARAM_NAMES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the unit to ``x`` (channel-wise: channels in dim ``channel_dim``).

        Raises:
            TypeError, ValueError: as :func:`pwlu_det.layers.pwlu`, with its messages: ``x``
                not a floating-point tensor, or without ``num_channels`` channels in
                ``channel_dim``; on CPU, a unit whose bounds are NaN or crossed.
        """
        if not self._fits(x):
            check_inputs(x, self.op_params(), self.channel_dim)  # raises the function's error
        if self.phase == Phase.STATISTICS:
            if self.training:
                self._update_statistics(x)
            out = INIT_SHAPES[self.init_shape](x)
            if torch.is_grad_enabled() and self.heights.requires_grad:
                # Zero gradients keep the parameters "used" for DistributedDataParallel.
                out = out + 0.0 * sum(p.sum() for p in self.op_params()).to(out.dtype)
            return out
        # The op directly: the module's parameters are valid by construction, so pwlu()'s
        # Python checks would only add per-call overhead (the kernels check x).
        channel_dim = 0 if self.num_channels is None else self.channel_dim % x.dim()
        return pwlu_canonical(x, canonical_params(*self.op_params()), channel_dim)

    def _fits(self, x) -> bool:
        """A cheap test (no sync) that ``x`` suits the unit; the full checks run only if not."""
        if not isinstance(x, torch.Tensor) or not x.is_floating_point():
            return False
        if self.num_channels is None:
            return True
        return -x.dim() <= self.channel_dim < x.dim() and x.shape[self.channel_dim] == (
            self.num_channels
        )

    def __prepare_scriptable__(self):
        # Called by torch.jit.script on every submodule, before it compiles anything.
        raise TypeError(
            "PWLU is not scriptable: script pwlu_det.layers.to_inference_form(model) instead, "
            "which replaces every PWLU by its inference form in standard ops"
        )

    def _reduce_dims(self, x: torch.Tensor) -> list[int]:
        if self.num_channels is None:
            return list(range(x.dim()))
        channel_dim = self.channel_dim % x.dim()
        return [d for d in range(x.dim()) if d != channel_dim]

    @torch.no_grad()
    def _update_statistics(self, x: torch.Tensor) -> None:
        """One Phase I update; skips (and counts) an empty input or non-finite statistics.

        ``num_batches_tracked`` counts the batches used. Every decision is made on the device
        or from the shape: no host sync.
        """
        if x.numel() == 0:  # e.g. a mask head without RoIs: known from the shape
            self.num_batches_empty.add_(1)
            return
        x = x.detach().float()
        std, mean = torch.std_mean(x, dim=self._reduce_dims(x), correction=0)
        # The whole batch is used only if every unit's statistics are finite.
        usable = torch.isfinite(mean).all() & torch.isfinite(std).all()
        # The first batch initialises the statistics, later ones update them. Chosen on the
        # device (torch.where on the count), not with .item(): no host sync in Phase I.
        first = self.num_batches_tracked == 0
        for running, batch in ((self.running_mean, mean), (self.running_std, std)):
            updated = running.mul(self.momentum).add_(batch, alpha=1 - self.momentum)
            running.copy_(torch.where(usable, torch.where(first, batch, updated), running))
        self.num_batches_tracked.add_(usable)
        self.num_batches_nonfinite.add_(~usable)

    # ---------------------------------------------------------------------------------------
    # Phases.

    @torch.no_grad()
    def start_statistics(self) -> None:
        """Enter Phase I: output exactly the initial shape, collect input statistics in
        training mode."""
        self.running_mean.zero_()
        self.running_std.fill_(1.0)
        self.num_batches_tracked.zero_()
        for counter in SKIP_COUNTER_NAMES:
            getattr(self, counter).zero_()
        self.phase = Phase.STATISTICS

    def _reset_to_shape(self, left: torch.Tensor, right: torch.Tensor) -> None:
        """Set bounds to (left, right), heights to the initial shape at the breakpoints, outer
        slopes 0 and 1."""
        self.left_bound.copy_(left)
        self.right_bound.copy_(right)
        self.heights.copy_(
            INIT_SHAPES[self.init_shape](breakpoints(left, right, self.num_intervals))
        )
        self.left_slope.fill_(0.0)
        self.right_slope.fill_(1.0)

    def _target_bounds(self, name: str) -> tuple[torch.Tensor, torch.Tensor, int]:
        """Bounds mean -/+ bound_std * std, with a fallback for degenerate statistics."""
        mean = self.running_mean.double()
        half = self.bound_std * self.running_std.double()
        seen = self.num_batches_tracked.item() > 0
        bad = (
            ~(torch.isfinite(mean) & torch.isfinite(half)) | torch.full_like(mean, not seen).bool()
        )
        narrow = half < self.min_width / 2
        if bad.any() or narrow.any():
            logger.warning(
                "PWLU %s: %d unit(s) without usable statistics (no batch, NaN or Inf) and %d "
                "with std below min_width / (2 * bound_std); using a %.3g-wide range there "
                "(Phase I: %d batches used, %d empty and %d non-finite skipped)",
                name,
                int(bad.sum()),
                int((narrow & ~bad).sum()),
                self.min_width,
                int(self.num_batches_tracked),
                int(self.num_batches_empty),
                int(self.num_batches_nonfinite),
            )
        mean = torch.where(bad, torch.zeros_like(mean), mean)
        half = torch.where(bad | narrow, torch.full_like(half, self.min_width / 2), half)
        return mean - half, mean + half, int((bad | narrow).sum())

    def _snap_to_zero_breakpoint(
        self, left: torch.Tensor, right: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Shift the grid (by less than one interval) so that 0 is a breakpoint.

        The interval width is rounded to 8 significant bits (a change below 0.4%) so that every
        breakpoint i * width is exact in float32 and the unit is exactly ReLU. If the range lies
        entirely on one side of 0, it is shifted further, so that 0 becomes its end breakpoint.
        """
        mantissa, exponent = torch.frexp(((right - left) / self.num_intervals).float())
        step = torch.ldexp(torch.round(mantissa * 256) / 256, exponent).double()
        zero_index = torch.round(-left / step).clamp(0, self.num_intervals)
        new_left = -zero_index * step
        return new_left, new_left + self.num_intervals * step

    @torch.no_grad()
    def realign(self, mode: str = "paper", name: str = "") -> RealignResult:
        """Enter Phase II: move the bounds to the statistics, reset to the initial shape on the
        new grid.

        Parameters change in place (the optimizer keeps the same Parameter objects); clearing
        their optimizer state is the caller's job (see ``PWLURealignHook``).

        Args:
            mode: ``"paper"``: bounds exactly mean -/+ bound_std * std, ReLU interpolated on
                the new grid (a small jump near 0 unless 0 falls on a breakpoint);
                ``"function_preserving"``: the same width, shifted so that 0 is a breakpoint,
                so the unit stays exactly ReLU (``init_shape="relu"`` only: no grid keeps
                Swish exact).
            name: used in log messages.

        Returns:
            The new bounds and the measured function jump.
        """
        if mode not in REALIGN_MODES:
            raise ValueError(f"PWLU.realign: mode must be one of {REALIGN_MODES}, got {mode!r}")
        if mode == "function_preserving" and self.init_shape != "relu":
            raise ValueError(
                f"PWLU.realign: mode 'function_preserving' needs init_shape 'relu' (a piecewise "
                f"linear unit cannot be exactly {self.init_shape!r}), got {self.init_shape!r}"
            )
        name = name or self.__class__.__name__
        left, right, fallbacks = self._target_bounds(name)
        collected = (left, right)
        if mode == "function_preserving":
            left, right = self._snap_to_zero_breakpoint(left, right)
        before = self._function_snapshot()
        dtype = self.left_bound.dtype
        self._reset_to_shape(left.to(dtype), right.to(dtype))
        self.phase = Phase.TRAINING
        jump = self._max_jump(before, *collected)
        return RealignResult(
            self.left_bound.detach().clone(), self.right_bound.detach().clone(), jump, fallbacks
        )

    # ---------------------------------------------------------------------------------------
    # Function jump across a realignment.

    def _function_snapshot(self) -> tuple[torch.Tensor, ...] | None:
        """The parameters of the function computed now (None: exactly the initial shape, as in
        Phase I)."""
        if self.phase == Phase.STATISTICS:
            return None
        return tuple(p.detach().double().clone() for p in self.op_params())

    def _evaluate(self, snapshot: tuple[torch.Tensor, ...] | None, x: torch.Tensor) -> torch.Tensor:
        if snapshot is None:
            return INIT_SHAPES[self.init_shape](x)
        return pwlu_reference(x, *snapshot, channel_dim=1)

    def _max_jump(
        self, before: tuple[torch.Tensor, ...] | None, low: torch.Tensor, high: torch.Tensor
    ) -> float:
        """max |f_after - f_before| on [low, high] per unit, exactly: both functions are
        piecewise linear, so the maximum is at a breakpoint of either, at 0 or at an end."""
        after = tuple(p.detach().double() for p in self.op_params())
        units, n = low.numel(), self.num_intervals
        zero = torch.zeros(units, 1, dtype=torch.float64, device=low.device)
        probes = [low.reshape(units, 1), high.reshape(units, 1), zero]
        for params in (before, after):
            if params is not None:
                probes.append(breakpoints(params[0].reshape(units), params[1].reshape(units), n))
        x = torch.cat(probes, dim=1)
        x = torch.minimum(torch.maximum(x, low.reshape(units, 1)), high.reshape(units, 1))
        x = x.t().contiguous()  # (probes, units): units in dim 1 for channel-wise parameters
        if self.num_channels is None:
            x = x.reshape(-1)
        jump = (self._evaluate(after, x) - self._evaluate(before, x)).abs()
        return float(jump.max()) if jump.numel() else 0.0

    # ---------------------------------------------------------------------------------------
    # Checkpoints and printing.

    def _save_to_state_dict(self, destination, prefix, keep_vars):
        super()._save_to_state_dict(destination, prefix, keep_vars)
        destination[prefix + "phase"] = torch.tensor(int(self.phase))

    def _load_from_state_dict(
        self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, errors
    ):
        super()._load_from_state_dict(
            state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, errors
        )
        if prefix + "num_batches_tracked" in state_dict:
            # A unit saved before the skip counters existed: it counted nothing.
            for counter in SKIP_COUNTER_NAMES:
                key = prefix + counter
                if key not in state_dict:
                    getattr(self, counter).zero_()
                    if key in missing_keys:
                        missing_keys.remove(key)
        key = prefix + "phase"
        if key not in state_dict:
            missing_keys.append(key)
            return
        if key in unexpected_keys:  # not a parameter or buffer: the base class does not know it
            unexpected_keys.remove(key)
        value = int(state_dict[key])
        if value not in set(Phase):
            errors.append(f"{key}: {value} is not a PWLU phase (one of {[int(p) for p in Phase]})")
            return
        self.phase = Phase(value)

    def extra_repr(self) -> str:
        granularity = "layer-wise" if self.num_channels is None else f"{self.num_channels} channels"
        left, right = self.left_bound.detach(), self.right_bound.detach()
        if left.numel() == 1:
            bounds = f"bounds=[{left.item():.3g}, {right.item():.3g}]"
        else:
            width = (right - left).mean().item()
            bounds = (
                f"bounds: left in [{left.min().item():.3g}, {left.max().item():.3g}], "
                f"right in [{right.min().item():.3g}, {right.max().item():.3g}], "
                f"mean width {width:.3g}"
            )
        shape = "" if self.init_shape == "relu" else f", init_shape={self.init_shape}"
        phase = self.phase.name.lower()
        return f"N={self.num_intervals}, {granularity}{shape}, phase={phase}, {bounds}"


@torch.no_grad()
def project_bounds(units: Iterable[PWLU]) -> None:
    """Project the bounds of ``units`` back to ``right_bound - left_bound >= min_width``.

    Called after every optimizer step (see :func:`pwlu_det.engine.build_pwlu_optimizer`),
    which can push the bounds together or past each other (then the unit is no function at
    all). Such a pair is widened to ``min_width`` about its midpoint. A unit whose bounds are no
    longer finite (a diverged step) gets finite bounds about 0 and NaN heights: it then outputs
    NaN, so the divergence shows in the loss (Detectron2 stops on it) instead of in the op's
    bound check.

    All units of one device, dtype, N and ``min_width`` (usually the whole model) are projected
    together: a fixed number of ops, however many units, and no host sync.
    """
    groups: dict[tuple, list[PWLU]] = {}
    for unit in units:
        key = (unit.left_bound.device, unit.left_bound.dtype, unit.num_intervals, unit.min_width)
        groups.setdefault(key, []).append(unit)
    for (*_, num_intervals, min_width), group in groups.items():
        # Views of the parameters with one row per unit (a layer-wise unit is one row).
        lefts = [u.left_bound.view(-1) for u in group]
        rights = [u.right_bound.view(-1) for u in group]
        heights = [u.heights.view(-1, num_intervals + 1) for u in group]
        rows = [t.shape[0] for t in lefts]
        left, right = torch.cat(lefts), torch.cat(rights)
        finite = torch.isfinite(left) & torch.isfinite(right)
        mid = torch.where(finite, left / 2 + right / 2, torch.zeros_like(left))
        narrow = ~(right - left >= min_width) | ~finite  # NaN widths count too
        new_left = mid - min_width / 2
        new_right = new_left + min_width
        # Far from 0 the sum rounds: one step up makes the width at least min_width.
        short = new_right - new_left < min_width
        up = torch.nextafter(new_right, torch.full_like(new_right, float("inf")))
        new_right = torch.where(short, up, new_right)
        left = torch.where(narrow, new_left, left)
        right = torch.where(narrow, new_right, right)
        height = torch.where(finite.unsqueeze(-1), torch.cat(heights), float("nan"))
        for params, values in ((lefts, left), (rights, right), (heights, height)):
            torch._foreach_copy_(params, values.split(rows))
