"""Atomic files and checkpoints: a failed write never replaces good data."""

import json

import pytest
import torch

from talora import atomic
from talora.errors import CheckpointError
from talora.training import checkpoint as ck


def test_checkpoint_round_trip_and_pointer(tmp_path):
    ck.save_checkpoint(tmp_path, 5, {"a": torch.arange(3.0)}, {"x": 1})
    ck.save_checkpoint(tmp_path, 10, {"a": torch.arange(4.0)}, {"x": 2})
    tensors, meta = ck.load_checkpoint(tmp_path)
    assert meta == {"x": 2, "step": 10} and torch.equal(tensors["a"], torch.arange(4.0))
    assert [p.name for p in tmp_path.glob("ckpt-*")] == ["ckpt-10"]


def test_failed_write_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    ck.save_checkpoint(tmp_path, 5, {"a": torch.ones(2)}, {"x": 1})

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(atomic, "save", disk_full)
    with pytest.raises(OSError):
        ck.save_checkpoint(tmp_path, 10, {"a": torch.zeros(2)}, {"x": 2})
    tensors, meta = ck.load_checkpoint(tmp_path)
    assert meta["step"] == 5 and torch.equal(tensors["a"], torch.ones(2))
    assert not list(tmp_path.glob(".ckpt-*")) and not list(tmp_path.glob("ckpt-10"))


def test_atomic_write_failure_leaves_old_file(tmp_path, monkeypatch):
    target = tmp_path / "m.json"
    atomic.atomic_write(target, b'{"ok": 1}')
    monkeypatch.setattr(atomic.os, "replace", lambda *a: (_ for _ in ()).throw(OSError("boom")))
    with pytest.raises(OSError):
        atomic.atomic_write(target, b"partial")
    assert json.loads(target.read_text()) == {"ok": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["m.json"]


def test_no_checkpoint_is_none(tmp_path):
    assert ck.load_checkpoint(tmp_path) is None


def test_a_damaged_checkpoint_is_a_checkpoint_error(tmp_path):
    ck.save_checkpoint(tmp_path, 5, {"a": torch.ones(2)}, {"x": 1})
    (tmp_path / "ckpt-5" / "tensors.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(CheckpointError, match="tensors.safetensors"):
        ck.load_checkpoint(tmp_path)
    (tmp_path / ck.POINTER).write_text('{"current": "ckpt-99"}')
    with pytest.raises(CheckpointError, match="latest.json"):
        ck.load_checkpoint(tmp_path)
