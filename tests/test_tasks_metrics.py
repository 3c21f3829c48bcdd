"""Metrics against values worked out by hand, including the official normalisations' edge cases."""

from __future__ import annotations

import math
import warnings
from types import SimpleNamespace

import pytest

from talora.errors import DataError
from talora.tasks import Example, compute_metrics, majority_baseline
from talora.tasks.metrics import (
    classification_metrics,
    correlation_metrics,
    f1a_metrics,
    matthews,
    segment_zh,
    span_metrics,
)


def spec(kind="classification", metric="accuracy", labels=(), language="en"):
    return SimpleNamespace(kind=kind, metric=metric, labels=tuple(labels), language=language)


# ---------------------------------------------------------------- accuracy / macro-F1
def test_binary_by_hand():
    # pos: tp=2 fp=1 fn=1 -> P=R=F1=2/3; neg: tp=1 fp=1 fn=1 -> F1=1/2.
    preds = ["pos", "pos", "neg", "pos", "neg"]
    golds = ["pos", "neg", "neg", "pos", "pos"]
    m = classification_metrics(preds, golds, ["neg", "pos"])
    assert m["accuracy"] == pytest.approx(3 / 5)
    assert m["macro_f1"] == pytest.approx((2 / 3 + 1 / 2) / 2)


def test_three_classes_with_a_class_never_predicted():
    # a: tp=2 fp=1 fn=0 -> F1=0.8; b: tp=1 fp=0 fn=0 -> 1; c: gold once, never predicted -> 0.
    m = classification_metrics(["a", "a", "b", "a"], ["a", "a", "b", "c"], ["a", "b", "c"])
    assert m["accuracy"] == pytest.approx(3 / 4)
    assert m["macro_f1"] == pytest.approx((0.8 + 1.0 + 0.0) / 3)


def test_labels_absent_from_both_sides_are_skipped():
    assert classification_metrics(["x", "y"], ["x", "y"], ["x", "y", "z", "w"]) == {"accuracy": 1.0, "macro_f1": 1.0}


def test_prediction_outside_the_label_set_is_wrong():
    # x: tp=1 -> F1=1; y: gold once, never predicted -> 0.
    assert classification_metrics(["x", "???"], ["x", "y"], ["x", "y"]) == {"accuracy": 0.5, "macro_f1": 0.5}


def test_empty_or_mismatched_input():
    with pytest.raises(DataError, match="empty"):
        compute_metrics(spec(labels="a"), [], [])
    with pytest.raises(DataError, match="2 predictions for 1 gold"):
        compute_metrics(spec(labels="a"), ["a", "a"], [("a",)])


def test_any_gold_of_an_example_counts():
    # A FinRE triple listed with relations a and b: predicting b is right; predicting c is wrong against a.
    s = spec(labels="abc")
    m = compute_metrics(s, ["b", "c", "a"], [("a", "b"), ("a", "b"), ("a",)])
    assert m["accuracy"] == pytest.approx(2 / 3)
    # resolved golds b, a, a: a: tp=1 fp=0 fn=1 -> 2/3; b: tp=1 -> 1; c: predicted once, never gold -> 0.
    assert m["macro_f1"] == pytest.approx((2 / 3 + 1 + 0) / 3)


# ---------------------------------------------------------------- Matthews
def test_matthews_by_hand():
    # tp=2 tn=1 fp=1 fn=1 -> (2*1 - 1*1) / sqrt(3*3*2*2) = 1/6
    preds = ["pos", "pos", "neg", "pos", "neg"]
    golds = ["pos", "neg", "neg", "pos", "pos"]
    assert matthews(preds, golds, ["neg", "pos"]) == pytest.approx(1 / 6)
    assert matthews(golds, golds, ["neg", "pos"]) == pytest.approx(1.0)
    flipped = ["neg" if g == "pos" else "pos" for g in golds]
    assert matthews(flipped, golds, ["neg", "pos"]) == pytest.approx(-1.0)


def test_matthews_multiclass_by_hand():
    # correct=3 of n=4; pred counts (2,1,1), gold counts (1,2,1): (12-5)/sqrt((16-6)(16-6)) = 0.7
    assert matthews(["a", "a", "b", "c"], ["a", "b", "b", "c"], ["a", "b", "c"]) == pytest.approx(0.7)


def test_matthews_of_a_constant_predictor_is_zero():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        m = compute_metrics(
            spec(metric="matthews", labels=("unacceptable", "acceptable")),
            ["acceptable"] * 4,
            [("acceptable",), ("unacceptable",), ("acceptable",), ("acceptable",)],
        )
    assert m["matthews"] == 0.0 and m["accuracy"] == pytest.approx(0.75) and "macro_f1" in m


# ---------------------------------------------------------------- correlations
def test_pearson_and_spearman_by_hand():
    m = correlation_metrics([1, 2, 3], [2, 4, 7])
    assert m["pearson"] == pytest.approx(15 / math.sqrt(228))  # sum dp*dg = 5, sum dp^2 = 2, sum dg^2 = 114/9
    assert m["spearman"] == pytest.approx(1.0)
    # tied predictions share their mean rank: ranks (1.5, 1.5, 3) against (1, 2, 3) -> 1.5 / sqrt(3)
    assert correlation_metrics([1, 1, 2], [1, 2, 3])["spearman"] == pytest.approx(1.5 / math.sqrt(3))


def test_constant_predictions_give_zero_not_nan():
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a 0/0 would warn
        m = compute_metrics(
            spec("regression", "pearson", labels="012345"), [2.5, 2.5, 2.5], [("1.0",), ("4.0",), ("3.2",)]
        )
    assert m == {"pearson": 0.0, "spearman": 0.0}


