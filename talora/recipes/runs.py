"""A manifest of finished units for multi-stage runs and sweeps, so a re-run redoes only what is missing.

``manifest.json`` in the sweep folder maps a unit name ("train talora", "transfer talora
product_sentiment k=16 seed=0", ...) to the SHA-256 of its output files and its summary.
A unit counts as finished only if every file recorded with it still hashes the same: a unit
whose adapter, metrics or predictions were deleted, truncated or overwritten is run again. A unit
records the files it has (a zero-shot unit has predictions only; a sweep may drop its target
units' adapters), and the folder it names is relative to the manifest's, so a sweep folder can
be moved or committed as a whole. Sweeps started on one folder
(TA-LoRA's tables share their sources) share the manifest: each record merges with the file
under a lock instead of overwriting it. A process running a unit holds a lock on the unit's
folder (released when it ends, however it ends), so several processes can work through one
sweep together: each runs the units no other is running, and one that needs a unit another is
running waits for it and reads its record.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path

from ..adapters.files import SIDECAR, TENSORS
from ..atomic import atomic_write
from ..distributed import world

MANIFEST = "manifest.json"
LOCK = ".manifest.lock"
OUTPUTS = (TENSORS, SIDECAR, "metrics.json", "predictions.json")


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _digest(folder: Path) -> dict[str, str]:
    return {name: _sha(folder / name) for name in OUTPUTS if (folder / name).is_file()}


class RunManifest:
    def __init__(self, folder: Path):
        self.folder = Path(folder)
        self.path = self.folder / MANIFEST
        self.units: dict = json.loads(self.path.read_text()) if self.path.is_file() else {}

    def finished(self, unit: str, output: Path) -> dict | None:
        entry = self.units.get(unit)
        if entry is None:
            return None
        output = Path(output)
        files = entry["files"]
        if files is None:
            # Recorded by a release that hashed adapter units only: a unit without an adapter (the
            # zero-shot ones) counts as finished while its predictions are there.
            return entry["summary"] if (output / "predictions.json").is_file() else None
        for name, sha in files.items():
            if not (output / name).is_file() or _sha(output / name) != sha:
                return None
        return entry["summary"]

    def record(self, unit: str, output: Path, summary: dict) -> None:
        output = Path(output)
        where = output.relative_to(self.folder) if output.is_relative_to(self.folder) else output
        entry = {"output": str(where), "files": _digest(output), "summary": summary}
        self.units[unit] = entry
        w = world()
        if w.is_main:  # one writer under a data-parallel launch; the others read it after the barrier
            self.folder.mkdir(parents=True, exist_ok=True)
            # Two sweeps may share a folder (the tables share their sources): add this unit to what
            # is on disk, under a lock. Only this unit: this process's copy of the others may be
            # stale (another sweep may have re-recorded them since), and must not overwrite them.
            with open(self.folder / LOCK, "a") as lock:
                fcntl.flock(lock, fcntl.LOCK_EX)
                on_disk = json.loads(self.path.read_text()) if self.path.is_file() else {}
                self.units = {**on_disk, unit: entry}
                atomic_write(self.path, json.dumps(self.units, indent=1).encode())
        w.barrier()

    def run(self, unit: str, output: Path, work: Callable[[], dict], wait: bool = True) -> dict | None:
        """The stored summary of a finished, intact unit; otherwise run ``work`` and record it. When
        another process is running the unit: with ``wait``, its summary once it has finished; without,
        None at once."""
        done = self.finished(unit, output)
        if done is not None:
            return done
        with _claim(Path(output), wait) as mine:
            if not mine:
                return None
            if self.path.is_file() and not world().parallel:  # the process waited for may have recorded it
                self.units = json.loads(self.path.read_text())
            done = self.finished(unit, output)
            if done is not None:
                return done
            summary = work()
            self.record(unit, output, summary)
            return summary


@contextlib.contextmanager
def _claim(folder: Path, wait: bool) -> Iterator[bool]:
    """Whether this process holds the unit's folder (an advisory lock on the folder itself: no file is
    left behind, and the lock ends with the process). The ranks of a data-parallel launch run every
    unit together, so they do not claim."""
    if world().parallel:
        yield True
        return
    folder.mkdir(parents=True, exist_ok=True)
    fd = os.open(folder, os.O_RDONLY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
            mine = True
        except BlockingIOError:
            mine = False
        yield mine
    finally:
        os.close(fd)
