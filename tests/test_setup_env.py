"""The set-up script's Detectron2 compatibility patch and its checksum check."""

import hashlib
import py_compile
import shutil
import tarfile
from pathlib import Path

import detectron2
import detectron2_compat
import pytest
import setup_env

SDIST = setup_env.DOWNLOADS / setup_env.D2_SDIST_NAME


def _pristine_source(tmp_path: Path) -> Path:
    if not SDIST.is_file():
        pytest.skip(f"{SDIST} is absent: this .venv uses a Detectron2 built by the user")
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
    installed = Path(detectron2.__file__).parent
    if not (installed / "model_zoo" / "model_zoo.py").read_text().count("pwlu_det compat"):
        pytest.skip("this .venv uses a Detectron2 built by the user (not patched)")
    shutil.copytree(installed, tmp_path / "detectron2")
    before = _snapshot(tmp_path)
    assert detectron2_compat.apply_patch(tmp_path) == []
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
        pytest.skip(f"{SDIST} is absent: this .venv uses a Detectron2 built by the user")
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
