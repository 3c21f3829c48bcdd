"""Run configs: strict dataclasses read from YAML, without importing torch.

An unknown key or a value of the wrong type is refused with the key's full path
(``train.steps: expected int, got str``), so a typo never silently falls back to a
default. Every file that holds a config goes through the one reader, ``from_dict``:
run and sweep configs, command-line overrides, suites and adapter sidecars.

Each field's help lives once, as the comment on its line in the dataclass
(``field_help`` reads it back); ``talora config`` prints the whole reference, which is
``configs/talora.yaml`` (a test keeps the two equal).
"""

from __future__ import annotations

import dataclasses
import inspect
import io
import re
import tokenize
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from .errors import ConfigError
from .overrides import EXPONENT_FLOAT, merge, yaml_problem
from .reporting import REPORT_TO, missing_package
from .tasks.kinds import LABEL_SCORING
from .tasks.sampling import SHOT_MODES

SCHEDULES = ("linear", "cosine", "constant")
# talora/configs: the demo, suite and model configs shipped inside the package.
PACKAGED_CONFIGS = Path(__file__).with_name("configs")
DTYPES = ("auto", "float32", "bfloat16", "float16")
SELECT_ON = ("auto", "validation")


@dataclass
class TrainConfig:
    steps: int = 200  # optimiser steps
    batch_size: int = 8  # examples per step, tasks mixed
    warmup_steps: int = 10  # linear warm-up from 0
    schedule: str = "linear"  # after warm-up: linear | cosine (to 0) | constant
    lr_scale: float = 1.0  # multiplies every parameter group's learning rate (the method's lr fields)
    weight_decay: float = 0.0  # AdamW weight decay
    grad_clip: float = 1.0  # max global gradient norm (0 = off)
    eval_every: int = 50  # validate every N steps (0 = only at the end); the best state is kept
    eval_examples: int = 200  # validation examples per task used during training (0 = all)
    eval_batch_size: int = 32  # examples per evaluation batch
    mixing_temperature: float = 1.0  # task rate ~ n_t^(1/T): 1 = examples-proportional, large = uniform
    mixing_cap: int = 0  # n_t is capped at this before mixing (0 = no cap)
    length_buckets: int = 4  # draw this many batches at once, sort them by length, cut (1 = off): less padding
    log_every: int = 10  # training-log period in steps
    gradient_checkpointing: bool = False  # recompute the prompted layers in backward: less memory, ~1/3 more time
    report_to: str = "none"  # also send the log points to: none | tensorboard (<output>/tensorboard) | wandb | mlflow

    def __post_init__(self):
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {SCHEDULES}, got {self.schedule!r}")
        if self.steps < 1 or self.batch_size < 1:
            raise ValueError("steps and batch_size must be >= 1")
        if self.lr_scale <= 0:
            raise ValueError("lr_scale must be > 0")
        if self.mixing_temperature <= 0:
            raise ValueError("mixing_temperature must be > 0")
        if self.length_buckets < 1:
            raise ValueError("length_buckets must be >= 1")
        if self.report_to not in REPORT_TO:
            raise ValueError(f"report_to must be one of {REPORT_TO}, got {self.report_to!r}")
        if install := missing_package(self.report_to):  # fail now, not at the first log point of a long run
            raise ConfigError(f"report_to: {self.report_to} is not installed: {install}")


@dataclass
class BalanceConfig:
    min_examples: int = 0  # up-sample each source task with fewer training examples to this many (0 = off)
    max_examples: int = 0  # down-sample each source task with more to this many, a seeded draw (0 = off)
    augment: bool = False  # up-sampled copies of single-text and pair examples are perturbed (seeded): random
    #                        deletion and insertion of words (characters in unspaced text), synonym substitution
    synonyms: str | None = None  # a UTF-8 file of synonym groups, one group per line, words separated by spaces
    edit_rate: float = 0.1  # share of a text's words each perturbation touches

    def __post_init__(self):
        if self.min_examples < 0 or self.max_examples < 0:
            raise ValueError("min_examples and max_examples must be >= 0")
        if self.max_examples and self.min_examples > self.max_examples:
            raise ValueError(f"min_examples ({self.min_examples}) is more than max_examples ({self.max_examples})")
        if not 0 < self.edit_rate < 1:
            raise ValueError(f"edit_rate must be in (0, 1), got {self.edit_rate}")


