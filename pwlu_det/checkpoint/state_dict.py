"""Reading a state dict from a file, a checkpoint or a model, and finding its PWLU units."""

from __future__ import annotations

import os
import pickle
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch
from torch import nn

from pwlu_det.layers import STATE_NAMES

__all__ = ["find_pwlu_units", "load_state_dict"]

_V = TypeVar("_V")
_WRAPPERS = ("model", "state_dict")  # Detectron2 and torchvision checkpoints; other trainers
_PREFIX = "module."  # saved from DataParallel / DistributedDataParallel


def load_state_dict(
    source: str | os.PathLike | Mapping[str, Any] | nn.Module,
) -> dict[str, torch.Tensor]:
    """Return the state dict of a ``.pth`` file, a checkpoint or state dict, or a model.

    A dict that holds the state dict under ``"model"`` (Detectron2) or ``"state_dict"`` is
    unwrapped, and a ``module.`` prefix on every key is removed.

    Args:
        source: a path to a ``.pth`` file (read with ``weights_only=True``: nothing in it is
            executed), such a file's content already loaded, or an ``nn.Module``.

    Returns:
        ``{key: tensor}`` on CPU, detached; numpy arrays become tensors, other entries are left
        out.

    Raises:
        FileNotFoundError: the path does not exist.
        ValueError: the file holds objects other than tensors and plain containers, or no dict.
    """
    where = "the state dict"
    if isinstance(source, nn.Module):
        source = source.state_dict()
    elif isinstance(source, (str, os.PathLike)):
        path = Path(source)
        where = str(path)
        if not path.is_file():
            raise FileNotFoundError(f"checkpoint not found: {path}")
        try:
            source = torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as exc:
            raise ValueError(
                f"{path} holds objects other than tensors and plain containers; load it yourself "
                "(torch.load(..., weights_only=False) if you trust it) and pass the state dict: "
                f"{exc}"
            ) from exc
    if not isinstance(source, Mapping):
        raise ValueError(f"{where}: expected a dict, got {type(source).__name__}")
    state = next((source[w] for w in _WRAPPERS if isinstance(source.get(w), Mapping)), source)
    strip = len(_PREFIX) if state and all(key.startswith(_PREFIX) for key in state) else 0
    return {
        key[strip:]: torch.as_tensor(value).detach().cpu()
        for key, value in state.items()
        if isinstance(value, (torch.Tensor, np.ndarray))
    }


def find_pwlu_units(state: Mapping[str, _V]) -> dict[str, dict[str, _V]]:
    """The PWLU units of a state dict: the module paths that have every PWLU state entry.

    A module has the entries ``STATE_NAMES`` of :mod:`pwlu_det.layers` (a BatchNorm's
    ``running_mean`` alone does not make a unit).

    Args:
        state: ``{key: value}``, e.g. a state dict; the values may be of any type (shapes).

    Returns:
        ``{module path: {name: value}}``, in state-dict order ("" for a unit at the root).
    """
    found: dict[str, dict[str, _V]] = {}
    for key, value in state.items():
        module, _, name = key.rpartition(".")
        if name in STATE_NAMES:
            found.setdefault(module, {})[name] = value
    return {
        module: {name: entries[name] for name in STATE_NAMES}
        for module, entries in found.items()
        if len(entries) == len(STATE_NAMES)
    }
