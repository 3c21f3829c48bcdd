"""Resumable training checkpoints, without pickle.

A checkpoint is a folder ``ckpt-<step>`` holding ``tensors.safetensors`` and
``meta.json``; the file ``latest.json`` names the current one and is replaced
atomically only after the folder is complete and synced. A kill at any moment
leaves either the previous checkpoint or the new one, never a partial file.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import torch

from ..atomic import atomic_save_tensors, atomic_write, fsync_dir, read_tensors
from ..errors import CheckpointError

POINTER = "latest.json"


def save_checkpoint(folder: Path, step: int, tensors: dict[str, torch.Tensor], meta: dict) -> None:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(dir=folder, prefix=".ckpt-"))
    try:
        atomic_save_tensors(work / "tensors.safetensors", tensors)
        atomic_write(work / "meta.json", json.dumps({**meta, "step": step}).encode())
        final = folder / f"ckpt-{step}"
        if final.exists():
            shutil.rmtree(final)
        os.replace(work, final)
        fsync_dir(folder)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    atomic_write(folder / POINTER, json.dumps({"current": final.name}).encode())
    for old in folder.glob("ckpt-*"):  # only after the pointer moved on
        if old.name != final.name:
            shutil.rmtree(old, ignore_errors=True)


def load_checkpoint(folder: Path) -> tuple[dict[str, torch.Tensor], dict] | None:
    pointer = Path(folder) / POINTER
    if not pointer.is_file():
        return None
    try:
        current = Path(folder) / json.loads(pointer.read_text())["current"]
        meta = json.loads((current / "meta.json").read_text())
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise CheckpointError(
            f"{pointer}: the checkpoint it names cannot be read ({err}); delete {folder} to start over"
        ) from None
    return read_tensors(current / "tensors.safetensors", CheckpointError), meta
