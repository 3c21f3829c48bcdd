"""Few-shot training sets: k examples per class (or k in all), the same for a seed on every run."""

from __future__ import annotations

import random
from typing import Sequence

from ..errors import DataError
from .base import Example


def sample_k_shot(examples: Sequence[Example], k: int, seed: int, per_class: bool = True,
                  labels: Sequence[str] | None = None) -> list[Example]:
    """k examples of every class (``per_class``) or k in all, shuffled; ``labels`` also demands classes
    missing from the split entirely."""
    if k <= 0:
        raise DataError(f"k must be a positive number of shots, got {k}")
    if not examples:
        raise DataError("cannot sample few-shot examples from an empty split")
    task = examples[0].task
    # A string seed goes through SHA-512 in `random`, so the draw ignores PYTHONHASHSEED; the task name
    # keeps two tasks sampled with one seed from reusing the same positions.
    rng = random.Random(f"k-shot:{task}:{seed}")
    if per_class:
        by_label: dict[str, list[Example]] = {lab: [] for lab in labels or ()}
        for ex in examples:
            by_label.setdefault(ex.label, []).append(ex)
        short = {lab: len(exs) for lab, exs in by_label.items() if len(exs) < k}
        if short:
            listed = ", ".join(f"{lab!r} has {n}" for lab, n in sorted(short.items()))
            raise DataError(f"task {task!r}: k={k} per class is more than the split holds ({listed})")
        chosen = [ex for lab in sorted(by_label) for ex in rng.sample(by_label[lab], k)]
    else:
        if k > len(examples):
            raise DataError(f"task {task!r}: k={k} is more than the {len(examples)} examples of the split")
        chosen = rng.sample(list(examples), k)
    rng.shuffle(chosen)
    return chosen
