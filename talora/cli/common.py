"""What every command of the CLI shares: its parser class, the options spelt the same way everywhere,
the options that stand for a config field, and the argument types.

An option is declared once. ``shared(parser, "output", "json", ...)`` attaches the ones every command
spells alike (``--output``, ``--json``, ``--data-dir``, ``--device``, ``--dtype``); a command changes
only what differs for it (its help, a default, whether it is required). An option that sets a run
config field (``--seed``, ``--method``, ``--data-dir``, ``--device``, ``--dtype``, ``--shots``) takes
its type and help from the field in talora/config.py, as the ``--dotted.key VALUE`` overrides do.
``command`` makes a command's parser and gives it ``--quiet``.

Only argparse and the torch-free config reader are imported here: ``talora --help`` stays fast.
"""

from __future__ import annotations

import argparse
import sys
import typing
from pathlib import Path

from ..errors import ConfigError
from ..tasks.sampling import K_ALL

QUIET_HELP = "no progress bars (TALORA_QUIET=1); results still go to stdout"

# Options every command spells alike, beside those that are run-config fields (CONFIG_FIELDS).
# `talora bench ... --json PATH` is another option that shares the name: it writes a file.
_SHARED = {
    "output": {"help": "output folder"},
    "json": {"action": "store_true", "help": "print the result as JSON"},
}
CONFIG_FIELDS = ("data_dir", "device", "dtype", "seed", "method", "shots")


class Parser(argparse.ArgumentParser):
    """Usage errors end in one ``talora: error: <command>: ...`` line, like every other error."""

    def error(self, message: str):
        self.print_usage(sys.stderr)
        command = self.prog.partition(" ")[2]
        self.exit(2, f"talora: error: {command + ': ' if command else ''}{message}\n")


def command(sub, name: str, *, overrides: bool = False, **kwargs) -> argparse.ArgumentParser:
    """A command's parser, with ``--quiet`` (also accepted before the command). ``overrides``: the
    arguments it does not know are ``--dotted.key VALUE`` config overrides (``args.overrides``); its
    options then match exactly, so ``--data 5`` is refused as an unknown key, never read as ``--data-dir``."""
    if overrides:
        kwargs["allow_abbrev"] = False
    parser = sub.add_parser(name, **kwargs)
    # SUPPRESS: left out after the command, the value given before it (or False) stays.
    parser.add_argument("--quiet", action="store_true", default=argparse.SUPPRESS, help=QUIET_HELP)
    parser.set_defaults(takes_overrides=overrides)
    return parser


def shared(parser: argparse.ArgumentParser, *names: str, **changes: dict) -> None:
    """Attach the shared options ``names`` (keys of ``_SHARED`` or run-config fields); ``changes[name]``
    holds what this command says differently (``help``, ``required``, ``default``, ``choices``)."""
    for name in names:
        if name in CONFIG_FIELDS:
            config_option(parser, name, **changes.get(name, {}))
        else:
            parser.add_argument(f"--{name.replace('_', '-')}", **{**_SHARED[name], **changes.get(name, {})})


def config_option(parser: argparse.ArgumentParser, name: str, **changes) -> None:
    """``--name`` for the run-config field ``name``: its type and help are the field's (talora/config.py);
    left out, it is None and the config's value stands."""
    from ..config import RunConfig, field_help

    hint = typing.get_type_hints(RunConfig)[name]
    kind = next((t for t in (int, float) if hint is t or t in typing.get_args(hint)), None)
    settings = {
        "dest": name,
        "help": f"{field_help(RunConfig)[name]}; default: the config's",
        **({"type": kind} if kind else {}),
    }
    parser.add_argument(f"--{name.replace('_', '-')}", **{**settings, **changes})


def config_flags(args, *names: str) -> dict:
    """The run-config fields ``names`` that were given as options, by field name."""
    return {name: getattr(args, name) for name in names if getattr(args, name) is not None}


def with_overrides(flags: dict, overrides: dict) -> dict:
    """The named options that were given, plus the dotted overrides; a field set both ways is refused."""
    flags = {k: v for k, v in flags.items() if v is not None}
    if both := sorted(set(flags) & set(overrides)):
        raise ConfigError(f"{', '.join(both)} given both as an option and as an override (--{both[0]} ...)")
    return {**flags, **overrides}


def placement(args) -> dict:
    """``--device``/``--dtype`` as given (the config's, or auto, where left out)."""
    return config_flags(args, "device", "dtype")


def check_output(path: str | None) -> None:
    """Refuse an --output that cannot become a folder before anything is loaded or written."""
    if path is not None and Path(path).exists() and not Path(path).is_dir():
        raise ConfigError(f"--output {path} is a file, not a folder")


def metrics_line(metrics: dict) -> str:
    return "  ".join(f"{k}={v:.4f}" for k, v in metrics.items())


# ---------------------------------------------------------------- argument types
def k_shots(text: str) -> int | str:
    return K_ALL if text == K_ALL else positive_int(text)


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 0, got {text!r}")
    return value


def port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"expected a TCP port from 0 to 65535, got {text!r}")
    return value


def numbers(kind):
    def parse(text: str) -> tuple:
        try:
            values = tuple(kind(v) for v in text.split(","))
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None
        if not values or min(values) <= 0:
            raise argparse.ArgumentTypeError(f"expected positive numbers, got {text!r}")
        return values

    return parse
