"""PWLUCurvesHook: the learned curves go to a PNG and to TensorBoard at every checkpoint."""

import cv2
import pytest
from detectron2.engine import hooks
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tiny_training import TinyTrainer, tiny_cfg

from pwlu_det.engine.curves_hook import IMAGE_TAG, PWLUCurvesHook


def test_curves_reach_tensorboard_at_each_checkpoint(tmp_path):
    cfg = tiny_cfg(str(tmp_path), max_iter=5, statistics_iters=2)
    cfg.SOLVER.CHECKPOINT_PERIOD = 2
    trainer = TinyTrainer(cfg)
    kinds = [type(h) for h in trainer._hooks]
    # Before the writer, so that the image is written at the iteration it was drawn.
    assert kinds.index(PWLUCurvesHook) < kinds.index(hooks.PeriodicWriter)
    trainer.train()

    pngs = sorted(p.name for p in (tmp_path / "pwlu_curves").iterdir())
    assert pngs == ["iter_0000002.png", "iter_0000004.png", "iter_0000005.png"]  # + the last
    image = cv2.imread(str(tmp_path / "pwlu_curves" / pngs[-1]))
    assert image is not None and image.std() > 5

    events = EventAccumulator(str(tmp_path), size_guidance={"images": 0}).Reload()
    assert IMAGE_TAG in events.Tags()["images"]
    logged = events.Images(IMAGE_TAG)
    assert [e.step for e in logged] == [1, 3, 4]
    assert (logged[-1].width, logged[-1].height) == (image.shape[1], image.shape[0])


def test_only_pwlu_configs_get_the_hook(tmp_path):
    cfg = tiny_cfg(str(tmp_path), max_iter=2)
    cfg.MODEL.ACTIVATION.NAME = "ReLU"
    assert not any(isinstance(h, PWLUCurvesHook) for h in TinyTrainer(cfg)._hooks)
    with pytest.raises(ValueError, match="period"):
        PWLUCurvesHook(-1, str(tmp_path))
