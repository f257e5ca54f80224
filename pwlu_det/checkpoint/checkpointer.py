"""A Detectron2 checkpointer whose files are never left half-written, and which refuses
checkpoints that do not fit the model."""

from __future__ import annotations

import os
from typing import Any

import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.checkpoint.c2_model_loading import align_and_update_state_dicts
from detectron2.layers import FrozenBatchNorm2d
from fvcore.common.checkpoint import _strip_prefix_if_present
from torch import nn

from pwlu_det.utils.file_io import atomic_write
from pwlu_det.utils.user_errors import user_errors

from .loading import check_checkpoint_complete, check_checkpoint_fits, check_same_activation
from .state_dict import find_pwlu_units, unreadable_checkpoint

__all__ = ["AtomicDetectionCheckpointer", "check_checkpoint_exists"]


def check_checkpoint_exists(path: str, setting: str = "") -> None:
    """Raise if ``path``, a local checkpoint (not a URL that Detectron2 resolves), is missing.

    Args:
        path: the checkpoint; "" (no checkpoint) passes.
        setting: the config key that gave it, named in the message.

    Raises:
        FileNotFoundError: (a user error) naming ``path``.
    """
    if path and "://" not in path and not os.path.isfile(path):
        given = f" ({setting})" if setting else ""
        with user_errors(FileNotFoundError):
            raise FileNotFoundError(f"checkpoint not found: {path}{given}")


def _unused_counters(model: nn.Module) -> set[str]:
    """State-dict keys of ``FrozenBatchNorm2d.num_batches_tracked``, which nothing reads.

    Detectron2 main's ``convert_frozen_batchnorm`` keeps a BatchNorm's counter as a buffer of the
    frozen layer; v0.6 drops it, so v0.6 checkpoints lack the key.
    """
    return {
        f"{name}.num_batches_tracked"
        for name, module in model.named_modules()
        if isinstance(module, FrozenBatchNorm2d)
        and getattr(module, "num_batches_tracked", None) is not None
    }


