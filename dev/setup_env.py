#!/usr/bin/env python3
"""Set up pwlu_det's environment in ``.venv/``, idempotently (``make setup`` runs this).

Steps, each skipped when already done:

1. create the virtual environment ``.venv/`` (recreated if broken);
2. install the pinned requirements (``requirements.txt``: PyTorch 2.14.1, torchvision 0.29.1, ...);
3. install Detectron2 from one of these sources:

   - ``--detectron2-src PATH`` (``make setup DETECTRON2_SRC=PATH``): a Detectron2 source tree (a
     clone) or a ``.tar.gz`` of one. It is copied, given the fixes ``dev/detectron2_compat.py``
     has for source trees, and installed with its C++ extension ``detectron2._C`` (built for
     the CPU; Detectron2's own rules add CUDA where a GPU and nvcc are present);
   - ``--detectron2-src v0.6``, the default for a new environment: the ``pb1-detectron2==0.6``
     sdist (a repackaging of Detectron2 v0.6) is downloaded, its sha256 checked, it is patched
     and its Python package installed without the C++ extension;
   - nothing given: the Detectron2 that the environment has stays, whether set up here (the
     source and its sha256 are in the stamp) or installed by the user;

4. install ``pwlu_det`` itself in editable mode (this builds its C++ extension);
5. after any install, import every ``pwlu_det`` module, and name the first import that fails.

Any failure ends with one line saying what failed and what to do; the details are in
``.venv/pwlu_setup/setup.log``. A step records its success only once it is complete, so a
failed run leaves nothing that the next run trips over. Only the standard library is used.
"""

from __future__ import annotations

import argparse
import fnmatch
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import detectron2_compat  # dev/, beside this script (on sys.path when it runs)

ROOT = Path(__file__).resolve().parents[1]
VENV = ROOT / ".venv"
STATE = VENV / "pwlu_setup"
LOG = STATE / "setup.log"
DOWNLOADS = STATE / "downloads"


def use_venv(venv: Path) -> None:
    """Set up (or describe) the environment at ``venv`` instead of ``.venv``."""
    global VENV, STATE, LOG, DOWNLOADS
    VENV = Path(venv).absolute()
    STATE = VENV / "pwlu_setup"
    LOG = STATE / "setup.log"
    DOWNLOADS = STATE / "downloads"


D2_REQUIREMENT = "pb1-detectron2==0.6"
D2_DISTRIBUTION = "pb1-detectron2"
D2_SDIST_NAME = "pb1-detectron2-0.6.tar.gz"
# Audited: identical to the Detectron2 v0.6 release but for the package name (docs/decisions.md).
D2_SDIST_SHA256 = "5d2e9e51e523ec72f6a31cca04b0a515492e9514b773a3d134cedc0677170b29"
D2_V06 = "v0.6"  # the --detectron2-src value that selects the sdist above
# Left out of a source tree's copy and its sha256: version control and build outputs.
_TREE_IGNORED = (".git", "build", "dist", "__pycache__", "*.egg-info", "*.so", "*.pyc")

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


_DETECTRON2_PROBE = """
import importlib.metadata as m, importlib.util, json, pathlib, re
spec = importlib.util.find_spec("detectron2")
if spec is None or spec.origin is None:
    print("null")
else:
    folder = pathlib.Path(spec.origin).parent
    dist = None
    for name in ("pb1-detectron2", "detectron2"):
        try:
            m.distribution(name)
            dist = name
            break
        except m.PackageNotFoundError:
            pass
    version = re.search(r"__version__ = .([0-9A-Za-z.+-]+)", (folder / "__init__.py").read_text())
    print(json.dumps({"dist": dist, "file": spec.origin, "version": version and version[1],
                      "has_C": any(folder.glob("_C.*"))}))
"""


def probe_detectron2() -> dict | None:
    """What the venv's ``detectron2`` is (found without importing it), or None when absent.

    Returns:
        ``{"dist": distribution name or None, "file": its __init__.py, "version": ...,
        "has_C": whether the C++ extension detectron2._C is there}``.
    """
    proc = subprocess.run(
        [str(venv_python()), "-c", _DETECTRON2_PROBE], capture_output=True, text=True
    )
    if proc.returncode != 0:
        return None
    return json.loads(proc.stdout.strip().splitlines()[-1])


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


def _ignored(name: str) -> bool:
    return any(fnmatch.fnmatch(name, pattern) for pattern in _TREE_IGNORED)


def tree_sha256(root: Path) -> str:
    """A sha256 over the relative paths and bytes of a source tree's files.

    Version control and build outputs (:data:`_TREE_IGNORED`) do not count, so building in the
    tree leaves its hash unchanged.
    """
    digest = hashlib.sha256()
    for folder, subfolders, files in os.walk(root):
        subfolders[:] = sorted(d for d in subfolders if not _ignored(d))
        for name in sorted(files):
            path = Path(folder) / name
            if _ignored(name) or path.is_symlink():
                continue
            digest.update(str(path.relative_to(root)).encode() + b"\0")
            digest.update(path.read_bytes())
    return digest.hexdigest()


