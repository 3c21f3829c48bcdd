"""Crash-safe files: atomic writes and resumable training checkpoints, without pickle.

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
from safetensors import SafetensorError
from safetensors.torch import load_file, save

from .errors import AdapterError

POINTER = "latest.json"


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a synced temporary file in the same folder."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def atomic_save_tensors(path: Path, tensors: dict[str, torch.Tensor]) -> None:
    atomic_write(path, save({k: v.detach().contiguous().cpu() for k, v in tensors.items()}))


def read_tensors(path: Path) -> dict[str, torch.Tensor]:
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as err:
        raise AdapterError(f"{path}: not a readable safetensors file ({err})") from None


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
        _fsync_dir(folder)
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
    current = Path(folder) / json.loads(pointer.read_text())["current"]
    meta = json.loads((current / "meta.json").read_text())
    return read_tensors(current / "tensors.safetensors"), meta
