"""Source balancing: seeded down-sampling, up-sampling with optional perturbed copies."""

import random

import pytest

from talora.config import BalanceConfig, RunConfig, from_dict
from talora.errors import ConfigError
from talora.recipes import pipeline
from talora.tasks import Example, Task, TaskSpec
from talora.tasks.balance import balance, perturb, read_synonyms

PAIR = TaskSpec("pair", "en", "classification", ("yes", "no"), {"yes": "yes", "no": "no"}, "{a} ? {b}", "accuracy")
CHOICE = TaskSpec("mc", "en", "multiple_choice", (), {}, "{context}\nQ: {question}\nA:", "accuracy")


def _examples(n, spec=PAIR):
    if spec is CHOICE:
        return [Example(f"e{i}", "mc", {"context": f"one two three {i}", "question": "q"}, "x") for i in range(n)]
    return [Example(f"e{i}", "pair", {"a": f"the cat sat on mat {i}", "b": "a dog"}, "yes") for i in range(n)]


def test_down_sampling_is_a_seeded_draw():
    exs = _examples(50)
    kept = balance(exs, PAIR, 0, 20, seed=0)
    assert len(kept) == 20 == len({e.uid for e in kept}) and set(kept) <= set(exs)
    assert kept == balance(exs, PAIR, 0, 20, seed=0) != balance(exs, PAIR, 0, 20, seed=1)
    assert balance(exs, PAIR, 10, 60, seed=0) == exs  # within bounds: untouched


def test_up_sampling_keeps_the_originals_and_adds_copies():
    exs = _examples(5)
    plain = balance(exs, PAIR, 12, 0, seed=0)
    assert plain[:5] == exs and len(plain) == 12 and len({e.uid for e in plain}) == 12
    originals = {e.uid: e for e in exs}
    for copy in plain[5:]:
        source = originals[copy.uid.split("+")[0]]
        assert copy.fields == source.fields and copy.label == source.label

    augmented = balance(exs, PAIR, 40, 0, seed=0, augment=True)
    changed = [c for c in augmented[5:] if c.fields != originals[c.uid.split("+")[0]].fields]
    assert changed and all(c.label == "yes" for c in augmented)
    assert augmented == balance(exs, PAIR, 40, 0, seed=0, augment=True)


def test_multiple_choice_copies_are_never_perturbed():
    exs = _examples(3, CHOICE)
    for copy in balance(exs, CHOICE, 20, 0, seed=0, augment=True)[3:]:
        assert copy.fields in [e.fields for e in exs]


def test_each_perturbation():
    words = "a b c d e f g h i j".split()
    deleted = perturb(" ".join(words), random.Random(1), 0.3, {})
    inserted = perturb(" ".join(words), random.Random(0), 0.3, {})
    outcomes = {len(deleted.split()), len(inserted.split())}
    # one seed deletes 3 words, another inserts 3 copies of the text's own words
    assert outcomes == {7, 13}, (deleted, inserted)
    assert set(inserted.split()) <= set(words) and set(deleted.split()) <= set(words)

    table = {"cat": ["kitten"], "kitten": ["cat"]}
    results = {perturb("the cat sat there", random.Random(seed), 0.25, table) for seed in range(20)}
    assert "the kitten sat there" in results
    zh = {perturb("我很高兴见到你", random.Random(seed), 0.1, {"高兴": ["开心"]}) for seed in range(20)}
    assert "我很开心见到你" in zh
    assert perturb("one", random.Random(0), 0.5, {}) == "one"  # nothing to edit without removing the text


def test_read_synonyms(tmp_path):
    path = tmp_path / "syn.txt"
    path.write_text("高兴 开心 快乐\nbig large\nalone\n", encoding="utf-8")
    table = read_synonyms(path)
    assert table["高兴"] == ["开心", "快乐"] and table["large"] == ["big"] and "alone" not in table
    with pytest.raises(ConfigError, match="balance.synonyms: file not found"):
        read_synonyms(tmp_path / "missing.txt")
    (tmp_path / "bin.txt").write_bytes(b"\xff\xfe\x00")
    with pytest.raises(ConfigError, match="is not UTF-8 text"):
        read_synonyms(tmp_path / "bin.txt")


def test_bounds_are_checked():
    with pytest.raises(ConfigError, match=r"balance: min_examples \(50\) is more than max_examples \(10\)"):
        from_dict(BalanceConfig, {"min_examples": 50, "max_examples": 10}, "balance")


def test_copies_never_come_from_the_held_out_slice():
    train = _examples(20)
    task = Task(PAIR, {"train": train, "validation": _examples(4)})
    cfg = RunConfig(heldout_examples=4, balance=BalanceConfig(min_examples=60, augment=True))
    parts = pipeline.source_examples(task, cfg)
    held = {e.uid for e in parts["selection"]}
    assert held == {e.uid for e in train[-4:]} and len(parts["train"]) == 60
    assert not {e.uid.split("+")[0] for e in parts["train"]} & held
