"""A manifest of finished units for multi-stage runs and sweeps, so a re-run redoes only what is missing.

``manifest.json`` in the sweep folder maps a unit name ("train talora", "transfer talora
product_sentiment k=16 seed=0", ...) to the SHA-256 of its output files and its summary.
A unit counts as finished only if every recorded file still hashes the same: a unit whose
adapter was deleted, truncated or overwritten is run again. Sweeps started on one folder
(TA-LoRA's tables share their sources) share the manifest: each record merges with the file
under a lock instead of overwriting it. Two processes never run the same unit on purpose; if
they do, the later record wins and both describe identical files.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
from collections.abc import Callable
from pathlib import Path

from ..atomic import atomic_write
from ..distributed import world

MANIFEST = "manifest.json"
LOCK = ".manifest.lock"
OUTPUTS = ("adapter.safetensors", "adapter.json", "metrics.json")


def _digest(folder: Path) -> dict[str, str] | None:
    digests = {}
    for name in OUTPUTS:
        path = folder / name
        if not path.is_file():
            return None
        digests[name] = hashlib.sha256(path.read_bytes()).hexdigest()
    return digests


class RunManifest:
    def __init__(self, folder: Path):
        self.folder = Path(folder)
        self.path = self.folder / MANIFEST
        self.units: dict = json.loads(self.path.read_text()) if self.path.is_file() else {}

    def finished(self, unit: str, output: Path) -> dict | None:
        entry = self.units.get(unit)
        if entry is None or entry["files"] != _digest(Path(output)):
            return None
        return entry["summary"]

    def record(self, unit: str, output: Path, summary: dict) -> None:
        self.units[unit] = {"output": str(output), "files": _digest(Path(output)), "summary": summary}
        w = world()
        if w.is_main:  # one writer under a data-parallel launch; the others read it after the barrier
            self.folder.mkdir(parents=True, exist_ok=True)
            # Two sweeps may share a folder (the tables share their sources): merge with what the
            # other wrote since this one read the file, under a lock, instead of overwriting it.
            with open(self.folder / LOCK, "a") as lock:
                fcntl.flock(lock, fcntl.LOCK_EX)
                on_disk = json.loads(self.path.read_text()) if self.path.is_file() else {}
                self.units = {**on_disk, **self.units}
                atomic_write(self.path, json.dumps(self.units, indent=1).encode())
        w.barrier()

    def run(self, unit: str, output: Path, work: Callable[[], dict]) -> dict:
        """The stored summary of a finished, intact unit; otherwise run ``work`` and record it."""
        done = self.finished(unit, output)
        if done is not None:
            return done
        summary = work()
        self.record(unit, output, summary)
        return summary
