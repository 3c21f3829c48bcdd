"""TaskSpec: prompts, answers and the checks that also guard specs read back from adapter files."""

from __future__ import annotations

import dataclasses

import pytest

from talora.errors import DataError
from talora.tasks import Example, TaskSpec

SPEC = dict(name="toy", language="en", kind="classification", labels=("neg", "pos"),
            label_words={"neg": " bad", "pos": " good"}, template="Text: {text}\nSentiment:", metric="accuracy")


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


@pytest.mark.parametrize("change, message", [
    ({"label_words": {"neg": " bad"}}, r"no word for label\(s\) \['pos'\]"),
    ({"label_words": {"neg": " x", "pos": " x"}}, "same word"),
    ({"labels": ("neg", "neg")}, "distinct"),
    ({"metric": "f1"}, "metric 'f1'"),
    ({"kind": "regression"}, "kind 'regression'"),
    ({"template": " "}, "'template' is empty"),
])
def test_bad_specs_are_refused(change, message):
    with pytest.raises(DataError, match=message):
        TaskSpec(**{**SPEC, **change})
