"""The equal-tuning sweep of tools/compare_activations.py: grid parsing, the held-out test set
refusal, tie seeds, the choice of the best point, the reports, and a tiny end-to-end sweep."""

import csv
import math
from pathlib import Path

import pytest
from test_compare_activations import (  # noqa: F401  (subprocess_datasets: a fixture)
    PWLU_CONFIG,
    RELU_CONFIG,
    TINY_OPTS,
    subprocess_datasets,
)
from tool_runs import run_tool

from pwlu_det.engine import sweep
from pwlu_det.engine.compare import CSV_COLUMNS
from pwlu_det.engine.sweep import (
    GridPoint,
    best_points,
    check_tuning_test_sets,
    opts_of_label,
    parse_grid,
    run_best_points,
    run_sweep,
    write_sweep_reports,
)

TUNE = ["DATASETS.TEST", "('shapes_tune',)"]


def test_parse_grid_is_the_cartesian_product_of_its_axes():
    points = parse_grid(["SOLVER.BASE_LR=0.02,0.04", "MODEL.PWLU.LR_FACTOR=1,10"])
    assert [p.label for p in points] == [
        "SOLVER.BASE_LR=0.02 MODEL.PWLU.LR_FACTOR=1",
        "SOLVER.BASE_LR=0.02 MODEL.PWLU.LR_FACTOR=10",
        "SOLVER.BASE_LR=0.04 MODEL.PWLU.LR_FACTOR=1",
        "SOLVER.BASE_LR=0.04 MODEL.PWLU.LR_FACTOR=10",
    ]
    assert points[1].opts == ["SOLVER.BASE_LR", "0.02", "MODEL.PWLU.LR_FACTOR", "10"]
    assert opts_of_label(points[1].label) == points[1].opts
    assert points[1].folder == "SOLVER.BASE_LR=0.02__MODEL.PWLU.LR_FACTOR=10"
    for bad, message in [
        (["SOLVER.BASE_LR"], "expected KEY=V1,V2"),
        (["SOLVER.BASE_LR="], "expected KEY=V1,V2"),
        (["A=1", "A=2"], "given twice"),
        (["A=1,1"], "repeats a value"),
        (["A=1 2"], "whitespace"),
        ([], "at least one axis"),
    ]:
        with pytest.raises(ValueError, match=message):
            parse_grid(bad)


def test_a_sweep_refuses_the_held_out_test_set():
    points = parse_grid(["SOLVER.BASE_LR=0.02,0.04"])
    with pytest.raises(ValueError, match="would be evaluated on shapes_val.*shapes_tune"):
        check_tuning_test_sets([RELU_CONFIG], points, [])  # the config's own test set
    check_tuning_test_sets([RELU_CONFIG, PWLU_CONFIG], points, TUNE)
    sneaky = [GridPoint((("DATASETS.TEST", "('shapes_val',)"),))]
    with pytest.raises(ValueError, match="held out"):
        check_tuning_test_sets([RELU_CONFIG], sneaky, TUNE)
    with pytest.raises(ValueError, match="held out"):
        run_sweep([RELU_CONFIG], points, [0], "unused", [])


def _fake_runs(monkeypatch, box_ap):
    """compare_activations replaced by a table: box_ap[(config stem, LR, seed)]."""
    calls = []

    def fake(configs, seeds, work_dir, opts, progress=print, **_):
        lr = opts[opts.index("SOLVER.BASE_LR") + 1]
        calls.append((tuple(Path(c).stem for c in configs), lr, tuple(seeds), work_dir))
        return [
            {
                **dict.fromkeys(CSV_COLUMNS),
                "config": Path(c).stem,
                "activation": Path(c).stem.rsplit("_", 1)[1],
                "seed": s,
                "bbox_AP": box_ap[(Path(c).stem, lr, s)],
                "segm_AP": box_ap[(Path(c).stem, lr, s)] + 1,
                "minutes": 1.0,
                "output_dir": f"{work_dir}/{Path(c).stem}/seed{s}",
            }
            for s in seeds
            for c in configs
        ]

    monkeypatch.setattr(sweep, "compare_activations", fake)
    return calls


