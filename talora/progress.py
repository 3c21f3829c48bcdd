"""Progress bars for every long phase, quiet when asked and readable in logs.

``TALORA_QUIET=1`` (the CLI's ``--quiet``) hides them, and so does any data-parallel rank
but the first; when stderr is not a terminal (CI, ``nohup``, a log file) a bar is drawn
in ASCII as whole lines at most every 30 s, without carriage returns or cursor moves, so a
log holds a few readable lines per phase rather than thousands; ``NO_COLOR`` is honoured
by never colouring them. ``library_bars`` applies the same rules to the bars that
transformers and huggingface_hub draw themselves (loading weights, GGUF conversion).
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Iterable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tqdm import tqdm


def quiet() -> bool:
    return os.environ.get("TALORA_QUIET", "") not in ("", "0") or os.environ.get("RANK", "0") != "0"


def library_bars() -> None:
    """Bring other libraries' tqdm bars under the rules above. tqdm reads ``TQDM_*`` defaults and
    huggingface_hub its switch when first imported, so the CLI calls this before importing them
    (this module imports tqdm only when it draws a bar)."""
    if quiet():
        os.environ.setdefault("TQDM_DISABLE", "1")
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
        if "transformers" in sys.modules:  # imported already (a library caller): switch its bars off directly
            sys.modules["transformers"].utils.logging.disable_progress_bar()
    elif not sys.stderr.isatty():
        os.environ.setdefault("TQDM_MININTERVAL", "30")


class _LogLines:
    """A stream for a bar drawn into a log: each redraw becomes one plain line."""

    _CONTROL = re.compile(r"\r|\x1b\[[0-9;]*[A-Za-z]")

    def __init__(self, stream):
        self.stream = stream

    def write(self, text: str) -> None:
        # Redraws start with a carriage return and nested bars move the cursor; a cleared bar is blanks.
        line = self._CONTROL.sub("", text).strip()
        if line:
            self.stream.write(line + "\n")

    def flush(self) -> None:
        self.stream.flush()


def progress(
    iterable: Iterable | None = None, *, desc: str, total: int | None = None, initial: int = 0, leave: bool = False
) -> tqdm:
    """A tqdm bar over ``iterable`` (or a manual one with ``total``) following the rules above."""
    from tqdm.auto import tqdm

    tty = sys.stderr.isatty()
    return tqdm(
        iterable,
        desc=desc,
        total=total,
        initial=initial,
        leave=leave or not tty,  # a log keeps each phase's last line: its count, time and rate
        disable=quiet(),
        file=sys.stderr if tty else _LogLines(sys.stderr),
        dynamic_ncols=tty,
        mininterval=0.1 if tty else 30.0,
        ascii=not tty,
        colour=None,
    )


if quiet():  # a library caller who set TALORA_QUIET: transformers' own bars (loading weights) go too
    library_bars()
