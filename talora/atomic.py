"""Crash-safe files: a write either lands whole or leaves the previous file as it was.

Every file talora writes (adapters, checkpoints, metrics, manifests, tables) goes
through a synced temporary file in the same folder and an atomic rename, so a kill
at any moment never leaves a half-written file behind.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save


def fsync_dir(path: Path) -> None:
    """Make a rename inside ``path`` durable (the rename lives in the folder's entry table)."""
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
    fsync_dir(path.parent)


def atomic_save_tensors(path: Path, tensors: dict[str, torch.Tensor]) -> None:
    atomic_write(path, save({k: v.detach().contiguous().cpu() for k, v in tensors.items()}))


def read_tensors(path: Path, error: type[Exception]) -> dict[str, torch.Tensor]:
    """The tensors of a safetensors file; an unreadable file raises ``error`` naming it."""
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as err:
        raise error(f"{path}: not a readable safetensors file ({err})") from None
