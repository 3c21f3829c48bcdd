"""Metrics against values worked out by hand."""

from __future__ import annotations

import pytest

from talora.errors import DataError
from talora.tasks import Example, compute_metrics, majority_baseline


def test_binary_by_hand():
    # pos: tp=2 fp=1 fn=1 -> P=R=F1=2/3; neg: tp=1 fp=1 fn=1 -> F1=1/2.
    preds = ["pos", "pos", "neg", "pos", "neg"]
    golds = ["pos", "neg", "neg", "pos", "pos"]
    m = compute_metrics(preds, golds, ["neg", "pos"])
    assert m["accuracy"] == pytest.approx(3 / 5)
    assert m["macro_f1"] == pytest.approx((2 / 3 + 1 / 2) / 2)


def test_three_classes_with_a_class_never_predicted():
    # a: tp=2 fp=1 fn=0 -> F1=0.8; b: tp=1 fp=0 fn=0 -> 1; c: gold once, never predicted -> 0.
    m = compute_metrics(["a", "a", "b", "a"], ["a", "a", "b", "c"], ["a", "b", "c"])
    assert m["accuracy"] == pytest.approx(3 / 4)
    assert m["macro_f1"] == pytest.approx((0.8 + 1.0 + 0.0) / 3)


def test_labels_absent_from_both_sides_are_skipped():
    m = compute_metrics(["x", "y"], ["x", "y"], ["x", "y", "z", "w"])
    assert m == {"accuracy": 1.0, "macro_f1": 1.0}


def test_prediction_outside_the_label_set_is_wrong():
    m = compute_metrics(["x", "???"], ["x", "y"], ["x", "y"])
    # x: tp=1 -> F1=1; y: gold once, never predicted -> 0.
    assert m == {"accuracy": 0.5, "macro_f1": 0.5}


def test_empty_or_mismatched_input():
    with pytest.raises(DataError, match="empty"):
        compute_metrics([], [], ["a"])
    with pytest.raises(DataError, match="2 predictions for 1 gold"):
        compute_metrics(["a", "a"], ["a"], ["a"])


def ex(i: int, label: str) -> Example:
    return Example(f"t/train/{i}", "t", {"text": str(i)}, label)


def test_majority_baseline():
    train = [ex(0, "b"), ex(1, "b"), ex(2, "a")]
    evaluation = [ex(3, "a"), ex(4, "b"), ex(5, "b"), ex(6, "c")]
    m = majority_baseline(train, evaluation, ["a", "b", "c"])
    # always "b": accuracy 2/4; F1 b = 2*(0.5*1)/(1.5) = 2/3; a and c never predicted -> 0.
    assert m["accuracy"] == pytest.approx(0.5)
    assert m["macro_f1"] == pytest.approx((2 / 3) / 3)


def test_majority_tie_goes_to_first_listed_label():
    train = [ex(0, "b"), ex(1, "a")]
    assert majority_baseline(train, [ex(2, "a")], ["a", "b"])["accuracy"] == 1.0
    assert majority_baseline(train[::-1], [ex(2, "a")], ["a", "b"])["accuracy"] == 1.0
