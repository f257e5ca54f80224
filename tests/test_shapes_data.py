"""The embedded "shapes" dataset: deterministic, valid COCO, occlusions, Detectron2 registration."""

import json
import os

import cv2
import numpy as np
import pytest
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets import register_coco_instances
from pycocotools.coco import COCO

from pwlu_det.data import shapes
from pwlu_det.data.catalog import (
    DatasetNotRegisteredError,
    check_dataset_files,
    register_shapes_datasets,
)
from pwlu_det.data.shapes import (
    SHAPE_CLASSES,
    ShapesSplit,
    ensure_shapes_dataset,
    generate_shapes_split,
    render_shapes_image,
    shapes_split_paths,
)
from pwlu_det.utils.file_io import atomic_write

NUM_IMAGES = 6
SEED = 0


def _read_images(image_dir):
    return {p.name: cv2.imread(str(p)) for p in sorted(image_dir.glob("*.jpg"))}


@pytest.fixture(scope="module")
def tiny_root(tmp_path_factory):
    """Tiny train (6 images), val (4) and tune (2) splits, generated once for the module."""
    root = tmp_path_factory.mktemp("shapes")
    generate_shapes_split(root, "train", NUM_IMAGES, seed=SEED)
    generate_shapes_split(root, "val", 4, seed=1)
    generate_shapes_split(root, "tune", 2, seed=2)
    return root


@pytest.fixture
def clean_catalog():
    """Remove every DatasetCatalog/MetadataCatalog entry that the test adds."""
    datasets, metadata = set(DatasetCatalog.list()), set(MetadataCatalog.list())
    yield
    for name in set(DatasetCatalog.list()) - datasets:
        DatasetCatalog.remove(name)
    for name in set(MetadataCatalog.list()) - metadata:
        MetadataCatalog.remove(name)


@pytest.fixture
def tiny_splits(monkeypatch):
    """Make ensure_shapes_dataset generate 3 + 2 + 2 images instead of the real sizes."""
    monkeypatch.setitem(shapes.SHAPES_SPLITS, "shapes_train", ShapesSplit("train", 3, 0))
    monkeypatch.setitem(shapes.SHAPES_SPLITS, "shapes_val", ShapesSplit("val", 2, 1))
    monkeypatch.setitem(shapes.SHAPES_SPLITS, "shapes_tune", ShapesSplit("tune", 2, 2))


def test_generation_is_deterministic(tiny_root, tmp_path):
    json_file = generate_shapes_split(tmp_path, "train", NUM_IMAGES, seed=SEED)
    _, reference_json = shapes_split_paths(tiny_root, "train")
    assert json_file.read_bytes() == reference_json.read_bytes()
    images = _read_images(tmp_path / "train")
    reference = _read_images(tiny_root / "train")
    assert sorted(images) == [f"{i:06d}.jpg" for i in range(NUM_IMAGES)]
    assert images.keys() == reference.keys()
    for name, image in images.items():
        np.testing.assert_array_equal(image, reference[name])
    # ... and the output does depend on the seed and the split name.
    other = generate_shapes_split(tmp_path / "other", "train", NUM_IMAGES, seed=SEED + 1)
    assert (
        json.loads(other.read_text())["annotations"]
        != json.loads(json_file.read_text())["annotations"]
    )
    assert not np.array_equal(
        render_shapes_image(SEED, "train", 0)[0], render_shapes_image(SEED, "val", 0)[0]
    )


# pycocotools 2.x decoding under NumPy 2 warns about __array__'s copy keyword.
@pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")
def test_annotations_are_valid_coco(tiny_root):
    _, json_file = shapes_split_paths(tiny_root, "train")
    coco = COCO(str(json_file))
    assert [coco.cats[i]["name"] for i in sorted(coco.cats)] == list(SHAPE_CLASSES)
    assert sorted(coco.cats) == list(range(1, len(SHAPE_CLASSES) + 1))
    assert len(coco.imgs) == NUM_IMAGES
    assert len(coco.anns) >= NUM_IMAGES  # every image has at least one object
    for image in coco.imgs.values():
        on_disk = cv2.imread(str(tiny_root / "train" / image["file_name"]))
        assert on_disk.shape == (image["height"], image["width"], 3)
    for ann in coco.anns.values():
        image = coco.imgs[ann["image_id"]]
        height, width = image["height"], image["width"]
        assert ann["category_id"] in coco.cats
        assert ann["iscrowd"] == 0
        assert ann["area"] > 0
        assert ann["segmentation"], ann["id"]
        for polygon in ann["segmentation"]:
            assert len(polygon) >= 6 and len(polygon) % 2 == 0
            xs, ys = np.array(polygon[0::2]), np.array(polygon[1::2])
            assert xs.min() >= 0 and xs.max() <= width and ys.min() >= 0 and ys.max() <= height
        x, y, w, h = ann["bbox"]
        assert x >= 0 and y >= 0 and w > 0 and h > 0 and x + w <= width and y + h <= height
        # The polygons describe the annotated area and lie within the box.
        mask = coco.annToMask(ann).astype(bool)
        assert abs(mask.sum() - ann["area"]) <= 0.1 * ann["area"] + 4, ann["id"]
        rows, cols = np.nonzero(mask)
        assert cols.min() >= x - 1 and cols.max() <= x + w and rows.min() >= y - 1
        assert rows.max() <= y + h


