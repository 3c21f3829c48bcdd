"""TaskSpec: prompts, answers and the checks that also guard specs read back from adapter files."""

from __future__ import annotations

import dataclasses

import pytest

from talora.errors import DataError
from talora.tasks import Example, TaskSpec

SPEC = dict(
    name="toy",
    language="en",
    kind="classification",
    labels=("neg", "pos"),
    label_words={"neg": " bad", "pos": " good"},
    template="Text: {text}\nSentiment:",
    metric="accuracy",
)


def test_prompt_and_answer():
    spec = TaskSpec(**SPEC, role="source")
    ex = Example("toy/train/1", "toy", {"text": "fine {braces} stay"}, "pos")
    assert spec.prompt(ex) == "Text: fine {braces} stay\nSentiment:"
    assert spec.answer("pos") == " good"
    with pytest.raises(DataError, match=r"task 'toy': unknown label 'meh'"):
        spec.answer("meh")
    with pytest.raises(DataError, match=r"example toy/train/2 has no field 'text'"):
        spec.prompt(Example("toy/train/2", "toy", {"body": "x"}, "pos"))


def test_round_trips_through_a_plain_dict():
    spec = TaskSpec(**SPEC)
    d = dataclasses.asdict(spec)
    assert TaskSpec(**{**d, "labels": tuple(d["labels"])}) == spec
    assert hash(spec) == hash(TaskSpec(**SPEC))


@pytest.mark.parametrize(
    "change, message",
    [
        ({"label_words": {"neg": " bad"}}, r"no word for label\(s\) \['pos'\]"),
        ({"label_words": {"neg": " x", "pos": " x"}}, "same word"),
        ({"labels": ("neg", "neg")}, "distinct"),
        ({"metric": "f1"}, "metric 'f1'"),
        ({"kind": "ranking"}, "kind 'ranking'"),
        ({"metric": "pearson"}, "metric 'pearson' does not apply to kind 'classification'"),
        ({"kind": "regression", "metric": "pearson"}, "regression labels are the bins' values"),
        ({"kind": "extraction", "metric": "span_f1", "max_new_tokens": 8}, "field 'span_field' is ''"),
        ({"kind": "extraction", "metric": "span_f1", "span_field": "text"}, "'max_new_tokens' must be >= 1"),
        ({"template": " "}, "'template' is empty"),
    ],
)
def test_bad_specs_are_refused(change, message):
    with pytest.raises(DataError, match=message):
        TaskSpec(**{**SPEC, **change})


def test_answers_and_candidates_of_each_kind():
    mc = TaskSpec(
        "c3", "zh", "multiple_choice", (), {}, "{context}\n问题：{question}\n选项：{options}\n答案：", "accuracy"
    )
    ex = Example("c3/train/1", "c3", {"context": "c", "question": "q", "choices": ["甲", "乙丙"], "options": ""}, "1")
    assert mc.answer_text(ex) == "乙丙" and mc.candidates(ex) == ["甲", "乙丙"]
    with pytest.raises(DataError, match="label '2' is not the index of one of its 2 choices"):
        mc.answer_text(dataclasses.replace(ex, label="2"))

    bins = {str(v): f" {v}" for v in range(6)}
    reg = TaskSpec("stsb", "en", "regression", tuple(bins), bins, "{text_a} {text_b}", "pearson")
    pair = {"text_a": "a", "text_b": "b"}
    for score, word in (("4.75", " 5"), ("2.5", " 3"), ("2.49", " 2"), ("0.0", " 0"), ("7.0", " 5")):
        assert reg.answer_text(Example("s/train/1", "stsb", pair, score)) == word, score
    assert reg.candidates(Example("s/train/1", "stsb", pair, "1.0")) == list(bins.values())
    with pytest.raises(DataError, match="regression label 'high' is not a number"):
        reg.answer_text(Example("s/train/1", "stsb", pair, "high"))

    zh = TaskSpec(
        "cote", "zh", "extraction", (), {}, "评论：{text}\n对象：", "span_f1", span_field="text", max_new_tokens=8
    )
    en = dataclasses.replace(zh, language="en")
    span = Example("cote/train/1", "cote", {"text": "杜甫草堂很好", "answer_start": 0}, "杜甫草堂")
    assert zh.answer_text(span) == "杜甫草堂\n" and en.answer_text(span) == " 杜甫草堂\n"
    assert zh.candidates(span) == []
    assert span.answers == ("杜甫草堂",) and dataclasses.replace(span, golds=("a", "b")).answers == ("a", "b")
