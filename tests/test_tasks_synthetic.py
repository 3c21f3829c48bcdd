"""The synthetic suite: shape, balance, disjoint splits, determinism and lexical learnability."""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import sys
from collections import Counter

import numpy as np
import pytest

from talora.errors import DataError
from talora.tasks import SYNTHETIC_SOURCE_TASKS, SYNTHETIC_TARGET_TASKS, describe_tasks, load_tasks
from talora.tasks import synthetic as S
from talora.tasks.synthetic import generate


@pytest.fixture(scope="module")
def suite():
    return load_tasks()


def digest(tasks) -> str:
    text = "\n".join(
        f"{ex.uid}|{t.spec.prompt(ex)}|{ex.label}" for t in tasks.values() for exs in t.splits.values() for ex in exs
    )
    return hashlib.sha256(text.encode()).hexdigest()


def test_roles_and_names(suite):
    assert len(SYNTHETIC_SOURCE_TASKS) >= 6 and len(SYNTHETIC_TARGET_TASKS) >= 4
    assert set(suite) == set(SYNTHETIC_SOURCE_TASKS) | set(SYNTHETIC_TARGET_TASKS)
    for name, task in suite.items():
        assert name.isidentifier() and name == name.lower()
        assert task.spec.role == ("source" if name in SYNTHETIC_SOURCE_TASKS else "target")
    rows = describe_tasks()
    assert [r["name"] for r in rows] == list(suite)
    assert all(r["splits"] == {"train": 400, "validation": 100, "test": 100} for r in rows)


def test_label_words_are_single_spaced_words(suite):
    for task in suite.values():
        spec = task.spec
        assert set(spec.label_words) == set(spec.labels)
        for word in spec.label_words.values():
            assert word.startswith(" ") and word[1:].isalpha() and word[1:].islower()
        assert spec.metric == "accuracy" and spec.template.endswith((":", "?"))


def test_sizes_balance_and_disjoint_splits(suite):
    for name, task in suite.items():
        assert {s: len(exs) for s, exs in task.splits.items()} == {"train": 400, "validation": 100, "test": 100}
        prompts = []
        for exs in task.splits.values():
            counts = Counter(ex.label for ex in exs)
            assert set(counts) == set(task.spec.labels), name
            assert max(counts.values()) - min(counts.values()) <= 1, (name, counts)
            prompts += [task.spec.prompt(ex) for ex in exs]
        assert len(set(prompts)) == len(prompts), name
        assert len({ex.uid for exs in task.splits.values() for ex in exs}) == 600


def test_deterministic_across_calls_and_hash_seeds(suite):
    assert digest(load_tasks(None, ["emotion"])) == digest({"emotion": suite["emotion"]})
    # This module, imported as a plain module, computes the digest in a fresh interpreter.
    code = (
        f"import sys; sys.path.insert(0, {os.path.dirname(__file__)!r}); from test_tasks_synthetic import digest;"
        "from talora.tasks import load_tasks; print(digest(load_tasks()))"
    )
    outputs = {
        subprocess.run(
            [sys.executable, "-c", code],
            capture_output=True,
            text=True,
            check=True,
            env={**os.environ, "PYTHONHASHSEED": h},
        ).stdout.strip()
        for h in ("0", "7")
    }
    assert outputs == {digest(suite)}


def test_other_seed_other_data_and_custom_sizes():
    a = generate("movie_sentiment", {"train": 10}, seed=1)
    b = generate("movie_sentiment", {"train": 10}, seed=2)
    assert [e.fields for e in a.splits["train"]] != [e.fields for e in b.splits["train"]]
    with pytest.raises(DataError, match="no synthetic task 'nope'"):
        load_tasks(None, ["nope"])


def naive_bayes_accuracy(task) -> float:
    """Multinomial naive Bayes over words: a floor on how lexical a single-text task is."""
    labels = task.spec.labels
    words = lambda ex: task.spec.prompt(ex).lower().replace(".", " ").replace(",", " ").split()  # noqa: E731
    counts = {lab: Counter() for lab in labels}
    for ex in task.splits["train"]:
        counts[ex.label].update(words(ex))
    vocab = set().union(*counts.values())

    def score(ex, lab):
        total = sum(counts[lab].values()) + len(vocab)
        return sum(np.log((counts[lab][w] + 1) / total) for w in words(ex))

    val = task.splits["validation"]
    return float(np.mean([max(labels, key=lambda lab: score(ex, lab)) == ex.label for ex in val]))


def test_single_text_tasks_are_lexically_learnable(suite):
    for name, task in suite.items():
        if "text" in task.splits["train"][0].fields:
            assert naive_bayes_accuracy(task) >= 0.9, name


def mentioned(text: str, words) -> set[str]:
    return {w for w in words if re.search(rf"\b{w}\b", text)}


def test_pair_labels_agree_with_an_independent_reading(suite):
    words = S.read_words()
    things, categories = words["things"], words["categories"]
    for ex in suite["question_match"].splits["train"]:
        same = mentioned(ex.fields["text_a"], things) == mentioned(ex.fields["text_b"], things)
        assert same == (ex.label == "yes"), ex
    for ex in suite["paraphrase_pair"].splits["train"]:
        a, b = ex.fields["text_a"], ex.fields["text_b"]
        same = mentioned(a, things) == mentioned(b, things) and a.split()[0] == b.split()[0]
        assert same == (ex.label == "same"), ex
    for ex in suite["hypernym_entailment"].splits["train"]:
        (category,) = [c for c, nouns in categories.items() if mentioned(ex.fields["text_a"], nouns)]
        hypothesis = ex.fields["text_b"]
        holds = category in hypothesis and not mentioned(hypothesis, ("not", "never"))
        assert holds == (ex.label == "yes"), ex
