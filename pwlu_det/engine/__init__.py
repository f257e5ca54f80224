"""Training integration: trainers, hooks and short runs."""

from .smoke import SmokeRunResult, build_zoo_model, run_smoke_training

__all__ = ["SmokeRunResult", "build_zoo_model", "run_smoke_training"]
