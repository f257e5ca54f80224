"""tools/compare_activations.py: run planning, the reports' arithmetic, and an end-to-end
comparison (2 configs x 2 seeds, a few iterations) that is resumed without retraining."""

import csv
import json
import math
import os
import sys
from pathlib import Path

import cv2
import pytest
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets import register_coco_instances
from tool_runs import run_tool

from pwlu_det.config import add_pwlu_config, load_pwlu_config
from pwlu_det.data import SHAPE_CLASSES, generate_shapes_split
from pwlu_det.engine.compare import (
    CSV_COLUMNS,
    RUN_RESULT,
    activation_label,
    compare_activations,
    config_sha,
    mean_std,
    parameters_added,
    plan_runs,
    resumed_at,
    write_reports,
)
from pwlu_det.engine.demo import compare_with_documented, write_demo_pictures

ROOT = Path(__file__).resolve().parents[1]
PWLU_CONFIG = str(ROOT / "configs/Shapes/mask_rcnn_R_18_FPN_pwlu.yaml")
RELU_CONFIG = str(ROOT / "configs/Shapes/mask_rcnn_R_18_FPN_relu.yaml")
SPLITS = {"shapes_cmp_train": 12, "shapes_cmp_val": 4}
TINY_OPTS = [
    "DATASETS.TRAIN", "('shapes_cmp_train',)",
    "DATASETS.TEST", "('shapes_cmp_val',)",
    "SOLVER.MAX_ITER", "12",
    "SOLVER.STEPS", "(100,)",
    "SOLVER.WARMUP_ITERS", "4",
    "SOLVER.IMS_PER_BATCH", "2",
    "SOLVER.CHECKPOINT_PERIOD", "6",
    "MODEL.PWLU.STATISTICS_ITERS", "4",
    "DATALOADER.NUM_WORKERS", "0",
    "MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.0",  # detections (and so AP) after 12 iterations
]  # fmt: skip


def test_mean_std_is_the_sample_deviation():
    mean, std = mean_std([1.0, 2.0, 3.0, 4.0])
    assert mean == 2.5
    assert std == pytest.approx(math.sqrt(5 / 3))
    mean, std = mean_std([7.0])
    assert mean == 7.0 and math.isnan(std)
    assert all(math.isnan(v) for v in mean_std([1.0, float("nan")]))
    with pytest.raises(ValueError, match="no values"):
        mean_std([])


def test_plan_runs_gives_each_run_its_own_folder(tmp_path):
    runs = plan_runs([PWLU_CONFIG, RELU_CONFIG], [0, 1], str(tmp_path))
    assert [(r.label, r.seed) for r in runs] == [
        ("mask_rcnn_R_18_FPN_pwlu", 0),
        ("mask_rcnn_R_18_FPN_relu", 0),
        ("mask_rcnn_R_18_FPN_pwlu", 1),
        ("mask_rcnn_R_18_FPN_relu", 1),
    ]
    assert len({r.output_dir for r in runs}) == 4
    assert runs[2].output_dir == str(tmp_path / "mask_rcnn_R_18_FPN_pwlu" / "seed1")
    with pytest.raises(ValueError, match="seeds repeat"):
        plan_runs([PWLU_CONFIG], [0, 0], str(tmp_path))
    with pytest.raises(ValueError, match="must differ"):
        plan_runs([PWLU_CONFIG, PWLU_CONFIG], [0], str(tmp_path))
    with pytest.raises(FileNotFoundError, match="nope.yaml"):
        plan_runs(["configs/nope.yaml"], [0], str(tmp_path))


def test_config_fingerprint_is_the_recipe_not_the_key_set(monkeypatch):
    cfg = load_pwlu_config(PWLU_CONFIG)
    sha = config_sha(cfg)
    assert config_sha(load_pwlu_config(PWLU_CONFIG, ["SEED", "7", "OUTPUT_DIR", "x"])) == sha
    assert config_sha(load_pwlu_config(PWLU_CONFIG, ["MODEL.PWLU.LR_FACTOR", "2.0"])) != sha

    # A new key whose default keeps the old behaviour leaves every fingerprint as it was.
    def add_with_new_key(c):
        add_pwlu_config(c)
        c.MODEL.PWLU.SOME_NEW_KEY = 1

    monkeypatch.setattr("pwlu_det.config.add_pwlu_config", add_with_new_key)
    assert config_sha(load_pwlu_config(PWLU_CONFIG)) == sha


