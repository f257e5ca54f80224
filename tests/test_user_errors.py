"""User errors as a user meets them: each tool runs as a subprocess, from the repository root,
and is refused with one line that says what is wrong (exit status 2 for the command line and
the config, 1 otherwise, no traceback), before it builds a model or writes anything."""

from __future__ import annotations

import os
import random
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from tool_runs import (
    ROOT,
    SHAPES_LAZY,
    SHAPES_SWISH,
    SHAPES_YAML,
    TIMEOUT_S,
    TINY_TRAINING,
    assert_refused,
    folder_state,
    last_line,
    run_tool,
)

from pwlu_det.utils.user_errors import USAGE, exit_on_user_error, user_errors

SHAPES_YAML_PATH = str(ROOT / SHAPES_YAML)


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


# --- a checkpoint of another activation ------------------------------------------------------


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> dict[str, Path]:
    """Untrained checkpoints of the Shapes Mask R-CNN with PWLU and with Swish, by activation."""
    from detectron2.modeling import build_model

    from pwlu_det.config import load_pwlu_config

    folder = tmp_path_factory.mktemp("checkpoints")
    paths = {}
    for activation in ("PWLU", "Swish"):
        cfg = load_pwlu_config(SHAPES_YAML_PATH, ["MODEL.ACTIVATION.NAME", activation])
        paths[activation] = folder / f"{activation.lower()}.pth"
        torch.save({"model": build_model(cfg).state_dict(), "iteration": 9}, paths[activation])
    return paths


#: (config, checkpoint's activation, what the last line says)
OTHER_ACTIVATION = [
    (SHAPES_SWISH, "PWLU", ["is a PWLU checkpoint", "use a PWLU config"]),
    (SHAPES_YAML, "Swish", ["has no PWLU units"]),
]


@pytest.mark.parametrize("config, activation, words", OTHER_ACTIVATION)
def test_eval_only_refuses_a_checkpoint_of_another_activation(
    checkpoints, tmp_path, config, activation, words
):
    weights = checkpoints[activation]
    result = run_tool(
        "train_net.py",
        "--config-file",
        config,
        "--eval-only",
        "MODEL.WEIGHTS",
        weights,
        "OUTPUT_DIR",
        tmp_path / "eval",
    )
    assert_refused(result, str(weights), *words)
    assert not (tmp_path / "eval").exists()  # refused before anything was written


def test_lazy_eval_only_refuses_a_checkpoint_without_pwlu_units(checkpoints, tmp_path):
    weights = checkpoints["Swish"]
    result = run_tool(
        "lazyconfig_train_net.py",
        "--config-file",
        SHAPES_LAZY,
        "--eval-only",
        f"train.init_checkpoint={weights}",
        f"train.output_dir={tmp_path / 'eval'}",
    )
    assert_refused(result, str(weights), "has no PWLU units")
    assert not (tmp_path / "eval").exists()


@pytest.mark.parametrize("config, activation, words", OTHER_ACTIVATION)
def test_export_refuses_a_checkpoint_of_another_activation(
    checkpoints, tmp_path, config, activation, words
):
    weights = checkpoints[activation]
    output = tmp_path / "export"
    result = run_tool(
        "export_model.py", "--config-file", config, "--output", output, "MODEL.WEIGHTS", weights
    )
    assert_refused(result, str(weights), *words)
    assert not output.exists()


def test_plot_refuses_a_checkpoint_without_pwlu_units(checkpoints, tmp_path):
    weights = checkpoints["Swish"]
    output = tmp_path / "curves.png"
    result = run_tool("plot_activations.py", "--checkpoint", weights, "--output", output)
    assert_refused(result, str(weights), "has no PWLU units")
    assert not output.exists()


# --- a file that is not a checkpoint ---------------------------------------------------------


@pytest.fixture(scope="module")
def not_checkpoints(tmp_path_factory, checkpoints) -> dict[str, Path]:
    """Random bytes named as a checkpoint (.pth, .pkl), and a checkpoint cut short."""
    folder = tmp_path_factory.mktemp("not_checkpoints")
    noise = random.Random(0).randbytes(4096)
    paths = {"random.pth": noise, "random.pkl": noise}
    paths["truncated.pth"] = checkpoints["PWLU"].read_bytes()[: 1 << 20]
    for name, content in paths.items():
        (folder / name).write_bytes(content)
    return {name: folder / name for name in paths}


