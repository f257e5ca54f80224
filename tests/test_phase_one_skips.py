"""Phase I with empty and non-finite inputs: statistics pooled across workers by what each saw,
and a short Shapes run with images without objects that realigns every unit on statistics."""

import json
import logging
from pathlib import Path

import pytest
import torch
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets import register_coco_instances
from detectron2.utils import comm

from pwlu_det.config import load_pwlu_config
from pwlu_det.data import SHAPE_CLASSES, generate_shapes_split
from pwlu_det.engine import PWLUTrainer, launch
from pwlu_det.engine.realign_hook import _pool_statistics_across_workers
from pwlu_det.layers import PWLU, Phase

CONFIG = str(Path(__file__).resolve().parents[1] / "configs/Shapes/mask_rcnn_R_18_FPN_pwlu.yaml")
DATASET = "shapes_some_empty_train"


# ---------------------------------------------------------------------------------------------
# Two CPU processes (gloo): the synced statistics are the pooled ones.


def _batch(rank: int, index: int, shape: tuple[int, ...]) -> torch.Tensor:
    """A batch of worker ``rank``: the two workers' inputs come from different distributions."""
    gen = torch.Generator().manual_seed(100 * rank + index)
    scale, shift = ((1.5, 0.5), (0.3, -2.0))[rank]
    return scale * torch.randn(shape, generator=gen) + shift


def _pool_worker(output_dir: str, case: str) -> None:
    """Feeds two units (channel-wise, layer-wise), pools their statistics, saves the inputs and
    the state before and after."""
    rank = comm.get_rank()
    units = [PWLU(3), PWLU(None)]
    inputs: list[list[torch.Tensor]] = [[], []]
    for unit in units:
        unit.train()
        unit.start_statistics()
    for k, unit in enumerate(units):
        if case == "one_worker_empty" and rank == 1:
            batches = [torch.randn(0, 3, 4, 4), torch.randn(0, 3, 4, 4)]
        elif case == "one_worker_empty":
            batches = [_batch(rank, i, (2, 3, 4, 4)) for i in range(2)]
        elif k == 0:  # "different": channel-wise unit, 2 batches against 1
            batches = [_batch(rank, i, (2, 3, 4, 4)) for i in range(2 - rank)]
        else:  # "different": layer-wise unit, one batch of the same size each
            batches = [_batch(rank, 7, (2, 3, 4, 4))]
        for x in batches:
            unit(x)
        inputs[k] = batches
    local = [{k: v.clone() for k, v in unit.state_dict().items()} for unit in units]
    _pool_statistics_across_workers(units)
    synced = [unit.state_dict() for unit in units]
    torch.save(
        {"inputs": inputs, "local": local, "synced": synced},
        Path(output_dir) / f"rank{rank}.pt",
    )


def _run_pool(tmp_path, case):
    launch(_pool_worker, 2, args=(str(tmp_path), case))
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in (0, 1)]
    for a, b in zip(ranks[0]["synced"], ranks[1]["synced"], strict=True):
        for key, value in a.items():  # every worker realigns the same
            assert torch.equal(value, b[key]), key
    return ranks


def _pooled(locals_):
    """The pooled mean and std of workers' running statistics, weighted by their batch counts
    (computed here in float64, independently of the implementation)."""
    n = torch.stack([s["num_batches_tracked"].double() for s in locals_])
    means = torch.stack([s["running_mean"].double() for s in locals_])
    stds = torch.stack([s["running_std"].double() for s in locals_])
    shape = (-1,) + (1,) * (means.dim() - 1)
    w = n.reshape(shape) / n.sum()
    mean = (w * means).sum(0)
    var = (w * (stds**2 + (means - mean) ** 2)).sum(0)  # within plus between workers
    return mean, var.sqrt()


def test_two_processes_a_worker_with_only_empty_inputs_contributes_nothing(tmp_path):
    ranks = _run_pool(tmp_path, "one_worker_empty")
    for k in range(2):
        worker0, worker1 = ranks[0]["local"][k], ranks[1]["local"][k]
        assert worker1["num_batches_tracked"] == 0 and worker1["num_batches_empty"] == 2
        synced = ranks[0]["synced"][k]
        # Worker 0's statistics alone: worker 1's defaults (mean 0, std 1) are no data.
        for name in ("running_mean", "running_std"):
            torch.testing.assert_close(synced[name], worker0[name], rtol=1e-6, atol=1e-7)
        assert not torch.allclose(worker0["running_mean"], torch.zeros(()), atol=0.1)
        assert int(synced["num_batches_tracked"]) == 2
        assert int(synced["num_batches_empty"]) == 2
        assert int(synced["num_batches_nonfinite"]) == 0