def _never_launched(spec, opts, console):
    raise AssertionError(f"{spec} was launched; it should have been reused or refused")


def test_a_run_folder_of_another_recipe_is_refused(tmp_path):
    (spec,) = plan_runs([PWLU_CONFIG], [0], str(tmp_path))
    os.makedirs(spec.output_dir)
    saved = load_pwlu_config(PWLU_CONFIG, ["MODEL.PWLU.LR_FACTOR", "3.0"])
    Path(spec.output_dir, "config.yaml").write_text(saved.dump())
    Path(spec.output_dir, RUN_RESULT).write_text(json.dumps({"results": {}, "seconds": 1.0}))
    with pytest.raises(RuntimeError, match="another recipe.*neither reused nor resumed"):
        compare_activations([PWLU_CONFIG], [0], str(tmp_path), launch=_never_launched)
    # The same recipe is reused as it is.
    opts = ["MODEL.PWLU.LR_FACTOR", "3.0"]
    rows = compare_activations([PWLU_CONFIG], [0], str(tmp_path), opts, launch=_never_launched)
    assert rows[0]["config_sha"] == config_sha(saved)
    assert rows[0]["activation"] == "PWLU" and rows[0]["parameters_added"] > 0


def test_a_run_that_fails_is_an_error_and_a_diverged_run_a_result(tmp_path):
    def crash(spec, opts, console):
        console.write(b"ImportError: no module named nowhere\n")
        return 1

    with pytest.raises(RuntimeError, match=r"failed \(exit code 1\).*compare_console.txt"):
        compare_activations([RELU_CONFIG], [0], str(tmp_path), launch=crash)

    def diverge(spec, opts, console):
        assert opts[-4:] == ["SEED", "0", "OUTPUT_DIR", spec.output_dir]
        console.write(b"FloatingPointError: Loss became infinite or NaN at iteration=3!\n")
        return 1

    lines = []
    (row,) = compare_activations(
        [RELU_CONFIG], [0], str(tmp_path / "b"), launch=diverge, progress=lines.append
    )
    assert row["bbox_AP"] is None and row["diverged"].startswith("Loss became infinite")
    assert any("recorded without AP" in line for line in lines)


def test_parameters_added_are_those_of_the_activations():
    from pwlu_det.engine.trainer import PWLUTrainer
    from pwlu_det.layers import PWLU

    assert parameters_added(RELU_CONFIG) == 0
    model = PWLUTrainer.build_model(load_pwlu_config(PWLU_CONFIG, ["MODEL.DEVICE", "cpu"]))
    units = [m for m in model.modules() if isinstance(m, PWLU)]
    assert parameters_added(PWLU_CONFIG) == sum(p.numel() for m in units for p in m.parameters())
    frozen = load_pwlu_config(PWLU_CONFIG, ["MODEL.PWLU.LR_FACTOR", "0.0"])
    assert activation_label(frozen) == "PWLU (frozen)"


def _row(config, activation, seed, box, mask, output_dir):
    row = dict.fromkeys(CSV_COLUMNS)
    row.update(
        config=config, activation=activation, seed=seed, iterations=100, minutes=1.5,
        bbox_AP=box, bbox_AP50=box + 10, bbox_AP75=box - 1,
        segm_AP=mask, segm_AP50=mask + 10, segm_AP75=mask - 1, output_dir=str(output_dir),
        parameters_added=1234 if activation == "PWLU" else 0,
    )  # fmt: skip
    return row


