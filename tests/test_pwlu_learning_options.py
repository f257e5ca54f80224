"""The options for making PWLU learn: the initial shape (MODEL.PWLU.INIT_SHAPE) and the
learning-dynamics measurement (MODEL.PWLU.DYNAMICS_PERIOD, PWLUDynamicsHook)."""

import json
import math
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from detectron2.utils.events import EventStorage
from tiny_training import TinyTrainer, tiny_cfg
from torch import nn

from pwlu_det.config import default_pwlu_config, validate_pwlu_config
from pwlu_det.engine.dynamics_hook import DYNAMICS_FILE, PWLUDynamicsHook, part_of
from pwlu_det.engine.realign_hook import PWLURealignHook
from pwlu_det.layers import PWLU, breakpoints, project_bounds, to_inference_form
from pwlu_det.modeling.activation import activation_factory


@pytest.mark.parametrize("shape, function", [("relu", F.relu), ("swish", F.silu)])
def test_phase_one_computes_the_initial_shape_and_realignment_resets_to_it(shape, function):
    unit = PWLU(6, num_intervals=8, init_shape=shape)
    x = 1.5 * torch.randn(4, 6, 5, 5) + 0.3
    unit.start_statistics()
    unit.train()
    assert torch.equal(unit(x), function(x))
    unit.realign("function_preserving" if shape == "relu" else "paper")
    grid = breakpoints(unit.left_bound.double(), unit.right_bound.double(), unit.num_intervals)
    expected = function(grid).float()
    torch.testing.assert_close(unit.heights.detach(), expected, rtol=0, atol=1e-6)
    assert torch.all(unit.left_slope == 0) and torch.all(unit.right_slope == 1)
    # Between breakpoints the unit interpolates the shape: exact for ReLU (0 a breakpoint).
    gap = (unit(x) - function(x)).abs().max().item()
    width = (unit.right_bound - unit.left_bound).max().item() / unit.num_intervals
    # Linear interpolation error is at most d^2 / 8 * max|f"|, and max|silu"| = 1/2.
    assert gap < 1e-5 if shape == "relu" else 1e-4 < gap <= width**2 / 16


def test_swish_phase_one_survives_scripting():
    unit = PWLU(3, num_intervals=4, init_shape="swish").eval()
    unit.start_statistics()
    x = torch.randn(2, 3, 4, 4)
    torch.testing.assert_close(torch.jit.script(to_inference_form(unit))(x), F.silu(x))


def test_bad_initial_shapes_are_refused():
    with pytest.raises(ValueError, match="init_shape must be one of"):
        PWLU(2, init_shape="gelu")
    unit = PWLU(2, init_shape="swish")
    unit.start_statistics()
    with pytest.raises(ValueError, match="function_preserving.*init_shape 'relu'"):
        unit.realign("function_preserving")
    cfg = default_pwlu_config()
    cfg.MODEL.PWLU.INIT_SHAPE = "swish"
    validate_pwlu_config(cfg)
    cfg.MODEL.PWLU.REALIGN_MODE = "function_preserving"
    with pytest.raises(ValueError, match="MODEL.PWLU.INIT_SHAPE = 'swish' is invalid"):
        validate_pwlu_config(cfg)


def test_factory_passes_the_initial_shape_and_relu_stays_the_default():
    cfg = default_pwlu_config()
    assert activation_factory(cfg, "backbone")(4).init_shape == "relu"
    cfg.MODEL.PWLU.INIT_SHAPE = "swish"
    assert activation_factory(cfg, "head")(4).init_shape == "swish"


@pytest.mark.parametrize(
    "name, part",
    [
        ("backbone.bottom_up.stem.act", "stem"),
        ("backbone.bottom_up.res4.1.act2", "res4"),
        ("backbone.fpn_lateral3", "fpn"),
        ("proposal_generator.rpn_head.conv.activation", "rpn_head"),
        ("module.roi_heads.box_head.fc_relu1", "box_head"),
        ("roi_heads.mask_head.deconv_relu", "mask_head"),
        ("roi_heads.box_predictor.cls_score", None),
    ],
)
def test_parts_are_read_from_module_names(name, part):
    assert part_of(name) == part


class _Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(2, 3, 3, padding=1)
        self.act = PWLU(3, num_intervals=4)