# ---------------------------------------------------------------- spans, English (SQuAD v1.1)
@pytest.mark.parametrize(
    "pred, golds, f1, em",
    [
        ("The Eiffel Tower!", ["eiffel tower"], 1.0, 1.0),  # case, punctuation and articles go
        ("in the Eiffel tower", ["Eiffel Tower"], 0.8, 0.0),  # P=2/3, R=1
        ("Eiffel", ["Paris", "the Eiffel Tower"], 2 / 3, 0.0),  # best over the golds: P=1, R=1/2
        ("U.S.", ["US"], 1.0, 1.0),  # punctuation inside a word is removed, not split on
        ("an apple", ["apple"], 1.0, 1.0),
        ("Paris", ["London"], 0.0, 0.0),
    ],
)
def test_english_span_scores(pred, golds, f1, em):
    m = span_metrics([pred], [golds], "en")
    assert m["span_f1"] == pytest.approx(f1) and m["exact_match"] == em


# ---------------------------------------------------------------- spans, Chinese (CMRC 2018)
@pytest.mark.parametrize(
    "pred, golds, f1, em",
    [
        ("北京大学。", ["北京大学"], 1.0, 1.0),  # full-width punctuation removed
        ("《红楼梦》", ["红楼梦"], 1.0, 1.0),
        ("大学北京", ["北京大学"], 0.5, 0.0),  # longest common substring 2 of 4 (a bag of characters would say 1.0)
        ("iPhone 12手机", ["iphone 12"], 2 / 3, 0.0),  # [iphone, 12, 手, 机] vs [iphone, 12]
        ("北京大学", ["北京", "北京大学"], 1.0, 1.0),  # the best gold wins
        ("好…", ["好"], 2 / 3, 0.0),  # the official list has only the two-character "……", so "…" stays
    ],
)
def test_chinese_span_scores(pred, golds, f1, em):
    m = span_metrics([pred], [golds], "zh")
    assert m["span_f1"] == pytest.approx(f1) and m["exact_match"] == em


def test_chinese_segmentation():
    assert segment_zh("Windows 10系统，价格3.5元") == ["windows", "10", "系", "统", "价", "格", "3.5", "元"]


# ---------------------------------------------------------------- MultiRC
def test_f1a_and_question_exact_match_by_hand():
    golds = ["true", "false", "true", "false", "true"]
    preds = ["true", "true", "true", "false", "true"]
    groups = ["q1", "q1", "q1", "q2", "q2"]
    m = f1a_metrics(preds, golds, groups)
    # tp=3, predicted true=4, gold true=3 -> P=3/4, R=1 -> F1a=6/7; q1 has a wrong candidate, q2 none.
    assert m["f1a"] == pytest.approx(6 / 7) and m["exact_match"] == 0.5 and m["accuracy"] == pytest.approx(0.8)


# ---------------------------------------------------------------- the headline key
@pytest.mark.parametrize(
    "s, preds, golds",
    [
        (spec(metric="accuracy", labels="ab"), ["a"], [("a",)]),
        (spec(metric="macro_f1", labels="ab"), ["a"], [("a",)]),
        (spec(metric="matthews", labels="ab"), ["a"], [("a",)]),
        (spec(metric="f1a", labels=("false", "true")), ["true"], [("true",)]),
        (spec("multiple_choice", "accuracy"), ["2"], [("2",)]),
        (spec("regression", "pearson", labels="012"), [1.0, 2.0], [("1.0",), ("2.5",)]),
        (spec("extraction", "span_f1", language="zh"), ["北京"], [("北京",)]),
    ],
)
def test_headline_key_is_the_metric(s, preds, golds):
    assert s.metric in compute_metrics(s, preds, golds)


# ---------------------------------------------------------------- majority baseline
def ex(i: int, label: str) -> Example:
    return Example(f"t/train/{i}", "t", {"text": str(i)}, label)


def test_majority_baseline():
    train = [ex(0, "b"), ex(1, "b"), ex(2, "a")]
    evaluation = [ex(3, "a"), ex(4, "b"), ex(5, "b"), ex(6, "c")]
    m = majority_baseline(spec(labels="abc"), train, evaluation)
    # always "b": accuracy 2/4; F1 b = 2*(0.5*1)/(1.5) = 2/3; a and c never predicted -> 0.
    assert m["accuracy"] == pytest.approx(0.5)
    assert m["macro_f1"] == pytest.approx((2 / 3) / 3)


def test_majority_tie_goes_to_first_listed_label():
    train = [ex(0, "b"), ex(1, "a")]
    assert majority_baseline(spec(labels="ab"), train, [ex(2, "a")])["accuracy"] == 1.0
    assert majority_baseline(spec(labels="ab"), train[::-1], [ex(2, "a")])["accuracy"] == 1.0


def test_majority_baseline_of_other_kinds():
    assert majority_baseline(spec("extraction", "span_f1"), [ex(0, "x")], [ex(1, "x")]) is None
    reg = majority_baseline(
        spec("regression", "pearson", labels="012"), [ex(0, "1.0"), ex(1, "2.0")], [ex(2, "0.5"), ex(3, "1.5")]
    )
    assert reg == {"pearson": 0.0, "spearman": 0.0}  # a constant guess correlates with nothing
    mc = majority_baseline(spec("multiple_choice"), [ex(0, "1"), ex(1, "1"), ex(2, "0")], [ex(3, "1"), ex(4, "2")])
    assert mc == {"accuracy": 0.5}
