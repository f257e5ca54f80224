"""COCOEvaluator gives exactly known AP on hand-made data, through pycocotools and, where
``detectron2._C`` is built (Detectron2 set up from source), through its fast C++ evaluation."""

import json

import pytest
import torch
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets import register_coco_instances
from detectron2.evaluation import COCOEvaluator
from detectron2.structures import Boxes, Instances

from pwlu_det.engine.trainer import fast_coco_eval_available

IMAGE_SIZE = (100, 120)  # height, width
# Two images, one ground-truth box each (XYWH), of category id 7 (a non-contiguous id on
# purpose: the evaluator must map it back from the contiguous class 0).
GT_BOXES = {1: [10.0, 20.0, 40.0, 30.0], 2: [50.0, 40.0, 30.0, 50.0]}


@pytest.fixture
def coco_dataset(tmp_path):
    name = f"tiny_coco_{tmp_path.name}"
    coco = {
        "images": [
            {"id": i, "file_name": f"{i}.jpg", "height": IMAGE_SIZE[0], "width": IMAGE_SIZE[1]}
            for i in GT_BOXES
        ],
        "annotations": [
            {
                "id": i,
                "image_id": i,
                "category_id": 7,
                "bbox": box,
                "area": box[2] * box[3],
                "iscrowd": 0,
            }
            for i, box in GT_BOXES.items()
        ],
        "categories": [{"id": 7, "name": "thing"}],
    }
    json_file = tmp_path / "instances.json"
    json_file.write_text(json.dumps(coco))
    register_coco_instances(name, {}, str(json_file), str(tmp_path))
    DatasetCatalog.get(name)  # fills the metadata's id mapping
    yield name
    DatasetCatalog.remove(name)
    MetadataCatalog.remove(name)


def _xyxy(box):
    x, y, w, h = box
    return [x, y, x + w, y + h]


@pytest.fixture(
    params=[
        pytest.param(False, id="pycocotools"),
        pytest.param(
            True,
            id="fast_impl",
            marks=pytest.mark.skipif(
                not fast_coco_eval_available(),
                reason="detectron2._C is not built (Detectron2 v0.6 set-up): no fast evaluation",
            ),
        ),
    ]
)
def use_fast_impl(request):
    return request.param


def _evaluate(dataset, tmp_path, predictions, use_fast_impl):
    """predictions: {image_id: [(xyxy box, score), ...]}; returns the bbox AP dict."""
    evaluator = COCOEvaluator(
        dataset,
        tasks=("bbox",),
        distributed=False,
        output_dir=str(tmp_path / "eval"),
        use_fast_impl=use_fast_impl,
    )
    evaluator.reset()
    for image_id, dets in predictions.items():
        instances = Instances(IMAGE_SIZE)
        instances.pred_boxes = Boxes(torch.tensor([d[0] for d in dets]).reshape(-1, 4))
        instances.scores = torch.tensor([d[1] for d in dets])
        instances.pred_classes = torch.zeros(len(dets), dtype=torch.int64)
        evaluator.process([{"image_id": image_id}], [{"instances": instances}])
    return evaluator.evaluate()["bbox"]


def test_predictions_equal_to_ground_truth_give_ap_100(coco_dataset, tmp_path, use_fast_impl):
    results = _evaluate(
        coco_dataset,
        tmp_path,
        {i: [(_xyxy(box), 0.9)] for i, box in GT_BOXES.items()},
        use_fast_impl,
    )
    assert results["AP"] == pytest.approx(100.0)
    assert results["AP50"] == pytest.approx(100.0)


def test_false_positive_between_true_positives_gives_known_ap(
    coco_dataset, tmp_path, use_fast_impl
):
    # Ranked by score: TP (recall 1/2, precision 1), FP (1/2, 1/2), TP (1, 2/3).
    # COCO interpolates precision at 101 recall points: 51 points in [0, 0.5] get 1 and the
    # 50 points in (0.5, 1] get 2/3, so AP = (51 + 50 * 2/3) / 101 at every IoU threshold.
    far_away = [100.0, 0.0, 119.0, 10.0]
    predictions = {
        1: [(_xyxy(GT_BOXES[1]), 0.9), (far_away, 0.8)],
        2: [(_xyxy(GT_BOXES[2]), 0.7)],
    }
    results = _evaluate(coco_dataset, tmp_path, predictions, use_fast_impl)
    expected = 100.0 * (51 + 50 * 2 / 3) / 101
    assert results["AP"] == pytest.approx(expected, abs=1e-9)
    assert results["AP75"] == pytest.approx(expected, abs=1e-9)
    assert results["AP"] < 100.0
