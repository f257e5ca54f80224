"""The realignment hook in Detectron2's training loop: its place among the hooks, momentum
reset, resume equivalence and multi-process statistics."""

import json
import logging
import types

import pytest
import torch
from detectron2.engine import HookBase, hooks
from detectron2.utils.events import EventStorage
from tiny_training import (
    Interrupt,
    InterruptAt,
    TinyPWLUNet,
    TinyTrainer,
    pwlu_state,
    run_two_processes,
    tiny_cfg,
)

from pwlu_det.engine import PWLURealignHook, trainable_pwlus
from pwlu_det.layers import Phase

R = 4  # STATISTICS_ITERS of the tiny runs: realignment after iteration 3
T = 10  # MAX_ITER


def test_hook_sits_before_the_checkpointer(tmp_path):
    trainer = TinyTrainer(tiny_cfg(str(tmp_path)))
    kinds = [type(h) for h in trainer._hooks]
    assert kinds.index(PWLURealignHook) < kinds.index(hooks.PeriodicCheckpointer)


class _Probe(HookBase):
    """Records PWLU parameters and optimizer state right after the realignment."""

    def after_step(self):
        if self.trainer.iter == R - 1:
            model = self.trainer.model
            self.params = {id(p): p.detach().clone() for p in model.act1.parameters()}
            self.states = [self.trainer.optimizer.state.get(p) for p in model.act1.parameters()]
            self.other_state = self.trainer.optimizer.state.get(model.conv1.weight)
            self.phases = [m.phase for m in (model.act1, model.act2, model.frozen_act)]


def test_training_realigns_clears_momentum_and_keeps_training(tmp_path, caplog):
    trainer = TinyTrainer(tiny_cfg(str(tmp_path), max_iter=T, statistics_iters=R))
    probe = _Probe()
    trainer.register_hooks([probe])
    act = trainer.model.act1
    params = list(act.parameters())
    with caplog.at_level(logging.INFO, logger="pwlu_det.engine.realign_hook"):
        trainer.train()
    # One numbering, Detectron2's (trainer.iter, as in model_<N>.pth): R = 4 iterations of
    # Phase I are iterations 0-3, and the realignment follows iteration 3.
    assert f"collect statistics through iteration {R - 1}, then realign" in caplog.text
    assert f"PWLU realignment (paper) at iteration {R - 1}:" in caplog.text
    # Right after the realignment: trained units in Phase II, frozen ones untouched, momentum
    # of the reset parameters gone (others kept).
    assert probe.phases == [Phase.TRAINING, Phase.TRAINING, Phase.INITIAL]
    assert all(state is None for state in probe.states)
    assert probe.other_state is not None and "momentum_buffer" in probe.other_state
    # The optimizer updated the very same Parameter objects afterwards.
    assert all(a is b for a, b in zip(params, act.parameters(), strict=True))
    moved = [not torch.equal(probe.params[id(p)], p.detach()) for p in params]
    assert moved[2], "heights must train after the realignment"
    opt_params = {p for g in trainer.optimizer.param_groups for p in g["params"]}
    assert all(p in opt_params for p in params)
    # Frozen units stay exactly ReLU.
    x = torch.randn(3, 2, 5, 5)
    assert torch.equal(trainer.model.frozen_act(x), x.relu())
    storage_keys = set(trainer.storage.histories())
    assert {"pwlu/mean_bound_width", "pwlu/max_function_jump"} <= storage_keys


def _train(output_dir, interrupt_after=None, resume=False, hook_first=True):
    trainer = TinyTrainer(tiny_cfg(str(output_dir), max_iter=T, statistics_iters=R))
    if not hook_first:  # checkpointer before the realignment hook: resume must catch up
        realign = next(h for h in trainer._hooks if isinstance(h, PWLURealignHook))
        trainer._hooks.remove(realign)
        trainer.register_hooks([realign])
    if interrupt_after is not None:
        trainer.register_hooks([InterruptAt(interrupt_after)])
    trainer.resume_or_load(resume=resume)
    try:
        trainer.train()
    except Interrupt:
        return None
    return pwlu_state(trainer.model), trainer.optimizer.param_groups[0]["lr"], trainer


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    state, lr, trainer = _train(tmp_path_factory.mktemp("full"))
    assert trainer.iter == T  # Detectron2 counts one past the last iteration at the end
    return state, lr


