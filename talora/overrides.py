"""Command-line overrides of any config field: ``--train.steps 100 --method_args.rank=8``.

``parse_overrides`` turns the arguments argparse did not know (``parse_known_args``'s leftovers)
into a nested mapping, ``{"train": {"steps": 100}, "method_args": {"rank": 8}}``; ``merge`` lays
it over the mapping read from the config file. Values are read as YAML, so ``true``, ``null``,
``[16, 32]`` and ``3e-2`` mean what they would in the file, and anything else stays a string.
Key names and value types are checked afterwards by the strict config reader
(:func:`talora.config.from_dict`), whose errors name the full key path (``train.stepz``).
"""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping

import yaml

from .errors import ConfigError

SYNTAX = "--dotted.key VALUE or --dotted.key=VALUE"
HELP = (
    "Any config field can be overridden besides the named options: --dotted.key VALUE or "
    "--dotted.key=VALUE, e.g. --train.steps 100 --method_args.rank 8 --tasks '[sst2, rte]'. "
    "Values are read as YAML (true, null, [16, 32], 3e-2); unknown keys and wrong types are refused."
)

_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*")
# YAML 1.1 (PyYAML) reads 3e-2 and 1e5 as strings: it wants a dot in a float. A user typing them means a number.
EXPONENT_FLOAT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")


def yaml_problem(err: yaml.YAMLError) -> str:
    """A YAML error on one line: ``line 3, column 7: mapping values are not allowed here``."""
    mark, problem = getattr(err, "problem_mark", None), getattr(err, "problem", None)
    if problem and mark is not None:
        return f"line {mark.line + 1}, column {mark.column + 1}: {problem}"
    return " ".join(str(err).split())


def parse_value(text: str, arg: str):
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise ConfigError(f"override {arg!r}: value {text!r} is not valid YAML ({yaml_problem(err)})") from None
    if isinstance(value, str) and EXPONENT_FLOAT.fullmatch(value.strip()):
        return float(value)
    return value


def parse_overrides(args: list[str]) -> dict:
    """``["--train.steps", "100", "--max_length=128"]`` -> ``{"train": {"steps": 100}, "max_length": 128}``.

    Refuses (with a ConfigError naming the argument) anything that is not ``--dotted.key VALUE`` or
    ``--dotted.key=VALUE``: a stray positional, a flag without a value, a key given twice, or a key
    given together with one of its sub-keys (``--train {steps: 5} --train.steps 6``).
    """
    result: dict = {}
    given: list[str] = []
    i = 0
    while i < len(args):
        arg = args[i]
        if not arg.startswith("--"):
            raise ConfigError(f"unexpected argument {arg!r}: config overrides are written {SYNTAX}")
        if "=" in arg:
            key, text = arg[2:].split("=", 1)
            i += 1
        else:
            key = arg[2:]
            if i + 1 >= len(args) or args[i + 1].startswith("--"):
                raise ConfigError(
                    f"override {arg!r} has no value: write {SYNTAX} (or it is an option this command does not have)"
                )
            text = args[i + 1]
            i += 2
        if not _KEY.fullmatch(key):
            raise ConfigError(
                f"override {arg!r}: {key!r} is not a config key (dot-separated field names, e.g. train.steps)"
            )
        for other in given:
            if other == key:
                raise ConfigError(f"override {arg!r}: key {key!r} is given twice")
            if other.startswith(key + ".") or key.startswith(other + "."):
                raise ConfigError(f"override {arg!r}: key {key!r} overlaps the earlier override {other!r}")
        given.append(key)
        *parents, leaf = key.split(".")
        node = result
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = parse_value(text, arg)
    return result


def merge(base: Mapping, overrides: Mapping) -> dict:
    """A new dict: ``base`` with ``overrides`` laid over it. Where both hold a mapping the two are
    merged key by key; any other override value replaces the base's. Neither argument is modified."""
    out = copy.deepcopy(dict(base))
    for key, value in overrides.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out