class AtomicDetectionCheckpointer(DetectionCheckpointer):
    """DetectionCheckpointer that writes atomically and loads strictly.

    Writing: Detectron2 writes checkpoints and ``last_checkpoint`` in place: a crash during
    ``torch.save`` leaves a truncated ``.pth``, and one while tagging leaves an empty
    ``last_checkpoint`` that ``--resume`` then trips over. Here both are written atomically
    (local folders only; other ``save_dir`` URIs use Detectron2's writer).

    Reading: a file that is not a checkpoint, or a damaged one, raises a ``ValueError`` that
    says so (:func:`pwlu_det.checkpoint.unreadable_checkpoint`), not the unpickler's error.

    Loading: Detectron2 skips tensors whose shape differs from the model's, and loads nothing
    from an unrelated file, with only warnings in the log. With ``strict`` (the default) such a
    checkpoint raises a ``ValueError`` before any weight is loaded; see
    :func:`pwlu_det.checkpoint.check_checkpoint_fits`. PWLU state and heads absent from an
    ImageNet backbone file are fine.

    Args:
        model: the model (a ``DistributedDataParallel`` wrapper is unwrapped).
        save_dir: folder of the checkpoints and ``last_checkpoint``.
        strict: refuse checkpoints that do not fit ``model``; False gives Detectron2's lenient
            loading (e.g. to fine-tune a detector on a dataset with other classes).
        complete: also refuse checkpoints that lack any of the model's parameters or buffers
            (for evaluation and export, where a missing tensor would silently stay random), and
            checkpoints of another activation: PWLU units that the model lacks, or no PWLU
            units for the model's (see :func:`pwlu_det.checkpoint.check_same_activation`).
        save_to_disk, checkpointables: as for ``DetectionCheckpointer``.
    """

    def __init__(
        self,
        model: nn.Module,
        save_dir: str = "",
        *,
        strict: bool = True,
        complete: bool = False,
        save_to_disk: bool | None = None,
        **checkpointables: Any,
    ):
        super().__init__(model, save_dir, save_to_disk=save_to_disk, **checkpointables)
        self.strict = strict
        self.complete = complete
        self._loading = "the checkpoint"

    def load(self, path: str, *args: Any, **kwargs: Any) -> dict[str, Any]:
        """As ``DetectionCheckpointer.load``, with a fresh per-load state even after a refusal.

        A missing local file raises ``FileNotFoundError`` (Detectron2: an ``AssertionError``);
        that and the ``ValueError`` of a checkpoint that cannot be used are user errors
        (:mod:`pwlu_det.utils.user_errors`).

        Detectron2 main keeps the URL being loaded in ``_parsed_url_during_load`` and asserts
        that it is empty at the start of the next ``load()``; a refused (raising) load left it
        set, so the checkpointer could not be used again.
        """
        try:
            # what is wrong with the file (missing, damaged, does not fit) is the user's
            with user_errors(ValueError, FileNotFoundError):
                check_checkpoint_exists(path)
                return super().load(path, *args, **kwargs)
        finally:
            self._loading = "the checkpoint"
            if hasattr(self, "_parsed_url_during_load"):  # Detectron2 main
                self._parsed_url_during_load = None

    def _load_file(self, filename: str) -> dict[str, Any]:
        self._loading = filename
        try:
            return super()._load_file(filename)
        except Exception as error:
            damaged = unreadable_checkpoint(filename, error)
            if damaged is None:
                raise
            raise damaged from error

    def _load_model(self, checkpoint: dict[str, Any]):
        if self.strict:
            self._align_and_check(checkpoint)
        if self.complete:
            keys = dict.fromkeys(checkpoint["model"])
            _strip_prefix_if_present(keys, "module.")  # as fvcore does (done if strict)
            check_same_activation(self.model.state_dict().keys(), keys, source=self._loading)
        incompatible = super()._load_model(checkpoint)
        if self.complete:
            unused = _unused_counters(self.model)
            missing = [k for k in incompatible.missing_keys if k not in unused]
            check_checkpoint_complete(
                missing, source=self._loading, checkpoint_has_pwlu=bool(find_pwlu_units(keys))
            )
        return incompatible

    def _align_and_check(self, checkpoint: dict[str, Any]) -> None:
        """Rename the checkpoint's keys as Detectron2 would, then check that it fits.

        The renaming (``align_and_update_state_dicts`` for files with ``matching_heuristics``,
        then the removal of a ``module.`` prefix) is the one ``DetectionCheckpointer`` and
        fvcore apply when loading; it is done here, once, so that the check sees the keys that
        will be loaded.
        """
        model_state = self.model.state_dict()
        state = checkpoint["model"]
        suffix_matching = bool(checkpoint.get("matching_heuristics", False))
        if suffix_matching:
            self._convert_ndarray_to_tensor(state)
            state = align_and_update_state_dicts(
                model_state, state, c2_conversion=checkpoint.get("__author__") == "Caffe2"
            )
            checkpoint["model"] = state
            checkpoint["matching_heuristics"] = False  # aligned: load by name from here on
        _strip_prefix_if_present(state, "module.")
        check_checkpoint_fits(
            model_state, state, suffix_matching=suffix_matching, source=self._loading
        )

    def _is_local(self) -> bool:
        return "://" not in str(self.save_dir)

    def save(self, name: str, **kwargs: Any) -> None:
        if not self._is_local():
            return super().save(name, **kwargs)
        if not self.save_dir or not self.save_to_disk:
            return
        data = {"model": self.model.state_dict()}
        data.update({key: obj.state_dict() for key, obj in self.checkpointables.items()})
        data.update(kwargs)
        basename = f"{name}.pth"
        path = os.path.join(self.save_dir, basename)
        self.logger.info(f"Saving checkpoint to {path}")
        atomic_write(path, lambda f: torch.save(data, f))
        self.tag_last_checkpoint(basename)

    def tag_last_checkpoint(self, last_filename_basename: str) -> None:
        if not self._is_local():
            return super().tag_last_checkpoint(last_filename_basename)
        atomic_write(
            os.path.join(self.save_dir, "last_checkpoint"),
            lambda f: f.write(last_filename_basename.encode()),
        )
