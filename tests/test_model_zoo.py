"""pwlu_det.model_zoo: the configs and the documented results as the installed package has them
(a regular install is checked by `make check-install`)."""

from pathlib import Path

import pytest

from pwlu_det.config import load_pwlu_config
from pwlu_det.model_zoo import documented_results_file, get_config_file

ROOT = Path(__file__).resolve().parents[1]


def test_every_config_is_found_through_the_model_zoo():
    configs = sorted(ROOT.glob("configs/**/*.yaml"))
    assert configs
    for path in configs:
        rel = str(path.relative_to(ROOT / "configs"))
        assert Path(get_config_file(rel)).read_bytes() == path.read_bytes()
    cfg = load_pwlu_config(get_config_file("Shapes/mask_rcnn_R_18_FPN_pwlu.yaml"))
    assert cfg.MODEL.ACTIVATION.NAME == "PWLU"  # _BASE_ resolves inside the model zoo too


def test_an_unknown_config_is_refused_by_name():
    with pytest.raises(FileNotFoundError, match="Shapes/nothing.yaml"):
        get_config_file("Shapes/nothing.yaml")


def test_the_documented_results_are_the_comparisons():
    results = ROOT / "benchmarks" / "results" / "shapes" / "results.csv"
    assert Path(documented_results_file()).read_bytes() == results.read_bytes()
