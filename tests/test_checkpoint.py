"""Checkpoints are written atomically, and a fresh run never overwrites an earlier one."""

import os

import pytest
import torch
from torch import nn

from pwlu_det.engine.checkpoint import AtomicDetectionCheckpointer


class _Crash(Exception):
    pass


def test_crash_mid_write_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    model = nn.Linear(3, 2)
    checkpointer = AtomicDetectionCheckpointer(model, str(tmp_path))
    checkpointer.save("model_0000009", iteration=9)
    assert (tmp_path / "last_checkpoint").read_text() == "model_0000009.pth"

    real_save = torch.save

    def crashing_save(obj, f, *args, **kwargs):
        f.write(b"half a checkpoint")  # the crash happens after some bytes hit the disk
        raise _Crash

    monkeypatch.setattr(torch, "save", crashing_save)
    with pytest.raises(_Crash):
        checkpointer.save("model_0000019", iteration=19)
    monkeypatch.setattr(torch, "save", real_save)

    assert not (tmp_path / "model_0000019.pth").exists()
    assert (tmp_path / "last_checkpoint").read_text() == "model_0000009.pth"
    assert [n for n in os.listdir(tmp_path) if n.endswith(".tmp")] == []
    loaded = AtomicDetectionCheckpointer(nn.Linear(3, 2), str(tmp_path)).resume_or_load("")
    assert loaded["iteration"] == 9


def test_checkpoint_round_trip(tmp_path):
    model = nn.Linear(3, 2)
    AtomicDetectionCheckpointer(model, str(tmp_path)).save("model_final", iteration=4)
    restored = nn.Linear(3, 2)
    AtomicDetectionCheckpointer(restored, str(tmp_path)).resume_or_load("", resume=True)
    assert torch.equal(restored.weight, model.weight)
