"""Compatibility fixes for the Detectron2 sources that set-up installs, one set per source.

Two kinds of source are known, each with its own :class:`Source` and fixes:

- :data:`V06_SDIST`: the ``pb1-detectron2==0.6`` sdist (Detectron2 v0.6 without its C++ sources).
  It predates NumPy 1.24, Pillow 10, setuptools 81 and PyTorch 2 (no caffe2); every fix is
  required, and a file that has neither the old nor the new text stops the patch.
- :data:`SOURCE_TREE`: a Detectron2 source tree (a clone of the repository, with
  ``detectron2/layers/csrc``). Measured on main at 02b5c4e (2026-06-06): only ``model_zoo.py``'s
  ``import pkg_resources`` needs a change. Each of its fixes applies where its old text is found
  and is skipped elsewhere, so a tree that already dropped ``pkg_resources`` is left as it is.

Each :class:`Fix` is one textual change with the reason for it. Applying is idempotent: a fix whose
new text is already present is skipped. Only the standard library is used: the set-up script runs
this before anything is installed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "FIXES",
    "NUMPY_ALIAS_FILES",
    "SOURCE_TREE",
    "V06_SDIST",
    "PatchError",
    "Source",
    "apply_patch",
    "identify_source",
]


class PatchError(RuntimeError):
    """The source tree is not the Detectron2 source its fixes were written for."""


@dataclass(frozen=True)
class Fix:
    """Replace ``old`` by ``new`` once in ``path`` (relative to the source root)."""

    path: str
    old: str
    new: str
    reason: str


_OPTIONAL_C_IMPORT = Fix(
    path="",
    old="from detectron2 import _C\n",
    new=(
        "try:\n"
        "    from detectron2 import _C\n"
        "except ImportError:  # pwlu_det compat: installed without the C++ extension\n"
        "    _C = None\n"
    ),
    reason="the sdist has no C++ sources; only rotated boxes, deformable conv and the fast "
    "COCO evaluator need _C (use COCOEvaluator(use_fast_impl=False))",
)


def _optional_c_import(path: str) -> Fix:
    return Fix(path, _OPTIONAL_C_IMPORT.old, _OPTIONAL_C_IMPORT.new, _OPTIONAL_C_IMPORT.reason)


# model_zoo.py's only use of pkg_resources (removed in setuptools 81), in v0.6 and in main.
_NO_PKG_RESOURCES: tuple[Fix, ...] = (
    Fix(
        "detectron2/model_zoo/model_zoo.py",
        "    cfg_file = pkg_resources.resource_filename(\n"
        '        "detectron2.model_zoo", os.path.join("configs", config_path)\n'
        "    )\n",
        '    cfg_file = os.path.join(os.path.dirname(__file__), "configs", config_path)'
        "  # pwlu_det compat\n",
        "pkg_resources was removed in setuptools 81",
    ),
    Fix(
        "detectron2/model_zoo/model_zoo.py",
        "import pkg_resources\n",
        "",
        "pkg_resources was removed in setuptools 81",
    ),
)

# The v0.6 sdist's fixes.
FIXES: tuple[Fix, ...] = (
    Fix(
        "setup.py",
        "    ext_modules=get_extensions(),\n",
        "    ext_modules=[],  # pwlu_det compat: the sdist has no C++ sources to build\n",
        "building detectron2._C fails: the sdist lacks layers/csrc",
    ),
    Fix(
        "setup.py",
        '    package_data={"detectron2.model_zoo": get_model_zoo_configs()},\n',
        '    package_data={"detectron2.model_zoo": ["configs/**/*.yaml", "configs/**/*.py"]},'
        "  # pwlu_det compat\n",
        "the sdist keeps the model-zoo configs inside the package, where get_model_zoo_configs() "
        "does not look, so they were left out of the install",
    ),
    Fix(
        "setup.py",
        '        "black==21.4b2",\n',
        '        "black",  # pwlu_det compat: 21.4b2 does not import with current click\n',
        "black 21.4b2 is incompatible with click >= 8.1 (used only by LazyConfig.save)",
    ),
    *_NO_PKG_RESOURCES,
    Fix(
        "detectron2/data/transforms/transform.py",
        "    def __init__(self, src_rect, output_size, interp=Image.LINEAR, fill=0):\n",
        "    def __init__(self, src_rect, output_size, interp=Image.BILINEAR, fill=0):\n",
        "Image.LINEAR (an alias of BILINEAR) was removed in Pillow 10",
    ),
    Fix(
        "detectron2/export/__init__.py",
        "from .api import *\n",
        "try:\n"
        "    from .api import *\n"
        "except ImportError:  # pwlu_det compat: caffe2 is gone from PyTorch 2; TorchScript and\n"
        "    pass  # ONNX export (TracingAdapter, scripting_with_instances) do not need it\n",
        "detectron2.export imports caffe2 at import time",
    ),
    _optional_c_import("detectron2/layers/deform_conv.py"),
    _optional_c_import("detectron2/layers/rotated_boxes.py"),
    _optional_c_import("detectron2/layers/roi_align_rotated.py"),
    _optional_c_import("detectron2/evaluation/fast_eval_api.py"),
)

# np.int, np.bool, np.float, np.str and np.object were removed in NumPy 1.24; they were aliases
# of the Python builtins, so the builtin is an exact replacement.
NUMPY_ALIAS = re.compile(r"\bnp\.(int|bool|float|str|object)\b")
NUMPY_ALIAS_FILES: tuple[str, ...] = (
    "detectron2/data/build.py",
    "detectron2/data/datasets/pascal_voc.py",
    "detectron2/evaluation/pascal_voc_evaluation.py",
    "detectron2/evaluation/sem_seg_evaluation.py",
    "detectron2/structures/masks.py",
    "detectron2/utils/video_visualizer.py",
    "detectron2/utils/visualizer.py",
)


@dataclass(frozen=True)
class Source:
    """A kind of Detectron2 source and the fixes it needs.

    Attributes:
        name: names the source in messages and in the set-up stamp.
        fixes: the textual fixes.
        numpy_alias_files: files in which ``np.int`` & co. become the builtins.
        strict: every fix must find its old or its new text (else :class:`PatchError`); when
            False, a fix whose old text is absent is skipped.
    """

    name: str
    fixes: tuple[Fix, ...]
    numpy_alias_files: tuple[str, ...] = ()
    strict: bool = True


V06_SDIST = Source("Detectron2 v0.6 sdist (pb1-detectron2==0.6)", FIXES, NUMPY_ALIAS_FILES)
SOURCE_TREE = Source(
    "Detectron2 source tree (fixes measured on main at 02b5c4e)", _NO_PKG_RESOURCES, strict=False
)


def identify_source(root: str | Path) -> Source:
    """:data:`SOURCE_TREE` for a tree with the C++ sources, else :data:`V06_SDIST`.

    The v0.6 sdist and an installed copy of a package have no ``detectron2/layers/csrc``.
    """
    root = Path(root)
    if not (root / "detectron2" / "__init__.py").is_file():
        raise PatchError(f"{root} has no detectron2/__init__.py: not a Detectron2 source tree")
    return SOURCE_TREE if (root / "detectron2" / "layers" / "csrc").is_dir() else V06_SDIST


def _read(root: Path, rel: str, source: Source) -> str:
    path = root / rel
    if not path.is_file():
        raise PatchError(f"{path} is missing: {root} is not a {source.name}")
    return path.read_text(encoding="utf-8")


def apply_patch(root: str | Path, source: Source | None = None) -> list[str]:
    """Apply a source's fixes to the Detectron2 source tree at ``root``, in place.

    Args:
        root: the folder holding ``setup.py`` and ``detectron2/`` (an extracted sdist or a
            clone), or a folder holding just the ``detectron2`` package (an installed copy);
            fixes to files that are absent from an installed copy (``setup.py``) are skipped.
        source: which fixes; by default :func:`identify_source`.

    Returns:
        The relative paths of the files that changed (empty when already patched).

    Raises:
        PatchError: with a strict source, a file has neither the original nor the patched text.
    """
    root = Path(root)
    source = source or identify_source(root)
    texts: dict[str, str] = {}
    for fix in source.fixes:
        if fix.path == "setup.py" and not (root / "setup.py").exists():
            continue
        text = texts[fix.path] if fix.path in texts else _read(root, fix.path, source)
        if fix.new and fix.new in text:
            pass
        elif fix.old in text:
            text = text.replace(fix.old, fix.new, 1)
        elif fix.new and source.strict:
            raise PatchError(
                f"{root / fix.path}: neither the text of the {source.name} nor the patched text "
                f"was found for the fix '{fix.reason}'"
            )
        texts[fix.path] = text
    for rel in source.numpy_alias_files:
        texts[rel] = NUMPY_ALIAS.sub(r"\1", texts.get(rel) or _read(root, rel, source))

    changed = []
    for rel, text in texts.items():
        path = root / rel
        if path.read_text(encoding="utf-8") != text:
            path.write_text(text, encoding="utf-8")
            changed.append(rel)
    return changed