def detectron2_source(requested: str) -> dict:
    """Describe the Detectron2 source named by ``--detectron2-src`` (checked, hashed).

    Returns:
        ``{"source": "v0.6" or the absolute path, "kind": "sdist" | "archive" | "tree",
        "sha256": ...}``.

    Raises:
        SetupError: the path does not exist or is not a Detectron2 source (tree or .tar.gz).
    """
    if requested == D2_V06:
        return {"source": D2_V06, "kind": "sdist", "sha256": D2_SDIST_SHA256}
    path = Path(requested).expanduser().resolve()
    todo = (
        "Set DETECTRON2_SRC to a Detectron2 source tree (a clone with setup.py and detectron2/), "
        f"a .tar.gz of one, or {D2_V06} for the tested release, and rerun `make setup`"
    )
    if path.is_file():
        if not path.name.endswith((".tar.gz", ".tgz")):
            raise SetupError(f"DETECTRON2_SRC={requested} is a file but not a .tar.gz", todo)
        return {"source": str(path), "kind": "archive", "sha256": sha256_of(path)}
    if path.is_dir():
        if not ((path / "setup.py").is_file() and (path / "detectron2" / "__init__.py").is_file()):
            raise SetupError(
                f"DETECTRON2_SRC={requested} is not a Detectron2 source tree (it needs setup.py "
                "and detectron2/__init__.py)",
                todo,
            )
        return {"source": str(path), "kind": "tree", "sha256": tree_sha256(path)}
    raise SetupError(f"DETECTRON2_SRC={requested} does not exist", todo)


def _extract(archive: Path, into: Path) -> Path:
    """Extract a .tar.gz and return the folder in it that holds setup.py."""
    with tarfile.open(archive) as tar:
        if hasattr(tarfile, "data_filter"):  # Python >= 3.10.12 / 3.11.4
            tar.extractall(into, filter="data")
        else:
            tar.extractall(into)
    roots = [p.parent for p in [into / "setup.py", *into.glob("*/setup.py")] if p.is_file()]
    if len(roots) != 1:
        raise SetupError(
            f"{archive} does not hold one Detectron2 source tree (found setup.py in "
            f"{len(roots)} places)",
            "Pass a .tar.gz of a Detectron2 clone (e.g. from `git archive`) as DETECTRON2_SRC",
        )
    return roots[0]


def _patch(source_dir: Path) -> None:
    try:
        kind = detectron2_compat.identify_source(source_dir)
        changed = detectron2_compat.apply_patch(source_dir, kind)
    except detectron2_compat.PatchError as e:
        raise SetupError(f"patching Detectron2 failed: {e}", "Report this") from e
    log(f"{kind.name}: {len(changed)} file(s) fixed ({', '.join(changed) or 'none needed'})")


def _source_dir(source: dict, tmp: Path) -> Path:
    """The Detectron2 source to install, as a folder under ``tmp`` (extracted or copied)."""
    if source["kind"] == "sdist":
        return _extract(download_detectron2_sdist(), tmp)
    path = Path(source["source"])
    if source["kind"] == "archive":
        return _extract(path, tmp)
    # A copy: the user's clone is neither patched nor built in.
    source_dir = tmp / path.name
    shutil.copytree(path, source_dir, symlinks=True, ignore=shutil.ignore_patterns(*_TREE_IGNORED))
    return source_dir


def _read_detectron2_stamp() -> dict | None:
    path = STATE / "detectron2.done"
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except ValueError:  # written before sources were recorded: the v0.6 sdist
        return {"source": D2_V06}


