"""The papers' metrics. A task's kind picks them (``talora.tasks.kinds.compute_metrics``, which also
holds the majority baseline every score is read against); the dict it returns holds the headline
``spec.metric`` (model selection, tables), with related scores beside it:

| metric | also reported | predictions | golds (per example: every acceptable answer) |
|---|---|---|---|
| accuracy, macro_f1 (classification) | the other one | label names | label names |
| accuracy (multiple choice) | - | choice indices as strings | the right index |
| matthews (CoLA) | accuracy, macro_f1 | label names | label names |
| pearson (STS-B) | spearman | floats | the gold score |
| span_f1 | exact_match | generated text | reference spans |
| f1a (MultiRC) | exact_match (per question), accuracy | "true"/"false" per candidate | the same |

A classification example with several golds (a FinRE triple listed with two relations) counts a
prediction of any of them as right: its gold is taken to be the prediction when the prediction
is among them, otherwise its first gold.

Span scores follow the official scripts. English (SQuAD v1.1): lowercase, drop punctuation, the
articles a/an/the and extra whitespace; F1 over the bag of remaining words. Chinese (CMRC 2018,
also used for DRCD and COTE): lowercase, drop the script's punctuation set, split into characters
(runs of other letters and digits stay one token each); F1 from the longest common substring of
the two token lists; EM compares the strings with punctuation removed. Each example takes its best
score over the reference spans. Undefined correlations (a constant predictor) count as 0.
"""

from __future__ import annotations

import re
import string
from collections import Counter
from collections.abc import Sequence

import numpy as np

from ..errors import DataError


def classification_metrics(preds: Sequence[str], golds: Sequence[str], labels: Sequence[str]) -> dict[str, float]:
    check_predictions(preds, golds)
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


def matthews(preds: Sequence[str], golds: Sequence[str], labels: Sequence[str]) -> float:
    """Matthews correlation over any number of classes (Gorodkin's R_K); 0 when undefined."""
    check_predictions(preds, golds)
    index = {lab: i for i, lab in enumerate(labels)}
    k = len(labels) + 1  # one extra row/column for predictions outside the label set
    confusion = np.zeros((k, k))
    for p, g in zip(preds, golds):
        confusion[index.get(g, k - 1), index.get(p, k - 1)] += 1
    n = confusion.sum()
    correct = np.trace(confusion)
    pred_totals, gold_totals = confusion.sum(0), confusion.sum(1)
    cov_pg = correct * n - gold_totals @ pred_totals
    cov_pp = n * n - pred_totals @ pred_totals
    cov_gg = n * n - gold_totals @ gold_totals
    if cov_pp == 0 or cov_gg == 0:
        return 0.0
    return float(cov_pg / np.sqrt(cov_pp * cov_gg))


def _ranks(x: np.ndarray) -> np.ndarray:
    """Ranks from 1, ties sharing their mean rank (as Spearman's rho needs)."""
    order = np.argsort(x, kind="mergesort")
    ranks = np.empty(len(x))
    ranks[order] = np.arange(1, len(x) + 1)
    for value in np.unique(x):
        tied = x == value
        ranks[tied] = ranks[tied].mean()
    return ranks


def pearson(preds: Sequence[float], golds: Sequence[float]) -> float:
    """Pearson's r; 0 when either side is constant (r is undefined there, and NaN would poison averages)."""
    check_predictions(preds, golds)
    p, g = np.asarray(preds, dtype=np.float64), np.asarray(golds, dtype=np.float64)
    if not (np.isfinite(p).all() and np.isfinite(g).all()):
        raise DataError("correlation over non-finite values (NaN or inf among the predictions or golds)")
    p, g = p - p.mean(), g - g.mean()
    denominator = np.sqrt((p @ p) * (g @ g))
    return float(p @ g / denominator) if denominator > 0 else 0.0


def correlation_metrics(preds: Sequence[float], golds: Sequence[float]) -> dict[str, float]:
    p, g = np.asarray(preds, dtype=np.float64), np.asarray(golds, dtype=np.float64)
    return {"pearson": pearson(p, g), "spearman": pearson(_ranks(p), _ranks(g))}


# ---------------------------------------------------------------- spans
_ARTICLES = re.compile(r"\b(a|an|the)\b")
# The punctuation the CMRC 2018 evaluation removes (its ASCII part and its full-width part).
# ("……" is listed there as one two-character string, so a single "…" is never removed; nor here.)
ZH_PUNCTUATION = frozenset("-:_*^/\\~`+=，。：？！“”；’《》·、「」（）－～『』")
_CJK = re.compile(r"[\u4e00-\u9fa5]")