def test_two_processes_with_different_distributions_pool_mean_and_variance(tmp_path):
    ranks = _run_pool(tmp_path, "different")
    locals_ = [r["local"] for r in ranks]
    # Layer-wise unit, one batch of the same size on each worker: the synced statistics are
    # those of all inputs together.
    both = torch.cat([r["inputs"][1][0].double() for r in ranks])
    std, mean = torch.std_mean(both, correction=0)
    synced = ranks[0]["synced"][1]
    torch.testing.assert_close(synced["running_mean"].double(), mean, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(synced["running_std"].double(), std, rtol=1e-6, atol=1e-6)
    # Equal weights of the stds (the former average) would be far off: the means differ.
    average_std = sum(s[1]["running_std"].double() for s in locals_) / 2
    assert (average_std - std).abs() > 0.5
    # Channel-wise unit, 2 batches against 1: weighted 2:1.
    mean, std = _pooled([s[0] for s in locals_])
    synced = ranks[0]["synced"][0]
    torch.testing.assert_close(synced["running_mean"].double(), mean, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(synced["running_std"].double(), std, rtol=1e-6, atol=1e-6)
    assert int(synced["num_batches_tracked"]) == 3
    plain = sum(s[0]["running_mean"].double() for s in locals_) / 2
    assert ((plain - mean).abs() > 0.1).all(), "the weights must matter in this case"


# ---------------------------------------------------------------------------------------------
# A short Shapes run, images without objects kept (FILTER_EMPTY_ANNOTATIONS False).


@pytest.fixture
def shapes_some_empty(tmp_path):
    """8 images of 128x128, objects removed from 5 of them."""
    json_file = generate_shapes_split(tmp_path, DATASET, 8, (128, 128), seed=3)
    data = json.loads(json_file.read_text())
    empty = {image["id"] for image in data["images"][:5]}
    data["annotations"] = [a for a in data["annotations"] if a["image_id"] not in empty]
    json_file.write_text(json.dumps(data))
    register_coco_instances(
        DATASET, {"thing_classes": list(SHAPE_CLASSES)}, str(json_file), str(tmp_path / DATASET)
    )
    yield
    DatasetCatalog.remove(DATASET)
    MetadataCatalog.remove(DATASET)


def test_shapes_run_with_empty_images_realigns_every_unit_on_statistics(
    shapes_some_empty, tmp_path, caplog
):
    cfg = load_pwlu_config(
        CONFIG,
        [
            *("OUTPUT_DIR", str(tmp_path / "run"), "SEED", "0"),
            *("DATASETS.TRAIN", f"('{DATASET}',)", "DATASETS.TEST", "()"),
            *("DATALOADER.FILTER_EMPTY_ANNOTATIONS", "False", "DATALOADER.NUM_WORKERS", "0"),
            *("INPUT.MIN_SIZE_TRAIN", "(128,)", "INPUT.MAX_SIZE_TRAIN", "128"),
            *("SOLVER.IMS_PER_BATCH", "1", "SOLVER.MAX_ITER", "7", "SOLVER.STEPS", "(100,)"),
            *("SOLVER.WARMUP_ITERS", "2", "SOLVER.CHECKPOINT_PERIOD", "100"),
            *("MODEL.PWLU.STATISTICS_ITERS", "6"),
        ],
    )
    trainer = PWLUTrainer(cfg)
    trainer.resume_or_load(resume=False)
    with caplog.at_level(logging.INFO, logger="pwlu_det.engine.realign_hook"):
        trainer.train()
    fallbacks = trainer.storage.history("pwlu/fallback_units").latest()
    assert fallbacks == 0, f"{fallbacks} units fell back to a min_width range"
    units = {n: m for n, m in trainer.model.named_modules() if isinstance(m, PWLU)}
    assert all(m.phase == Phase.TRAINING for m in units.values())
    mask = [m for n, m in units.items() if n.startswith("roi_heads.mask_head.")]
    # The run did meet mask heads without RoIs in Phase I, and saw RoIs too.
    assert all(int(m.num_batches_empty) > 0 for m in mask)
    assert all(int(m.num_batches_tracked) > 0 for m in mask)
    assert all(torch.isfinite(m.left_bound).all() for m in units.values())
    empty = int(mask[0].num_batches_empty)
    assert trainer.storage.history("pwlu/skipped_empty_inputs").latest() == empty * len(mask)
    assert f"roi_heads.mask_head: {len(mask)} modules" in caplog.text
