"""README's "From ReLU-pretrained weights" quotes the committed study runs
(benchmarks/results/shapes_pretrained/study), and those runs belong to the current proxy configs
(else: re-measure with the commands in that section)."""

import csv
from pathlib import Path

from pwlu_det.config import load_pwlu_config
from pwlu_det.engine.compare import config_sha
from pwlu_det.engine.sweep import opts_of_label

ROOT = Path(__file__).resolve().parents[1]
STUDY = ROOT / "benchmarks" / "results" / "shapes_pretrained" / "study"
PROXY = ROOT / "configs" / "ShapesPretrained"
#: The one-at-a-time PWLU settings (grid point) -> the label of README's row.
SETTINGS = {
    "MODEL.PWLU.INIT_SHAPE=swish": '`INIT_SHAPE: "swish"`',
    "MODEL.ACTIVATION.LEARN_IN_FROZEN_STAGES=True": "`LEARN_IN_FROZEN_STAGES: True`",
    "MODEL.PWLU.LR_FACTOR=100.0": "`LR_FACTOR: 100`",
    "MODEL.ACTIVATION.SCOPE=backbone": '`SCOPE: "backbone"`',
    "MODEL.PWLU.STATISTICS_ITERS=164": "`STATISTICS_ITERS: 164`",
    "MODEL.PWLU.REALIGN_MODE=function_preserving": '`REALIGN_MODE: "function_preserving"`',
}
GRID = ("0.0025", "0.005", "0.01", "0.02")


def _study_rows() -> list[dict]:
    rows = []
    for path in sorted(STUDY.glob("*/sweep.csv")):
        with open(path, newline="") as f:
            rows += list(csv.DictReader(f))
    return rows


def _section() -> str:
    readme = (ROOT / "README.md").read_text()
    start = readme.index("## From ReLU-pretrained weights")
    return readme[start : readme.index("\n## ", start + 1)]


def _readme_row(section: str, label: str) -> str:
    """The one table row of ``section`` whose first cell starts with ``label``."""
    (line,) = [line for line in section.splitlines() if line.startswith(f"| {label} ")]
    return line


def test_the_study_runs_belong_to_the_current_proxy_configs():
    rows = _study_rows()
    assert len(rows) == 3 * len(GRID) + len(SETTINGS)
    for row in rows:
        config = PROXY / f"{row['config']}.yaml"
        tuning = ["DATASETS.TEST", "('shapes_tune',)", *opts_of_label(row["point"])]
        assert row["config_sha"] == config_sha(load_pwlu_config(str(config), tuning)), (
            f"{config.name} changed since the study ran {row['point']}: re-measure"
        )


def test_readme_quotes_the_base_lr_grid():
    section = _section()
    by_point = {(r["config"], r["point"]): r for r in _study_rows()}
    for name in ("relu", "swish", "pwlu_old_coco"):
        cells = []
        for lr in GRID:
            row = by_point[(f"mask_rcnn_R_18_FPN_{name}", f"SOLVER.BASE_LR={lr}")]
            cells.append(float(row["bbox_AP"]) if row["bbox_AP"] else None)
        best = max(c for c in cells if c is not None)
        texts = [
            "diverged" if c is None else (f"**{c:.2f}**" if c == best else f"{c:.2f}")
            for c in cells
        ]
        assert _readme_row(section, f"`{name}`") == f"| `{name}` | " + " | ".join(texts) + " |"


def test_readme_quotes_the_pwlu_settings():
    section = _section()
    old = {
        r["point"]: r for r in _study_rows() if r["config"] == "mask_rcnn_R_18_FPN_pwlu_old_coco"
    }
    baseline = old["SOLVER.BASE_LR=0.005"]
    rows = {"old COCO settings": baseline}
    for point, label in SETTINGS.items():
        rows[label] = old[f"SOLVER.BASE_LR=0.005 {point}"]
    for label, row in rows.items():
        line = _readme_row(section, label)
        box, mask = float(row["bbox_AP"]), float(row["segm_AP"])
        assert f"{box:.2f}" in line and f"| {mask:.2f} |" in line, (label, line)
