"""The configs and the documented results that ship with pwlu_det, as Detectron2's model zoo
ships its configs: ``get_config_file("Shapes/mask_rcnn_R_18_FPN_pwlu.yaml")`` works from any
working directory, in an editable or a regular install."""

from .model_zoo import documented_results_file, get_config_file

__all__ = ["documented_results_file", "get_config_file"]
