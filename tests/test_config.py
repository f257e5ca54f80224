"""add_pwlu_config's keys and validate_pwlu_config: a bad value is refused naming the key."""

import pytest
from detectron2.config import get_cfg

from pwlu_det import add_pwlu_config, validate_pwlu_config


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("NUM_INTERVALS", 0, "an integer >= 1"),
        ("GRANULARITY", "pixel", "one of"),
        ("MOMENTUM", 1.5, r"in \[0, 1\)"),
        ("BOUND_STD", 0.0, "> 0"),
        ("STATISTICS_ITERS", -1, "an integer >= 0"),
        ("REALIGN_MODE", "magic", "one of"),
        ("WEIGHT_DECAY", -1.0, ">= 0"),
        ("LR_FACTOR", -0.5, ">= 0"),
        ("INIT_SHAPE", "gelu", "one of"),
        ("DYNAMICS_PERIOD", -1, "an integer >= 0"),
    ],
)
def test_bad_config_values_are_rejected_naming_the_key(key, value, message):
    cfg = get_cfg()
    add_pwlu_config(cfg)
    validate_pwlu_config(cfg)  # the defaults are valid
    cfg.MODEL.PWLU[key] = value
    with pytest.raises(ValueError, match=f"MODEL.PWLU.{key} = .*{message}"):
        validate_pwlu_config(cfg)


def test_config_without_pwlu_keys_is_a_clear_error():
    with pytest.raises(KeyError, match="add_pwlu_config"):
        validate_pwlu_config(get_cfg())