@dataclass
class RunConfig:
    method: str = "talora"  # a name from `talora methods`
    model: str = "embedded"  # "embedded", a .gguf file, a local model folder or a hub id
    device: str = "auto"  # auto (cuda if available, else mps, else cpu) | cpu | cuda | cuda:N | mps
    dtype: str = "auto"  # frozen model's dtype: auto (bfloat16 on a GPU that has it, else float32) | float32 |
    #                      bfloat16 | float16; trainable parameters always stay float32
    data_dir: str | None = None  # a folder in the shared-data layout; null = the embedded synthetic suite
    tasks: list[str] | None = None  # training tasks; null = every source task of the suite / data folder
    seed: int = 0  # data order and k-shot samples (a method's init_seed seeds its initialisation)
    max_length: int = 256  # max tokens of prompt + answer; longer inputs lose tokens from their longest field
    cache_lower_layers: bool = False  # deep methods: keep the frozen layers' output below the prompts on disk
    #                                   (~/.cache/talora/activations; TALORA_CACHE moves it): same results, less time
    train_examples: int = 0  # cap on training examples per task (0 = all)
    select_on: str = "auto"  # where training picks its best state and where sources are scored: auto (select on
    #                          validation, report on test where a task has a labelled test; else select on a slice
    #                          held out from train, report on validation) | validation (select and report on it)
    heldout_examples: int = 200  # size of that slice held out from train, per task (at most a fifth of train)
    validation_examples: int = 500  # lines per source task its final metrics are computed on: a seeded random
    #                                 sample, stratified by label (0 = all)
    test_examples: int = 500  # lines a few-shot target is scored on, sampled the same way (0 = all)
    sample_seed: int = 0  # seed of those samples: every method, k and seed of a sweep is scored on the same lines
    label_scoring: str = "sum"  # how label words are compared: sum (summed log-probability) | mean (per token) |
    #                             calibrated (contextual calibration against content-free inputs); docs/protocol.md
    shots: str = "per_class"  # few-shot counting: per_class (k per class of a classification task, k in all for
    #                           other kinds) | total (k in all for every kind)
    balance: BalanceConfig = field(default_factory=BalanceConfig)  # source tasks' sizes evened out before training
    method_args: dict = field(default_factory=dict)  # fields of the method's config (see `talora config`)
    stage1: TrainConfig = field(default_factory=TrainConfig)  # stage 1 of two-stage methods (single-task prompts)
    train: TrainConfig = field(default_factory=TrainConfig)  # the method's (multi-task) training
    transfer: TrainConfig = field(default_factory=lambda: TrainConfig(steps=60, eval_every=0))  # few-shot

    def __post_init__(self):
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {', '.join(DTYPES)}, got {self.dtype!r}")
        if not re.fullmatch(r"auto|cpu|mps|cuda(:\d+)?", self.device):
            raise ValueError(f"device must be auto, cpu, cuda, cuda:N or mps, got {self.device!r}")
        if self.select_on not in SELECT_ON:
            raise ValueError(f"select_on must be one of {', '.join(SELECT_ON)}, got {self.select_on!r}")
        if self.shots not in SHOT_MODES:
            raise ValueError(f"shots must be one of {', '.join(SHOT_MODES)}, got {self.shots!r}")
        if self.label_scoring not in LABEL_SCORING:
            raise ValueError(f"label_scoring must be one of {', '.join(LABEL_SCORING)}, got {self.label_scoring!r}")
        if min(self.validation_examples, self.test_examples) < 0:
            raise ValueError("validation_examples and test_examples must be >= 0 (0 = all)")
        if self.heldout_examples < 1:
            raise ValueError("heldout_examples must be >= 1")

    def method_config(self):
        """The method's own config dataclass built from ``method_args`` (validated)."""
        from .methods import method_class  # the registry imports torch; reading a config does not

        return from_dict(method_class(self.method).config_cls, self.method_args, "method_args")


# --- the strict reader -------------------------------------------------------------------------


def _check_type(value, hint, where: str):
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        problems = []
        for arm in typing.get_args(hint):
            try:
                return _check_type(value, arm, where)
            except ConfigError as err:
                problems.append(str(err).removeprefix(f"{where}: "))
        raise ConfigError(
            f"{where}: {value!r} fits none of {' | '.join(map(_type_name, typing.get_args(hint)))} "
            f"({'; '.join(problems)})"
        )
    if hint is type(None):
        if value is None:
            return None
        raise ConfigError(f"{where}: expected null, got {type(value).__name__}")
    if origin in (list, tuple):
        if not isinstance(value, list):
            raise ConfigError(f"{where}: expected a list, got {type(value).__name__}")
        arm = typing.get_args(hint)[0]
        items = [_check_type(v, arm, f"{where}[{i}]") for i, v in enumerate(value)]
        return items if origin is list else tuple(items)
    if hint is dict or origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {type(value).__name__}")
        return value
    if dataclasses.is_dataclass(hint):
        return from_dict(hint, value, where)
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if hint is float and isinstance(value, str) and EXPONENT_FLOAT.fullmatch(value.strip()):
        return float(value)  # YAML 1.1 (PyYAML) reads 3e-2 as a string; the user meant a number
    if hint in (int, float) and isinstance(value, bool) or not isinstance(value, hint):
        raise ConfigError(f"{where}: expected {_type_name(hint)}, got {type(value).__name__} ({value!r})")
    return value


def _type_name(hint) -> str:
    return "null" if hint is type(None) else getattr(hint, "__name__", str(hint))


