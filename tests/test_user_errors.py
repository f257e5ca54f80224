"""User errors as a user meets them: each tool runs as a subprocess, from the repository root,
and is refused with a message that says what is wrong, without touching its output folder."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from tool_runs import SHAPES_LAZY, SHAPES_YAML, assert_refused, folder_state, run_tool


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
