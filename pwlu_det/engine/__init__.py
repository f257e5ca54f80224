"""Training integration: the realignment hook, optimizer rules, trainer and launcher."""

from .launch import launch
from .optimizer import build_pwlu_optimizer
from .realign_hook import PWLURealignHook, trainable_pwlus
from .smoke import SmokeRunResult, build_zoo_model, run_smoke_training
from .trainer import PWLUTrainer, insert_before_checkpointer

__all__ = [
    "PWLURealignHook",
    "PWLUTrainer",
    "SmokeRunResult",
    "build_pwlu_optimizer",
    "build_zoo_model",
    "insert_before_checkpointer",
    "launch",
    "run_smoke_training",
    "trainable_pwlus",
]
