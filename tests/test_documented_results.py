"""README's activation comparison, its sweep and the demo figures are the committed measurement,
and that measurement still belongs to the current configs (else: re-measure with `make
compare`)."""

import csv
from pathlib import Path

import pytest

from pwlu_det.config import load_pwlu_config
from pwlu_det.engine.compare import config_sha
from pwlu_det.engine.demo import DEFAULT_DEMO_CONFIG
from pwlu_det.engine.sweep import best_points, opts_of_label

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "shapes" / "results.csv"
SWEEP = RESULTS.with_name("sweep.csv")
#: The rows of the comparison (issue 25): the fixed baselines, the learned rivals, the ablation.
ACTIVATIONS = {"ReLU", "Swish", "PReLU", "ACON-C", "FReLU", "PAU", "PWLU (frozen)", "PWLU"}


def _rows(path=RESULTS):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_the_measured_rows_belong_to_the_current_configs():
    rows = _rows()
    assert {r["activation"] for r in rows} == ACTIVATIONS
    assert all(len([r for r in rows if r["activation"] == a]) == 3 for a in ACTIVATIONS)
    for row in rows:
        config = ROOT / "configs" / "Shapes" / f"{row['config']}.yaml"
        # A row of a sweep's final comparison ran its config with the chosen grid point.
        cfg = load_pwlu_config(str(config), opts_of_label(row.get("overrides") or ""))
        assert int(row["iterations"]) == cfg.SOLVER.MAX_ITER
        assert row["config_sha"] == config_sha(cfg), (
            f"{config.name} changed since {RESULTS.name} was measured: "
            "re-measure with `make compare` and update README"
        )


def test_the_sweep_belongs_to_the_current_configs_and_chose_the_final_points():
    rows = _rows(SWEEP)
    assert {r["activation"] for r in rows} == ACTIVATIONS
    for row in rows:
        config = ROOT / "configs" / "Shapes" / f"{row['config']}.yaml"
        tuning = ["DATASETS.TEST", "('shapes_tune',)", *opts_of_label(row["point"])]
        assert row["config_sha"] == config_sha(load_pwlu_config(str(config), tuning)), (
            f"{config.name} changed since {SWEEP.name} was measured: re-measure with "
            "`make compare` and update README"
        )
    chosen = {r["config"]: r["overrides"] for r in _rows()}
    assert chosen == best_points(
        [{**r, "bbox_AP": _ap(r["bbox_AP"]), "segm_AP": None} for r in rows]
    )


def _ap(text: str) -> float:
    return float(text) if text else float("nan")


@pytest.mark.parametrize("report", ["results.md", "sweep.md"])
def test_readme_quotes_the_measured_comparison(report):
    readme = (ROOT / "README.md").read_text()
    blocks = RESULTS.with_name(report).read_text().split("\n\n")
    table = next(block for block in blocks if block.startswith("| config"))
    assert table in readme, f"README's table differs from {report}"


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
