"""Few-shot sampling: coverage, determinism (also across hash seeds) and its errors."""

from __future__ import annotations

import os
import subprocess
import sys
from collections import Counter

import pytest

from talora.errors import DataError
from talora.tasks import Example, load_tasks, sample_k_shot


@pytest.fixture(scope="module")
def task():
    return load_tasks(None, ["news_topic"])["news_topic"]


def test_k_per_class(task):
    shots = sample_k_shot(task.splits["train"], 8, seed=1)
    assert Counter(ex.label for ex in shots) == {lab: 8 for lab in task.spec.labels}
    assert len({ex.uid for ex in shots}) == len(shots)
    # Shuffled: the classes are not handed out in blocks.
    assert [ex.label for ex in shots] != sorted(ex.label for ex in shots)


def test_k_in_total(task):
    shots = sample_k_shot(task.splits["train"], 10, seed=1, per_class=False)
    assert len(shots) == 10 and len({ex.uid for ex in shots}) == 10


def test_deterministic_and_seed_dependent(task):
    train = task.splits["train"]
    first = [ex.uid for ex in sample_k_shot(train, 4, seed=3)]
    assert first == [ex.uid for ex in sample_k_shot(list(train), 4, seed=3)]
    assert first != [ex.uid for ex in sample_k_shot(train, 4, seed=4)]


def test_same_under_another_hash_seed(task):
    code = ("from talora.tasks import load_tasks, sample_k_shot;"
            "t = load_tasks(None, ['news_topic'])['news_topic'];"
            "print(','.join(e.uid for e in sample_k_shot(t.splits['train'], 4, seed=3)))")
    outputs = {subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                              env={**os.environ, "PYTHONHASHSEED": h}).stdout.strip() for h in ("1", "2")}
    assert outputs == {",".join(ex.uid for ex in sample_k_shot(task.splits["train"], 4, seed=3))}


def test_sampled_from_train_stays_out_of_other_splits(task):
    shots = sample_k_shot(task.splits["train"], 16, seed=0)
    held_out = {task.spec.prompt(ex) for s in ("validation", "test") for ex in task.splits[s]}
    assert not {task.spec.prompt(ex) for ex in shots} & held_out


def test_errors():
    exs = [Example(f"t/train/{i}", "t", {"text": str(i)}, "a" if i < 5 else "b") for i in range(7)]
    with pytest.raises(DataError, match=r"k=3 per class .*'b' has 2"):
        sample_k_shot(exs, 3, seed=0)
    with pytest.raises(DataError, match=r"'c' has 0"):
        sample_k_shot(exs, 1, seed=0, labels=["a", "b", "c"])
    with pytest.raises(DataError, match="k=8 is more than the 7 examples"):
        sample_k_shot(exs, 8, seed=0, per_class=False)
    with pytest.raises(DataError, match="empty split"):
        sample_k_shot([], 1, seed=0)
    with pytest.raises(DataError, match="positive"):
        sample_k_shot(exs, 0, seed=0)