def test_annotations_are_the_visible_parts_of_occluded_objects(tiny_root):
    _, json_file = shapes_split_paths(tiny_root, "train")
    coco = json.loads(json_file.read_text())
    occluded = 0
    for image in coco["images"]:
        pixels, objects = render_shapes_image(SEED, "train", image["id"] - 1)
        # render_shapes_image is what was written, up to JPEG compression (which smooths the
        # pixel noise away: a mean difference of ~6 levels, against ~50 between images).
        on_disk = cv2.imread(str(tiny_root / "train" / image["file_name"])).astype(np.float32)
        assert np.abs(on_disk - pixels).mean() < 10.0
        anns = [a for a in coco["annotations"] if a["image_id"] == image["id"]]
        assert [a["area"] for a in anns] == [obj.visible_area for obj in objects]
        assert [a["category_id"] for a in anns] == [obj.category_id for obj in objects]
        for obj in objects:
            assert obj.visible_area >= shapes.MIN_VISIBLE_FRACTION * obj.full_area
            occluded += obj.visible_area < obj.full_area
        # Visible masks do not overlap: every pixel belongs to at most one object.
        if objects:
            assert np.stack([obj.visible_mask for obj in objects]).sum(axis=0).max() == 1
    assert occluded > 0


def test_every_object_stays_a_clean_visible_mask():
    """Over more images than the tiny split: >= 30% visible, no holes, no tiny fragments."""
    num_objects = 0
    for index in range(40):
        _, objects = render_shapes_image(7, "check", index)
        num_objects += len(objects)
        for obj in objects:
            assert obj.visible_area >= shapes.MIN_VISIBLE_FRACTION * obj.full_area
            mask = obj.visible_mask.astype(np.uint8)
            _, hierarchy = cv2.findContours(mask, cv2.RETR_CCOMP, cv2.CHAIN_APPROX_SIMPLE)
            assert (hierarchy[0][:, 3] < 0).all(), "a visible mask with a hole"
            _, _, stats, _ = cv2.connectedComponentsWithStats(mask)
            assert stats[1:, cv2.CC_STAT_AREA].min() >= shapes.MIN_FRAGMENT_AREA
    assert num_objects >= 80  # 1-6 objects per image, 3.5 on average


@pytest.mark.usefixtures("clean_catalog")
def test_registration_loads_in_detectron2(tiny_root):
    assert "shapes_train" not in DatasetCatalog.list()
    names = register_shapes_datasets(tiny_root, generate=False)
    assert names == ["shapes_train", "shapes_val", "shapes_tune"]
    register_shapes_datasets(tiny_root, generate=False)  # again: a no-op
    check_dataset_files(names)  # the files exist: no error
    dicts = DatasetCatalog.get("shapes_train")
    assert len(dicts) == NUM_IMAGES
    assert len(DatasetCatalog.get("shapes_val")) == 4
    assert all(os.path.isfile(d["file_name"]) for d in dicts)
    annotations = [a for d in dicts for a in d["annotations"]]
    assert annotations and all(len(a["segmentation"][0]) >= 6 for a in annotations)
    assert {a["category_id"] for a in annotations} <= set(range(len(SHAPE_CLASSES)))
    assert MetadataCatalog.get("shapes_train").thing_classes == list(SHAPE_CLASSES)
    with pytest.raises(ValueError, match="already registered"):
        register_shapes_datasets(tiny_root / "elsewhere", generate=False)


