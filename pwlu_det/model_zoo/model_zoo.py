"""Files installed inside the package: ``configs/`` and the comparison's ``results.csv``.

``setup.py`` links (or, where links fail, copies) the repository's ``configs`` and
``benchmarks/results/shapes`` into this folder before the build, as Detectron2's ``setup.py``
does for its model zoo, and installs the yaml/py configs and ``results.csv`` as package data.
"""

from __future__ import annotations

import os
from importlib import resources

__all__ = ["documented_results_file", "get_config_file"]

_PACKAGE = "pwlu_det.model_zoo"


def get_config_file(config_path: str) -> str:
    """The installed path of a config, given relative to the repository's ``configs/``.

    Args:
        config_path: e.g. ``"Shapes/mask_rcnn_R_18_FPN_pwlu.yaml"``.

    Raises:
        FileNotFoundError: naming the config, when pwlu_det does not ship it.
    """
    path = resources.files(_PACKAGE) / "configs" / config_path
    if not path.is_file():
        raise FileNotFoundError(
            f"{config_path} is not a config shipped with pwlu_det (looked in {path}); "
            "give a path relative to the repository's configs/, e.g. "
            "Shapes/mask_rcnn_R_18_FPN_pwlu.yaml"
        )
    return os.fspath(path)


def documented_results_file() -> str:
    """The installed copy of ``benchmarks/results/shapes/results.csv``: the measured Shapes
    comparison that README quotes and the demo compares itself with. The file may be absent
    (a build without it); readers treat that as "nothing documented"."""
    return os.fspath(resources.files(_PACKAGE) / "documented" / "results.csv")
