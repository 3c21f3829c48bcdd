"""Run configs: strict dataclasses read from YAML.

An unknown key or a value of the wrong type is refused with the key's full path
(``train.steps: expected int, got str``), so a typo never silently falls back to a
default. ``configs/*.yaml`` document every field.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from .errors import ConfigError
from .methods import method_class
from .train import TrainConfig


@dataclass
class RunConfig:
    method: str = "talora"  # a name from `talora methods`
    model: str = "embedded"  # "embedded", a .gguf file, a local model folder or a hub id
    data_dir: str | None = None  # a folder in the shared-data layout; null = the embedded synthetic suite
    tasks: list[str] | None = None  # training tasks; null = every source task of the suite / data folder
    seed: int = 0  # drives data order and evaluation sampling
    max_length: int = 256  # tokens per example (prompt + answer); longer inputs are truncated (see batching)
    cache_lower_layers: bool = False  # keep the frozen lower layers' output on disk (talora.lower_cache)
    train_examples: int = 0  # cap on training examples per task (0 = all)
    validation_examples: int = 0  # cap on validation examples per task for the final metrics (0 = all)
    test_examples: int = 0  # cap on the examples a few-shot target is scored on (0 = all; files are shuffled)
    method_args: dict = field(default_factory=dict)  # fields of the method's config dataclass
    stage1: TrainConfig = field(default_factory=TrainConfig)  # TA-LoRA stage 1 (single-task prompts)
    train: TrainConfig = field(default_factory=TrainConfig)  # the method's (multi-task) training
    transfer: TrainConfig = field(default_factory=lambda: TrainConfig(steps=60, eval_every=0))  # few-shot

    def method_config(self):
        cls = method_class(self.method).config_cls
        return from_dict(cls, self.method_args, "method_args")


def _check_type(value, hint, where: str):
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        errors = []
        for arm in typing.get_args(hint):
            try:
                return _check_type(value, arm, where)
            except ConfigError as err:
                errors.append(str(err))
        raise ConfigError(f"{where}: {value!r} fits none of {hint}")
    if hint is type(None):
        if value is None:
            return None
        raise ConfigError(f"{where}: expected null, got {type(value).__name__}")
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{where}: expected a list, got {type(value).__name__}")
        (arm,) = typing.get_args(hint)
        return [_check_type(v, arm, f"{where}[{i}]") for i, v in enumerate(value)]
    if hint is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {type(value).__name__}")
        return value
    if dataclasses.is_dataclass(hint):
        return from_dict(hint, value, where)
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if hint in (int, float) and isinstance(value, bool) or not isinstance(value, hint):
        raise ConfigError(f"{where}: expected {hint.__name__}, got {type(value).__name__} ({value!r})")
    return value


def from_dict(cls, data, where: str = "config"):
    """Build dataclass ``cls`` from a mapping, refusing unknown keys and wrong types."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(unknown)}; known: {', '.join(sorted(names))}")
    values = {k: _check_type(v, hints[k], f"{where}.{k}") for k, v in data.items()}
    try:
        return cls(**values)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"{where}: {err}") from None


def read_yaml(path: str | Path, what: str = "config") -> dict:
    """A YAML file's top-level mapping, or a ConfigError naming the file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{what} file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML ({err})") from None
    return data


def load_config(path: str | Path | None, overrides: dict | None = None) -> RunConfig:
    data: dict = read_yaml(path) if path is not None else {}
    data.update({k: v for k, v in (overrides or {}).items() if v is not None})
    config = from_dict(RunConfig, data, str(path or "config"))
    config.method_config()  # validate method_args now, not an hour into the run
    return config


def dump_config(config: RunConfig) -> str:
    return yaml.safe_dump(dataclasses.asdict(config), sort_keys=False, allow_unicode=True)
