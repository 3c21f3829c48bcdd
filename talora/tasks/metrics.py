"""Accuracy and macro-F1 over label names, and the majority-class baseline every score is read against."""

from __future__ import annotations

from collections import Counter
from typing import Sequence

import numpy as np

from ..errors import DataError
from .base import Example


def compute_metrics(preds: Sequence[str], golds: Sequence[str], labels: Sequence[str]) -> dict[str, float]:
    if len(preds) != len(golds):
        raise DataError(f"{len(preds)} predictions for {len(golds)} gold labels")
    if not golds:
        raise DataError("no predictions to score (empty evaluation set)")
    # Labels outside the task's set (a malformed prediction) still count as wrong, through index -1.
    index = {lab: i for i, lab in enumerate(labels)}
    p = np.array([index.get(x, -1) for x in preds])
    g = np.array([index.get(x, -1) for x in golds])
    accuracy = float(np.mean(np.asarray(preds, dtype=object) == np.asarray(golds, dtype=object)))
    f1s = []
    for i in range(len(labels)):
        predicted, gold = p == i, g == i
        if not predicted.any() and not gold.any():
            continue  # a class absent from both sides says nothing about this evaluation
        tp = float(np.sum(predicted & gold))
        precision = tp / predicted.sum() if predicted.any() else 0.0
        recall = tp / gold.sum() if gold.any() else 0.0
        f1s.append(0.0 if tp == 0 else 2 * precision * recall / (precision + recall))
    return {"accuracy": accuracy, "macro_f1": float(np.mean(f1s)) if f1s else 0.0}


def majority_baseline(train: Sequence[Example], evaluation: Sequence[Example], labels: Sequence[str]
                      ) -> dict[str, float]:
    if not train:
        raise DataError("majority baseline needs training examples to count labels")
    counts = Counter(ex.label for ex in train)
    # Ties go to the label listed first, so the baseline does not depend on example order.
    majority = max(labels, key=lambda lab: (counts[lab], -list(labels).index(lab)))
    return compute_metrics([majority] * len(evaluation), [ex.label for ex in evaluation], labels)
