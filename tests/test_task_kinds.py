"""Task kinds are objects found by name: a kind defined in this file alone (no other module edited)
runs through encoding, prediction and scoring like the shipped ones."""

from __future__ import annotations

import pytest

from talora.core.batching import encode, full_length
from talora.core.predict import Verbalizer, evaluate, predictions
from talora.errors import DataError
from talora.methods.base import NoPrompt
from talora.tasks import Example, TaskKind, TaskSpec, compute_metrics, majority_baseline, task_kind
from talora.tasks.kinds import kind_names


class Polarity(TaskKind):
    """Two labels ranked by their words, one room token to spare after the answer, scored by a metric of
    its own: how often the prediction agrees with the gold, and how often it is the first label."""

    name = "polarity_test"
    metrics = ("agreement",)
    label_set = True

    def check(self, spec: TaskSpec, where: str) -> None:
        if len(spec.labels) != 2:
            raise DataError(f"{where}: a polarity task has two labels, got {list(spec.labels)}")

    def answer_room(self, spec, answer, candidates, training):
        return len(answer) + 1

    def score(self, spec, preds, golds, groups):
        agree = sum(p in g for p, g in zip(preds, golds)) / len(preds)
        return {"agreement": agree, "first": sum(p == spec.labels[0] for p in preds) / len(preds)}


def _spec(**changes) -> TaskSpec:
    fields = dict(
        name="pol",
        language="en",
        kind="polarity_test",
        labels=("pos", "neg"),
        label_words={"pos": " yes", "neg": " no"},
        template="Is this good? {text} Answer:",
        metric="agreement",
    )
    return TaskSpec(**{**fields, **changes})


TEXTS = [("a fine film", "pos"), ("dull and long", "neg"), ("loved it", "pos"), ("a waste of time", "neg")]


def test_a_new_kind_is_found_by_the_name_a_spec_gives():
    assert "polarity_test" in kind_names() and kind_names()[:4] == (
        "classification",
        "multiple_choice",
        "regression",
        "extraction",
    )
    assert isinstance(task_kind("polarity_test"), Polarity) and isinstance(_spec().task_kind, Polarity)
    with pytest.raises(DataError, match="a polarity task has two labels"):
        _spec(labels=("pos", "neg", "mixed"), label_words={"pos": " yes", "neg": " no", "mixed": " so"})
    with pytest.raises(DataError, match="metric 'agreement' does not apply to kind 'classification'"):
        _spec(kind="classification")
    with pytest.raises(DataError, match="kind 'nosuch' is not one of classification, .*polarity_test"):
        _spec(kind="nosuch")


def test_a_new_kind_runs_through_encode_predict_and_metrics(backbone):
    spec = _spec()
    tok = backbone.tokenizer
    examples = [Example(f"pol/test/{i}", "pol", {"text": t}, lab) for i, (t, lab) in enumerate(TEXTS)]
    items = [encode(spec, ex, tok, 64, 0) for ex in examples]
    assert items[0].answer == tuple(tok(" yes", add_special_tokens=False)["input_ids"])
    prompt = len(tok(spec.prompt(examples[1]))["input_ids"])
    assert full_length(spec, examples[1], tok) == prompt + len(items[1].answer) + 1  # the kind's room
    verb = Verbalizer.of(spec, tok)
    method = NoPrompt(backbone, ["pol"])
    preds = predictions(backbone, method, items, {0: verb})
    assert set(preds) <= set(spec.labels)
    scores = evaluate(backbone, method, items, {0: verb})
    golds = [(ex.label,) for ex in examples]
    assert scores == {"pol": compute_metrics(spec, preds, golds)}
    assert set(scores["pol"]) == {"agreement", "first"} and 0 <= scores["pol"]["agreement"] <= 1
    # The default constant answer: the most frequent train label, ties to the label listed first.
    assert majority_baseline(spec, examples, examples) == {"agreement": 0.5, "first": 1.0}
