"""The truncation rule for the kinds beyond classification: the answer window of extraction training, the
context start at evaluation, room for every choice of a multiple-choice example."""

from __future__ import annotations

import pytest
from conftest import make_backbone

from talora.core.batching import encode
from talora.tasks import Example, TaskSpec

QA = TaskSpec(
    "qa",
    "en",
    "extraction",
    (),
    {},
    "Passage: {context}\nQuestion: {question}\nAnswer:",
    "span_f1",
    span_field="context",
    max_new_tokens=6,
)
ZH = TaskSpec("ote", "zh", "extraction", (), {}, "评论：{text}\n对象：", "span_f1", span_field="text", max_new_tokens=6)


@pytest.fixture(scope="module")
def tok():
    return make_backbone().tokenizer


def passage(answer_at: int) -> tuple[str, int]:
    words = [f"w{i}" for i in range(80)]
    words[answer_at] = "wonderful"
    text = " ".join(words)
    return text, text.index("wonderful")


@pytest.mark.parametrize("answer_at", [2, 40, 78])
def test_training_window_keeps_the_answer(tok, answer_at):
    context, start = passage(answer_at)
    ex = Example("qa/train/1", "qa", {"context": context, "question": "which?", "answer_start": start}, "wonderful")
    enc = encode(QA, ex, tok, max_length=60, task_id=0, training=True)
    text = tok.decode(enc.prompt)
    assert enc.truncated and len(enc.prompt) + len(enc.answer) <= 60
    assert "wonderful" in text and text.startswith("Passage: ") and text.endswith("\nQuestion: which?\nAnswer:")
    assert tok.decode(enc.answer) == " wonderful\n"  # trained with the newline that ends generation
    kept = text[len("Passage: ") : text.index("\nQuestion")].split()
    # centred: the window loses words on both sides unless the answer sits at an end of the passage
    assert (kept[0] != "w0") == (answer_at > 10) and (kept[-1] != "w79") == (answer_at < 70)


def test_evaluation_keeps_the_start_of_the_context_and_room_to_generate(tok):
    context, start = passage(78)
    ex = Example(
        "qa/validation/1",
        "qa",
        {"context": context, "question": "which?", "answer_start": start},
        "wonderful",
        ("wonderful", "wonderful one"),
    )
    enc = encode(QA, ex, tok, max_length=60, task_id=0)
    text = tok.decode(enc.prompt)
    assert enc.truncated and len(enc.prompt) + QA.max_new_tokens <= 60
    assert text.startswith("Passage: w0 w1") and "wonderful" not in text
    assert enc.golds == ("wonderful", "wonderful one")


def test_an_answer_not_in_the_passage_falls_back_to_the_general_rule(tok):
    context, _ = passage(40)
    ex = Example("qa/train/1", "qa", {"context": context, "question": "which?", "answer_start": -1}, "elsewhere")
    enc = encode(QA, ex, tok, max_length=60, task_id=0, training=True)
    assert enc.truncated and len(enc.prompt) + len(enc.answer) <= 60
    assert tok.decode(enc.prompt).startswith("Passage: w0 w1")


def test_chinese_window_cuts_between_characters(tok):
    text = "很" * 30 + "杜甫草堂" + "好" * 30
    ex = Example("ote/train/1", "ote", {"text": text, "answer_start": 30}, "杜甫草堂")
    enc = encode(ZH, ex, tok, max_length=80, task_id=0, training=True)
    decoded = tok.decode(enc.prompt)
    assert enc.truncated and len(enc.prompt) + len(enc.answer) <= 80
    assert "杜甫草堂" in decoded and "\ufffd" not in decoded and decoded.endswith("\n对象：")
    assert "很" in decoded and "好" in decoded  # both sides of the span survive


def test_short_examples_are_not_cut(tok):
    ex = Example("qa/train/1", "qa", {"context": "w1 wonderful", "question": "q", "answer_start": 3}, "wonderful")
    assert not encode(QA, ex, tok, 60, 0, training=True).truncated
    assert not encode(QA, ex, tok, 60, 0).truncated


def test_multiple_choice_keeps_room_for_its_longest_choice(tok):
    spec = TaskSpec("mc", "en", "multiple_choice", (), {}, "{context}\nQuestion: {question}\nAnswer:", "accuracy")
    choices = ["yes", "the movie was wonderful and the acting was superb"]
    ex = Example(
        "mc/validation/1", "mc", {"context": "the food was awful " * 20, "question": "q", "choices": choices}, "0"
    )
    enc = encode(spec, ex, tok, max_length=50, task_id=0)
    assert enc.truncated and enc.candidates == tuple(
        tuple(tok(c, add_special_tokens=False)["input_ids"]) for c in choices
    )
    assert enc.answer == enc.candidates[0]
    assert len(enc.prompt) + max(len(c) for c in enc.candidates) <= 50


def test_general_rule_cuts_chinese_between_characters(tok):
    # Byte-level tokens split a Chinese character; a cut inside one must not leave a U+FFFD behind
    # (which re-tokenises longer and once made this loop run forever).
    spec = TaskSpec(
        "zh", "zh", "classification", ("a", "b"), {"a": "好", "b": "坏"}, "评论：{text}\n情感：", "accuracy"
    )
    ex = Example("zh/validation/1", "zh", {"text": "这部电影非常精彩" * 10}, "a")
    for max_length in range(30, 60):
        enc = encode(spec, ex, tok, max_length=max_length, task_id=0)
        decoded = tok.decode(enc.prompt)
        assert len(enc.prompt) + len(enc.answer) <= max_length and "\ufffd" not in decoded
        assert decoded.startswith("评论：这部") and decoded.endswith("\n情感：")