def test_reports_give_mean_and_std_over_seeds(tmp_path):
    rows = [
        _row("a_pwlu", "PWLU", 0, 11.0, 20.0, tmp_path),
        _row("a_pwlu", "PWLU", 1, 13.0, 22.0, tmp_path),
        _row("a_relu", "ReLU", 0, 5.0, 6.0, tmp_path),
        _row("a_relu", "ReLU", 1, 8.0, 6.0, tmp_path),
    ]
    paths = write_reports(rows, str(tmp_path / "reports"), "compare --seeds 0 1", "abc123")
    text = Path(paths["md"]).read_text()
    summary = {}  # the first table: one line per config
    for line in text.splitlines():
        if line.startswith("| a_"):
            summary.setdefault(line.split("|")[1].strip(), line)
    assert "12.00 ± 1.41" in summary["a_pwlu"]  # box AP: mean 12, std sqrt(2)
    assert "21.00 ± 1.41" in summary["a_pwlu"]  # mask AP
    assert "6.50 ± 2.12" in summary["a_relu"]  # box AP: std 3 / sqrt(2)
    assert "6.00 ± 0.00" in summary["a_relu"]
    assert summary["a_pwlu"].rstrip(" |").endswith("1,234")  # parameters added
    assert "compare --seeds 0 1" in text and "Commit `abc123`" in text
    with open(paths["csv"], newline="") as f:
        table = list(csv.DictReader(f))
    assert [float(r["bbox_AP"]) for r in table] == [11.0, 13.0, 5.0, 8.0]
    assert set(CSV_COLUMNS) == set(table[0])


def test_a_run_resumed_mid_training_is_named_in_the_reports(tmp_path):
    # Detectron2 logs "Starting training from iteration N" at every start; log.txt collects them.
    run = tmp_path / "run"
    run.mkdir()
    assert resumed_at(str(run)) == []  # no log: never started here
    (run / "log.txt").write_text(
        "[12/07 10:00:00] d2.engine.train_loop INFO: Starting training from iteration 0\n"
        "[12/07 10:09:00] d2.engine.train_loop INFO: Starting training from iteration 615\n"
        "[12/07 10:12:00] d2.engine.train_loop INFO: Starting training from iteration 700\n"
    )
    assert resumed_at(str(run)) == [615, 700]
    once = tmp_path / "once"
    once.mkdir()
    (once / "log.txt").write_text("x INFO: Starting training from iteration 0\n")
    assert resumed_at(str(once)) == []
    rows = [
        {**_row("a_pwlu", "PWLU", 0, 11.0, 20.0, run), "resumed": "615 700"},
        {**_row("a_pwlu", "PWLU", 1, 13.0, 22.0, once), "resumed": ""},
    ]
    text = Path(write_reports(rows, str(tmp_path / "r"), "compare", "abc")["md"]).read_text()
    section = text.split("## Resumed runs", 1)[1]
    assert "- a_pwlu seed 0: from iteration 615 700" in section and "seed 1" not in section
    plain = Path(write_reports(rows[1:], str(tmp_path / "s"), "compare", "abc")["md"]).read_text()
    assert "Resumed" not in plain


def test_reports_count_a_diverged_seed_instead_of_hiding_it(tmp_path):
    diverged = _row("a_pwlu", "PWLU", 1, 0.0, 0.0, tmp_path)
    for key in ("bbox_AP", "bbox_AP50", "bbox_AP75", "segm_AP", "segm_AP50", "segm_AP75"):
        diverged[key] = None
    diverged["diverged"] = "Loss became infinite or NaN at iteration=3!"
    rows = [_row("a_pwlu", "PWLU", 0, 11.0, 20.0, tmp_path), diverged]
    text = Path(write_reports(rows, str(tmp_path / "r"), "compare", "abc")["md"]).read_text()
    header = next(line for line in text.splitlines() if line.startswith("| config"))
    summary = next(line for line in text.splitlines() if line.startswith("| a_pwlu"))
    cells = [c.strip() for c in summary.strip("|").split("|")]
    names = [c.strip() for c in header.strip("|").split("|")]
    assert cells[names.index("seeds")] == "2" and cells[names.index("diverged")] == "1"
    assert cells[names.index("box AP")] == "11.00"  # the finished seed only, and said so
    per_seed = [line for line in text.splitlines() if line.startswith("| a_pwlu")][1:]
    assert "diverged" in per_seed[1] and "None" not in per_seed[1]


