"""Encoding: the truncation rule for long inputs, and answer positions in padded batches."""

import pytest
from conftest import make_backbone

from talora.core.batching import answer_batch, encode
from talora.errors import DataError
from talora.tasks import Example, TaskSpec

SPEC = TaskSpec(
    "t",
    "en",
    "classification",
    ("positive", "negative"),
    {"positive": " positive", "negative": " negative"},
    "Review: {text}\nSentiment:",
    "accuracy",
)


def test_long_input_loses_tokens_from_its_field_not_the_template_or_answer():
    tok = make_backbone().tokenizer
    ex = Example("t/train/0", "t", {"text": "the movie was wonderful " * 40}, "positive")
    enc = encode(SPEC, ex, tok, max_length=30, task_id=0)
    assert enc.truncated and len(enc.prompt) + len(enc.answer) <= 30
    text = tok.decode(enc.prompt)
    assert text.startswith("Review: the movie") and text.endswith("\nSentiment:")
    assert tok.decode(enc.answer) == " positive"
    short = encode(SPEC, Example("t/train/1", "t", {"text": "good"}, "positive"), tok, 30, 0)
    assert not short.truncated


def test_template_that_cannot_fit_is_refused_by_name():
    tok = make_backbone().tokenizer
    ex = Example("t/train/0", "t", {"text": "fine"}, "negative")
    with pytest.raises(DataError, match=r"task 't': max_length=3 cannot hold the template"):
        encode(SPEC, ex, tok, max_length=3, task_id=0)


def test_unknown_label_is_named():
    tok = make_backbone().tokenizer
    with pytest.raises(DataError, match=r"unknown label 'neutral'"):
        encode(SPEC, Example("t/train/0", "t", {"text": "ok"}, "neutral"), tok, 30, 0)


def test_answer_positions_point_at_the_tokens_before_each_answer_token():
    tok = make_backbone().tokenizer
    items = [
        encode(SPEC, Example(f"t/train/{i}", "t", {"text": t}, "negative"), tok, 64, 0)
        for i, t in enumerate(["bad", "the food was awful and slow"])
    ]
    batch = answer_batch(items, tok.pad_token_id)
    for row, col, target in zip(batch.rows.tolist(), batch.cols.tolist(), batch.targets.tolist()):
        assert batch.input_ids[row, col + 1] == target and batch.attention_mask[row, col + 1] == 1
    assert len(batch.targets) == sum(len(e.answer) for e in items)
