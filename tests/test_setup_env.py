"""The set-up script: Detectron2 sources and their fixes, checksums, stamps, the import check."""

import hashlib
import json
import py_compile
import shutil
import sys
import tarfile
from pathlib import Path

import detectron2
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "dev"))  # the set-up scripts
import detectron2_compat  # noqa: E402
import setup_env  # noqa: E402

setup_env.use_venv(Path(sys.prefix))  # the environment running the tests
SDIST = setup_env.DOWNLOADS / setup_env.D2_SDIST_NAME
INSTALLED = setup_env._read_detectron2_stamp()  # None: a Detectron2 installed by the user
NOT_THE_SDIST = (
    f"{SDIST} is absent: this environment's Detectron2 is not the v0.6 sdist "
    f"({INSTALLED['source'] if INSTALLED else 'installed by the user'})"
)
MAIN_SNAPSHOT = sorted(
    (setup_env.ROOT.parent / "shared" / "detectron2").glob("detectron2-*.tar.gz")
)


def _pristine_source(tmp_path: Path) -> Path:
    if not SDIST.is_file():
        pytest.skip(NOT_THE_SDIST)
    with tarfile.open(SDIST) as tar:
        tar.extractall(tmp_path, filter="data")
    return tmp_path / setup_env.D2_SDIST_NAME.removesuffix(".tar.gz")


def _snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*.py"))}


def test_patch_changes_sdist_once_then_nothing(tmp_path):
    source = _pristine_source(tmp_path)
    changed = detectron2_compat.apply_patch(source)
    expected = {fix.path for fix in detectron2_compat.FIXES} | set(
        detectron2_compat.NUMPY_ALIAS_FILES
    )
    assert set(changed) == expected
    for rel in changed:
        py_compile.compile(str(source / rel), doraise=True)
    patched = _snapshot(source)

    assert detectron2_compat.apply_patch(source) == []
    assert _snapshot(source) == patched
    text = "".join(patched[rel].decode() for rel in detectron2_compat.NUMPY_ALIAS_FILES)
    assert detectron2_compat.NUMPY_ALIAS.search(text) is None
    assert "pkg_resources" not in patched["detectron2/model_zoo/model_zoo.py"].decode()


def test_patch_on_installed_copy_is_a_no_op(tmp_path):
    # The installed package was patched at set-up; patching a copy again changes nothing.
    if INSTALLED is None:
        pytest.skip("this environment uses a Detectron2 installed by the user (not patched)")
    installed = Path(detectron2.__file__).parent
    shutil.copytree(installed, tmp_path / "detectron2")
    source = detectron2_compat.V06_SDIST
    if INSTALLED.get("kind", "sdist") != "sdist":
        source = detectron2_compat.SOURCE_TREE
    before = _snapshot(tmp_path)
    assert detectron2_compat.apply_patch(tmp_path, source) == []
    assert _snapshot(tmp_path) == before


def test_patch_refuses_unknown_source(tmp_path):
    with pytest.raises(detectron2_compat.PatchError, match="not a Detectron2 source tree"):
        detectron2_compat.apply_patch(tmp_path)
    source = _pristine_source(tmp_path / "src")
    target = source / "detectron2" / "export" / "__init__.py"
    target.write_text("# some other version\n")
    with pytest.raises(detectron2_compat.PatchError, match=str(target)):
        detectron2_compat.apply_patch(source)


def test_checksum_mismatch_names_file_and_both_hashes(tmp_path):
    path = tmp_path / setup_env.D2_SDIST_NAME
    path.write_bytes(b"not the audited sdist")
    actual = hashlib.sha256(b"not the audited sdist").hexdigest()
    with pytest.raises(setup_env.SetupError) as info:
        setup_env.verify_sha256(path, setup_env.D2_SDIST_SHA256)
    message = str(info.value)
    assert str(path) in message
    assert setup_env.D2_SDIST_SHA256 in message and actual in message
    assert "\n" not in message
    assert not path.exists(), "a file that failed its checksum must not stay for the next run"


def test_checksum_match_keeps_file(tmp_path):
    path = tmp_path / "ok.bin"
    path.write_bytes(b"abc")
    setup_env.verify_sha256(path, hashlib.sha256(b"abc").hexdigest())
    assert path.exists()


