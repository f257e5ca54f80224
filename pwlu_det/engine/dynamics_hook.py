"""``PWLUDynamicsHook``: how fast PWLU parameters learn, next to the conv weights beside them.

Every ``period`` iterations it writes, per model part (stem, res2..res5, FPN, RPN head, box head,
mask head) and per kind of parameter (PWLU ``heights``, ``bounds``, ``slopes``; the part's
``conv`` weights), scalars named ``dynamics/<part>/<kind>/<what>``, one JSON object per measured
step, to ``OUTPUT_DIR/pwlu_dynamics.json`` (every measured step: ``metrics.json`` keeps only the
latest value per writer period) and to the event storage (TensorBoard):

- ``grad_rms``: root mean square of the gradient entries;
- ``rel_update``: ``||theta_after - theta_before|| / ||theta_before||`` over the step (the
  optimizer's update, momentum and weight decay included);

and per part, for its PWLU units:

- ``dynamics/<part>/height_update_per_width``: mean ``|delta Y_i|`` over the step, divided by the
  unit's interval width ``d`` (a unit's own scale);
- ``dynamics/<part>/shape_gap``: median over units of ``max_i |Y_i - shape(B_i)| / d``, how far
  the heights are from the unit's initial shape (0 right after a realignment);
- ``dynamics/<part>/elements_per_unit``: how many input elements one unit sums its parameter
  gradients over (``x.numel() / C`` channel-wise, ``x.numel()`` layer-wise).

The gradients are read after the step: Detectron2's ``SimpleTrainer`` clears them only at the
start of the next one. ``tools/pwlu_dynamics.py`` tabulates the scalars of a run.
"""

from __future__ import annotations

import json
import os
import re
from collections import defaultdict

import torch
from detectron2.engine import HookBase
from detectron2.utils import comm
from torch import nn

from pwlu_det.layers import INIT_SHAPES, PWLU, breakpoints

__all__ = ["DYNAMICS_FILE", "PARTS", "PWLUDynamicsHook", "part_of"]

#: File in OUTPUT_DIR with one JSON object (iteration and scalars) per measured step.
DYNAMICS_FILE = "pwlu_dynamics.json"

#: Model parts, as they appear in the module names of pwlu_det's detectors.
PARTS = ("stem", "res2", "res3", "res4", "res5", "fpn", "rpn_head", "box_head", "mask_head")
_PART_PATTERN = re.compile(r"(?:^|\.)(stem|res[2-5]|fpn|rpn_head|box_head|mask_head)(?:[._]|$)")

_PWLU_KINDS = {
    "heights": ("heights",),
    "bounds": ("left_bound", "right_bound"),
    "slopes": ("left_slope", "right_slope"),
}


def part_of(name: str) -> str | None:
    """The part of :data:`PARTS` a parameter or module name belongs to (None: no part)."""
    match = _PART_PATTERN.search(name)
    return match.group(1) if match else None


def _norm(tensors: list[torch.Tensor]) -> float:
    return float(torch.sqrt(sum((t.double() ** 2).sum() for t in tensors)))


class PWLUDynamicsHook(HookBase):
    """Write learning-dynamics scalars of PWLU units and conv weights every ``period`` steps.

    Args:
        model: the trained model (DistributedDataParallel-wrapped or not).
        period: measure the steps whose iteration is a multiple of ``period`` (> 0).
        output_dir: where :data:`DYNAMICS_FILE` goes (main process only).
    """

    def __init__(self, model: nn.Module, period: int, output_dir: str):
        if period < 1:
            raise ValueError(f"PWLUDynamicsHook: period must be >= 1, got {period}")
        self._period = period
        self._path = os.path.join(output_dir, DYNAMICS_FILE)
        self._params: dict[tuple[str, str], list[nn.Parameter]] = defaultdict(list)
        self._units: dict[str, list[PWLU]] = defaultdict(list)
        for name, module in model.named_modules():
            part = part_of(name)
            if part is None:
                continue
            if isinstance(module, PWLU):
                self._units[part].append(module)
                for kind, names in _PWLU_KINDS.items():
                    self._params[part, kind] += [getattr(module, n) for n in names]
            elif isinstance(module, nn.Conv2d | nn.ConvTranspose2d):
                self._params[part, "conv"].append(module.weight)
        self._elements: dict[int, int] = {}
        self._before: dict[int, torch.Tensor] = {}
        self._handles = [
            unit.register_forward_pre_hook(self._count_elements)
            for units in self._units.values()
            for unit in units
        ]

    def _due(self) -> bool:
        return self.trainer.iter % self._period == 0

    def _count_elements(self, unit: PWLU, args: tuple) -> None:
        if unit.training and self._before:
            x = args[0]
            per_unit = x.numel() // (unit.num_channels or 1)
            self._elements[id(unit)] = self._elements.get(id(unit), 0) + per_unit

    def before_step(self) -> None:
        if self._due():
            self._elements.clear()
            self._before = {
                id(p): p.detach().clone() for params in self._params.values() for p in params
            }

    def after_step(self) -> None:
        if not self._before:
            return
        scalars = {}
        for (part, kind), params in self._params.items():
            grads = [p.grad for p in params if p.grad is not None]
            if grads:
                numel = sum(g.numel() for g in grads)
                scalars[f"dynamics/{part}/{kind}/grad_rms"] = _norm(grads) / numel**0.5
            deltas = [p.detach() - self._before[id(p)] for p in params]
            before_norm = _norm([self._before[id(p)] for p in params])
            scalars[f"dynamics/{part}/{kind}/rel_update"] = _norm(deltas) / max(before_norm, 1e-30)
        for part, units in self._units.items():
            scalars.update(self._unit_scalars(part, units))
        self._before = {}
        self.trainer.storage.put_scalars(**scalars, smoothing_hint=False)
        if comm.is_main_process():
            with open(self._path, "a") as f:
                f.write(json.dumps({"iteration": self.trainer.iter, **scalars}) + "\n")

    @torch.no_grad()
    def _unit_scalars(self, part: str, units: list[PWLU]) -> dict[str, float]:
        updates, gaps, elements = [], [], []
        for unit in units:
            width = (unit.right_bound - unit.left_bound).double() / unit.num_intervals
            delta = (unit.heights - self._before[id(unit.heights)]).double().abs()
            updates.append((delta.mean(-1) / width).reshape(-1))
            grid = breakpoints(
                unit.left_bound.double(), unit.right_bound.double(), unit.num_intervals
            )
            shape = INIT_SHAPES[unit.init_shape](grid)
            gap = (unit.heights.double() - shape).abs().amax(-1) / width
            gaps.append(gap.reshape(-1))
            if id(unit) in self._elements:
                elements.append(self._elements[id(unit)])
        out = {
            f"dynamics/{part}/height_update_per_width": float(torch.cat(updates).mean()),
            f"dynamics/{part}/shape_gap": float(torch.cat(gaps).median()),
        }
        if elements:
            out[f"dynamics/{part}/elements_per_unit"] = sum(elements) / len(elements)
        return out
