"""README's activation comparisons (from scratch, and from ReLU-pretrained weights), their sweeps
and the demo figures are the committed measurements, and those still belong to the current
configs (else: re-measure with `make compare` or `make compare-pretrained`)."""

import csv
from pathlib import Path

import pytest

from pwlu_det.config import load_pwlu_config
from pwlu_det.engine.compare import config_sha
from pwlu_det.engine.demo import DEFAULT_DEMO_CONFIG
from pwlu_det.engine.sweep import best_points, opts_of_label

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "shapes" / "results.csv"
#: Each documented comparison: its results.csv, its configs' folder, the make target that
#: re-measures it and its rows' activations (3 seeds each).
COMPARISONS = {
    # Issue 25: the fixed baselines, the learned rivals, the ablation.
    "shapes": (
        RESULTS,
        "Shapes",
        "make compare",
        {"ReLU", "Swish", "PReLU", "ACON-C", "FReLU", "PAU", "PWLU (frozen)", "PWLU"},
    ),
    # Issue 26: from the ReLU-pretrained backbone; two PWLU rows (chosen, old COCO settings).
    "shapes_pretrained": (
        RESULTS.parents[1] / "shapes_pretrained" / "results.csv",
        "ShapesPretrained",
        "make compare-pretrained",
        {"ReLU", "Swish", "PWLU"},
    ),
}


def _rows(path=RESULTS):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.mark.parametrize("comparison", COMPARISONS)
def test_the_measured_rows_belong_to_the_current_configs(comparison):
    results, folder, command, activations = COMPARISONS[comparison]
    rows = _rows(results)
    assert {r["activation"] for r in rows} == activations
    assert all(len([r for r in rows if r["config"] == c]) == 3 for c in {r["config"] for r in rows})
    for row in rows:
        config = ROOT / "configs" / folder / f"{row['config']}.yaml"
        # A row of a sweep's final comparison ran its config with the chosen grid point.
        cfg = load_pwlu_config(str(config), opts_of_label(row.get("overrides") or ""))
        assert int(row["iterations"]) == cfg.SOLVER.MAX_ITER
        assert row["config_sha"] == config_sha(cfg), (
            f"{config.name} changed since {results} was measured: re-measure with "
            f"`{command}` and update README"
        )


@pytest.mark.parametrize("comparison", COMPARISONS)
def test_the_sweep_belongs_to_the_current_configs_and_chose_the_final_points(comparison):
    results, folder, command, activations = COMPARISONS[comparison]
    rows = _rows(results.with_name("sweep.csv"))
    assert {r["activation"] for r in rows} == activations
    for row in rows:
        config = ROOT / "configs" / folder / f"{row['config']}.yaml"
        tuning = ["DATASETS.TEST", "('shapes_tune',)", *opts_of_label(row["point"])]
        assert row["config_sha"] == config_sha(load_pwlu_config(str(config), tuning)), (
            f"{config.name} changed since its sweep was measured: re-measure with "
            f"`{command}` and update README"
        )
    chosen = {r["config"]: r["overrides"] for r in _rows(results)}
    assert chosen == best_points(
        [{**r, "bbox_AP": _ap(r["bbox_AP"]), "segm_AP": None} for r in rows]
    )


def _ap(text: str) -> float:
    return float(text) if text else float("nan")


@pytest.mark.parametrize("report", ["results.md", "sweep.md"])
@pytest.mark.parametrize("comparison", COMPARISONS)
def test_readme_quotes_the_measured_comparison(comparison, report):
    readme = (ROOT / "README.md").read_text()
    path = COMPARISONS[comparison][0].with_name(report)
    blocks = path.read_text().split("\n\n")
    table = next(block for block in blocks if block.startswith("| config"))
    assert table in readme, f"README's table differs from {path}"


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
