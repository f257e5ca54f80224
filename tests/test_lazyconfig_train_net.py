"""tools/lazyconfig_train_net.py end to end on a tiny shapes dataset, with the Shapes LazyConfig:
realignment, atomic checkpoints, resume before and after the realignment equal to an
uninterrupted run, COCO evaluation, --eval-only and the refusal to overwrite a run."""

import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets import register_coco_instances
from detectron2.engine import SimpleTrainer
from detectron2.modeling import GeneralizedRCNN
from detectron2.utils.events import get_event_storage

from pwlu_det.data import SHAPE_CLASSES, generate_shapes_split
from pwlu_det.engine.cli import FINAL_RESULTS
from pwlu_det.engine.lazy_cli import argument_parser, main
from pwlu_det.layers import Phase

SHAPES_CONFIG = Path(__file__).resolve().parents[1] / "configs/Shapes/mask_rcnn_R_18_FPN_pwlu.py"
SPLITS = {"shapes_lazy_train": 2, "shapes_lazy_val": 2}
MAX_ITER = 6
STATISTICS_ITERS = 3  # the realignment runs after iteration 2

# The Shapes LazyConfig with a sampler that does not shuffle: every batch of 2 is the same two
# images, so a resumed run sees the data an uninterrupted one sees.
TEST_CONFIG = f"""
from detectron2.config import LazyCall as L
from detectron2.config import LazyConfig
from detectron2.data.samplers import TrainingSampler

_base = LazyConfig.load({str(SHAPES_CONFIG)!r})
model, dataloader, optimizer = _base.model, _base.dataloader, _base.optimizer
lr_multiplier, train, pwlu = _base.lr_multiplier, _base.train, _base.pwlu
dataloader.train.sampler = L(TrainingSampler)(size=2, shuffle=False)
"""


class Interrupt(Exception):
    """Stands for a crash after a checkpoint was written."""


@pytest.fixture(scope="module")
def lazy_setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("lazy_shapes")
    for seed, (name, count) in enumerate(SPLITS.items()):
        json_file = generate_shapes_split(root, name, count, (256, 256), seed + 5)
        register_coco_instances(
            name, {"thing_classes": list(SHAPE_CLASSES)}, str(json_file), str(root / name)
        )
    config = root / "shapes_lazy_test.py"
    config.write_text(TEST_CONFIG)
    yield config
    for name in SPLITS:
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)


@pytest.fixture
def seeded_steps(monkeypatch):
    """Seed every step by its iteration, so that a step does not depend on the process's
    history, and optionally interrupt before a given iteration.

    NumPy and Python (data augmentation) are seeded before the batch is loaded; torch (RoI
    sampling) as the model's forward starts: the first batch of a process starts a DataLoader,
    which draws from torch's generator.
    """
    real_step, real_forward = SimpleTrainer.run_step, GeneralizedRCNN.forward
    stop = {"at": None}

    def run_step(self):
        if self.iter == stop["at"]:
            raise Interrupt
        np.random.seed(self.iter)
        random.seed(self.iter)
        real_step(self)

    def forward(self, batched_inputs):
        if self.training:
            torch.manual_seed(get_event_storage().iter)
        return real_forward(self, batched_inputs)

    monkeypatch.setattr(SimpleTrainer, "run_step", run_step)
    monkeypatch.setattr(GeneralizedRCNN, "forward", forward)
    return stop


def _args(config, output_dir, *extra, resume=False, eval_only=False):
    argv = ["--config-file", str(config)]
    argv += ["--resume"] if resume else []
    argv += ["--eval-only"] if eval_only else []
    argv += [
        f"train.output_dir={output_dir}",
        f"train.max_iter={MAX_ITER}",
        "train.checkpointer.period=2",
        f"lr_multiplier.scheduler.num_updates={MAX_ITER}",
        "lr_multiplier.scheduler.milestones=[4,5]",
        "lr_multiplier.warmup_length=0.3",
        f"pwlu.PWLU.STATISTICS_ITERS={STATISTICS_ITERS}",
        "dataloader.train.dataset.names=shapes_lazy_train",
        "dataloader.test.dataset.names=shapes_lazy_val",
        "dataloader.train.num_workers=0",
        "dataloader.test.num_workers=0",
        "model.roi_heads.box_predictor.test_score_thresh=0.0",
        *extra,
    ]
    return argument_parser().parse_args(argv)


def _final_state(output_dir: Path) -> dict[str, torch.Tensor]:
    return torch.load(output_dir / "model_final.pth", weights_only=False)["model"]


@pytest.mark.slow
def test_lazy_train_resume_evaluate(lazy_setup, seeded_steps, tmp_path):
    uninterrupted = tmp_path / "uninterrupted"
    results = main(_args(lazy_setup, uninterrupted))
    assert set(results) == {"bbox", "segm"}
    assert all(np.isfinite(results[task]["AP"]) for task in results)
    written = json.loads((uninterrupted / FINAL_RESULTS).read_text())
    assert written["iterations"] == MAX_ITER
    assert written["results"]["bbox"] == pytest.approx(results["bbox"], nan_ok=True)
    expected = _final_state(uninterrupted)
    phases = [v for k, v in expected.items() if k.endswith(".phase")]
    assert phases and all(int(p) == Phase.TRAINING for p in phases), "realigned"

    # Interrupted after the checkpoint of iteration 1 (Phase I) or 3 (realigned), then resumed.
    for last_saved in (1, 3):
        output = tmp_path / f"resumed_after_{last_saved}"
        seeded_steps["at"] = last_saved + 1
        with pytest.raises(Interrupt):
            main(_args(lazy_setup, output))
        assert (output / "last_checkpoint").read_text() == f"model_{last_saved:07d}.pth"
        seeded_steps["at"] = None
        with pytest.raises(FileExistsError, match="--resume"):
            main(_args(lazy_setup, output))
        main(_args(lazy_setup, output, resume=True))
        state = _final_state(output)
        assert state.keys() == expected.keys()
        for key, value in expected.items():
            torch.testing.assert_close(state[key], value, msg=f"{key} after resume")

    # --eval-only on the final checkpoint gives the training run's evaluation.
    final = str(uninterrupted / "model_final.pth")
    evaluated = main(
        _args(lazy_setup, tmp_path / "eval", f"train.init_checkpoint={final}", eval_only=True)
    )
    assert evaluated["bbox"] == pytest.approx(results["bbox"], nan_ok=True)
