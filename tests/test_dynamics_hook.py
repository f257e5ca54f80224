"""PWLUDynamicsHook (MODEL.PWLU.DYNAMICS_PERIOD): what it measures per model part, when it
runs, and the table tools/pwlu_dynamics.py prints from its records."""

import json
import math
from types import SimpleNamespace

import pytest
import torch
from detectron2.utils.events import EventStorage
from tiny_training import TinyTrainer, tiny_cfg
from tool_runs import run_tool
from torch import nn

from pwlu_det.config import default_pwlu_config
from pwlu_det.engine.dynamics_hook import DYNAMICS_FILE, PWLUDynamicsHook, part_of
from pwlu_det.engine.dynamics_table import read_records, summarise
from pwlu_det.engine.realign_hook import PWLURealignHook
from pwlu_det.layers import PWLU


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


def test_dynamics_table_takes_the_last_record_of_each_iteration_and_splits_the_phases(tmp_path):
    cfg = default_pwlu_config()
    cfg.MODEL.PWLU.STATISTICS_ITERS = 4
    (tmp_path / "config.yaml").write_text(cfg.dump())
    key = "dynamics/res3/heights/rel_update"
    lines = [{"iteration": 0, key: 0.0}, {"iteration": 4, key: 9.0},
             {"iteration": 4, key: 1.0}, {"iteration": 8, key: 3.0}]  # fmt: skip
    (tmp_path / DYNAMICS_FILE).write_text("\n".join(json.dumps(r) for r in lines) + "\n")
    records = read_records(str(tmp_path))
    assert [r[key] for r in records] == [0.0, 1.0, 3.0]  # a resumed run's repeat: the last
    (row,) = summarise(records, 4, 9)
    assert row[0] == "res3" and row[4] == 2.0  # median of 1 and 3
    out = run_tool("pwlu_dynamics.py", tmp_path).stdout
    assert "Phase I, iterations [0, 4)" in out and "Phase II, iterations [4, 9)" in out
    missing = run_tool("pwlu_dynamics.py", tmp_path / "missing")
    assert missing.returncode == 2 and "DYNAMICS_PERIOD > 0" in missing.stdout