@pytest.mark.usefixtures("clean_catalog")
def test_check_dataset_files_names_missing_coco_paths(tmp_path, monkeypatch):
    monkeypatch.setenv("DETECTRON2_DATASETS", str(tmp_path))
    json_file = tmp_path / "coco" / "annotations" / "instances_val2017.json"
    name = f"coco_2017_val_{tmp_path.name}"
    register_coco_instances(name, {}, str(json_file), str(tmp_path / "coco" / "val2017"))
    with pytest.raises(FileNotFoundError) as info:
        check_dataset_files([name])
    message = str(info.value)
    assert repr(name) in message
    assert str(json_file) in message and str(tmp_path / "coco" / "val2017") in message
    assert "$DETECTRON2_DATASETS/coco/{annotations,train2017,val2017}" in message
    assert str(tmp_path) in message.split("DETECTRON2_DATASETS (")[1]
    # Once the files exist, the check passes.
    (tmp_path / "coco" / "val2017").mkdir(parents=True)
    json_file.parent.mkdir(parents=True)
    json_file.write_text("{}")
    check_dataset_files(name)


def test_check_dataset_files_on_builtin_coco():
    json_file = MetadataCatalog.get("coco_2017_train").json_file
    if os.path.isfile(json_file):
        pytest.skip("COCO 2017 is installed here")
    with pytest.raises(FileNotFoundError, match="'coco_2017_train'") as info:
        check_dataset_files(["coco_2017_train"])
    assert repr(json_file) in str(info.value)


@pytest.mark.usefixtures("clean_catalog")
def test_check_dataset_files_explains_missing_shapes(tmp_path):
    register_shapes_datasets(tmp_path, generate=False)
    with pytest.raises(FileNotFoundError) as info:
        check_dataset_files(["shapes_val"])
    message = str(info.value)
    assert "'shapes_val'" in message
    assert str(tmp_path / "annotations" / "instances_val.json") in message
    assert f"python tools/prepare_shapes.py --root {tmp_path}" in message


def test_check_dataset_files_unknown_name():
    with pytest.raises(KeyError) as info:
        check_dataset_files(["coco_2017_val", "coco_2017_trian"])
    assert isinstance(info.value, DatasetNotRegisteredError)
    message = str(info.value)
    assert message.startswith("dataset 'coco_2017_trian' is not registered")
    assert "coco_2017_train" in message.split("like it:")[1]
    assert "register_coco_instances" in message


@pytest.mark.usefixtures("tiny_splits")
def test_ensure_shapes_dataset_is_idempotent(tmp_path):
    root = ensure_shapes_dataset(tmp_path)
    assert root == tmp_path
    files = sorted(p for p in tmp_path.rglob("*") if p.is_file())
    assert len(files) == 3 + 2 + 2 + 3  # images and three JSON files
    for path in files:
        os.utime(path, ns=(10**9, 10**9))
    ensure_shapes_dataset(tmp_path)
    assert all(path.stat().st_mtime_ns == 10**9 for path in files)
    # A missing image, or force=True, regenerates.
    (tmp_path / "val" / "000001.jpg").unlink()
    ensure_shapes_dataset(tmp_path)
    _, val_json = shapes_split_paths(tmp_path, "val")
    _, train_json = shapes_split_paths(tmp_path, "train")
    assert (tmp_path / "val" / "000001.jpg").is_file()
    assert val_json.stat().st_mtime_ns != 10**9 and train_json.stat().st_mtime_ns == 10**9
    ensure_shapes_dataset(tmp_path, force=True)
    assert train_json.stat().st_mtime_ns != 10**9


@pytest.mark.usefixtures("tiny_splits")
def test_ensure_shapes_dataset_default_root(tmp_path, monkeypatch):
    monkeypatch.setenv("DETECTRON2_DATASETS", str(tmp_path))
    assert ensure_shapes_dataset() == tmp_path / "shapes"
    assert (tmp_path / "shapes" / "annotations" / "instances_train.json").is_file()


def test_interrupted_generation_leaves_no_json(tmp_path, monkeypatch):
    json_file = generate_shapes_split(tmp_path, "train", 2, seed=SEED)
    real_imencode, calls = cv2.imencode, []

    def failing_imencode(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real_imencode(*args, **kwargs)

    monkeypatch.setattr(shapes.cv2, "imencode", failing_imencode)
    with pytest.raises(KeyboardInterrupt):
        generate_shapes_split(tmp_path, "train", 3, seed=SEED)
    assert not json_file.exists()
    # A write that fails half-way leaves neither the target nor a temporary file.
    target = tmp_path / "train" / "partial.jpg"
    with pytest.raises(TypeError):
        atomic_write(target, lambda f: f.write("not bytes"))
    assert sorted(p.name for p in (tmp_path / "train").iterdir()) == ["000000.jpg", "000001.jpg"]