def test_cached_sdist_is_the_audited_one():
    if not SDIST.is_file():
        pytest.skip(NOT_THE_SDIST)
    assert setup_env.sha256_of(SDIST) == setup_env.D2_SDIST_SHA256


def test_failed_command_gives_one_line_with_log(tmp_path, monkeypatch):
    monkeypatch.setattr(setup_env, "STATE", tmp_path)
    monkeypatch.setattr(setup_env, "LOG", tmp_path / "setup.log")
    with pytest.raises(setup_env.SetupError) as info:
        setup_env.run(
            ["python3", "-c", "print('Max retries exceeded'); raise SystemExit(1)"],
            what="downloading x",
            todo="unused",
        )
    message = str(info.value)
    assert "downloading x failed" in message and str(tmp_path / "setup.log") in message
    assert "registry could not be reached" in message
    assert "\n" not in message


def _fake_tree(root: Path, model_zoo: str) -> Path:
    """A minimal Detectron2 source tree: setup.py, the C++ folder and model_zoo.py."""
    (root / "detectron2" / "layers" / "csrc").mkdir(parents=True)
    (root / "detectron2" / "model_zoo").mkdir()
    (root / "setup.py").write_text("# setup\n")
    (root / "detectron2" / "__init__.py").write_text('__version__ = "0.6"\n')
    (root / "detectron2" / "model_zoo" / "model_zoo.py").write_text(model_zoo)
    return root


_MAIN_MODEL_ZOO = (
    "import os\nimport pkg_resources\n\n"
    "def get_config_file(config_path):\n"
    "    cfg_file = pkg_resources.resource_filename(\n"
    '        "detectron2.model_zoo", os.path.join("configs", config_path)\n'
    "    )\n"
    "    return cfg_file\n"
)


def test_source_tree_gets_only_its_fixes(tmp_path):
    tree = _fake_tree(tmp_path / "main", _MAIN_MODEL_ZOO)
    assert detectron2_compat.identify_source(tree) is detectron2_compat.SOURCE_TREE
    assert detectron2_compat.apply_patch(tree) == ["detectron2/model_zoo/model_zoo.py"]
    fixed = (tree / "detectron2" / "model_zoo" / "model_zoo.py").read_text()
    assert "pkg_resources" not in fixed
    py_compile.compile(str(tree / "detectron2" / "model_zoo" / "model_zoo.py"), doraise=True)
    assert detectron2_compat.apply_patch(tree) == []

    # A tree that no longer uses pkg_resources needs nothing (the fixes are not strict).
    clean = _fake_tree(tmp_path / "clean", "import os\n")
    assert detectron2_compat.apply_patch(clean) == []


def test_main_snapshot_needs_exactly_the_model_zoo_fix(tmp_path):
    if not MAIN_SNAPSHOT:
        pytest.skip("no Detectron2 snapshot in ../shared/detectron2")
    tree = setup_env._extract(MAIN_SNAPSHOT[-1], tmp_path)
    assert detectron2_compat.identify_source(tree) is detectron2_compat.SOURCE_TREE
    assert detectron2_compat.apply_patch(tree) == ["detectron2/model_zoo/model_zoo.py"]
    users = [p for p in (tree / "detectron2").rglob("*.py") if "pkg_resources" in p.read_text()]
    assert users == []


def test_detectron2_source_is_checked_and_hashed(tmp_path):
    with pytest.raises(setup_env.SetupError, match="does not exist"):
        setup_env.detectron2_source(str(tmp_path / "nowhere"))
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(setup_env.SetupError, match="not a .tar.gz"):
        setup_env.detectron2_source(str(tmp_path / "notes.txt"))
    with pytest.raises(setup_env.SetupError, match="not a Detectron2 source tree"):
        setup_env.detectron2_source(str(tmp_path))

    tree = _fake_tree(tmp_path / "d2", "import os\n")
    described = setup_env.detectron2_source(str(tree))
    assert described["kind"] == "tree" and described["source"] == str(tree)
    # Build outputs and version control do not change the hash; a source edit does.
    (tree / "build").mkdir()
    (tree / "build" / "x.o").write_bytes(b"obj")
    (tree / "detectron2" / "_C.cpython-312.so").write_bytes(b"so")
    (tree / ".git").mkdir()
    (tree / ".git" / "HEAD").write_text("ref")
    assert setup_env.detectron2_source(str(tree))["sha256"] == described["sha256"]
    (tree / "detectron2" / "__init__.py").write_text('__version__ = "0.7"\n')
    assert setup_env.detectron2_source(str(tree))["sha256"] != described["sha256"]

    archive = tmp_path / "d2.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(tree, arcname="detectron2-abc")
    described = setup_env.detectron2_source(str(archive))
    assert described == {
        "source": str(archive),
        "kind": "archive",
        "sha256": setup_env.sha256_of(archive),
    }
    assert setup_env._extract(archive, tmp_path / "x") == tmp_path / "x" / "detectron2-abc"
    assert setup_env.detectron2_source("v0.6")["sha256"] == setup_env.D2_SDIST_SHA256


