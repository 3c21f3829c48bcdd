"""The ``talora`` command line: train, transfer, eval, demo, tasks, methods, store, predict.

Every error a user can act on ends the command with one ``talora: error: ...`` line on
stderr and exit status 2, usage errors included; a traceback means a bug in talora.
"""

# One module per command group, each building its parsers beside its handlers: run (train, transfer,
# eval), sweep (sweep, budget, demo), info (tasks, methods, config, plan), data (data, push), store
# (store, predict), serve, bench, analyze; the options they share are declared once in common. A
# handler imports what it runs when it runs, so that parsing a command line loads no model library.

from __future__ import annotations

import argparse
import os
import sys

from ..errors import TaloraError
from ..overrides import parse_overrides
from . import analyze, bench, data, info, run, serve, store, sweep
from .common import QUIET_HELP, Parser

# Each adds one command; their order is that of `talora --help`.
COMMANDS = (
    run.add_train,
    run.add_transfer,
    run.add_eval,
    sweep.add_demo,
    info.add_tasks,
    data.add_data,
    data.add_push,
    sweep.add_sweep,
    sweep.add_budget,
    info.add_methods,
    info.add_config,
    info.add_plan,
    analyze.add_analyze,
    bench.add_bench,
    store.add_store,
    store.add_predict,
    serve.add_serve,
)


def _version() -> str:
    """talora's version and those of the libraries a bug report needs, read without importing them."""
    from importlib.metadata import PackageNotFoundError, version

    from .. import __version__

    found = []
    for name in ("torch", "transformers", "peft"):
        try:
            found.append(f"{name} {version(name)}")
        except PackageNotFoundError:
            found.append(f"{name} missing")
    return f"talora {__version__} ({', '.join(found)}, python {sys.version.split()[0]})"


def build_parser() -> argparse.ArgumentParser:
    p = Parser(prog="talora", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--version", action="version", version=_version(), help="print the versions and exit")
    p.add_argument("--quiet", action="store_true", help=QUIET_HELP)
    sub = p.add_subparsers(dest="command", required=True)
    for add in COMMANDS:
        add(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extras = parser.parse_known_args(argv)
    if extras and not args.takes_overrides:
        parser.error(f"{args.command}: unrecognized arguments: {' '.join(extras)}")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if args.quiet:
        os.environ["TALORA_QUIET"] = "1"
    if os.environ.get("RANK", "0") != "0":  # a data-parallel launch: rank 0 alone shows progress
        os.environ["TALORA_QUIET"] = "1"
    from ..progress import library_bars

    library_bars()  # before any command imports transformers: it reads the settings once
    try:
        args.overrides = parse_overrides(extras) if args.takes_overrides else {}
        args.func(args)
    except TaloraError as err:
        message = " ".join(line.strip() for line in str(err).splitlines() if line.strip())
        print(f"talora: error: {message}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # `talora tasks | head`
        sys.stderr.close()
        return 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
