"""Registration of the embedded "shapes" dataset with Detectron2, and dataset file checks."""

from __future__ import annotations

import difflib
import logging
import os
from collections.abc import Iterable
from pathlib import Path

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets import register_coco_instances

from pwlu_det.utils.user_errors import USAGE, user_errors

from .shapes import (
    SHAPE_CLASSES,
    SHAPES_SPLITS,
    default_shapes_root,
    ensure_shapes_dataset,
    shapes_split_paths,
)

__all__ = ["DatasetNotRegisteredError", "check_dataset_files", "register_shapes_datasets"]

logger = logging.getLogger(__name__)

#: Metadata keys that name files or directories a registered dataset needs, and their kind.
_PATH_KEYS = {
    "json_file": "file",
    "image_root": "dir",
    "panoptic_json": "file",
    "panoptic_root": "dir",
    "sem_seg_root": "dir",
    "dirname": "dir",
    "image_dir": "dir",
    "gt_dir": "dir",
}


class DatasetNotRegisteredError(KeyError):
    """A dataset name that is not in Detectron2's ``DatasetCatalog``."""

    def __str__(self) -> str:  # KeyError would show the message quoted, as a repr
        return str(self.args[0]) if self.args else ""


def register_shapes_datasets(
    root: str | os.PathLike | None = None, generate: bool = True
) -> list[str]:
    """Register ``shapes_train``, ``shapes_val`` and ``shapes_tune`` (COCO format) with Detectron2.

    Names already in ``DatasetCatalog`` are left alone if they point at the same files.

    Args:
        root: dataset root; default ``$DETECTRON2_DATASETS/shapes`` (``datasets/shapes``).
        generate: generate the data first if it is missing or outdated
            (:func:`~pwlu_det.data.shapes.ensure_shapes_dataset`). Without it, registration is
            lazy: loading fails later if the files are missing (see :func:`check_dataset_files`).

    Returns:
        The dataset names, e.g. ``["shapes_train", "shapes_val", "shapes_tune"]``.

    Raises:
        ValueError: if a name is already registered with other files.
    """
    if generate:
        root = ensure_shapes_dataset(root)
    elif root is None:
        root = default_shapes_root()
    registered = set(DatasetCatalog.list())
    for name, spec in SHAPES_SPLITS.items():
        image_root, json_file = shapes_split_paths(root, spec.split)
        if name in registered:
            existing = getattr(MetadataCatalog.get(name), "json_file", None)
            if existing is None or os.path.abspath(existing) != os.path.abspath(json_file):
                raise ValueError(
                    f"dataset {name!r} is already registered with json_file={existing!r}, not "
                    f"{str(json_file)!r}; remove it first (DatasetCatalog.remove, "
                    "MetadataCatalog.remove)"
                )
            logger.debug("%s is already registered", name)
            continue
        register_coco_instances(
            name, {"thing_classes": list(SHAPE_CLASSES)}, str(json_file), str(image_root)
        )
        logger.info("registered %s: %s, images in %s", name, json_file, image_root)
    return list(SHAPES_SPLITS)


def _show(path: str) -> str:
    """``path`` quoted, followed by its absolute form when it is relative."""
    return repr(path) if os.path.isabs(path) else f"{path!r} (= {os.path.abspath(path)!r})"


def _how_to_prepare(name: str, paths: list[str]) -> str:
    """A hint on how to obtain the files of dataset ``name``."""
    if name in SHAPES_SPLITS or name.startswith("shapes_"):
        json_files = [p for p in paths if p.endswith(".json")]
        root = Path(json_files[0]).parent.parent if json_files else None
        if root is None or os.path.abspath(root) == os.path.abspath(default_shapes_root()):
            command = "python tools/prepare_shapes.py"
        else:
            command = f"python tools/prepare_shapes.py --root {root}"
        return (
            f"Generate the shapes dataset with `{command}` (or call "
            "pwlu_det.data.ensure_shapes_dataset(root))."
        )
    if name.startswith("coco_") or any(f"{os.sep}coco{os.sep}" in p for p in paths):
        current = os.environ.get("DETECTRON2_DATASETS")
        current = f"currently {current!r}" if current else "currently unset: 'datasets'"
        return (
            "Download COCO 2017 from https://cocodataset.org/#download (train2017.zip, "
            "val2017.zip, annotations_trainval2017.zip) and lay it out as "
            "$DETECTRON2_DATASETS/coco/{annotations,train2017,val2017}, or set "
            f"DETECTRON2_DATASETS ({current}) to the directory that holds coco/ before "
            "starting Python: Detectron2 reads it when detectron2.data is imported."
        )
    return (
        "Put the files there, or register the dataset again with the right paths "
        "(DatasetCatalog.remove and MetadataCatalog.remove first)."
    )


def _unknown_name_message(name: str, registered: list[str]) -> str:
    """Why ``name`` is unknown, with registered names that look like it."""
    similar = difflib.get_close_matches(name, registered, n=6, cutoff=0.6)
    head = name.split("_")[0] + "_"
    same_start = sorted(
        (n for n in registered if n.startswith(head) and n not in similar),
        key=lambda n: (-len(os.path.commonprefix([n, name])), n),
    )
    similar = (similar + same_start)[:8]
    hint = (
        f"registered names like it: {', '.join(similar)}"
        if similar
        else f"{len(registered)} names are registered, none like it"
    )
    return (
        f"dataset {name!r} is not registered ({hint}). Register it with "
        "detectron2.data.datasets.register_coco_instances(name, {}, json_file, image_root), or "
        "call pwlu_det.data.register_shapes_datasets() for the shapes splits."
    )


def check_dataset_files(dataset_names: str | Iterable[str]) -> None:
    """Check that the files of registered datasets exist, before a long run needs them.

    For each name, the paths recorded in its ``MetadataCatalog`` entry (``json_file``,
    ``image_root`` and the like) must exist. Datasets registered without such paths are not
    checked.

    Args:
        dataset_names: one name or several, e.g. ``cfg.DATASETS.TRAIN``.

    Raises:
        DatasetNotRegisteredError: (a ``KeyError``) for a name not in ``DatasetCatalog``; the
            message lists registered names that look like it and how to register one (a usage
            error of the tools).
        FileNotFoundError: naming each dataset with missing paths, the paths, and how to
            prepare the data (COCO 2017 layout, or ``tools/prepare_shapes.py`` for shapes) (a
            user error of the tools).
    """
    names = [dataset_names] if isinstance(dataset_names, str) else list(dataset_names)
    registered = DatasetCatalog.list()
    for name in names:
        if name not in registered:
            with user_errors(DatasetNotRegisteredError, status=USAGE):  # a name in the config
                # the shapes splits are suggested even before they are registered
                known = sorted({*registered, *SHAPES_SPLITS})
                raise DatasetNotRegisteredError(_unknown_name_message(name, known))
    problems, hints = [], []
    for name in names:
        metadata = MetadataCatalog.get(name)
        missing = []
        for key, kind in _PATH_KEYS.items():
            path = getattr(metadata, key, None)
            if path is None:
                continue
            exists = os.path.isfile(path) if kind == "file" else os.path.isdir(path)
            if not exists:
                missing.append((key, kind, str(path)))
        if missing:
            listed = "; ".join(f"{key} {kind} {_show(path)}" for key, kind, path in missing)
            problems.append(f"dataset {name!r}: missing {listed}.")
            hint = _how_to_prepare(name, [path for _, _, path in missing])
            if hint not in hints:
                hints.append(hint)
    if problems:
        with user_errors(FileNotFoundError):
            raise FileNotFoundError("\n".join(problems + hints))
