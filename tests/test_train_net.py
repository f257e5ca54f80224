"""tools/train_net.py's logic end to end on a tiny shapes dataset: training, COCO AP,
--eval-only, --resume and the refusal to overwrite a run."""

import json
import math
import stat
from pathlib import Path

import cv2
import pytest
import torch
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets import register_coco_instances
from tool_runs import SHAPES_YAML, TINY_TRAINING, mode_of_plain_open, run_tool

from pwlu_det.data import SHAPE_CLASSES, generate_shapes_split
from pwlu_det.engine import PWLUTrainer
from pwlu_det.engine.cli import argument_parser, main, setup
from pwlu_det.export import export_model, load_model_for_export
from pwlu_det.layers import PWLU, Phase

CONFIG = str(Path(__file__).resolve().parents[1] / "configs/Shapes/mask_rcnn_R_18_FPN_pwlu.yaml")
SPLITS = {"shapes_tiny_train": 12, "shapes_tiny_val": 4}


@pytest.fixture(scope="module")
def tiny_shapes(tmp_path_factory):
    root = tmp_path_factory.mktemp("shapes")
    for seed, (name, count) in enumerate(SPLITS.items()):
        json_file = generate_shapes_split(root, name, count, (256, 256), seed)
        register_coco_instances(
            name, {"thing_classes": list(SHAPE_CLASSES)}, str(json_file), str(root / name)
        )
    yield root
    for name in SPLITS:
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)


def _args(output_dir, *extra, eval_only=False, resume=False, max_iter=16):
    argv = ["--config-file", CONFIG]
    argv += ["--eval-only"] if eval_only else []
    argv += ["--resume"] if resume else []
    argv += [
        "OUTPUT_DIR",
        str(output_dir),
        "DATASETS.TRAIN",
        "('shapes_tiny_train',)",
        "DATASETS.TEST",
        "('shapes_tiny_val',)",
        "SOLVER.MAX_ITER",
        str(max_iter),
        "SOLVER.STEPS",
        "(100,)",
        "SOLVER.WARMUP_ITERS",
        "4",
        "SOLVER.IMS_PER_BATCH",
        "2",
        "SOLVER.CHECKPOINT_PERIOD",
        "8",
        "MODEL.PWLU.STATISTICS_ITERS",
        "4",
        "DATALOADER.NUM_WORKERS",
        "0",
        # every detection counts: after 16 iterations few scores pass the default 0.05
        "MODEL.ROI_HEADS.SCORE_THRESH_TEST",
        "0.0",
        *extra,
    ]
    return argument_parser().parse_args(argv)