class _Net(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.res3 = _Block()
        self.box_head = nn.Sequential(nn.Linear(3, 5), PWLU(None, num_intervals=4))

    def forward(self, x):
        y = self.res3.act(self.res3.conv(x))
        return self.box_head(y.mean(dim=(2, 3))).sum()


def test_dynamics_hook_measures_gradients_updates_and_elements(tmp_path):
    net = _Net()
    units = (net.res3.act, net.box_head[1])
    for unit in units:
        unit.start_statistics()
    net(torch.randn(2, 2, 4, 4))  # Phase I statistics
    for unit in units:
        unit.realign()
    optimizer = torch.optim.SGD(net.parameters(), lr=0.01)
    hook = PWLUDynamicsHook(net, period=2, output_dir=str(tmp_path))
    with EventStorage() as storage:
        hook.trainer = SimpleNamespace(iter=0, storage=storage)
        for it in range(3):
            hook.trainer.iter = it
            storage.iter = it
            hook.before_step()
            optimizer.zero_grad()
            net(torch.randn(2, 2, 4, 4)).backward()
            before = net.res3.act.heights.detach().clone()
            optimizer.step()
            hook.after_step()
            if it == 2:
                grad = net.res3.act.heights.grad
                delta = net.res3.act.heights.detach() - before
    lines = [json.loads(line) for line in (tmp_path / DYNAMICS_FILE).read_text().splitlines()]
    assert [r["iteration"] for r in lines] == [0, 2]  # the period
    last = lines[-1]
    assert last["dynamics/res3/heights/grad_rms"] == pytest.approx(
        grad.norm().item() / math.sqrt(grad.numel()), rel=1e-6
    )
    assert last["dynamics/res3/heights/rel_update"] == pytest.approx(
        delta.norm().item() / before.norm().item(), rel=1e-5
    )
    assert last["dynamics/res3/conv/rel_update"] > 0
    assert last["dynamics/res3/elements_per_unit"] == 2 * 4 * 4  # batch x H x W per channel
    assert last["dynamics/box_head/elements_per_unit"] == 2 * 5  # layer-wise: every element
    assert last["dynamics/res3/shape_gap"] > 0  # two SGD steps moved the heights off ReLU
    assert "dynamics/res3/heights/grad_rms" in storage.latest()


def test_dynamics_hook_only_when_asked_and_before_the_realignment(tmp_path):
    assert not any(
        isinstance(h, PWLUDynamicsHook) for h in TinyTrainer(tiny_cfg(str(tmp_path)))._hooks
    )
    kinds = [type(h) for h in TinyTrainer(tiny_cfg(str(tmp_path), DYNAMICS_PERIOD=5))._hooks]
    assert kinds.index(PWLUDynamicsHook) < kinds.index(PWLURealignHook)
    with pytest.raises(ValueError, match="period must be >= 1"):
        PWLUDynamicsHook(_Net(), 0, str(tmp_path))


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


def test_dynamics_table_takes_the_last_record_of_each_iteration_and_splits_the_phases(
    tmp_path, capsys
):
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "tools" / "pwlu_dynamics.py"
    spec = importlib.util.spec_from_file_location("pwlu_dynamics_tool", path)
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    cfg = default_pwlu_config()
    cfg.MODEL.PWLU.STATISTICS_ITERS = 4
    (tmp_path / "config.yaml").write_text(cfg.dump())
    key = "dynamics/res3/heights/rel_update"
    lines = [{"iteration": 0, key: 0.0}, {"iteration": 4, key: 9.0},
             {"iteration": 4, key: 1.0}, {"iteration": 8, key: 3.0}]  # fmt: skip
    (tmp_path / DYNAMICS_FILE).write_text("\n".join(json.dumps(r) for r in lines) + "\n")
    records = tool.read_records(str(tmp_path))
    assert [r[key] for r in records] == [0.0, 1.0, 3.0]  # a resumed run's repeat: the last
    (row,) = tool.summarise(records, 4, 9)
    assert row[0] == "res3" and row[4] == 2.0  # median of 1 and 3
    tool.main([str(tmp_path)])
    out = capsys.readouterr().out
    assert "Phase I, iterations [0, 4)" in out and "Phase II, iterations [4, 9)" in out
    with pytest.raises(SystemExit):
        tool.main([str(tmp_path / "missing")])