#: tool, its arguments ({weights}: the checkpoint, {out}: a new folder)
LOADING_TOOLS = {
    "eval-only": ["train_net.py", "--config-file", SHAPES_YAML, "--eval-only"]
    + ["MODEL.WEIGHTS", "{weights}", "OUTPUT_DIR", "{out}"],
    "training": ["train_net.py", "--config-file", SHAPES_YAML, "MODEL.WEIGHTS", "{weights}"]
    + ["OUTPUT_DIR", "{out}", *TINY_TRAINING],
    "lazy eval-only": ["lazyconfig_train_net.py", "--config-file", SHAPES_LAZY, "--eval-only"]
    + ["train.init_checkpoint={weights}", "train.output_dir={out}"],
    "export": ["export_model.py", "--config-file", SHAPES_YAML, "--output", "{out}"]
    + ["MODEL.WEIGHTS", "{weights}"],
    "plot": ["plot_activations.py", "--checkpoint", "{weights}", "--output", "{out}/curves.png"],
    "convert": ["convert_torchvision_to_d2.py", "{weights}", "{out}/R-50.pkl"],
}


@pytest.mark.parametrize(
    "tool, name",
    [
        *((tool, "random.pth") for tool in LOADING_TOOLS),
        ("training", "random.pkl"),
        ("eval-only", "truncated.pth"),
    ],
)
def test_a_file_that_is_not_a_checkpoint_is_named_as_such(not_checkpoints, tmp_path, tool, name):
    weights = not_checkpoints[name]
    args = [arg.format(weights=weights, out=tmp_path / "out") for arg in LOADING_TOOLS[tool]]
    result = run_tool(*args)
    assert_refused(result, f"{weights} is not a PyTorch checkpoint (or is damaged): ")


# --- start-up noise ----------------------------------------------------------------------------

JIT_SCRIPT_WARNING = "`torch.jit.script` is deprecated"


@pytest.mark.parametrize(
    "tool",
    [
        "train_net.py",
        "lazyconfig_train_net.py",
        "export_model.py",
        "plot_activations.py",
        "convert_torchvision_to_d2.py",
        "compare_activations.py",
        "benchmark_export.py",
        "demo.py",
    ],
)
def test_tools_start_without_the_import_time_jit_script_warnings(tool):
    result = run_tool(tool, "--help")
    assert result.returncode == 0, result.stdout[-3000:]
    assert "Warning" not in result.stdout, result.stdout[:3000]


def test_a_jit_script_call_of_ones_own_still_warns(tmp_path):
    script = tmp_path / "script_one.py"
    script.write_text(
        "import torch\n\nimport pwlu_det  # noqa: F401\n\n\n"
        "def add_one(x: torch.Tensor) -> torch.Tensor:\n    return x + 1\n\n\n"
        "torch.jit.script(add_one)\n"
    )
    result = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=TIMEOUT_S
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stderr.count(JIT_SCRIPT_WARNING) == 1, result.stderr


# --- one line for user errors, before any work ----------------------------------------------


def _train_net(output: Path, *opts: object, config: str = SHAPES_YAML, eval_only: bool = False):
    flags = ["--eval-only"] if eval_only else []
    return ["train_net.py", "--config-file", config, *flags, "OUTPUT_DIR", output, *opts]


