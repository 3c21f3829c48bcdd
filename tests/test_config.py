"""Strict configs: unknown keys and wrong types are refused with the key's path."""

from pathlib import Path

import pytest

from talora.config import RunConfig, dump_config, load_config
from talora.errors import ConfigError

CONFIGS = Path(__file__).parent.parent / "configs"


def _write(tmp_path, text):
    p = tmp_path / "c.yaml"
    p.write_text(text)
    return p


@pytest.mark.parametrize("name", sorted(p.name for p in CONFIGS.glob("*.yaml")))
def test_shipped_configs_load(name):
    cfg = load_config(CONFIGS / name)
    assert isinstance(cfg, RunConfig)


def test_unknown_key_is_named(tmp_path):
    with pytest.raises(ConfigError, match=r"train.*unknown key.*stepz"):
        load_config(_write(tmp_path, "train:\n  stepz: 3\n"))


def test_wrong_type_is_named(tmp_path):
    with pytest.raises(ConfigError, match=r"train\.steps: expected int, got str"):
        load_config(_write(tmp_path, "train:\n  steps: many\n"))


def test_method_args_are_checked_against_the_method(tmp_path):
    with pytest.raises(ConfigError, match=r"method_args.*unknown key.*rnak"):
        load_config(_write(tmp_path, "method: talora\nmethod_args:\n  rnak: 4\n"))
    with pytest.raises(ConfigError, match=r"attention must be one of"):
        load_config(_write(tmp_path, "method_args:\n  attention: fancy\n"))


def test_unknown_method(tmp_path):
    with pytest.raises(ConfigError, match=r"unknown method 'lorra'"):
        load_config(_write(tmp_path, "method: lorra\n"))


def test_bad_yaml_and_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(_write(tmp_path, "train: [unclosed\n"))
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.yaml")


def test_dump_round_trips(tmp_path):
    cfg = load_config(CONFIGS / "smoke.yaml", {"seed": 7})
    again = load_config(_write(tmp_path, dump_config(cfg)))
    assert again == cfg and again.seed == 7