@pytest.fixture(scope="module")
def subprocess_datasets(tmp_path_factory):
    """Tiny shapes splits, registered here and (through sitecustomize) in the run processes."""
    root = tmp_path_factory.mktemp("cmp_data")
    lines = ["from detectron2.data.datasets import register_coco_instances"]
    for seed, (name, count) in enumerate(SPLITS.items()):
        json_file = generate_shapes_split(root, name, count, (256, 256), seed)
        metadata = {"thing_classes": list(SHAPE_CLASSES)}
        register_coco_instances(name, metadata, str(json_file), str(root / name))
        lines.append(f"register_coco_instances({name!r}, {metadata!r}, {str(json_file)!r}, "
                     f"{str(root / name)!r})")  # fmt: skip
    (root / "sitecustomize.py").write_text("\n".join(lines) + "\n")
    old = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join([str(root), str(ROOT), *([old] if old else [])])
    yield root
    if old is None:
        del os.environ["PYTHONPATH"]
    else:
        os.environ["PYTHONPATH"] = old
    for name in SPLITS:
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)


def _compare(work, *args) -> tuple[list[str], list[dict]]:
    """tools/compare_activations.py on the tiny splits: its progress lines and results.csv."""
    result = run_tool(
        "compare_activations.py", *args, "--config-file", PWLU_CONFIG, RELU_CONFIG,
        "--results-dir", work / "reports", "--work-dir", work, *TINY_OPTS,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:]
    lines = [line for line in result.stdout.splitlines() if line.startswith("[")]
    with open(work / "reports" / "results.csv", newline="") as f:
        return lines, list(csv.DictReader(f))


@pytest.mark.slow
def test_comparison_end_to_end_and_resumed_without_retraining(subprocess_datasets, tmp_path):
    work = tmp_path / "work"
    lines, rows = _compare(work, "--seeds", "0", "1")
    assert [(r["activation"], r["seed"]) for r in rows] == [
        ("PWLU", "0"), ("ReLU", "0"), ("PWLU", "1"), ("ReLU", "1")
    ]  # fmt: skip
    assert len(lines) == 8 and lines[0].startswith("[1/4] mask_rcnn_R_18_FPN_pwlu seed 0")
    assert "3 runs left" in lines[0] and "all done" in lines[2]
    for row in rows:
        assert row["iterations"] == "12" and float(row["minutes"]) > 0
        assert all(row[k] for k in ("bbox_AP", "bbox_AP50", "segm_AP"))
    # The PWLU runs realigned after iteration 4; the ReLU runs have no realignment.
    assert [r["realign_iteration"] for r in rows] == ["3", "", "3", ""]
    assert float(rows[0]["realign_mean_bound_width"]) > 0
    # Seeds differ, so the two PWLU runs trained differently.
    metrics = [(ROOT / r["output_dir"] / "metrics.json").read_text() for r in rows]
    assert metrics[0] != metrics[2]
    # The curves went to a PNG and into TensorBoard at each checkpoint (period 6).
    curves = sorted(p.name for p in (ROOT / rows[0]["output_dir"] / "pwlu_curves").iterdir())
    assert curves == ["iter_0000005.png", "iter_0000011.png"]
    reports = work / "reports"
    assert "Commit `" in (reports / "results.md").read_text()
    plot = cv2.imread(str(reports / "results.png"))
    assert plot is not None and plot.std() > 10

    # Run again: every run is reused, nothing retrains.
    stamps = [(ROOT / r["output_dir"] / "model_final.pth").stat().st_mtime_ns for r in rows]
    again_lines, again = _compare(work, "--seeds", "0", "1")
    assert all("reused" in line for line in again_lines) and len(again_lines) == 4
    assert [r["bbox_AP"] for r in again] == [r["bbox_AP"] for r in rows]
    assert stamps == [(ROOT / r["output_dir"] / "model_final.pth").stat().st_mtime_ns for r in rows]

    # A run that stopped before it recorded its result resumes from its checkpoint: it is
    # evaluated again, not retrained, so it is not a resumed run.
    run_dir = ROOT / rows[1]["output_dir"]
    (run_dir / RUN_RESULT).unlink()
    _, resumed = _compare(work, "--seeds", "0")
    assert (run_dir / "metrics.json").read_text() == metrics[1]
    assert resumed[1]["resumed"] == "" and resumed[1]["bbox_AP"] == rows[1]["bbox_AP"]
    assert json.loads((run_dir / RUN_RESULT).read_text())["results"]["bbox"]["AP"] == pytest.approx(
        float(rows[1]["bbox_AP"]), abs=1e-3
    )

    # The demo's pictures of a trained run are valid, non-trivial PNGs.
    opts = [*TINY_OPTS, "OUTPUT_DIR", str(ROOT / rows[0]["output_dir"])]
    pictures = write_demo_pictures(PWLU_CONFIG, opts)
    assert [Path(p).name for p in pictures] == [
        "predictions.png", "pwlu_curves.png", "pwlu_curves_residual.png"
    ]  # fmt: skip
    for path in pictures:
        image = cv2.imread(path)
        assert image is not None and min(image.shape[:2]) >= 200
        assert image.std() > 10 and len(set(image.reshape(-1, 3)[::7].tobytes())) > 1
    grid = cv2.imread(pictures[0])
    assert grid.shape[:2] == (256, 4 * 256)  # 4 validation images in one row


