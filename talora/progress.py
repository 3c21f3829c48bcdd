"""Progress bars for every long phase, quiet when asked and readable in logs.

``TALORA_QUIET=1`` (the CLI's ``--quiet``) hides them; when stderr is not a terminal
(CI, ``nohup``, a log file) a bar redraws at most every 30 s instead of many times a
second, so a log holds a few lines per phase rather than thousands; ``NO_COLOR``
is honoured by never colouring them.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable

from tqdm.auto import tqdm


def quiet() -> bool:
    return os.environ.get("TALORA_QUIET", "") not in ("", "0")


def progress(
    iterable: Iterable | None = None, *, desc: str, total: int | None = None, initial: int = 0, leave: bool = False
) -> tqdm:
    """A tqdm bar over ``iterable`` (or a manual one with ``total``) following the rules above."""
    tty = sys.stderr.isatty()
    return tqdm(
        iterable,
        desc=desc,
        total=total,
        initial=initial,
        leave=leave,
        disable=quiet(),
        dynamic_ncols=tty,
        mininterval=0.1 if tty else 30.0,
        colour=None,
    )
