"""A tiny PWLU model trained by ``PWLUTrainer``, for hook, resume and multi-process tests.

Importable by spawned worker processes (tests/ is on their sys.path).
"""

from __future__ import annotations

import itertools
import json
import os

import torch
from detectron2.config import get_cfg
from detectron2.engine import HookBase
from detectron2.utils import comm
from torch import nn

from pwlu_det import add_pwlu_config
from pwlu_det.engine import PWLUTrainer, launch
from pwlu_det.layers import PWLU


class TinyPWLUNet(nn.Module):
    """conv -> channel-wise PWLU -> conv -> layer-wise PWLU -> mean; loss = squared error."""

    def __init__(self, num_intervals: int = 8):
        super().__init__()
        torch.manual_seed(0)
        self.conv1 = nn.Conv2d(3, 4, 3, padding=1)
        self.act1 = PWLU(4, num_intervals=num_intervals)
        self.conv2 = nn.Conv2d(4, 2, 3, padding=1)
        self.act2 = PWLU(None, num_intervals=num_intervals)
        self.frozen = nn.Conv2d(2, 2, 1)
        self.frozen_act = PWLU(2, num_intervals=num_intervals)
        for p in [*self.frozen.parameters(), *self.frozen_act.parameters()]:
            p.requires_grad_(False)

    @property
    def device(self):
        return self.conv1.weight.device

    def forward(self, batch):
        images, targets = batch
        out = self.frozen_act(self.frozen(self.act2(self.conv2(self.act1(self.conv1(images))))))
        return {"loss_mse": ((out.mean(dim=(2, 3)) - targets) ** 2).mean()}


def tiny_batch(seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    images = 2 * torch.randn(4, 3, 8, 8, generator=gen) + 0.5
    return images, torch.randn(4, 2, generator=gen)


class TinyTrainer(PWLUTrainer):
    """PWLUTrainer on TinyPWLUNet; every iteration sees the same batch (rank-dependent)."""

    @classmethod
    def build_model(cls, cfg):
        return TinyPWLUNet(cfg.MODEL.PWLU.NUM_INTERVALS)

    @classmethod
    def build_train_loader(cls, cfg):
        return itertools.repeat(tiny_batch(seed=comm.get_rank()))

    @classmethod
    def test(cls, cfg, model, evaluators=None):
        return {}


def tiny_cfg(output_dir: str, max_iter: int = 10, statistics_iters: int = 4, **pwlu_keys):
    cfg = get_cfg()
    add_pwlu_config(cfg)
    cfg.MODEL.DEVICE = "cpu"
    cfg.MODEL.PWLU.NUM_INTERVALS = 8
    cfg.MODEL.PWLU.STATISTICS_ITERS = statistics_iters
    for key, value in pwlu_keys.items():
        cfg.MODEL.PWLU[key] = value
    cfg.SOLVER.BASE_LR = 0.05
    cfg.SOLVER.MOMENTUM = 0.9
    cfg.SOLVER.WEIGHT_DECAY = 1e-4
    cfg.SOLVER.MAX_ITER = max_iter
    cfg.SOLVER.STEPS = (6,)
    cfg.SOLVER.WARMUP_ITERS = 2
    cfg.SOLVER.CHECKPOINT_PERIOD = 1
    cfg.SOLVER.IMS_PER_BATCH = 4
    cfg.TEST.EVAL_PERIOD = 0
    cfg.OUTPUT_DIR = output_dir
    return cfg


class Interrupt(Exception):
    """Stands for a crash right after a checkpoint was written."""


class InterruptAt(HookBase):
    """Raises :class:`Interrupt` after iteration ``iteration`` (checkpoint already written)."""

    def __init__(self, iteration: int):
        self.iteration = iteration

    def after_step(self):
        if self.trainer.iter == self.iteration:
            raise Interrupt


def pwlu_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """Every PWLU parameter and buffer of ``model``, by name."""
    model = getattr(model, "module", model)
    return {
        f"{name}.{key}": value.detach().clone()
        for name, module in model.named_modules()
        if isinstance(module, PWLU)
        for key, value in module.state_dict().items()
    }


class RecordStatistics(HookBase):
    """Records the local (not yet all-reduced) running means after the last Phase I iteration;
    it must run before the realignment hook."""

    def __init__(self, iteration: int):
        self.iteration = iteration
        self.means: list[float] = []

    def after_step(self):
        if self.trainer.iter == self.iteration:
            model = getattr(self.trainer.model, "module", self.trainer.model)
            self.means = model.act1.running_mean.tolist()


def _distributed_main(output_dir: str, max_iter: int, statistics_iters: int) -> None:
    cfg = tiny_cfg(output_dir, max_iter, statistics_iters)
    trainer = TinyTrainer(cfg)
    recorder = RecordStatistics(statistics_iters - 1)
    trainer.register_hooks([recorder])
    trainer._hooks.insert(0, trainer._hooks.pop())  # first: before the realignment
    trainer.train()
    state = {k: v.tolist() for k, v in pwlu_state(trainer.model).items()}
    result = {"state": state, "phase1_means": recorder.means, "ddp": type(trainer.model).__name__}
    with open(os.path.join(output_dir, f"rank{comm.get_rank()}.json"), "w") as f:
        json.dump(result, f)


def run_two_processes(output_dir: str, max_iter: int, statistics_iters: int) -> None:
    launch(_distributed_main, 2, args=(output_dir, max_iter, statistics_iters))
