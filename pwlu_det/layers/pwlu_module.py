"""The PWLU module: learnable parameters, Phase I statistics and the realignment (Phase II).

Phases (kept in the persistent buffer ``phase``, so a checkpoint says where training is):

- ``INITIAL``: a plain PWLU with its current parameters (at construction: its initial shape,
  exactly ReLU by default).
- ``STATISTICS`` (Phase I, :meth:`PWLU.start_statistics`): the output is exactly the initial
  shape (ReLU or Swish) and, in training mode, running statistics of the input are updated.
- ``TRAINING`` (Phase II, :meth:`PWLU.realign`): bounds moved to ``mean -/+ bound_std * std``,
  heights and slopes reset to the initial shape on the new grid, then a plain PWLU that trains.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from . import pwlu_cpp
from .pwlu_inference import inference_tables, pwlu_inference
from .pwlu_op import canonical_params, pwlu_canonical
from .pwlu_reference import pwlu_reference

__all__ = [
    "PWLU",
    "INIT_SHAPES",
    "RealignResult",
    "REALIGN_MODES",
    "trace_with_fused_op",
    "use_inference_form",
]

logger = logging.getLogger(__name__)

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
        min_width: smallest bound width a realignment gives (degenerate statistics).
        init_shape: a key of :data:`INIT_SHAPES`: the function of Phase I, and the shape the
            heights are set to at construction and realignment (``"relu"``: the paper's;
            outer slopes 0 and 1 for both).
    """

    INITIAL, STATISTICS, TRAINING = 0, 1, 2
    PARAM_NAMES = ("left_bound", "right_bound", "heights", "left_slope", "right_slope")
    BUFFER_NAMES = ("running_mean", "running_std", "num_batches_tracked", "phase")
    STATE_NAMES = PARAM_NAMES + BUFFER_NAMES  # the keys of a unit in a state dict

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
        self.register_buffer("phase", torch.tensor(self.INITIAL, dtype=torch.long))
        self._phase = self.INITIAL  # mirror of the buffer, for control flow without syncs
        # Compute in the exported arithmetic (see use_inference_form) instead of the fused op.
        self.use_inference_form = False
        self._frozen_tables: tuple[torch.Tensor, ...] | None = None  # see use_inference_form
        # Record the fused C++ op in TorchScript traces (see trace_with_fused_op).
        self.trace_fused_op = False
        with torch.no_grad():  # the grid is snapped so that 0 is a breakpoint: exactly ReLU
            left, right = self._snap_to_zero_breakpoint(
                self.left_bound.double(), self.right_bound.double()
            )
            self._reset_to_shape(left.float(), right.float())

    # ---------------------------------------------------------------------------------------
    # Forward.

    def _params(self) -> tuple[torch.Tensor, ...]:
        return tuple(getattr(self, name) for name in self.PARAM_NAMES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the unit to ``x`` (channel-wise: channels in dim ``channel_dim``).

        Under TorchScript scripting or tracing and ONNX export, the inference form in standard
        ops is used (:meth:`forward_inference`); otherwise the fused op (and Phase I logic).
        """
        if torch.jit.is_scripting():
            return self.forward_inference(x)
        return self._forward_eager(x)

    def forward_inference(self, x: torch.Tensor) -> torch.Tensor:
        """The unit in plain ops (scriptable, exportable), as evaluated at inference."""
        if self._phase == 1:  # STATISTICS: exactly the initial shape
            if self.init_shape == "swish":
                return F.silu(x)
            return torch.relu(x)
        if torch.jit.is_scripting():
            scale, shift, slope, intercept = inference_tables(
                self.left_bound, self.right_bound, self.heights, self.left_slope, self.right_slope
            )
        else:
            scale, shift, slope, intercept = self._inference_tables()
        channel_dim = None if self.num_channels is None else self.channel_dim
        return pwlu_inference(x, scale, shift, slope, intercept, channel_dim, self.num_intervals)

    @torch.jit.unused
    def _inference_tables(self) -> tuple[torch.Tensor, ...]:
        if self._frozen_tables is not None:
            return self._frozen_tables
        return inference_tables(*self._params())

    @torch.jit.unused
    def _forward_eager(self, x: torch.Tensor) -> torch.Tensor:
        if self.use_inference_form:
            return self.forward_inference(x)
        # ONNX export traces too; it always gets the inference form (no custom op in ONNX).
        if torch.jit.is_tracing() and (not self.trace_fused_op or torch.onnx.is_in_onnx_export()):
            return self.forward_inference(x)
        if self._phase == self.STATISTICS:
            if self.training:
                self._update_statistics(x)
            out = INIT_SHAPES[self.init_shape](x)
            if torch.is_grad_enabled() and self.heights.requires_grad:
                # Zero gradients keep the parameters "used" for DistributedDataParallel.
                out = out + 0.0 * sum(p.sum() for p in self._params()).to(out.dtype)
            return out
        # The op directly: the module's parameters are valid by construction, so pwlu()'s
        # Python checks would only add per-call overhead (the kernels check x).
        channel_dim = 0 if self.num_channels is None else self.channel_dim % x.dim()
        return pwlu_canonical(x, canonical_params(*self._params()), channel_dim)

    def _reduce_dims(self, x: torch.Tensor) -> list[int]:
        if self.num_channels is None:
            return list(range(x.dim()))
        channel_dim = self.channel_dim % x.dim()
        return [d for d in range(x.dim()) if d != channel_dim]

    @torch.no_grad()
    def _update_statistics(self, x: torch.Tensor) -> None:
        x = x.detach().float()
        std, mean = torch.std_mean(x, dim=self._reduce_dims(x), correction=0)
        # The first batch initialises the statistics, later ones update them. Chosen on the
        # device (torch.where on the count), not with .item(): no host sync in Phase I.
        first = self.num_batches_tracked == 0
        for running, batch in ((self.running_mean, mean), (self.running_std, std)):
            updated = running.mul(self.momentum).add_(batch, alpha=1 - self.momentum)
            running.copy_(torch.where(first, batch, updated))
        self.num_batches_tracked.add_(1)

    # ---------------------------------------------------------------------------------------
    # Phases.

    def _set_phase(self, phase: int) -> None:
        self.phase.fill_(phase)
        self._phase = phase

    @torch.no_grad()
    def start_statistics(self) -> None:
        """Enter Phase I: output exactly the initial shape, collect input statistics in
        training mode."""
        self.running_mean.zero_()
        self.running_std.fill_(1.0)
        self.num_batches_tracked.zero_()
        self._set_phase(self.STATISTICS)

    def breakpoints(
        self, left: torch.Tensor | None = None, right: torch.Tensor | None = None
    ) -> torch.Tensor:
        """The N + 1 breakpoints ``B_L + i * (B_R - B_L) / N`` of the bounds ``left``, ``right``
        (default: the unit's own, detached), in a new last dimension."""
        if left is None or right is None:
            left, right = self.left_bound.detach(), self.right_bound.detach()
        steps = torch.arange(self.num_intervals + 1, dtype=left.dtype, device=left.device)
        return left.unsqueeze(-1) + steps * ((right - left).unsqueeze(-1) / self.num_intervals)

    def _reset_to_shape(self, left: torch.Tensor, right: torch.Tensor) -> None:
        """Set bounds to (left, right), heights to the initial shape at the breakpoints, outer
        slopes 0 and 1."""
        self.left_bound.copy_(left)
        self.right_bound.copy_(right)
        self.heights.copy_(INIT_SHAPES[self.init_shape](self.breakpoints(left, right)))
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
                "with std below min_width / (2 * bound_std); using a %.3g-wide range there",
                name,
                int(bad.sum()),
                int((narrow & ~bad).sum()),
                self.min_width,
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
        self._set_phase(self.TRAINING)
        jump = self._max_jump(before, *collected)
        return RealignResult(
            self.left_bound.detach().clone(), self.right_bound.detach().clone(), jump, fallbacks
        )

    @torch.no_grad()
    def keep_min_width(self) -> None:
        """Keep ``right_bound - left_bound >= min_width`` after an optimizer step, which can push
        the bounds together or past each other (then the unit is no function at all): such a
        pair is widened to ``min_width`` about its midpoint. No host sync.
        """
        narrow = ~(self.right_bound - self.left_bound >= self.min_width)  # NaN counts too
        mid = (self.left_bound + self.right_bound) / 2
        self.left_bound.copy_(torch.where(narrow, mid - self.min_width / 2, self.left_bound))
        self.right_bound.copy_(torch.where(narrow, mid + self.min_width / 2, self.right_bound))

    # ---------------------------------------------------------------------------------------
    # Function jump across a realignment.

    def _function_snapshot(self) -> tuple[torch.Tensor, ...] | None:
        """The parameters of the function computed now (None: exactly the initial shape, as in
        Phase I)."""
        if self._phase == self.STATISTICS:
            return None
        return tuple(p.detach().double().clone() for p in self._params())

    def _evaluate(self, snapshot: tuple[torch.Tensor, ...] | None, x: torch.Tensor) -> torch.Tensor:
        if snapshot is None:
            return INIT_SHAPES[self.init_shape](x)
        return pwlu_reference(x, *snapshot, channel_dim=1)

    def _max_jump(
        self, before: tuple[torch.Tensor, ...] | None, low: torch.Tensor, high: torch.Tensor
    ) -> float:
        """max |f_after - f_before| on [low, high] per unit, exactly: both functions are
        piecewise linear, so the maximum is at a breakpoint of either, at 0 or at an end."""
        after = tuple(p.detach().double() for p in self._params())
        units = low.numel()
        probes = [low.reshape(units, 1), high.reshape(units, 1), torch.zeros(units, 1).double()]
        for params in (before, after):
            if params is not None:
                probes.append(self.breakpoints(params[0].reshape(units), params[1].reshape(units)))
        x = torch.cat(probes, dim=1)
        x = torch.minimum(torch.maximum(x, low.reshape(units, 1)), high.reshape(units, 1))
        x = x.t().contiguous()  # (probes, units): units in dim 1 for channel-wise parameters
        if self.num_channels is None:
            x = x.reshape(-1)
        jump = (self._evaluate(after, x) - self._evaluate(before, x)).abs()
        return float(jump.max()) if jump.numel() else 0.0

    # ---------------------------------------------------------------------------------------
    # Checkpoints and printing.

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        self._phase = int(self.phase)

    def extra_repr(self) -> str:
        granularity = "layer-wise" if self.num_channels is None else f"{self.num_channels} channels"
        phase = {self.INITIAL: "initial", self.STATISTICS: "statistics", self.TRAINING: "training"}
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
        return f"N={self.num_intervals}, {granularity}{shape}, phase={phase[self._phase]}, {bounds}"


@contextlib.contextmanager
def use_inference_form(model: nn.Module):
    """Within the block, every PWLU of ``model`` computes in its inference form (the arithmetic
    of exported models) instead of the fused op: an exported model is compared against this.

    The inference tables are computed once on entry, so a model traced in the block holds them
    as constants; the parameters must not change within the block.
    """
    units = [m for m in model.modules() if isinstance(m, PWLU)]
    before = [m.use_inference_form for m in units]
    for m in units:
        m.use_inference_form = True
        with torch.no_grad():
            m._frozen_tables = inference_tables(*m._params())
    try:
        yield model
    finally:
        for m, flag in zip(units, before, strict=True):
            m.use_inference_form = flag
            m._frozen_tables = None


@contextlib.contextmanager
def trace_with_fused_op(model: nn.Module):
    """Within the block, TorchScript traces of ``model`` record its PWLUs as the fused C++ op
    (``pwlu_det::pwlu_forward``) instead of the inference form in standard ops.

    Such a TorchScript file runs at the fused op's speed, but only on CPU and only where
    ``pwlu_det`` is installed and imported before ``torch.jit.load``.

    Raises:
        RuntimeError: the C++ extension is not built.
    """
    if not pwlu_cpp.available():
        raise RuntimeError(f"the fused PWLU op is unavailable: {pwlu_cpp.unavailable_reason()}")
    units = [m for m in model.modules() if isinstance(m, PWLU)]
    for m in units:
        m.trace_fused_op = True
    try:
        yield model
    finally:
        for m in units:
            m.trace_fused_op = False
