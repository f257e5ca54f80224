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
    # Named by Detectron2's iteration, as the checkpoints: model_0000001.pth, model_0000003.pth
    assert pngs == ["iter_0000001.png", "iter_0000003.png", "iter_0000004.png"]  # + the last
    assert (tmp_path / "model_0000003.pth").is_file()
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


def test_a_resumed_run_draws_the_curves_that_a_kill_lost(tmp_path):
    cfg = tiny_cfg(str(tmp_path), max_iter=5, statistics_iters=2)
    cfg.SOLVER.CHECKPOINT_PERIOD = 2
    TinyTrainer(cfg).train()
    # As if killed while drawing after model_0000003.pth was saved: its curves and all that
    # follows are missing, and the last checkpoint is model_0000003.pth.
    folder = tmp_path / "pwlu_curves"
    for name in ("iter_0000003.png", "iter_0000004.png"):
        (folder / name).unlink()
    (tmp_path / "model_final.pth").unlink()
    (tmp_path / "last_checkpoint").write_text("model_0000003.pth")

    trainer = TinyTrainer(cfg)
    trainer.resume_or_load(resume=True)
    assert trainer.start_iter == 4
    trainer.train()
    pngs = sorted(p.name for p in folder.iterdir())
    assert pngs == ["iter_0000001.png", "iter_0000003.png", "iter_0000004.png"]
    assert cv2.imread(str(folder / "iter_0000003.png")).std() > 5


def test_the_curves_are_drawn_off_the_training_thread_and_failures_surface(tmp_path, monkeypatch):
    import threading

    from pwlu_det.engine import curves_hook

    threads = []
    plot = curves_hook.plot_pwlu_activations

    def recording_plot(*args, **kwargs):
        threads.append(threading.current_thread().name)
        return plot(*args, **kwargs)

    monkeypatch.setattr(curves_hook, "plot_pwlu_activations", recording_plot)
    cfg = tiny_cfg(str(tmp_path / "a"), max_iter=3, statistics_iters=1)
    cfg.SOLVER.CHECKPOINT_PERIOD = 2
    TinyTrainer(cfg).train()
    assert len(threads) == 2 and all(name.startswith("pwlu_curves") for name in threads)

    def failing_plot(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(curves_hook, "plot_pwlu_activations", failing_plot)
    cfg.OUTPUT_DIR = str(tmp_path / "b")
    with pytest.raises(OSError, match="disk full"):
        TinyTrainer(cfg).train()