@pytest.mark.parametrize(
    ("interrupt_after", "hook_first"),
    [(R - 2, True), (R - 1, True), (R - 1, False), (R + 2, True)],
    ids=["before", "at", "at-checkpoint-before-realign", "after"],
)
def test_resume_equals_uninterrupted_run(tmp_path, uninterrupted, interrupt_after, hook_first):
    assert _train(tmp_path, interrupt_after=interrupt_after, hook_first=hook_first) is None
    state, lr, _ = _train(tmp_path, resume=True, hook_first=hook_first)
    expected_state, expected_lr = uninterrupted
    assert lr == pytest.approx(expected_lr, rel=0, abs=0)
    assert state.keys() == expected_state.keys()
    for key, value in state.items():
        torch.testing.assert_close(
            value, expected_state[key], rtol=1e-6, atol=1e-7, msg=f"{key} differs after resume"
        )


def test_hook_realigns_at_start_when_resumed_after_phase_one():
    model = TinyPWLUNet()
    for _, m in trainable_pwlus(model):
        m.start_statistics()
        m(torch.randn(2, m.num_channels or 3, 4, 4))
    hook = PWLURealignHook(model, statistics_iters=5)
    hook.trainer = types.SimpleNamespace(
        start_iter=7, max_iter=10, iter=6, optimizer=None, storage=None
    )
    hook.before_train()
    assert all(m.phase == Phase.TRAINING for _, m in trainable_pwlus(model))


def test_realignment_reports_skipped_inputs_per_part(caplog):
    """Empty and non-finite Phase I inputs are reported per part, next to the fallback units,
    in the log and in the event storage."""
    model = TinyPWLUNet()
    hook = PWLURealignHook(model, statistics_iters=3)
    for _, m in trainable_pwlus(model):
        m.start_statistics()
    nan = torch.randn(2, 4, 3, 3)
    nan[0, 0, 0, 0] = float("nan")
    for x in (torch.randn(2, 4, 3, 3), torch.randn(0, 4, 3, 3), nan, torch.randn(2, 4, 3, 3)):
        model.act1(x)
    for _ in range(2):
        model.act2(torch.randn(0, 2, 3, 3))  # never a batch: falls back
    with EventStorage() as storage, caplog.at_level(logging.INFO):
        hook.trainer = types.SimpleNamespace(iter=2, optimizer=None, storage=storage)
        hook.realign()
    text = caplog.text
    assert "1 units on fallback bounds, Phase I inputs skipped: 3 empty, 1 non-finite" in text
    act1 = "act1: 1 modules, 4 units, 0 on fallback bounds; Phase I inputs: 2 used, 1 empty "
    assert act1 + "and 1 non-finite skipped" in text
    act2 = "act2: 1 modules, 1 units, 1 on fallback bounds; Phase I inputs: 0 used, 2 empty "
    assert act2 + "and 0 non-finite skipped" in text
    parts = [r for r in caplog.records if r.getMessage().startswith("PWLU realignment, ")]
    levels = {r.getMessage().split(":")[0][len("PWLU realignment, ") :]: r.levelno for r in parts}
    assert levels == {"act1": logging.WARNING, "act2": logging.INFO}  # WARNING: non-finite
    assert storage.history("pwlu/fallback_units").latest() == 1
    assert storage.history("pwlu/skipped_empty_inputs").latest() == 3
    assert storage.history("pwlu/skipped_nonfinite_inputs").latest() == 1


@pytest.mark.slow
def test_two_processes_share_statistics_and_parameters(tmp_path):
    run_two_processes(str(tmp_path), max_iter=T, statistics_iters=R)
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert all(r["ddp"] == "DistributedDataParallel" for r in ranks)
    # Different data, so different local statistics in Phase I ...
    assert ranks[0]["phase1_means"] != ranks[1]["phase1_means"]
    # ... but identical parameters and statistics after the realignment.
    for key, value in ranks[0]["state"].items():
        assert value == ranks[1]["state"][key], key
    mean = torch.tensor([r["phase1_means"] for r in ranks]).mean(0)
    torch.testing.assert_close(torch.tensor(ranks[0]["state"]["act1.running_mean"]), mean)


def test_lr_factor_zero_freezes_the_units_at_their_realigned_shape(tmp_path):
    """The comparison's ablation: PWLU whose parameters stop training at the realignment."""
    at_realignment = TinyTrainer(tiny_cfg(str(tmp_path / "a"), max_iter=R, statistics_iters=R))
    at_realignment.train()
    frozen = TinyTrainer(
        tiny_cfg(str(tmp_path / "b"), max_iter=T, statistics_iters=R, LR_FACTOR=0.0)
    )
    frozen.train()
    for (name, unit), (_, reference) in zip(
        trainable_pwlus(frozen.model), trainable_pwlus(at_realignment.model), strict=True
    ):
        assert unit.phase == Phase.TRAINING
        for p, q in zip(unit.op_params(), reference.op_params(), strict=True):
            assert torch.equal(p, q), f"{name} moved after the realignment"
    # Everything else kept training.
    assert not torch.equal(frozen.model.conv1.weight, at_realignment.model.conv1.weight)
