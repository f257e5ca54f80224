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

__all__ = ["find_pwlu_units", "load_state_dict", "unreadable_checkpoint"]

_V = TypeVar("_V")
_WRAPPERS = ("model", "state_dict")  # Detectron2 and torchvision checkpoints; other trainers
_PREFIX = "module."  # saved from DataParallel / DistributedDataParallel
# torch.load(weights_only=True) refusing an object (a file that is readable, but not only tensors)
_REFUSED_OBJECT = "Unsupported global"
# torch.load(weights_only=True) wraps the unpickler's own error between these
_WEIGHTS_ONLY_ERROR = ("WeightsUnpickler error:", "Check the documentation of torch.load")


def unreadable_checkpoint(path: str | os.PathLike, error: Exception) -> ValueError | None:
    """The error to raise when reading the checkpoint file ``path`` raised ``error``.

    A file of random bytes, an empty or truncated file, or one that is no pickle at all makes
    ``torch.load`` and ``pickle.load`` raise whatever the unpickler trips over
    (``UnpicklingError``, ``IndexError``, ``EOFError``, a zip-reader ``RuntimeError``, ...).

    Args:
        path: the file.
        error: what reading it raised.

    Returns:
        ``ValueError("<path> is not a PyTorch checkpoint (or is damaged): <the error>")``, or
        None when ``error`` is about the file itself (``OSError``: missing, a folder, no
        permission) or about objects that ``torch.load(..., weights_only=True)`` refuses to
        create (the file was read: it is not damaged).
    """
    if isinstance(error, OSError) or _REFUSED_OBJECT in str(error):
        return None
    detail = str(error)
    start, end = _WEIGHTS_ONLY_ERROR
    if start in detail:
        detail = detail.split(start, 1)[1].split(end, 1)[0]
    detail = " ".join(detail.split())
    what = f"{type(error).__name__}: {detail}" if detail else type(error).__name__
    return ValueError(f"{os.fspath(path)} is not a PyTorch checkpoint (or is damaged): {what}")


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
        ValueError: the file is not a PyTorch checkpoint or is damaged (e.g. truncated), holds
            objects other than tensors and plain containers, or holds no dict.
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
        except Exception as exc:
            damaged = unreadable_checkpoint(path, exc)
            if damaged is not None:
                raise damaged from exc
            if not isinstance(exc, pickle.UnpicklingError):
                raise
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