def normalize_en(text: str) -> str:
    text = "".join(ch for ch in text.lower() if ch not in string.punctuation)
    return " ".join(_ARTICLES.sub(" ", text).split())


def remove_zh_punctuation(text: str) -> str:
    return "".join(ch for ch in text.lower().strip() if ch not in ZH_PUNCTUATION)


def segment_zh(text: str) -> list[str]:
    """Characters of Chinese text; runs of other characters are split on whitespace and punctuation
    (the official script hands those runs to NLTK's word tokenizer)."""
    tokens: list[str] = []
    run = ""
    for ch in text.lower().strip():
        if ch in ZH_PUNCTUATION:
            continue
        if _CJK.match(ch):
            tokens += _words(run)
            run = ""
            tokens.append(ch)
        else:
            run += ch
    return tokens + _words(run)


def _words(run: str) -> list[str]:
    # Like NLTK's tokenizer on the usual cases: words, numbers with a decimal point, punctuation alone.
    return re.findall(r"\d+(?:[.,]\d+)+|\w+|[^\w\s]", run)


def _longest_common_substring(a: Sequence[str], b: Sequence[str]) -> int:
    best = 0
    previous = [0] * (len(b) + 1)
    for x in a:
        current = [0] * (len(b) + 1)
        for j, y in enumerate(b, 1):
            if x == y:
                current[j] = previous[j - 1] + 1
                best = max(best, current[j])
        previous = current
    return best


def _f1(overlap: int, n_pred: int, n_gold: int) -> float:
    if overlap == 0:
        return 0.0
    precision, recall = overlap / n_pred, overlap / n_gold
    return 2 * precision * recall / (precision + recall)


def span_f1(pred: str, gold: str, language: str) -> float:
    if language == "zh":
        p, g = segment_zh(pred), segment_zh(gold)
        return _f1(_longest_common_substring(p, g), len(p), len(g))
    p, g = normalize_en(pred).split(), normalize_en(gold).split()
    return _f1(sum((Counter(p) & Counter(g)).values()), len(p), len(g))


def span_exact(pred: str, gold: str, language: str) -> float:
    if language == "zh":
        return float(remove_zh_punctuation(pred) == remove_zh_punctuation(gold))
    return float(normalize_en(pred) == normalize_en(gold))


def span_f1_lines(preds: Sequence[str], golds: Sequence[Sequence[str]], language: str) -> list[float]:
    """Each line's span F1 against its best-matching reference (the task's score is their mean)."""
    return [max(span_f1(p, g, language) for g in gs) for p, gs in zip(preds, golds)]


def span_metrics(preds: Sequence[str], golds: Sequence[Sequence[str]], language: str) -> dict[str, float]:
    check_predictions(preds, golds)
    f1 = span_f1_lines(preds, golds, language)
    em = [max(span_exact(p, g, language) for g in gs) for p, gs in zip(preds, golds)]
    return {"span_f1": float(np.mean(f1)), "exact_match": float(np.mean(em))}


def f1a_metrics(
    preds: Sequence[str], golds: Sequence[str], groups: Sequence[str], positive: str = "true"
) -> dict[str, float]:
    """MultiRC: F1 of the positive class over all candidate answers, and the share of questions
    (``groups``) whose candidates are all judged right."""
    check_predictions(preds, golds)
    if len(groups) != len(golds):
        raise DataError(f"{len(groups)} question ids for {len(golds)} candidate answers")
    p, g = np.asarray(preds, dtype=object) == positive, np.asarray(golds, dtype=object) == positive
    tp = int(np.sum(p & g))
    right = np.asarray(preds, dtype=object) == np.asarray(golds, dtype=object)
    by_question: dict[str, bool] = {}
    for q, ok in zip(groups, right):
        by_question[q] = by_question.get(q, True) and bool(ok)
    return {
        "f1a": _f1(tp, int(p.sum()), int(g.sum())),
        "exact_match": float(np.mean(list(by_question.values()))),
        "accuracy": float(right.mean()),
    }


def resolve_golds(preds: Sequence[str], golds: Sequence[Sequence[str]]) -> list[str]:
    """One gold per example: the prediction where it is acceptable, else the first gold."""
    return [p if p in gs else gs[0] for p, gs in zip(preds, golds)]


def check_predictions(preds: Sequence, golds: Sequence) -> None:
    if len(preds) != len(golds):
        raise DataError(f"{len(preds)} predictions for {len(golds)} gold labels")
    if not len(golds):
        raise DataError("no predictions to score (empty evaluation set)")


def question_of(uid: str) -> str:
    """MultiRC candidates are ``<path>/<split>/<line>/<answer>``: the question is the line."""
    return uid.rsplit("/", 1)[0]