def install_detectron2(requested: str | None = None) -> None:
    """Install Detectron2 from ``requested`` (see the module docstring), if not already there.

    The stamp ``detectron2.done`` records the source, its sha256 and the compat fixes; any
    change of them uninstalls the present Detectron2 and installs again.
    """
    found = probe_detectron2()
    previous = _read_detectron2_stamp()
    if requested is None:
        if found and previous is None:
            log(
                f"using the detectron2 {found['version']} installed by the user in {VENV} "
                "(not patched)"
            )
            return
        requested = previous["source"] if previous else D2_V06
        if found and requested != D2_V06 and not Path(requested).exists():
            log(f"keeping the detectron2 built from {requested} (that source is gone)")
            return
    source = detectron2_source(requested)
    source["fixes"] = fingerprint(ROOT / "dev" / "detectron2_compat.py")
    stamp = Stamp("detectron2", json.dumps(source, sort_keys=True))
    if found and stamp.is_current():
        return
    stamp.path.unlink(missing_ok=True)
    if found:
        log(f"replacing the installed detectron2 ({found['dist'] or found['file']})")
        pip(
            "uninstall",
            "-y",
            "pb1-detectron2",
            "detectron2",
            what="uninstalling the previous Detectron2",
        )
    with tempfile.TemporaryDirectory(prefix="pwlu_d2_") as tmp:
        source_dir = _source_dir(source, Path(tmp))
        _patch(source_dir)
        if source["kind"] == "sdist":
            log("installing the patched Detectron2 v0.6 without the C++ extension")
            what = "installing the patched Detectron2 v0.6"
        else:
            log(f"building Detectron2 from {source['source']} with its C++ extension (about 2 min)")
            os.environ.setdefault("MAX_JOBS", str(os.cpu_count() or 1))
            what = f"building and installing Detectron2 from {source['source']}"
        pip("install", "--no-deps", "--no-build-isolation", str(source_dir), what=what)
    checks = (
        "import detectron2.modeling, detectron2.export, detectron2.evaluation; "
        "from detectron2 import model_zoo; "
        "model_zoo.get_config_file('COCO-Detection/retinanet_R_50_FPN_1x.yaml')"
    )
    if source["kind"] != "sdist":
        checks += "; from detectron2 import _C"
    run(
        [str(venv_python()), "-c", checks],
        what="importing the installed Detectron2",
        todo=f"Read the log; remove {VENV} and rerun `make setup`",
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


def project_modules() -> list[str]:
    """Every module of the ``pwlu_det`` package, by dotted name."""
    names = []
    for path in sorted((ROOT / "pwlu_det").rglob("*.py")):
        if not (path.parent / "__init__.py").exists():  # data, e.g. model_zoo/configs/*.py
            continue
        parts = path.relative_to(ROOT).with_suffix("").parts
        names.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return names


_IMPORT_PROBE = """
import importlib, json, sys, traceback
for name in sys.argv[1:]:
    try:
        importlib.import_module(name)
    except Exception as e:
        frame = traceback.extract_tb(e.__traceback__)[-1]
        print(json.dumps({"module": name, "error": f"{type(e).__name__}: {e}",
                          "where": f"{frame.filename}:{frame.lineno}"}))
        break
"""


def import_failure(python: Path | None = None) -> dict | None:
    """The first ``pwlu_det`` module that fails to import in the venv, or None.

    Returns:
        ``{"module": ..., "error": "Type: message", "where": "file:line"}`` of the failure.
    """
    cmd = [str(python or venv_python()), "-W", "ignore", "-c", _IMPORT_PROBE, *project_modules()]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0:
        return {"module": "pwlu_det", "error": proc.stderr.strip()[-300:], "where": "?"}
    return json.loads(lines[-1]) if lines else None


def check_imports() -> None:
    """Import every pwlu_det module once per installed Detectron2 and pwlu_det build.

    Raises:
        SetupError: naming the first import that fails, where, and what to do.
    """
    detectron2 = probe_detectron2()
    built = [STATE / f"{name}.done" for name in ("detectron2", "pwlu_det")]
    key = json.dumps([detectron2, *(p.read_text() if p.is_file() else "" for p in built)])
    stamp = Stamp("imports", hashlib.sha256(key.encode()).hexdigest())
    if stamp.is_current():
        return
    log("checking that every pwlu_det module imports")
    failure = import_failure()
    if failure is None:
        stamp.mark()
        return
    what = f"`import {failure['module']}` fails: {failure['error']} (at {failure['where']})"
    if detectron2 and "detectron2" in failure["where"]:
        version = f"the Detectron2 {detectron2['version']} at {Path(detectron2['file']).parent}"
        todo = (
            f"This is {version}, which pwlu_det does not support as it is: "
            f"`make setup DETECTRON2_SRC={D2_V06}` installs the tested release, or report the "
            "error with your Detectron2 commit"
        )
    else:
        todo = f"Read {LOG}; if pwlu_det's own code fails, report it"
    raise SetupError(what, todo)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--venv",
        type=Path,
        default=ROOT / ".venv",
        help="the environment to set up (default: .venv)",
    )
    parser.add_argument(
        "--detectron2-src",
        default=os.environ.get("DETECTRON2_SRC") or None,
        help="a Detectron2 source tree or .tar.gz of one, or v0.6 (the tested release); by "
        "default the environment keeps the Detectron2 it has (v0.6 in a new one)",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    if sys.version_info < (3, 10):  # noqa: UP036 (this runs on the system python)
        print(
            f"[setup] FAILED: Python >= 3.10 is required, this is {sys.version.split()[0]}. "
            "Run with a newer python3 (make PYTHON=python3.11 ...)",
            file=sys.stderr,
        )
        return 1
    args = parse_args(argv)
    use_venv(args.venv)
    try:
        ensure_venv()
        install_requirements()
        install_detectron2(args.detectron2_src)
        install_project()
        check_imports()
    except SetupError as e:
        print(f"[setup] FAILED: {e}", file=sys.stderr)
        return 1
    print(f"[setup] environment ready in {VENV}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
