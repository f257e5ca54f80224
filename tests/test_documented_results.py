"""README's activation comparison and demo figures are the committed measurement, and that
measurement still belongs to the current configs (else: re-measure with `make compare`)."""

import csv
from pathlib import Path

import pytest

from pwlu_det.config import load_pwlu_config
from pwlu_det.engine.compare import config_sha
from pwlu_det.engine.demo import DEFAULT_DEMO_CONFIG
from pwlu_det.engine.sweep import opts_of_label

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "shapes" / "results.csv"


def _rows():
    with open(RESULTS, newline="") as f:
        return list(csv.DictReader(f))


def test_the_measured_rows_belong_to_the_current_configs():
    rows = _rows()
    assert {r["activation"] for r in rows} == {"PWLU", "Swish", "ReLU"}
    assert len({r["seed"] for r in rows}) >= 3
    for row in rows:
        config = ROOT / "configs" / "Shapes" / f"{row['config']}.yaml"
        # A row of a sweep's final comparison ran its config with the chosen grid point.
        cfg = load_pwlu_config(str(config), opts_of_label(row.get("overrides") or ""))
        assert int(row["iterations"]) == cfg.SOLVER.MAX_ITER
        assert row["config_sha"] == config_sha(cfg), (
            f"{config.name} changed since {RESULTS.name} was measured: "
            "re-measure with `make compare` and update README"
        )


def test_readme_quotes_the_measured_comparison():
    readme = (ROOT / "README.md").read_text()
    summary = RESULTS.with_suffix(".md").read_text().split("\n\n")
    table = next(block for block in summary if block.startswith("| config"))
    assert table in readme, "README's comparison table differs from results.md"


@pytest.mark.parametrize("task, name", [("bbox", "box"), ("segm", "mask")])
def test_readme_quotes_the_demo_run(task, name):
    readme = (ROOT / "README.md").read_text()
    seed = load_pwlu_config(str(ROOT / "configs" / DEFAULT_DEMO_CONFIG)).SEED
    (row,) = [
        r
        for r in _rows()
        if r["config"] == Path(DEFAULT_DEMO_CONFIG).stem and int(r["seed"]) == seed
    ]
    assert f"{name} AP {float(row[f'{task}_AP']):.2f}" in readme
