"""User errors as a user meets them: each tool runs as a subprocess, from the repository root,
and is refused with a message that says what is wrong, without touching its output folder."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SHAPES_YAML = "configs/Shapes/mask_rcnn_R_18_FPN_pwlu.yaml"
SHAPES_LAZY = "configs/Shapes/mask_rcnn_R_18_FPN_pwlu.py"
TIMEOUT_S = 600


def run_tool(tool: str, *args: object) -> subprocess.CompletedProcess:
    """``tools/<tool> args`` run as a user runs it, stdout and stderr together in ``.stdout``."""
    return subprocess.run(
        [sys.executable, str(ROOT / "tools" / tool), *map(str, args)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=TIMEOUT_S,
    )


def last_line(output: str) -> str:
    lines = output.strip().splitlines()
    return lines[-1] if lines else ""


def assert_refused(result: subprocess.CompletedProcess, *words: str) -> str:
    """The tool failed, and the last line of its output says so with ``words``; returns it."""
    line = last_line(result.stdout)
    assert result.returncode != 0, result.stdout[-3000:]
    for word in words:
        assert word in line, f"{word!r} not in the last line {line!r}:\n{result.stdout[-3000:]}"
    return line


def folder_state(folder: Path) -> dict[str, tuple[str, int, int]]:
    """Every entry under ``folder`` (itself included): content hash, mtime (ns) and mode."""
    state = {}
    for path in [folder, *sorted(folder.rglob("*"))]:
        stat = path.stat()
        digest = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else "dir"
        state[str(path.relative_to(folder))] = (digest, stat.st_mtime_ns, stat.st_mode)
    return state


@pytest.fixture
def finished_run(tmp_path: Path) -> Path:
    """A folder as a finished training run leaves it."""
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text("# the finished run's config\n")
    (run / "log.txt").write_text("the finished run's log\n")
    (run / "metrics.json").write_text('{"iteration": 9}\n')
    torch.save({"model": {}, "iteration": 9}, run / "model_final.pth")
    (run / "last_checkpoint").write_text("model_final.pth")
    (run / "final_results.json").write_text('{"iterations": 10, "results": {}}')
    past = 1_000_000_000_000_000_000  # 2001: a rewrite within the test's second shows too
    for path in [*run.iterdir(), run]:
        os.utime(path, ns=(past, past))
    return run


# --- a fresh run into a finished run's folder -------------------------------------------------


@pytest.mark.parametrize(
    "tool, config, output",
    [
        ("train_net.py", SHAPES_YAML, ["OUTPUT_DIR", "{}"]),
        ("lazyconfig_train_net.py", SHAPES_LAZY, ["train.output_dir={}"]),
    ],
)
def test_fresh_run_into_a_finished_run_is_refused_before_anything_is_written(
    finished_run, tool, config, output
):
    before = folder_state(finished_run)
    result = run_tool(tool, "--config-file", config, *(opt.format(finished_run) for opt in output))
    assert_refused(
        result, str(finished_run), "already holds a training run", "--resume", "Nothing was"
    )
    assert folder_state(finished_run) == before