def from_dict(cls, data, where: str = "config"):
    """Build dataclass ``cls`` from a mapping, refusing unknown keys, missing required keys, wrong
    types and values its ``__post_init__`` rejects (a ValueError), each named by its path."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    fields = dataclasses.fields(cls)
    names = {f.name for f in fields}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(unknown)}; known: {', '.join(sorted(names))}")
    required = [
        f.name
        for f in fields
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING and f.name not in data
    ]
    if required:
        raise ConfigError(f"{where}: missing key(s) {', '.join(required)}")
    values = {k: _check_type(v, hints[k], f"{where}.{k}") for k, v in data.items()}
    try:
        return cls(**values)
    except ValueError as err:
        raise ConfigError(f"{where}: {err}") from None


def read_yaml(path: str | Path, what: str = "config") -> dict:
    """A YAML file's top-level mapping, or a ConfigError naming the file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{what} file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not a text file (a {what} is UTF-8 YAML)") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML ({yaml_problem(err)})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of {what} keys at the top level, got {type(data).__name__}")
    return data


def load_config(path: str | Path | None, overrides: dict | None = None) -> RunConfig:
    """The run config of a YAML file (or the defaults), with nested ``overrides`` laid over it
    (``talora.overrides``: a null there sets the field to null); method_args are validated too."""
    data: dict = read_yaml(path) if path is not None else {}
    data = merge(data, overrides or {})
    config = from_dict(RunConfig, data, str(path or "config"))
    config.method_config()  # validate method_args now, not an hour into the run
    return config


def dump_config(config: RunConfig) -> str:
    return yaml.safe_dump(dataclasses.asdict(config), sort_keys=False, allow_unicode=True)


# --- help and the reference file ---------------------------------------------------------------


_FIELD_LINE = re.compile(r"^    (\w+)\s*:")


def _comments(cls) -> dict[str, str]:
    """The trailing comment of each field line in ``cls``'s own source, continued on the
    comment-only lines aligned under it."""
    source = inspect.getsource(cls)
    lines = source.splitlines()
    comments = {
        tok.start[0]: tok
        for tok in tokenize.generate_tokens(io.StringIO(source).readline)
        if tok.type == tokenize.COMMENT
    }
    out: dict[str, str] = {}
    for no, line in enumerate(lines, 1):
        match = _FIELD_LINE.match(line)
        if not match or no not in comments:
            continue
        text = comments[no].string.lstrip("#").strip()
        nxt = no + 1
        while (
            nxt in comments
            and lines[nxt - 1].lstrip().startswith("#")
            and (comments[nxt].start[1] > 4 or comments[nxt].string.startswith("#  "))
        ):  # an aligned continuation
            text += " " + comments[nxt].string.lstrip("#").strip()
            nxt += 1
        out[match.group(1)] = text
    return out


def field_help(cls) -> dict[str, str]:
    """Each field's help: the comment on its line where the field is defined (base classes included)."""
    out: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if dataclasses.is_dataclass(klass) and klass is not object:
            own = {f.name for f in dataclasses.fields(klass)}
            out.update({k: v for k, v in _comments(klass).items() if k in own})
    return {f.name: out.get(f.name, "") for f in dataclasses.fields(cls)}


def _default(f: dataclasses.Field):
    value = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
    return dataclasses.asdict(value) if dataclasses.is_dataclass(value) else value


def _yaml_value(value) -> str:
    return yaml.safe_dump(value, default_flow_style=True, allow_unicode=True).strip().removesuffix("\n...")


def _block(cls, indent: str, prefix: str = "") -> list[str]:
    helps = field_help(cls)
    lines = []
    for f in dataclasses.fields(cls):
        lines.append(f"{prefix}{indent}{f.name}: {_yaml_value(_default(f))}  # {helps[f.name]}".rstrip())
    return lines


def reference_yaml() -> str:
    """Every field of a run config with its default and help, and every method's method_args:
    the text of ``configs/talora.yaml``."""
    from .methods import METHODS

    out = [
        "# Every field of a talora run config, with its default and what it means.",
        "# Generated by `talora config` from the config dataclasses (a test keeps this file equal to it).",
        "# Any field can also be set on the command line: --train.steps 100 --method_args.rank 8",
        "",
    ]
    helps = field_help(RunConfig)
    for f in dataclasses.fields(RunConfig):
        if f.name == "method_args":
            out.append(f"method_args:  # {helps[f.name]}; the defaults of `method: talora` below")
            out += _block(METHODS["talora"].config_cls, "  ")
        elif dataclasses.is_dataclass(_default_type(f)):
            out.append(f"{f.name}:  # {helps[f.name]}")
            default = f.default_factory()
            sub_help = field_help(type(default))
            out += [f"  {k}: {_yaml_value(v)}  # {sub_help[k]}" for k, v in dataclasses.asdict(default).items()]
        else:
            out.append(f"{f.name}: {_yaml_value(_default(f))}  # {helps[f.name]}")
    for name, cls in sorted(METHODS.items()):
        if name == "talora":
            continue
        out += ["", f"# method_args of `method: {name}`:"]
        out += _block(cls.config_cls, "  ", prefix="#")
    return "\n".join(out) + "\n"


def _default_type(f: dataclasses.Field):
    return type(f.default_factory()) if f.default_factory is not dataclasses.MISSING else type(f.default)
