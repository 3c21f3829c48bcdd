"""The frozen lower layers, computed once: an opt-in on-disk cache of the first prompted layer's input.

Deep methods (TA-LoRA, deep prompt tuning, DTVG-style deep variants) leave layers
``0 .. first-1`` untouched, so the hidden state entering layer ``first`` is a constant
of the example. With the cache on, it is computed once per token sequence and read
back from a memory-mapped file by every later step, epoch, evaluation and method.

Key. An entry is addressed by the digest of the exact token ids it was computed from
(which already encodes the example, its template and its truncation, hence
``max_length``), inside a folder named by the model's weights digest and ``first``.
This is stricter than "example id + max length": an edited template or tokenizer can
never read a stale entry.

Layout. ``<root>/<weights digest>-L<first>/states.f32`` holds rows of ``hidden``
float32 values appended back to back (a half-precision model stores its own dtype, in
``<weights digest>-L<first>-<dtype>/states.<dtype>``: the dtype is part of the key,
and the digest is of the weights' values, wherever they live); ``index.jsonl`` holds one line per entry
``{"key", "offset", "rows", "crc"}`` written only after the rows are flushed and
fsynced. A crash can leave a torn last index line or unindexed rows: both are ignored
on load (the entry is simply recomputed), and each entry's CRC-32 is checked on first
read, so a damaged file never yields wrong activations.

Causality makes this exact: with right padding, a token's lower-layer state depends
only on the tokens before it, never on the batch it was computed in.

Lifetime. A ``LowerLayerCaches`` belongs to one run (a recipe creates it when the run
config asks for it and hands it to the trainer and the evaluator); it holds one
``LowerLayerCache`` per first prompted layer and the weights digest, computed once.
Two runs in one process (a server thread, a sweep) each hold their own.
"""

from __future__ import annotations

import hashlib
import json
import os
import zlib
from pathlib import Path

import numpy as np
import torch

from ..distributed import world
from .backbone import Backbone, cache_dir


def weights_digest(backbone: Backbone) -> str:
    """A content hash of the weights (shape fingerprints cannot tell two checkpoints apart)."""
    h = hashlib.sha256()
    for name, p in backbone.model.state_dict().items():
        flat = p.detach().reshape(-1)
        # The ends of every tensor plus its sum: distinguishes checkpoints without hashing 0.5 GB.
        sample = torch.cat([flat[:4096], flat[-4096:], flat.float().sum().reshape(1)]).float().cpu()
        h.update(name.encode())
        h.update(str(tuple(p.shape)).encode())
        h.update(sample.numpy().tobytes())
    return h.hexdigest()[:16]


class LowerLayerCaches:
    """One run's lower-layer caches of one backbone, one per first prompted layer (see the module docstring)."""

    def __init__(self, backbone: Backbone, root: Path | None = None):
        self.backbone, self.root = backbone, Path(root or cache_dir() / "activations")
        self.digest = weights_digest(backbone)
        self._by_layer: dict[int, LowerLayerCache] = {}

    def layer(self, first: int) -> LowerLayerCache:
        if first not in self._by_layer:
            dtype = self.backbone.dtype
            suffix = "" if dtype == torch.float32 else f"-{str(dtype).removeprefix('torch.')}"
            w = world()
            suffix += f"-rank{w.rank}" if w.parallel else ""  # one writer per cache file
            folder = self.root / f"{self.digest}-L{first}{suffix}"
            self._by_layer[first] = LowerLayerCache(folder, self.backbone.model.config.hidden_size, dtype)
        return self._by_layer[first]


# How each compute dtype is stored: numpy has no bfloat16, so its bits travel as int16.
_STORED = {
    torch.float32: (np.float32, torch.float32, "f32"),
    torch.float16: (np.float16, torch.float16, "float16"),
    torch.bfloat16: (np.int16, torch.int16, "bfloat16"),
}


def sequence_key(ids: torch.Tensor) -> str:
    return hashlib.sha1(ids.to(torch.int64).numpy().tobytes()).hexdigest()


