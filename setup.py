#!/usr/bin/env python
"""Build and install pwlu_det.

The C++ extension ``pwlu_det._C`` is compiled against the installed PyTorch, so install with
``pip install --no-build-isolation -e .`` (an isolated build would not see that PyTorch).
"""

import os
import re
import shutil
from pathlib import Path

from setuptools import find_packages, setup

ROOT = Path(__file__).resolve().parent


def get_version() -> str:
    init_py = (ROOT / "pwlu_det" / "__init__.py").read_text()
    return re.search(r'^__version__ = "([^"]+)"', init_py, re.M).group(1)


def get_extensions() -> list:
    """One extension, ``pwlu_det._C``, from every ``.cpp`` under ``pwlu_det/csrc``."""
    sources = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "pwlu_det" / "csrc").rglob("*.cpp"))
    if not sources:
        return []
    try:
        from torch.utils.cpp_extension import CppExtension
    except ImportError as e:
        raise RuntimeError(
            "pwlu_det builds a C++ extension against your installed PyTorch, which this build "
            "cannot import: install torch first, then `pip install --no-build-isolation -e .`"
        ) from e
    return [
        CppExtension(
            "pwlu_det._C",
            sources,
            include_dirs=[str(ROOT / "pwlu_det" / "csrc")],
            extra_compile_args={"cxx": ["-O3", "-fopenmp"]},
            extra_link_args=["-fopenmp"],
        )
    ]


#: Repository folders installed inside the package (``pwlu_det.model_zoo``): folder in the
#: package -> (source folder, the files of it to install).
MODEL_ZOO_FILES = {
    "configs": ("configs", ["**/*.yaml", "**/*.py"]),
    "documented": ("benchmarks/results/shapes", ["results.csv"]),
}


def get_model_zoo_files() -> list[str]:
    """Link each :data:`MODEL_ZOO_FILES` source folder into ``pwlu_det/model_zoo`` (a copy
    where links are not possible), as Detectron2's setup.py links its configs; returns the
    package-data patterns, relative to ``pwlu_det/model_zoo``."""
    zoo = ROOT / "pwlu_det" / "model_zoo"
    patterns = []
    for name, (source, globs) in MODEL_ZOO_FILES.items():
        source_dir, destination = ROOT / source, zoo / name
        if source_dir.is_dir():  # a source checkout: refresh the link (an sdist has the copy)
            if destination.is_symlink():
                destination.unlink()
            elif destination.is_dir():
                shutil.rmtree(destination)
            try:
                os.symlink(os.path.relpath(source_dir, zoo), destination)
            except OSError:
                shutil.copytree(source_dir, destination)
        patterns += [f"{name}/{pattern}" for pattern in globs]
    return patterns


def get_cmdclass() -> dict:
    extensions = get_extensions()
    if not extensions:
        return {}
    from torch.utils.cpp_extension import BuildExtension

    return {"build_ext": BuildExtension}


setup(
    name="pwlu_det",
    version=get_version(),
    description="Piecewise Linear Units (PWLU, ICCV 2021) for Detectron2 detectors",
    packages=find_packages(exclude=("tests", "tests.*", "tools", "configs")),
    python_requires=">=3.10",
    # PyTorch, torchvision and Detectron2 are not listed: like Detectron2 itself, pwlu_det uses
    # the ones the user installed (`make setup` installs pinned versions into .venv).
    install_requires=[
        "numpy>=1.24",
        "pillow>=10",
        "pycocotools>=2.0.2",
        "fvcore>=0.1.5,<0.1.6",
        "iopath>=0.1.7,<0.1.10",
        "matplotlib",
        "tabulate",
    ],
    extras_require={
        "export": ["onnx", "onnxruntime"],
        "dev": ["pytest", "ruff"],
    },
    ext_modules=get_extensions(),
    cmdclass=get_cmdclass(),
    package_data={"pwlu_det.model_zoo": get_model_zoo_files()},
    zip_safe=False,
)