@pytest.fixture
def recorded_setup(tmp_path, monkeypatch):
    """setup_env in a scratch environment whose installs are recorded, not run."""
    monkeypatch.setattr(setup_env, "VENV", tmp_path / "venv")
    monkeypatch.setattr(setup_env, "STATE", tmp_path / "venv" / "pwlu_setup")
    monkeypatch.setattr(setup_env, "LOG", tmp_path / "setup.log")
    calls = []  # "sdist" / "source" per install, ("pip", ...) per uninstall
    installed = {"value": None}

    def source_dir(source, tmp):
        calls.append("sdist" if source["kind"] == "sdist" else "source")
        return tmp

    def pip(*args, **kwargs):
        if args[0] == "install":
            installed["value"] = {"dist": "detectron2", "file": "x", "version": "0.6"}
        else:
            calls.append(("pip", *args))

    monkeypatch.setattr(setup_env, "probe_detectron2", lambda: installed["value"])
    monkeypatch.setattr(setup_env, "_source_dir", source_dir)
    monkeypatch.setattr(setup_env, "_patch", lambda source_dir: None)
    monkeypatch.setattr(setup_env, "pip", pip)
    monkeypatch.setattr(setup_env, "run", lambda *a, **k: "")
    return calls, installed


def test_switching_detectron2_sources_reinstalls(recorded_setup, tmp_path):
    calls, installed = recorded_setup
    setup_env.install_detectron2(None)  # new environment: the v0.6 sdist
    assert calls == ["sdist"]
    setup_env.install_detectron2(None)  # nothing asked: keep it
    setup_env.install_detectron2("v0.6")
    assert calls == ["sdist"]

    tree = _fake_tree(tmp_path / "d2", _MAIN_MODEL_ZOO)
    setup_env.install_detectron2(str(tree))
    assert calls[1:] == [("pip", "uninstall", "-y", "pb1-detectron2", "detectron2"), "source"]
    stamp = json.loads((setup_env.STATE / "detectron2.done").read_text())
    assert stamp["source"] == str(tree) and stamp["sha256"] == setup_env.tree_sha256(tree)
    setup_env.install_detectron2(None)  # keeps the tree set up last, unchanged
    setup_env.install_detectron2(str(tree))
    assert len(calls) == 3
    (tree / "setup.py").write_text("# changed\n")
    setup_env.install_detectron2(str(tree))
    assert calls[3:] == [("pip", "uninstall", "-y", "pb1-detectron2", "detectron2"), "source"]


def test_failed_install_leaves_no_stamp(recorded_setup, tmp_path, monkeypatch):
    def failing(*args):
        raise setup_env.SetupError("building Detectron2 failed", "read the log")

    monkeypatch.setattr(setup_env, "_source_dir", failing)
    tree = _fake_tree(tmp_path / "d2", _MAIN_MODEL_ZOO)
    with pytest.raises(setup_env.SetupError):
        setup_env.install_detectron2(str(tree))
    assert not (setup_env.STATE / "detectron2.done").exists()


def test_every_pwlu_det_module_imports():
    # The check set-up runs after any install, here on this environment's Detectron2.
    assert setup_env.import_failure(Path(sys.executable)) is None


def test_import_check_names_the_failing_module(monkeypatch):
    modules = ["json", "no_such_module_of_pwlu_det"]  # cheap imports, the second fails
    monkeypatch.setattr(setup_env, "project_modules", lambda: modules)
    failure = setup_env.import_failure(Path(sys.executable))
    assert failure["module"] == "no_such_module_of_pwlu_det"
    assert failure["error"].startswith("ModuleNotFoundError")
