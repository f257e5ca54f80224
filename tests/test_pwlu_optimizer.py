"""The PWLU optimizer: its parameter rules (MODEL.PWLU.LR_FACTOR, WEIGHT_DECAY), and bounds that
cannot cross (the projection after every step; training goes on after a step that pushed them
past each other)."""

import pytest
import torch
from tiny_training import TinyPWLUNet, TinyTrainer, tiny_cfg

from pwlu_det.engine import build_pwlu_optimizer, trainable_pwlus
from pwlu_det.layers import PWLU, project_bounds


def test_optimizer_applies_pwlu_rules(tmp_path):
    cfg = tiny_cfg(str(tmp_path), LR_FACTOR=0.5, WEIGHT_DECAY=0.0)
    model = TinyPWLUNet()
    optimizer = build_pwlu_optimizer(cfg, model)
    pwlu_params = {p for _, m in trainable_pwlus(model) for p in m.parameters()}
    seen = set()
    for group in optimizer.param_groups:
        for p in group["params"]:
            seen.add(p)
            if p in pwlu_params:
                assert group["lr"] == pytest.approx(0.025) and group["weight_decay"] == 0.0
            else:
                assert group["lr"] == pytest.approx(0.05) and group["weight_decay"] == 1e-4
    assert pwlu_params <= seen
    assert not any(p in seen for p in model.frozen_act.parameters())


def test_optimizer_refuses_ambiguous_parameter_names(tmp_path):
    model = TinyPWLUNet()
    model.conv1.register_parameter("heights", torch.nn.Parameter(torch.zeros(1)))
    with pytest.raises(ValueError, match="conv1.heights"):
        build_pwlu_optimizer(tiny_cfg(str(tmp_path)), model)


def test_bounds_pushed_past_each_other_are_widened_about_their_midpoint():
    unit = PWLU(5, num_intervals=4, min_width=0.1)
    with torch.no_grad():
        unit.left_bound.copy_(torch.tensor([-1.0, 2.6, 0.5, 3.0e7, -1.0]))
        unit.right_bound.copy_(torch.tensor([1.0, 2.5, float("nan"), -2.4e7, float("inf")]))
    heights = unit.heights.detach().clone()
    project_bounds((unit,))
    left, right = unit.left_bound.detach(), unit.right_bound.detach()
    torch.testing.assert_close(left[:2], torch.tensor([-1.0, 2.5]))
    torch.testing.assert_close(right[:2], torch.tensor([1.0, 2.6]))
    # Far from 0 the float32 midpoint -/+ 0.05 would round to one value: still min_width apart.
    assert left[3] == 3.0e6 and right[3] - left[3] >= 0.1
    # Bounds no longer finite: finite ones about 0, and NaN heights, so that the unit outputs
    # NaN and the loss shows the divergence (the op's bound check never sees it).
    torch.testing.assert_close(left[[2, 4]], torch.tensor([-0.05, -0.05]))
    torch.testing.assert_close(right[[2, 4]], torch.tensor([0.05, 0.05]))
    assert torch.isnan(unit.heights[[2, 4]]).all() and torch.equal(unit.heights[:2], heights[:2])
    assert torch.isnan(unit(torch.randn(2, 5, 3))[:, [2, 4]]).all()


def _widths(units) -> list[float]:
    return [float((u.right_bound - u.left_bound).min()) for u in units]


def test_the_pwlu_optimizer_projects_the_bounds_it_trains_after_every_step(tmp_path):
    trainer = TinyTrainer(tiny_cfg(str(tmp_path)))
    model = trainer.model
    with torch.no_grad():
        for unit in (model.act1, model.act2, model.frozen_act):
            unit.right_bound.copy_(unit.left_bound - 1.0)  # as a diverging step could
    trainer.optimizer.zero_grad(set_to_none=True)
    trainer.optimizer.step()
    assert min(_widths([model.act1, model.act2])) >= model.act1.min_width * (1 - 1e-6)
    assert _widths([model.frozen_act]) == [-1.0]  # not trained: not this optimizer's to touch


def test_a_huge_step_that_crosses_the_bounds_leaves_valid_units_and_training_continues(
    tmp_path,
):
    trainer = TinyTrainer(tiny_cfg(str(tmp_path), max_iter=4, statistics_iters=0))
    units = [trainer.model.act1, trainer.model.act2]
    huge = [True]  # the first step only: bound gradients x 1e9, a huge LR for the bounds
    for unit in units:
        for bound in (unit.left_bound, unit.right_bound):
            bound.register_hook(lambda grad: grad * 1e9 if huge[0] else grad)
    crossed, widths = [], []

    def before_step(optimizer, *_):
        if huge[0]:  # first step: no momentum yet and no PWLU weight decay, so p - lr * grad
            lr = {id(p): g["lr"] for g in optimizer.param_groups for p in g["params"]}
            for u in units:
                left, right = (
                    b.detach() - lr[id(b)] * b.grad for b in (u.left_bound, u.right_bound)
                )
                crossed.append(bool((right <= left).any()))

    def after_step(*_):
        widths.append(min(_widths(units)))
        huge[0] = False

    trainer.optimizer.register_step_pre_hook(before_step)
    trainer.optimizer.register_step_post_hook(after_step)  # after the projection
    trainer.train()  # Detectron2 raises FloatingPointError on a non-finite loss
    assert any(crossed), "the huge step must push some bounds past each other"
    assert len(widths) == 4 and min(widths) >= units[0].min_width * (1 - 1e-6)
    assert all(torch.isfinite(p).all() for u in units for p in u.parameters())


def test_a_diverging_run_still_ends_with_detectron2s_loss_error(tmp_path):
    cfg = tiny_cfg(str(tmp_path), max_iter=8, statistics_iters=0)
    cfg.SOLVER.BASE_LR = 1e30
    with pytest.raises(FloatingPointError, match="Loss became infinite or NaN"):
        TinyTrainer(cfg).train()
