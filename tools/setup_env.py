#!/usr/bin/env python3
"""Set up pwlu_det's environment in ``.venv/``, idempotently (``make setup`` runs this).

Steps, each skipped when already done:

1. create the virtual environment ``.venv/`` (recreated if broken);
2. install the pinned requirements (``requirements.txt``: PyTorch 2.14.1, torchvision 0.29.1, ...);
3. install Detectron2: keep an importable ``detectron2`` that the user built; otherwise download
   the ``pb1-detectron2==0.6`` sdist (a repackaging of Detectron2 v0.6), check its sha256, apply
   ``tools/detectron2_compat.py`` and install its Python package without the C++ extension;
4. install ``pwlu_det`` itself in editable mode (this builds its C++ extension).

Any failure ends with one line saying what failed and what to do; the details are in
``.venv/pwlu_setup/setup.log``. A step records its success only once it is complete, so a
failed run leaves nothing that the next run trips over. Only the standard library is used.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
VENV = ROOT / ".venv"
STATE = VENV / "pwlu_setup"
LOG = STATE / "setup.log"
DOWNLOADS = STATE / "downloads"

D2_REQUIREMENT = "pb1-detectron2==0.6"
D2_DISTRIBUTION = "pb1-detectron2"
D2_SDIST_NAME = "pb1-detectron2-0.6.tar.gz"
# Audited: identical to the Detectron2 v0.6 release but for the package name (DESIGN.md).
D2_SDIST_SHA256 = "5d2e9e51e523ec72f6a31cca04b0a515492e9514b773a3d134cedc0677170b29"

_NETWORK_HINTS = (
    "NewConnectionError",
    "Max retries exceeded",
    "Temporary failure in name resolution",
    "Could not fetch URL",
    "No matching distribution found",
    "Network is unreachable",
    "timed out",
)


class SetupError(Exception):
    """A set-up step failed; ``str()`` is the one line shown to the user."""

    def __init__(self, what: str, todo: str):
        super().__init__(f"{what}. {todo}")
        self.what = what
        self.todo = todo


def sha256_of(path: Path) -> str:
    """Hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def verify_sha256(path: Path, expected: str) -> None:
    """Raise :class:`SetupError` (and delete ``path``) unless its sha256 is ``expected``."""
    actual = sha256_of(path)
    if actual != expected:
        path.unlink()
        raise SetupError(
            f"checksum mismatch for {path}: expected sha256 {expected}, got {actual}",
            "The file was deleted; rerun `make setup` to download it again, and if the "
            "mismatch persists do not use this file (the package on the registry has changed)",
        )


def fingerprint(*paths: Path) -> str:
    """A sha256 over the names and contents of files (missing files count as empty)."""
    digest = hashlib.sha256()
    for path in paths:
        digest.update(str(path.relative_to(ROOT)).encode())
        if path.is_file():
            digest.update(path.read_bytes())
    return digest.hexdigest()


class Stamp:
    """Marks a step done for a given fingerprint of its inputs (a file under ``STATE``)."""

    def __init__(self, name: str, value: str):
        self.path = STATE / f"{name}.done"
        self.value = value

    def is_current(self) -> bool:
        return self.path.is_file() and self.path.read_text() == self.value

    def mark(self) -> None:
        STATE.mkdir(parents=True, exist_ok=True)
        self.path.write_text(self.value)


def log(message: str) -> None:
    print(f"[setup] {message}", flush=True)
    STATE.mkdir(parents=True, exist_ok=True)
    with open(LOG, "a") as f:
        f.write(f"[setup] {message}\n")


def venv_python() -> Path:
    return VENV / "bin" / "python"


