#!/usr/bin/env python
"""Generate the embedded "shapes" dataset (shapes_train, shapes_val, shapes_tune) in COCO format.

Does nothing for a split that is already complete, unless ``--force``. The data goes to
``$DETECTRON2_DATASETS/shapes`` (``datasets/shapes`` when the variable is unset) unless
``--root`` says otherwise. The logic is :func:`pwlu_det.data.shapes.ensure_shapes_dataset`.
"""

import argparse
import json
import logging
import time

from pwlu_det.data.shapes import (
    SHAPES_SPLITS,
    default_shapes_root,
    ensure_shapes_dataset,
    shapes_split_paths,
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--root", default=None, help=f"dataset root (default: {default_shapes_root()})"
    )
    parser.add_argument("--force", action="store_true", help="regenerate even if complete")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    start = time.perf_counter()
    root = ensure_shapes_dataset(args.root, force=args.force)
    print(f"shapes dataset in {root.resolve()} ({time.perf_counter() - start:.1f} s)")
    for name, spec in SHAPES_SPLITS.items():
        image_dir, json_file = shapes_split_paths(root, spec.split)
        with open(json_file, encoding="utf-8") as f:
            coco = json.load(f)
        print(
            f"  {name}: {len(coco['images'])} images in {image_dir}, "
            f"{len(coco['annotations'])} annotations in {json_file}"
        )


if __name__ == "__main__":
    main()
