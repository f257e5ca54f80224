"""Checkpoints are written atomically, and a fresh run never overwrites an earlier one; state
dicts are read from files, checkpoints and models, and their PWLU units found."""

import os
import stat

import numpy as np
import pytest
import torch
from tool_runs import mode_of_plain_open
from torch import nn

from pwlu_det.checkpoint import AtomicDetectionCheckpointer, find_pwlu_units, load_state_dict
from pwlu_det.layers import PWLU, STATE_NAMES
from pwlu_det.utils.file_io import atomic_write


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


def test_failed_atomic_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "results.json"
    atomic_write(target, lambda f: f.write(b"old"))

    def failing_write(f):
        f.write(b"half of the new")
        raise _Crash

    with pytest.raises(_Crash):
        atomic_write(str(target), failing_write)
    assert target.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["results.json"]


@pytest.mark.parametrize("umask", [0o022, 0o027, 0o002])
def test_written_files_get_the_mode_of_a_plain_open(tmp_path, umask):
    expected = mode_of_plain_open(tmp_path, umask)
    previous = os.umask(umask)
    try:
        atomic_write(tmp_path / "results.json", lambda f: f.write(b"{}"))
        AtomicDetectionCheckpointer(nn.Linear(3, 2), str(tmp_path)).save("model_final")
    finally:
        os.umask(previous)
    for name in ("results.json", "model_final.pth", "last_checkpoint"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == expected, (name, oct(expected))


def test_a_rewritten_file_keeps_its_mode(tmp_path):
    target = tmp_path / "last_checkpoint"
    target.write_bytes(b"model_0000004.pth")
    target.chmod(0o604)
    atomic_write(target, lambda f: f.write(b"model_0000009.pth"))
    assert target.read_bytes() == b"model_0000009.pth"
    assert stat.S_IMODE(target.stat().st_mode) == 0o604


def test_find_pwlu_units_needs_every_state_entry():
    model = nn.Sequential(nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4), PWLU(4))
    state = model.state_dict()
    assert "1.running_mean" in state and "1.num_batches_tracked" in state  # BatchNorm: no unit
    units = find_pwlu_units(state)
    assert list(units) == ["2"]
    assert list(units["2"]) == list(STATE_NAMES)
    assert all(value is state[f"2.{name}"] for name, value in units["2"].items())
    shapes = {key: tuple(value.shape) for key, value in state.items()}
    assert find_pwlu_units(shapes)["2"]["heights"] == (4, 17)
    assert list(find_pwlu_units(PWLU().state_dict())) == [""]  # a unit at the root
    del state["2.phase"]
    assert find_pwlu_units(state) == {}


@pytest.mark.parametrize("wrapper", [None, "model", "state_dict"])
def test_load_state_dict_unwraps_and_strips_module_prefix(tmp_path, wrapper):
    model = nn.Sequential(nn.Linear(3, 2), PWLU())
    state = {f"module.{key}": value for key, value in model.state_dict().items()}
    state["module.note"] = "not a tensor"
    saved = {wrapper: state, "iteration": 7} if wrapper else state
    torch.save(saved, tmp_path / "model.pth")

    for source in (tmp_path / "model.pth", str(tmp_path / "model.pth"), saved, model):
        loaded = load_state_dict(source)
        assert list(loaded) == list(model.state_dict())
        assert torch.equal(loaded["0.weight"], model[0].weight)
        assert not loaded["0.weight"].requires_grad
    assert torch.equal(load_state_dict({"a": np.arange(3)})["a"], torch.arange(3))


def test_load_state_dict_errors_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.pth"):
        load_state_dict(tmp_path / "missing.pth")
    torch.save([torch.zeros(1)], tmp_path / "list.pth")
    with pytest.raises(ValueError, match="list.pth: expected a dict, got list"):
        load_state_dict(tmp_path / "list.pth")
    torch.save({"model": nn.Linear(1, 1)}, tmp_path / "pickled.pth")
    with pytest.raises(ValueError, match="pickled.pth holds objects other than tensors"):
        load_state_dict(tmp_path / "pickled.pth")
    for name, content in (("empty.pth", b""), ("noise.pth", b"\x93" * 64)):
        (tmp_path / name).write_bytes(content)
        with pytest.raises(ValueError, match=f"{name} is not a PyTorch checkpoint \\(or is dam"):
            load_state_dict(tmp_path / name)
        with pytest.raises(ValueError, match=f"{name} is not a PyTorch checkpoint \\(or is dam"):
            AtomicDetectionCheckpointer(nn.Linear(1, 1)).load(str(tmp_path / name))
