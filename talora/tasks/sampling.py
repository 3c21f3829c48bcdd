"""The evaluation protocol's splits and few-shot training sets.

* "unseen data": the source tasks' ``validation`` split, after multi-task training on their ``train``.
* "unseen task": a target task's ``test`` split (``validation`` where it has no labelled test),
  after training on k examples of its ``train`` split.
* k-shot (k in ``KS``, one draw per seed), counted as each paper counts (``SHOT_MODES``):
  ``per_class`` (TA-LoRA) takes k examples of *every* class of a classification task (a class
  with fewer than k training examples gives all it has, so no class is ever dropped; a class
  with none is an error) and k in all for multiple choice, regression and extraction;
  ``total`` (Task Prompt Vectors, DTVG) takes k examples in all for every kind.
  ``k = "all"`` (``K_ALL``) takes the whole training pool, shuffled: a target trained on all its data.
  Training examples whose input equals an evaluation example's are never drawn, so the shots are
  disjoint from what they are scored on even where a dataset repeats items across its splits.
  The draw depends only on (task name, seed, k) and the split's order, never on PYTHONHASHSEED.
"""

from __future__ import annotations

import json
import random
from collections.abc import Sequence

from ..errors import DataError
from .base import Example, Task

KS = (16, 32, 64)
K_ALL = "all"
SHOT_MODES = ("per_class", "total")
EVAL_SPLITS = ("validation", "test")


def evaluation_split(task: Task) -> str:
    """Where a target task is scored: test when it has labelled test data, else validation."""
    return "test" if task.splits.get("test") else "validation"


def sample_k_shot(
    examples: Sequence[Example], k: int, seed: int, per_class: bool = True, labels: Sequence[str] | None = None
) -> list[Example]:
    """k examples of every class (``per_class``; fewer where a class has fewer) or k in all, shuffled;
    ``labels`` also demands classes missing from the split entirely."""
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
        empty = sorted(lab for lab, exs in by_label.items() if not exs)
        if empty:
            raise DataError(
                f"task {task!r}: no training example of class(es) {empty}, so k-shot sampling cannot keep every class"
            )
        chosen = [ex for lab in sorted(by_label) for ex in rng.sample(by_label[lab], min(k, len(by_label[lab])))]
    else:
        if k > len(examples):
            raise DataError(f"task {task!r}: k={k} is more than the {len(examples)} examples of the split")
        chosen = rng.sample(list(examples), k)
    rng.shuffle(chosen)
    return chosen


def input_key(ex: Example) -> str:
    return json.dumps(ex.fields, sort_keys=True, ensure_ascii=False)


def few_shot(task: Task, k: int | str, seed: int, mode: str = "per_class") -> list[Example]:
    """The k-shot training set of ``task`` under the protocol above (drawn from its train split)."""
    if mode not in SHOT_MODES:
        raise DataError(f"shot mode must be one of {', '.join(SHOT_MODES)}, got {mode!r}")
    k = parse_k(k)
    train = task.splits.get("train") or []
    if not train:
        raise DataError(f"task {task.spec.name!r} has no train split to draw {k} shots from")
    held_out = {input_key(ex) for split in EVAL_SPLITS for ex in task.splits.get(split, [])}
    pool = [ex for ex in train if input_key(ex) not in held_out]
    if not pool:
        raise DataError(f"task {task.spec.name!r}: every training example repeats an evaluation example")
    if k == K_ALL:
        return sample_k_shot(pool, len(pool), seed, per_class=False)
    if mode == "per_class" and task.spec.task_kind.per_class:
        return sample_k_shot(pool, k, seed, per_class=True, labels=task.spec.labels)
    return sample_k_shot(pool, k, seed, per_class=False)


def is_k(value) -> bool:
    """Whether ``value`` is a k as configs give it: a positive integer (not a YAML boolean) or ``all``."""
    return value == K_ALL or (isinstance(value, int) and not isinstance(value, bool) and value > 0)


def parse_k(value: str | int) -> int | str:
    """A k from the command line or a config: a positive integer or ``all``."""
    if is_k(value):
        return value
    if isinstance(value, str) and value.isdigit() and int(value) > 0:
        return int(value)
    raise DataError(f"k must be a positive number of shots or {K_ALL!r}, got {value!r}")


def scored_sample(examples: Sequence[Example], n: int, seed: int, labels: Sequence[str] = ()) -> list[int]:
    """The positions (ascending) of the ``n`` lines of a split that are scored: all of them when
    ``n`` is 0 or covers the split, else a seeded random sample, stratified by label when ``labels``
    (a classification task's) are given. Never the first ``n`` lines: a file grouped by label would
    then score one class.

    The draw depends on (task, seed, n) and the split alone, so every method, k and transfer seed
    of a sweep is scored on the same lines. Strata get ``n`` in proportion to their size (largest
    remainders round up; every class present keeps at least one line when ``n`` allows)."""
    if n < 0:
        raise DataError(f"the number of scored lines must be >= 0, got {n}")
    if not n or n >= len(examples):
        return list(range(len(examples)))
    rng = random.Random(f"scored:{examples[0].task}:{seed}:{n}")
    if not labels:
        return sorted(rng.sample(range(len(examples)), n))
    strata: dict[str, list[int]] = {}
    for i, ex in enumerate(examples):
        strata.setdefault(ex.label, []).append(i)
    keys = sorted(strata)
    quota = {lab: n * len(strata[lab]) / len(examples) for lab in keys}
    take = {lab: max(1, int(quota[lab])) if n >= len(keys) else int(quota[lab]) for lab in keys}
    left = n - sum(take.values())
    # Largest remainders first (ties by label name: no dependence on dict or hash order).
    for lab in sorted(keys, key=lambda lab: (-(quota[lab] - int(quota[lab])), lab)):
        if left <= 0:
            break
        if take[lab] < len(strata[lab]):
            take[lab] += 1
            left -= 1
    while left < 0:  # the one-line floor overshot: take back from the largest strata
        lab = max(keys, key=lambda lab: (take[lab], lab))
        take[lab] -= 1
        left += 1
    return sorted(i for lab in keys for i in rng.sample(strata[lab], take[lab]))