def run(cmd: list[str], what: str, todo: str, cwd: Path | None = None) -> str:
    """Run ``cmd`` with its output appended to the log; raise :class:`SetupError` on failure."""
    STATE.mkdir(parents=True, exist_ok=True)
    with open(LOG, "a") as f:
        f.write(f"$ {' '.join(cmd)}\n")
    proc = subprocess.run(cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    with open(LOG, "a") as f:
        f.write(proc.stdout)
    if proc.returncode != 0:
        if any(hint in proc.stdout for hint in _NETWORK_HINTS):
            todo = (
                "The package registry could not be reached or did not have the package: check "
                "network and proxy settings (pip config), then rerun `make setup`"
            )
        raise SetupError(f"{what} failed (details in {LOG})", todo)
    return proc.stdout


_PIP_TODO = "Read the log, fix the cause, rerun `make setup`"


def pip(*args: str, what: str, todo: str = _PIP_TODO) -> str:
    return run([str(venv_python()), "-m", "pip", *args], what, todo)


def venv_works() -> bool:
    python = venv_python()
    if not python.exists():
        return False
    probe = [str(python), "-c", "import ensurepip, pip, sys; print(sys.prefix)"]
    return subprocess.run(probe, capture_output=True).returncode == 0


def ensure_venv() -> None:
    """Create ``.venv`` (or recreate it when it cannot run pip)."""
    if venv_works():
        return
    if VENV.exists():
        print(f"[setup] {VENV} is broken: recreating it", flush=True)
        shutil.rmtree(VENV)
    print(f"[setup] creating {VENV}", flush=True)
    proc = subprocess.run([sys.executable, "-m", "venv", str(VENV)], capture_output=True, text=True)
    if proc.returncode != 0 or not venv_works():
        shutil.rmtree(VENV, ignore_errors=True)
        raise SetupError(
            f"creating {VENV} with {sys.executable} failed: {proc.stderr.strip()[-300:]}",
            "Install Python's venv module (e.g. `apt-get install python3-venv`) and rerun "
            "`make setup`",
        )


def install_requirements() -> None:
    requirements = ROOT / "requirements.txt"
    stamp = Stamp("requirements", fingerprint(requirements))
    if stamp.is_current():
        return
    log("installing pinned requirements (PyTorch 2.14.1, torchvision 0.29.1, ...)")
    pip("install", "-r", str(requirements), what=f"installing {requirements.name}")
    stamp.mark()


def _probe_detectron2() -> str | None:
    """Return ``"ours"``, ``"user"`` or None (not importable) for the venv's detectron2."""
    code = (
        "import importlib.metadata as m, detectron2\n"
        "try:\n"
        f"    m.distribution({D2_DISTRIBUTION!r}); print('ours')\n"
        "except m.PackageNotFoundError:\n"
        "    print('user')\n"
    )
    proc = subprocess.run([str(venv_python()), "-c", code], capture_output=True, text=True)
    return proc.stdout.strip() if proc.returncode == 0 else None


def download_detectron2_sdist() -> Path:
    """Download the audited sdist into ``DOWNLOADS`` (kept for re-installs and tests)."""
    sdist = DOWNLOADS / D2_SDIST_NAME
    if not sdist.is_file():
        log(f"downloading {D2_REQUIREMENT} (sdist)")
        DOWNLOADS.mkdir(parents=True, exist_ok=True)
        # --no-build-isolation: its setup.py imports torch to read its own metadata.
        pip(
            "download",
            "--no-deps",
            "--no-build-isolation",
            "--no-binary",
            D2_DISTRIBUTION,
            "-d",
            str(DOWNLOADS),
            D2_REQUIREMENT,
            what=f"downloading {D2_REQUIREMENT}",
        )
    if not sdist.is_file():
        raise SetupError(
            f"pip did not produce {sdist}",
            "The registry may serve a different file for this version; report it",
        )
    verify_sha256(sdist, D2_SDIST_SHA256)
    return sdist


def install_detectron2() -> None:
    sys.path.insert(0, str(ROOT / "tools"))
    import detectron2_compat

    found = _probe_detectron2()
    if found == "user":
        log("using the detectron2 already installed in .venv (not patched)")
        return
    stamp = Stamp("detectron2", fingerprint(ROOT / "tools" / "detectron2_compat.py"))
    if found == "ours" and stamp.is_current():
        return
    sdist = download_detectron2_sdist()
    with tempfile.TemporaryDirectory(prefix="pwlu_d2_") as tmp:
        with tarfile.open(sdist) as tar:
            if hasattr(tarfile, "data_filter"):  # Python >= 3.10.12 / 3.11.4
                tar.extractall(tmp, filter="data")
            else:
                tar.extractall(tmp)
        source = Path(tmp) / D2_SDIST_NAME.removesuffix(".tar.gz")
        try:
            changed = detectron2_compat.apply_patch(source)
        except detectron2_compat.PatchError as e:
            raise SetupError(f"patching Detectron2 failed: {e}", "Report this") from e
        log(f"patched {len(changed)} Detectron2 files; installing it without the C++ extension")
        pip(
            "install",
            "--no-deps",
            "--no-build-isolation",
            str(source),
            what="installing the patched Detectron2 v0.6",
        )
    run(
        [
            str(venv_python()),
            "-c",
            "import detectron2.modeling, detectron2.export, "
            "detectron2.evaluation; from detectron2 import model_zoo; "
            "model_zoo.get_config_file('COCO-Detection/retinanet_R_50_FPN_1x.yaml')",
        ],
        what="importing the installed Detectron2",
        todo="Read the log; remove .venv and rerun `make setup`",
    )
    stamp.mark()


def project_sources() -> list[Path]:
    csrc = ROOT / "pwlu_det" / "csrc"
    sources = sorted(csrc.rglob("*.cpp")) + sorted(csrc.rglob("*.h")) if csrc.exists() else []
    return [ROOT / "setup.py", ROOT / "pwlu_det" / "__init__.py", *sources]


def install_project() -> None:
    sources = project_sources()
    stamp = Stamp("pwlu_det", fingerprint(*sources))
    if stamp.is_current():
        return
    needs_compiler = any(path.suffix == ".cpp" for path in sources)
    compiler = os.environ.get("CXX", "c++")
    if needs_compiler and shutil.which(compiler) is None:
        raise SetupError(
            f"no C++ compiler found ({compiler!r} is not on PATH) to build pwlu_det's extension",
            "Install one (e.g. `apt-get install g++`) or set CXX, then rerun `make setup`",
        )
    log("installing pwlu_det (editable; builds its C++ extension)")
    pip(
        "install",
        "--no-deps",
        "--no-build-isolation",
        "-e",
        str(ROOT),
        what="building and installing pwlu_det",
    )
    stamp.mark()


def main() -> int:
    if sys.version_info < (3, 10):  # noqa: UP036 (this runs on the system python)
        print(
            f"[setup] FAILED: Python >= 3.10 is required, this is {sys.version.split()[0]}. "
            "Run with a newer python3 (make PYTHON=python3.11 ...)",
            file=sys.stderr,
        )
        return 1
    try:
        ensure_venv()
        install_requirements()
        install_detectron2()
        install_project()
    except SetupError as e:
        print(f"[setup] FAILED: {e}", file=sys.stderr)
        return 1
    print("[setup] environment ready in .venv", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
