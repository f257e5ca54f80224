"""The tools under tools/ run as a user runs them (a subprocess from the repository root), and
what a test checks in their output and output folders."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

from pwlu_det.utils.user_errors import DEBUG_ENV

ROOT = Path(__file__).resolve().parents[1]
SHAPES_YAML = "configs/Shapes/mask_rcnn_R_18_FPN_pwlu.yaml"
SHAPES_SWISH = "configs/Shapes/mask_rcnn_R_18_FPN_swish.yaml"
SHAPES_LAZY = "configs/Shapes/mask_rcnn_R_18_FPN_pwlu.py"
TIMEOUT_S = 600
#: train_net.py overrides for a run of a few seconds on the shapes data: two iterations, a
#: checkpoint (and PWLU curves) after each, no evaluation.
TINY_TRAINING = [
    "SOLVER.MAX_ITER",
    "2",
    "SOLVER.CHECKPOINT_PERIOD",
    "1",
    "MODEL.PWLU.STATISTICS_ITERS",
    "1",
    "DATASETS.TEST",
    "()",
    "DATALOADER.NUM_WORKERS",
    "0",
]


def run_tool(
    tool: str, *args: object, umask: int = -1, env: dict[str, str | None] | None = None
) -> subprocess.CompletedProcess:
    """``tools/<tool> args`` run as a user runs it, stdout and stderr together in ``.stdout``.

    Args:
        tool: the script's file name under tools/.
        args: its command line (``str()`` of each).
        umask: the process umask (-1: the caller's).
        env: environment variables to set (or, with value None, to remove) for it.
    """
    environment = {k: v for k, v in os.environ.items() if k != DEBUG_ENV}
    for key, value in (env or {}).items():
        if value is None:
            environment.pop(key, None)
        else:
            environment[key] = value
    return subprocess.run(
        [sys.executable, str(ROOT / "tools" / tool), *map(str, args)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=TIMEOUT_S,
        umask=umask,
        env=environment,
    )


def last_line(output: str) -> str:
    lines = output.strip().splitlines()
    return lines[-1] if lines else ""


def assert_refused(result: subprocess.CompletedProcess, *words: str, status: int = 1) -> str:
    """The tool refused as a user error: exit ``status``, no traceback, and the output's last
    line is its one-line message ``<tool>: error: ...`` with ``words``; returns that line."""
    line = last_line(result.stdout)
    shown = result.stdout[-3000:]
    assert result.returncode == status, shown
    assert "Traceback" not in result.stdout, shown
    assert ": error: " in line, shown
    for word in words:
        assert word in line, f"{word!r} not in the last line {line!r}:\n{shown}"
    return line


def folder_state(folder: Path) -> dict[str, tuple[str, int, int]]:
    """Every entry under ``folder`` (itself included): content hash, mtime (ns) and mode."""
    state = {}
    for path in [folder, *sorted(folder.rglob("*"))]:
        st = path.stat()
        digest = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else "dir"
        state[str(path.relative_to(folder))] = (digest, st.st_mtime_ns, st.st_mode)
    return state


def mode_of_plain_open(folder: Path, umask: int) -> int:
    """Permission bits of a file that ``open(..., "w")`` creates in ``folder`` under ``umask``."""
    probe = folder / ".mode_probe"
    previous = os.umask(umask)
    try:
        with open(probe, "w"):
            pass
    finally:
        os.umask(previous)
    mode = probe.stat().st_mode & 0o7777
    probe.unlink()
    return mode
