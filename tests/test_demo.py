"""``tools/demo.py``'s command line: its own options only, and usage errors as one message."""

import subprocess
import sys
from pathlib import Path

import pytest

DEMO = Path(__file__).resolve().parents[1] / "tools" / "demo.py"


def _demo(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(DEMO), *argv], capture_output=True, text=True, timeout=300
    )


def test_demo_help_shows_the_demo_options_not_train_nets():
    out = _demo("--help")
    assert out.returncode == 0, out.stderr
    assert "usage: tools/demo.py [-h] [KEY VALUE ...]" in out.stdout
    assert "shapes_val" in out.stdout
    for train_net_flag in ("--eval-only", "--num-gpus", "--resume", "--config-file"):
        assert train_net_flag not in out.stdout


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (("--eval-only",), "tools/demo.py: error: unrecognized arguments: --eval-only"),
        (
            ("SOLVER.MAX_ITER",),
            "tools/demo.py: error: config overrides come in KEY VALUE pairs; got 1 word(s): "
            "SOLVER.MAX_ITER",
        ),
    ],
)
def test_demo_usage_errors_exit_2_with_one_message(argv, message):
    out = _demo(*argv)
    assert out.returncode == 2
    assert out.stderr.strip().splitlines()[-1] == message
    assert "Traceback" not in out.stderr + out.stdout