def test_tie_seeds_go_to_the_two_best_points_of_close_configs_only(monkeypatch, tmp_path):
    pwlu, relu = "mask_rcnn_R_18_FPN_pwlu", "mask_rcnn_R_18_FPN_relu"
    box_ap = {
        # PWLU: 0.04 and 0.08 within 2 AP at seed 0; seed 1 makes 0.08 the best on average.
        (pwlu, "0.02", 0): 20.0, (pwlu, "0.04", 0): 30.0, (pwlu, "0.08", 0): 29.0,
        (pwlu, "0.04", 1): 27.0, (pwlu, "0.08", 1): 30.0,
        # ReLU: a clear winner (NaN AP, nothing detected, ranks last).
        (relu, "0.02", 0): math.nan, (relu, "0.04", 0): 15.0, (relu, "0.08", 0): 10.0,
    }  # fmt: skip
    calls = _fake_runs(monkeypatch, box_ap)
    points = parse_grid(["SOLVER.BASE_LR=0.02,0.04,0.08"])
    rows = run_sweep(
        [PWLU_CONFIG, RELU_CONFIG], points, [0], str(tmp_path), TUNE, tie_seeds=[1],
        progress=lambda _: None,
    )  # fmt: skip
    ties = [c for c in calls if c[2] == (1,)]
    assert sorted(c[:2] for c in ties) == [((pwlu,), "0.04"), ((pwlu,), "0.08")]
    assert calls[0][3] == str(tmp_path / "sweep" / "SOLVER.BASE_LR=0.02")
    assert len(rows) == 6 + 2
    assert best_points(rows) == {pwlu: "SOLVER.BASE_LR=0.08", relu: "SOLVER.BASE_LR=0.04"}

    calls.clear()
    box_ap.update({(pwlu, "0.08", s): 31.0 for s in (0, 1, 2)})
    box_ap.update({(relu, "0.04", s): 16.0 for s in (0, 1, 2)})
    final = run_best_points(
        [PWLU_CONFIG, RELU_CONFIG], points, rows, [0, 1, 2], str(tmp_path), [],
        progress=lambda _: None,
    )  # fmt: skip
    assert [c[:3] for c in calls] == [((pwlu,), "0.08", (0, 1, 2)), ((relu,), "0.04", (0, 1, 2))]
    assert calls[0][3] == str(tmp_path)  # the final runs go where a plain comparison's go
    assert {r["overrides"] for r in final} == {"SOLVER.BASE_LR=0.08", "SOLVER.BASE_LR=0.04"}

    paths = write_sweep_reports(rows, str(tmp_path / "reports"), "the command")
    md = Path(paths["md"]).read_text()
    assert "**29.50 ± 0.71 (n=2)**" in md and "| 28.50 ± 2.12 (n=2) " in md  # PWLU 0.08, 0.04
    assert "**15.00 (n=1)**" in md and "nan (n=1)" in md
    with open(paths["csv"], newline="") as f:
        assert len(list(csv.DictReader(f))) == 8


def test_a_point_that_leads_after_the_tie_seeds_runs_them_too(monkeypatch, tmp_path):
    # Seed 1 is hard at every LR: after the tie seeds of 0.04 and 0.08, 0.02 would lead on its
    # easy seed 0 alone; it gets seed 1 too, and then 0.04 leads on the same seeds.
    swish = "mask_rcnn_R_18_FPN_swish"
    box_ap = {
        (swish, "0.02", 0): 19.0, (swish, "0.04", 0): 20.7, (swish, "0.08", 0): 20.0,
        (swish, "0.02", 1): 13.0, (swish, "0.04", 1): 14.5, (swish, "0.08", 1): math.nan,
    }  # fmt: skip
    calls = _fake_runs(monkeypatch, box_ap)
    points = parse_grid(["SOLVER.BASE_LR=0.02,0.04,0.08"])
    config = PWLU_CONFIG.replace("pwlu", "swish")
    rows = run_sweep([config], points, [0], str(tmp_path), TUNE, tie_seeds=[1], progress=print)
    assert [c[1] for c in calls if c[2] == (1,)] == ["0.04", "0.08", "0.02"]
    assert best_points(rows) == {swish: "SOLVER.BASE_LR=0.04"}