#: (arguments with {out}: a new folder, exit status, words of the last line)
USER_ERRORS = {
    "config file missing": (
        ["train_net.py", "--config-file", "configs/nope.yaml", "OUTPUT_DIR", "{out}"],
        2,
        ["configs/nope.yaml", "does not exist"],
    ),
    "unknown key": (_train_net("{out}", "MODEL.NOPE", "1"), 2, ["Non-existent key: MODEL.NOPE"]),
    "bad value": (_train_net("{out}", "SOLVER.MAX_ITER", "ten"), 2, ["SOLVER.MAX_ITER"]),
    "invalid PWLU value": (
        _train_net("{out}", "MODEL.PWLU.NUM_INTERVALS", "0"),
        2,
        ["MODEL.PWLU.NUM_INTERVALS = 0 is invalid"],
    ),
    "unknown dataset": (
        _train_net("{out}", "DATASETS.TRAIN", "('shapes_trian',)"),
        2,
        ["dataset 'shapes_trian' is not registered", "shapes_train"],
    ),
    "checkpoint missing": (
        _train_net("{out}", "MODEL.WEIGHTS", "{out}.pth", eval_only=True),
        1,
        ["checkpoint not found: {out}.pth (MODEL.WEIGHTS)"],
    ),
    "lazy config missing": (
        ["lazyconfig_train_net.py", "--config-file", "configs/nope.py"],
        2,
        ["config file not found: configs/nope.py"],
    ),
    "lazy override": (
        ["lazyconfig_train_net.py", "--config-file", SHAPES_LAZY, "train.max_iter"],
        2,
        ["Error parsing override 'train.max_iter'"],
    ),
    "comparison grid value": (
        ["compare_activations.py", "--grid", "MODEL.PWLU.LR_FACTOR=100", "--sweep-only"]
        + ["--config-file", SHAPES_YAML, "--work-dir", "{out}"],
        2,
        ["(10.0 vs. 100)", "MODEL.PWLU.LR_FACTOR"],
    ),
    "comparison grid axis": (
        ["compare_activations.py", "--grid", "SOLVER.BASE_LR", "--work-dir", "{out}"],
        2,
        ["SOLVER.BASE_LR"],
    ),
    "sweep without grid": (
        ["compare_activations.py", "--sweep-only", "--work-dir", "{out}"],
        2,
        ["--sweep-only needs --grid"],
    ),
    "export request": (
        ["export_model.py", "--config-file", SHAPES_YAML, "--output", "{out}"]
        + ["--format", "onnx", "--export-method", "scripting", "MODEL.WEIGHTS", "{out}.pth"],
        2,
        ["ONNX export works by tracing"],
    ),
    "export without weights": (
        ["export_model.py", "--config-file", SHAPES_YAML, "--output", "{out}"],
        2,
        ["set MODEL.WEIGHTS"],
    ),
    "export checkpoint missing": (
        ["export_model.py", "--config-file", SHAPES_YAML, "--output", "{out}"]
        + ["MODEL.WEIGHTS", "{out}.pth"],
        1,
        ["checkpoint not found: {out}.pth"],
    ),
}


@pytest.mark.parametrize("case", USER_ERRORS)
def test_a_user_error_is_one_line_before_any_work(tmp_path, case):
    args, status, words = USER_ERRORS[case]
    out = tmp_path / "out"
    result = run_tool(*(str(arg).format(out=out) for arg in args))
    assert_refused(result, *(word.format(out=out) for word in words), status=status)
    assert len(result.stdout.strip().splitlines()) <= 2, result.stdout[-3000:]  # + the args
    assert not out.exists()


def test_missing_coco_files_are_reported_before_the_shapes_data_is_generated(tmp_path):
    # The shapes config trained on COCO still tests on shapes_val: that split was generated
    # (19 MB) into an empty DETECTRON2_DATASETS before the missing COCO files were reported.
    datasets = tmp_path / "datasets"
    datasets.mkdir()
    out = tmp_path / "out"
    result = run_tool(
        *_train_net(out, "DATASETS.TRAIN", "('coco_2017_train',)"),
        env={"DETECTRON2_DATASETS": str(datasets)},
    )
    assert_refused(result, "dataset 'coco_2017_train': missing", "Download COCO 2017")
    assert list(datasets.iterdir()) == []
    assert not out.exists()


def test_debug_shows_the_traceback_of_a_user_error():
    args = ["--config-file", SHAPES_YAML, "MODEL.NOPE", "1"]
    assert_refused(run_tool("train_net.py", *args), "MODEL.NOPE", status=2)
    for result in (
        run_tool("train_net.py", "--debug", *args),
        run_tool("train_net.py", *args, env={"PWLU_DET_DEBUG": "1"}),
    ):
        assert result.returncode == 1, result.stdout[-3000:]
        assert "Traceback" in result.stdout
        assert last_line(result.stdout) == "AssertionError: Non-existent key: MODEL.NOPE"


def test_only_marked_errors_are_user_errors(capsys):
    def bug():
        raise ValueError("a bug")

    with pytest.raises(ValueError, match="a bug"):  # not marked: the traceback stays
        exit_on_user_error(bug)

    def refused():
        with user_errors(FileNotFoundError, status=USAGE):
            raise FileNotFoundError("no such thing:\n  here")

    with pytest.raises(SystemExit) as exit_status:
        exit_on_user_error(refused, prog="tool")
    assert exit_status.value.code == USAGE
    assert capsys.readouterr().err == "tool: error: no such thing: here\n"
    with pytest.raises(FileNotFoundError):
        exit_on_user_error(refused, debug=True)
