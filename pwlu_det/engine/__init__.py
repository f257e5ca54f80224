"""Training integration: the realignment hook, optimizer rules, trainer and launcher."""

from .launch import launch
from .optimizer import build_pwlu_optimizer, keep_bounds_apart
from .realign_hook import PWLURealignHook, trainable_pwlus
from .trainer import PWLUTrainer, insert_before_checkpointer

__all__ = [
    "PWLURealignHook",
    "PWLUTrainer",
    "build_pwlu_optimizer",
    "insert_before_checkpointer",
    "keep_bounds_apart",
    "launch",
    "trainable_pwlus",
]