class LowerLayerCache:
    """Hidden states entering one layer per token sequence, in one folder (see the module docstring)."""

    def __init__(self, folder: Path, hidden: int, dtype: torch.dtype = torch.float32):
        self.folder, self.hidden, self.dtype = Path(folder), hidden, dtype
        self.np_dtype, self.bits, name = _STORED[dtype]
        self.itemsize = np.dtype(self.np_dtype).itemsize
        self.folder.mkdir(parents=True, exist_ok=True)
        self.data_path, self.index_path = self.folder / f"states.{name}", self.folder / "index.jsonl"
        self.index: dict[str, tuple[int, int, int]] = {}
        self.verified: set[str] = set()
        self._map: np.memmap | None = None
        self.hits = self.misses = 0
        self._load_index()

    def _load_index(self) -> None:
        size = self.data_path.stat().st_size if self.data_path.exists() else 0
        if not self.index_path.exists():
            return
        for line in self.index_path.read_text().splitlines():
            try:
                entry = json.loads(line)
                key, offset, rows, crc = entry["key"], int(entry["offset"]), int(entry["rows"]), int(entry["crc"])
            except (ValueError, KeyError, TypeError):
                continue  # a torn line from an interrupted append
            if (offset + rows * self.hidden) * self.itemsize <= size:
                self.index[key] = (offset, rows, crc)

    def _rows(self, key: str) -> np.ndarray | None:
        offset, rows, crc = self.index[key]
        if self._map is None or self._map.shape[0] < offset + rows * self.hidden:
            self._map = np.memmap(self.data_path, dtype=self.np_dtype, mode="r")
        block = self._map[offset : offset + rows * self.hidden]
        if key not in self.verified:
            if zlib.crc32(block.tobytes()) != crc:
                del self.index[key]
                return None
            self.verified.add(key)
        return block.reshape(rows, self.hidden)

    def _append(self, entries: list[tuple[str, np.ndarray]]) -> None:
        with open(self.data_path, "ab") as data:
            start = data.tell() // self.itemsize
            lines, offset = [], start
            for key, rows in entries:
                blob = np.ascontiguousarray(rows).tobytes()
                data.write(blob)
                lines.append(json.dumps({"key": key, "offset": offset, "rows": rows.shape[0], "crc": zlib.crc32(blob)}))
                offset += rows.size
            data.flush()
            os.fsync(data.fileno())
        with open(self.index_path, "a+b") as index:
            torn = False
            if index.tell() > 0:
                index.seek(-1, os.SEEK_END)
                torn = index.read(1) != b"\n"
            # After a torn line, start a fresh one so the new entries stay readable.
            index.write((("\n" if torn else "") + "\n".join(lines) + "\n").encode())
            index.flush()
            os.fsync(index.fileno())
        offset = start
        for key, rows in entries:
            self.index[key] = (offset, rows.shape[0], zlib.crc32(np.ascontiguousarray(rows).tobytes()))
            self.verified.add(key)
            offset += rows.size

    def states(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, compute) -> torch.Tensor:
        """(B, T, d) states entering layer ``first`` for a right-padded batch (zeros at padding), in the
        cache's dtype on the batch's device.

        ``compute(ids, mask)`` runs the lower layers on the rows that are not cached yet.
        """
        device = input_ids.device
        input_ids, attention_mask = input_ids.cpu(), attention_mask.cpu()
        lengths = attention_mask.sum(1).tolist()
        keys = [sequence_key(input_ids[i, :n]) for i, n in enumerate(lengths)]
        out = torch.zeros(*input_ids.shape, self.hidden, dtype=self.dtype)
        missing = []
        for i, key in enumerate(keys):
            rows = self._rows(key) if key in self.index else None
            if rows is None:
                missing.append(i)
            else:
                out[i, : lengths[i]] = torch.from_numpy(np.array(rows)).view(self.dtype)
        self.hits += len(keys) - len(missing)
        self.misses += len(missing)
        if missing:
            width = max(lengths[i] for i in missing)
            ids, mask = input_ids[missing, :width].to(device), attention_mask[missing, :width].to(device)
            fresh = compute(ids, mask).to(self.dtype).cpu()
            new = {}
            for j, i in enumerate(missing):
                out[i, : lengths[i]] = fresh[j, : lengths[i]]
                new.setdefault(keys[i], fresh[j, : lengths[i]].view(self.bits).numpy())  # a batch may repeat a row
            self._append(list(new.items()))
        return out.to(device)