@pytest.mark.slow
def test_train_evaluate_eval_only_and_resume(tiny_shapes, tmp_path):
    output = tmp_path / "run"
    cfg = setup(_args(output))
    trainer = PWLUTrainer(cfg)
    trainer.resume_or_load(resume=False)
    trainer.train()
    results = trainer._last_eval_results  # Detectron2 v0.6's train() returns it only with
    # TEST.EXPECTED_RESULTS set; its EvalHook keeps the final evaluation here

    # The loss falls (first vs last four iterations).
    losses = [v for v, _ in trainer.storage.history("total_loss").values()]
    assert len(losses) == 16
    assert sum(losses[-4:]) < sum(losses[:4])
    # The realignment ran, and COCO AP numbers came out for boxes and masks.
    assert all(m.phase == Phase.TRAINING for m in trainer.model.modules() if isinstance(m, PWLU))
    for task in ("bbox", "segm"):
        assert set(results[task]) >= {"AP", "AP50", "AP75"}
        assert all(math.isfinite(results[task][k]) for k in ("AP", "AP50"))
    for name in ("model_final.pth", "metrics.json", "last_checkpoint", "config.yaml"):
        assert (output / name).exists(), name

    # --eval-only on the saved checkpoint reproduces the same detections and AP.
    weights = str(output / "model_final.pth")
    again = main(_args(tmp_path / "eval", "MODEL.WEIGHTS", weights, eval_only=True))
    detections = (output / "inference" / "coco_instances_results.json").read_text()
    assert len(json.loads(detections)) > 0
    assert (tmp_path / "eval" / "inference" / "coco_instances_results.json").read_text() == (
        detections
    )
    for task in ("bbox", "segm"):
        assert again[task].keys() == results[task].keys()
        for key, value in results[task].items():
            assert again[task][key] == value or (math.isnan(value) and math.isnan(again[task][key]))

    # The trained checkpoint exports to ONNX and matches PyTorch (onnxruntime), with
    # detections (threshold 0) and without any (threshold 1: the GN mask head gets no RoI).
    image = torch.as_tensor(
        cv2.imread(str(next((tiny_shapes / "shapes_tiny_val").iterdir()))).transpose(2, 0, 1).copy()
    )
    for threshold, detected in (("0.0", True), ("1.0", False)):
        model, _ = load_model_for_export(
            CONFIG, ["MODEL.WEIGHTS", weights, "MODEL.ROI_HEADS.SCORE_THRESH_TEST", threshold]
        )
        exported = export_model(model, image, str(tmp_path / f"export{threshold}"), "onnx")
        assert Path(exported.path).is_file() and (exported.num_detections > 0) == detected

    # A fresh run into the same folder is refused; --resume continues at iteration 16.
    with pytest.raises(FileExistsError, match="--resume"):
        main(_args(output))
    main(_args(output, resume=True, max_iter=20))
    assert "Starting training from iteration 16" in (output / "log.txt").read_text()
    final = torch.load(output / "model_final.pth", map_location="cpu", weights_only=False)
    assert final["iteration"] == 19
    assert (output / "last_checkpoint").read_text() == "model_final.pth"


def test_invalid_config_value_stops_setup(tiny_shapes, tmp_path):
    with pytest.raises(ValueError, match="MODEL.PWLU.NUM_INTERVALS"):
        setup(_args(tmp_path, "MODEL.PWLU.NUM_INTERVALS", "0"))
    with pytest.raises(ValueError, match="MODEL.ACTIVATION.NAME"):
        setup(_args(tmp_path, "MODEL.ACTIVATION.NAME", "GELU"))


def test_missing_dataset_is_reported_before_training(tmp_path):
    with pytest.raises(FileNotFoundError, match="coco"):
        setup(
            argument_parser().parse_args(
                [
                    "--config-file",
                    CONFIG,
                    "OUTPUT_DIR",
                    str(tmp_path),
                    "DATASETS.TRAIN",
                    "('coco_2017_train',)",
                    "DATASETS.TEST",
                    "('coco_2017_val',)",
                ]
            )
        )


def test_every_file_of_a_run_gets_the_mode_of_a_plain_open(tmp_path):
    # Checkpoints, last_checkpoint, the PWLU curves and final_results.json are written
    # atomically: they must be as readable by others as config.yaml and log.txt (a shared
    # --work-dir), not mkstemp's 0600.
    umask = 0o027
    output = tmp_path / "run"
    result = run_tool(
        "train_net.py",
        "--config-file",
        SHAPES_YAML,
        "OUTPUT_DIR",
        output,
        *TINY_TRAINING,
        umask=umask,
    )
    assert result.returncode == 0, result.stdout[-3000:]
    expected = mode_of_plain_open(tmp_path, umask)
    modes = {
        str(path.relative_to(output)): oct(stat.S_IMODE(path.stat().st_mode))
        for path in output.rglob("*")
        if path.is_file()
    }
    for name in ("model_final.pth", "last_checkpoint", "final_results.json", "config.yaml"):
        assert name in modes, sorted(modes)
    assert any(name.endswith(".png") for name in modes), sorted(modes)
    assert set(modes.values()) == {oct(expected)}, modes
