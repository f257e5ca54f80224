"""Detectron2 as dev/setup_env.py sets it up: the model zoo's configs and the modules that need its
C++ extension import (what the set-up's fixes and build are for)."""

from detectron2 import model_zoo

CONFIGS = {
    "mask_rcnn": "COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_1x.yaml",
    "retinanet": "COCO-Detection/retinanet_R_50_FPN_1x.yaml",
}


def test_model_zoo_configs_are_installed():
    for path in CONFIGS.values():
        cfg_file = model_zoo.get_config_file(path)
        assert cfg_file.endswith(path)


def test_modules_that_use_the_cpp_extension_import():
    # They import detectron2._C: built from a source tree, absent from the patched v0.6 install.
    import detectron2.evaluation.fast_eval_api  # noqa: F401
    import detectron2.export
    import detectron2.layers.deform_conv  # noqa: F401

    assert hasattr(detectron2.export, "TracingAdapter")