def test_a_point_with_a_diverged_tie_seed_ranks_last_and_says_what_the_others_gave(tmp_path):
    def row(point, seed, box, diverged=None):
        found = dict.fromkeys(CSV_COLUMNS)
        found.update(
            config="a_pwlu", activation="PWLU", point=f"SOLVER.BASE_LR={point}", seed=seed,
            bbox_AP=box, segm_AP=box, diverged=diverged, output_dir=str(tmp_path),
        )  # fmt: skip
        return found

    nan_loss = "Loss became infinite or NaN at iteration=70!"
    rows = [row("0.01", 0, 25.5), row("0.01", 1, None, nan_loss)]
    rows += [row("0.005", 0, 24.2), row("0.005", 1, 23.0), row("0.02", 0, None, nan_loss)]
    assert best_points(rows) == {"a_pwlu": "SOLVER.BASE_LR=0.005"}
    md = Path(write_sweep_reports(rows, str(tmp_path), "cmd")["md"]).read_text()
    assert "1 of 2 diverged, others 25.50 (n=2)" in md
    assert "| diverged (n=1) " in md and "**23.60 ± 0.85 (n=2)**" in md


@pytest.mark.slow
def test_a_tiny_sweep_end_to_end(subprocess_datasets, tmp_path):  # noqa: F811
    def sweep_tool(*extra: str) -> tuple[str, list[dict]]:
        # evaluated on a tiny tuning split of its own, not shapes_val
        result = run_tool(
            "compare_activations.py", "--grid", "SOLVER.BASE_LR=0.01,0.02,1e30",
            "--tune-set", "shapes_cmp_val", "--seeds", "0", "--tie-seeds",
            "--config-file", RELU_CONFIG, *extra,
            "--work-dir", tmp_path, *TINY_OPTS,
        )  # fmt: skip
        assert result.returncode == 0, result.stdout[-3000:]
        with open(tmp_path / "sweep.csv", newline="") as f:
            return result.stdout, list(csv.DictReader(f))

    # --sweep-only: the sweep and its reports, no final run.
    output, rows = sweep_tool("--sweep-only")
    assert not (tmp_path / "results.csv").exists()
    assert not (tmp_path / Path(RELU_CONFIG).stem).exists()
    assert [r["point"] for r in rows] == [
        "SOLVER.BASE_LR=0.01", "SOLVER.BASE_LR=0.02", "SOLVER.BASE_LR=1e30"
    ]  # fmt: skip
    assert len({r["output_dir"] for r in rows}) == 3
    # A point whose loss diverges is a result (no AP), not the end of the sweep.
    assert all(r["bbox_AP"] and not r["diverged"] for r in rows[:2])
    assert not rows[2]["bbox_AP"] and "NaN" in rows[2]["diverged"]
    assert "diverged" in output and "diverged (n=1)" in (tmp_path / "sweep.md").read_text()
    # Without --sweep-only the same command reuses the sweep and trains the final run: the best
    # point's, on the config's own test set.
    output, again = sweep_tool()
    assert "reused" in output and output.count("training in") == 1
    assert [r["bbox_AP"] for r in again] == [r["bbox_AP"] for r in rows]
    with open(tmp_path / "results.csv", newline="") as f:
        (final,) = csv.DictReader(f)
    assert final["overrides"] in {rows[0]["point"], rows[1]["point"]}
    # Again: every run is reused, none retrained.
    output, _ = sweep_tool()
    assert "training in" not in output and "reused" in output