def test_compare_tool_runs_as_a_script():
    import subprocess

    out = subprocess.run(
        [sys.executable, str(ROOT / "tools/compare_activations.py"), "--help"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "--num-gpus" in out.stdout and "--seeds" in out.stdout and "--grid" in out.stdout


def test_demo_reports_whether_it_reproduces_the_documented_row(tmp_path):
    rows = [_row("mask_rcnn_R_18_FPN_pwlu", "PWLU", 0, 31.25, 29.5, tmp_path)]
    table = write_reports(rows, str(tmp_path), "test")["csv"]
    same = {"bbox": {"AP": 31.2501}, "segm": {"AP": 29.4999}}
    ok, message = compare_with_documented(same, PWLU_CONFIG, 0, table)
    assert ok is True and "matches" in message
    moved = {"bbox": {"AP": 30.0}, "segm": {"AP": 29.5}}
    ok, message = compare_with_documented(moved, PWLU_CONFIG, 0, table)
    assert ok is False and "bbox AP 30.0 (documented 31.25)" in message and "segm" not in message
    ok, message = compare_with_documented(same, PWLU_CONFIG, 1, table)
    assert ok is None and "seed 1" in message
    assert compare_with_documented(same, PWLU_CONFIG, 0, tmp_path / "absent.csv")[0] is None


def test_demo_names_the_documented_machine_and_says_when_this_one_differs(tmp_path):
    documented_machine = {
        "cpu": "Intel(R) Xeon(R) Processor",
        "pwlu_isa": "avx512",
        "aten_isa": "avx512",
        "threads": 2,
    }
    row = _row("mask_rcnn_R_18_FPN_pwlu", "PWLU", 0, 31.25, 29.5, tmp_path)
    table = write_reports([{**row, **documented_machine}], str(tmp_path), "test")["csv"]
    moved = {"bbox": {"AP": 30.0}, "segm": {"AP": 29.5}}

    ok, message = compare_with_documented(moved, PWLU_CONFIG, 0, table, dict(documented_machine))
    assert ok is False
    assert "this run on the same machine" in message and "changed the numbers" in message

    epyc = {**documented_machine, "cpu": "AMD EPYC 7B13", "pwlu_isa": "avx2", "aten_isa": "avx2"}
    ok, message = compare_with_documented(moved, PWLU_CONFIG, 0, table, epyc)
    assert ok is False
    assert "documented on Intel(R) Xeon(R) Processor, PWLU kernel avx512" in message
    assert "pwlu_isa: avx512 -> avx2" in message and "seed-to-seed spread" in message
    assert "changed the numbers" not in message

    one_thread = {**documented_machine, "threads": 1}
    ok, message = compare_with_documented(
        {"bbox": {"AP": 31.25}, "segm": {"AP": 29.5}}, PWLU_CONFIG, 0, table, one_thread
    )
    assert ok is True and "threads: 2 -> 1" in message
    assert "Machine: Intel(R) Xeon(R) Processor, PWLU kernel avx512, ATen avx512, 2 threads." in (
        (tmp_path / "results.md").read_text()
    )


def test_machine_info_reports_this_process():
    import torch

    from pwlu_det.layers import pwlu_cpp
    from pwlu_det.utils.machine import machine_info

    info = machine_info()
    assert info["threads"] == torch.get_num_threads()
    assert info["pwlu_isa"] == (pwlu_cpp.cpu_capability() if pwlu_cpp.available() else "none")
    assert info["cpu"] and info["aten_isa"]
