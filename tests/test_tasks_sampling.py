"""Few-shot sampling: coverage (every class kept), determinism (also across hash seeds), disjointness
from evaluation data, k in all for the non-classification kinds, and its errors."""

from __future__ import annotations

import os
import subprocess
import sys
from collections import Counter

import pytest
from real_data import REAL_DATA, needs_real_data, real_data  # noqa: F401 (real_data: the fixture)

from talora.errors import DataError
from talora.tasks import KS, Example, Task, TaskSpec, evaluation_split, few_shot, load_tasks, sample_k_shot
from talora.tasks.sampling import input_key


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
    code = (
        "from talora.tasks import load_tasks, sample_k_shot;"
        "t = load_tasks(None, ['news_topic'])['news_topic'];"
        "print(','.join(e.uid for e in sample_k_shot(t.splits['train'], 4, seed=3)))"
    )
    outputs = {
        subprocess.run(
            [sys.executable, "-c", code],
            capture_output=True,
            text=True,
            check=True,
            env={**os.environ, "PYTHONHASHSEED": h},
        ).stdout.strip()
        for h in ("1", "2")
    }
    assert outputs == {",".join(ex.uid for ex in sample_k_shot(task.splits["train"], 4, seed=3))}


def test_sampled_from_train_stays_out_of_other_splits(task):
    shots = sample_k_shot(task.splits["train"], 16, seed=0)
    held_out = {task.spec.prompt(ex) for s in ("validation", "test") for ex in task.splits[s]}
    assert not {task.spec.prompt(ex) for ex in shots} & held_out


def test_errors():
    exs = [Example(f"t/train/{i}", "t", {"text": str(i)}, "a" if i < 5 else "b") for i in range(7)]
    with pytest.raises(DataError, match=r"no training example of class\(es\) \['c'\]"):
        sample_k_shot(exs, 1, seed=0, labels=["a", "b", "c"])
    with pytest.raises(DataError, match="k=8 is more than the 7 examples"):
        sample_k_shot(exs, 8, seed=0, per_class=False)
    with pytest.raises(DataError, match="empty split"):
        sample_k_shot([], 1, seed=0)
    with pytest.raises(DataError, match="positive"):
        sample_k_shot(exs, 0, seed=0)


def test_a_short_class_gives_all_it_has():
    exs = [Example(f"t/train/{i}", "t", {"text": str(i)}, "a" if i < 5 else "b") for i in range(7)]
    shots = sample_k_shot(exs, 3, seed=0)
    assert Counter(ex.label for ex in shots) == {"a": 3, "b": 2}


def test_few_shot_never_draws_an_evaluation_input():
    spec = TaskSpec("t", "en", "classification", ("a", "b"), {"a": " a", "b": " b"}, "{text}", "accuracy")
    train = [Example(f"t/train/{i}", "t", {"text": f"x{i}"}, "ab"[i % 2]) for i in range(40)]
    held = [Example("t/validation/1", "t", {"text": "x0"}, "a"), Example("t/test/1", "t", {"text": "x1"}, "b")]
    task = Task(spec, {"train": train, "validation": held[:1], "test": held[1:]})
    for seed in range(5):
        shots = few_shot(task, 19, seed)  # every remaining example of both classes
        assert {ex.fields["text"] for ex in shots}.isdisjoint({"x0", "x1"})
        assert Counter(ex.label for ex in shots) == {"a": 19, "b": 19}


def test_protocol_evaluation_split(task):
    assert evaluation_split(task) == "test"
    assert evaluation_split(Task(task.spec, {"train": [], "validation": task.splits["validation"]})) == "validation"
    assert KS == (16, 32, 64)


@needs_real_data
@pytest.mark.parametrize(
    "name, kind",
    [
        ("cb", "classification"),
        ("stsb", "regression"),
        ("c3", "multiple_choice"),
        ("cmrc2018", "extraction"),
        ("cote_bd", "extraction"),
    ],
)
def test_few_shot_on_every_kind(name, kind):
    task = load_tasks(REAL_DATA, [name])[name]
    assert task.spec.kind == kind
    held_out = {input_key(ex) for s in ("validation", "test") for ex in task.splits.get(s, [])}
    for k in KS:
        shots = few_shot(task, k, seed=1)
        assert shots == few_shot(task, k, seed=1)  # deterministic
        assert all(ex.uid.split("/")[2] == "train" for ex in shots)
        assert not {input_key(ex) for ex in shots} & held_out
        if kind == "classification":
            # per class, keeping every class: CB's "neutral" has only 16 training examples
            counts = Counter(ex.label for ex in shots)
            assert set(counts) == set(task.spec.labels)
            train_counts = Counter(ex.label for ex in task.splits["train"])
            assert counts == {lab: min(k, train_counts[lab]) for lab in task.spec.labels}
        else:
            assert len(shots) == k and len({ex.uid for ex in shots}) == k
    assert [ex.uid for ex in few_shot(task, 16, seed=0)] != [ex.uid for ex in few_shot(task, 16, seed=1)]
