"""Kinds of task: what an answer is, how it is trained on, predicted and scored.

A spec names its kind by a string (``TaskSpec.kind``, as files and configs write it); the object
that answers for that kind is ``task_kind(name)``. The four kinds talora ships:

| kind | label | answer (trained on) | prediction | metrics |
|---|---|---|---|---|
| classification | label name | the label's word | the best-scoring label | accuracy, macro_f1, matthews, f1a |
| multiple_choice | index of the right choice ("0", ...) | the right choice's text | best-scoring choice | accuracy |
| regression | the gold score ("3.8") | the word of the nearest bin (" 4") | bins' values under softmax | pearson |
| extraction | the first gold span | that span + newline | greedy generation up to a newline | span_f1 |

A new kind is one subclass of ``TaskKind`` that sets ``name`` and ``metrics`` and overrides what
differs from the defaults (a fixed label set whose words are ranked, the best one predicted); it is
found by its name wherever a spec names it, with no list to extend. Kinds hold no state: each
method takes the spec (or verbalizer) it answers for.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from typing import TYPE_CHECKING, ClassVar, Protocol

import numpy as np

from ..errors import DataError
from .metrics import (
    check_predictions,
    classification_metrics,
    correlation_metrics,
    f1a_metrics,
    matthews,
    question_of,
    resolve_golds,
    span_metrics,
)
from .templates import template_fields

if TYPE_CHECKING:
    from .base import Example, TaskSpec

# Every metric a shipped kind may be scored by, in the order refusals list them; a kind added later
# brings its own (``known_metrics``).
METRICS = ("accuracy", "macro_f1", "matthews", "pearson", "span_f1", "f1a")
# How ranked candidates are compared (``label_scoring`` of a run config):
#   sum:        the summed log-probability of the answer's tokens; shorter answers are favoured
#   mean:       the log-probability per token of the answer (length-normalised)
#   calibrated: contextual calibration (Zhao et al. 2021, arXiv 2102.09690): the label distribution the
#               model gives the task's template with content-free inputs ("N/A", "", "[MASK]") is
#               divided out, so a label favoured by its words alone (its length, its frequency) loses
#               that edge. Kinds without a fixed label set have nothing to calibrate (``scoring_for``).
# Here rather than in talora.core.predict, which imports torch: reading a config checks it.
LABEL_SCORING = ("sum", "mean", "calibrated")
# Generation ends at the first newline: extraction answers are trained with one after the span.
STOP = "\n"
# How a multiple-choice prompt lists its choices, by language (default "; ").
OPTION_SEPARATOR = {"zh": "；"}


class Scored(Protocol):
    """What scoring reads of a task: a ``TaskSpec`` or a ``talora.core.predict.Verbalizer``."""

    kind: str
    metric: str
    labels: tuple[str, ...]
    language: str


class TaskKind:
    """The defaults: a fixed set of labels, each with a word; the word that scores best is the prediction."""

    name: ClassVar[str]
    metrics: ClassVar[tuple[str, ...]]  # what a task of this kind may be scored by; the first is its default
    ranks: ClassVar[bool] = True  # the answer is chosen among candidates (False: generated)
    label_set: ClassVar[bool] = False  # its labels are a fixed set with a word each (checked, calibratable)
    bins: ClassVar[bool] = False  # those labels are bins of a score, and an example's label is the score itself
    per_class: ClassVar[bool] = False  # k shots count per label, scored samples and held-out splits keep each
    perturbable: ClassVar[bool] = False  # up-sampled copies of its examples may have their text perturbed
    counts_answers: ClassVar[bool] = False  # predictions are few distinct answers: their histogram is reported
    text_answer: ClassVar[bool] = False  # a prediction is text (a label word or a span), as a completion returns
    shown: ClassVar[str] = ""  # what task listings show in place of its labels

    # ---------------------------------------------------------------- the spec
    def check(self, spec: TaskSpec, where: str) -> None:
        """Refuse a spec this kind cannot work with (``where`` names it); specs also come from sidecars."""

    def answer(self, spec: TaskSpec, label: str) -> str:
        """The word a label is trained on."""
        try:
            return spec.label_words[label]
        except KeyError:
            raise DataError(f"task {spec.name!r}: unknown label {label!r} (labels: {', '.join(spec.labels)})") from None

    def answer_text(self, spec: TaskSpec, ex: Example) -> str:
        """What an example trains on."""
        return self.answer(spec, ex.label)

    def candidates(self, spec: TaskSpec, ex: Example) -> list[str]:
        """The answers a prediction is ranked among (empty when it is generated)."""
        return [spec.label_words[lab] for lab in spec.labels]

    def metric_from(self, declared: str) -> str:
        """The headline metric of a task whose manifest declares ``declared``."""
        return self.metrics[0]

    # ---------------------------------------------------------------- encoding
    def candidate_ids(self, spec: TaskSpec, ex: Example, tokenizer) -> tuple[tuple[int, ...], ...]:
        """Token ids of an example's own candidates, kept with the encoded example; empty when every
        example of the task shares them (the verbalizer holds those)."""
        return ()

    def answer_room(self, spec: TaskSpec, answer: list[int], candidates: tuple, training: bool) -> int:
        """Tokens kept free after the prompt: the longest candidate, else the answer."""
        return max(len(c) for c in candidates) if candidates else len(answer)

    def window(self, spec: TaskSpec, ex: Example, tokenizer, budget: int) -> list[int] | None:
        """Prompt ids of a training example too long for ``budget`` tokens, cut so that its answer stays
        in them; None: cut its longest field as any other example (the default)."""
        return None

    # ---------------------------------------------------------------- predicting
    def values(self, spec: TaskSpec) -> tuple[float, ...]:
        """The number each label stands for, where the prediction is a number."""
        return ()

    def scoring_for(self, requested: str) -> str:
        """The ``label_scoring`` used when ``requested`` is asked for: calibration needs a fixed label set."""
        return requested if requested != "calibrated" or self.label_set else "sum"

    def ranked(self, verbalizer, item) -> tuple[tuple[int, ...], ...]:
        """The token ids an encoded example's candidates are (the label words by default)."""
        return verbalizer.words

    def decide(self, verbalizer, scores) -> str | float:
        """The prediction from one example's candidate scores (a CPU tensor of log-likelihoods up to a constant)."""
        return verbalizer.labels[int(scores.argmax())]

    def result(self, verbalizer, decided, probabilities: list[float]) -> dict:
        """A served prediction: the decision, and the candidates' probabilities where they mean something."""
        return {"prediction": decided, "probabilities": dict(zip(verbalizer.labels, probabilities))}

    # ---------------------------------------------------------------- scoring
    def score(self, spec: Scored, preds: Sequence, golds: Sequence[Sequence[str]], groups) -> dict[str, float]:
        """The metrics of one task's predictions; ``golds[i]`` lists every acceptable answer of example i."""
        raise NotImplementedError(f"kind {self.name!r} does not say how it is scored")

    def constant_answer(self, spec: Scored, golds: Sequence[str]) -> str | float:
        """The best answer to give every example, from these gold answers: the most frequent one (ties:
        the label listed first, so it does not depend on their order)."""
        counts = Counter(golds)
        order = list(spec.labels) or sorted(counts)
        return max(order, key=lambda lab: (counts[lab], -order.index(lab)))

    # ---------------------------------------------------------------- serving
    def request_fields(self, spec: TaskSpec) -> dict[str, str]:
        """The fields a prediction request carries besides ``task``, with their JSON types."""
        return {name: "string" for name in sorted(template_fields(spec.template))}

    def request_example(self, spec: TaskSpec, fields: dict) -> tuple[dict, str]:
        """The fields and placeholder label of the example a request stands for (nothing is scored)."""
        return fields, spec.labels[0]


def _check_label_words(spec: TaskSpec, where: str) -> None:
    if not spec.labels or len(set(spec.labels)) != len(spec.labels):
        raise DataError(f"{where}: labels must be non-empty and distinct, got {list(spec.labels)}")
    missing = [lab for lab in spec.labels if not spec.label_words.get(lab)]
    if missing:
        raise DataError(f"{where}: field 'label_words' has no word for label(s) {missing}")
    words = [spec.label_words[lab] for lab in spec.labels]
    if len(set(words)) != len(words):
        raise DataError(f"{where}: field 'label_words' maps two labels to the same word: {words}")


class Classification(TaskKind):
    name = "classification"
    metrics = ("accuracy", "macro_f1", "matthews", "f1a")
    label_set = per_class = perturbable = counts_answers = text_answer = True

    def check(self, spec: TaskSpec, where: str) -> None:
        _check_label_words(spec, where)

    def metric_from(self, declared: str) -> str:
        """The manifest's first words decide ("Accuracy (TPV: macro F1)" -> accuracy, "macro F1" or
        "F1 (...)" -> macro_f1, "Matthews ..." -> matthews)."""
        text = declared.lower()
        if text.startswith("matthews"):
            return "matthews"
        if text.startswith("accuracy") or "f1" not in text:
            return "accuracy"
        return "macro_f1"

    def score(self, spec: Scored, preds: Sequence, golds: Sequence[Sequence[str]], groups) -> dict[str, float]:
        gold = resolve_golds(preds, golds)
        if spec.metric == "f1a":
            return f1a_metrics(preds, gold, groups if groups is not None else [str(i) for i in range(len(gold))])
        scores = classification_metrics(preds, gold, spec.labels)
        if spec.metric == "matthews":
            return {"matthews": matthews(preds, gold, spec.labels), **scores}
        return scores


class MultipleChoice(TaskKind):
    name = "multiple_choice"
    metrics = ("accuracy",)
    counts_answers = True
    shown = "choices per example"

    def answer_text(self, spec: TaskSpec, ex: Example) -> str:
        choices = ex.fields.get("choices") or []
        if not ex.label.isdigit() or int(ex.label) >= len(choices):
            raise DataError(
                f"task {spec.name!r}: example {ex.uid}: label {ex.label!r} is not the index of one of "
                f"its {len(choices)} choices"
            )
        return choices[int(ex.label)]

    def candidates(self, spec: TaskSpec, ex: Example) -> list[str]:
        return list(ex.fields["choices"])

    def candidate_ids(self, spec: TaskSpec, ex: Example, tokenizer) -> tuple[tuple[int, ...], ...]:
        return tuple(tuple(tokenizer(c, add_special_tokens=False)["input_ids"]) for c in self.candidates(spec, ex))

    def scoring_for(self, requested: str) -> str:
        # Each example's own choices: summed scores would favour short choices, and nothing is calibratable.
        return "mean" if requested == "calibrated" else requested

    def ranked(self, verbalizer, item) -> tuple[tuple[int, ...], ...]:
        return item.candidates

    def decide(self, verbalizer, scores) -> str:
        return str(int(scores.argmax()))

    def result(self, verbalizer, decided, probabilities: list[float]) -> dict:
        return {"prediction": int(decided), "probabilities": probabilities}

    def score(self, spec: Scored, preds: Sequence, golds: Sequence[Sequence[str]], groups) -> dict[str, float]:
        gold = resolve_golds(preds, golds)
        return {"accuracy": float(np.mean([p == g for p, g in zip(preds, gold)]))}

    def options(self, language: str, choices: Sequence[str]) -> str:
        """The ``options`` text a template shows: the choices in one line."""
        return OPTION_SEPARATOR.get(language, "; ").join(choices)

    def request_fields(self, spec: TaskSpec) -> dict[str, str]:
        # The choices come as a list; the options text is built from them, as the data loader does.
        fields = super().request_fields(spec)
        fields.pop("options", None)
        fields["choices"] = "list of strings"
        return fields

    def request_example(self, spec: TaskSpec, fields: dict) -> tuple[dict, str]:
        return {**fields, "options": self.options(spec.language, fields["choices"])}, "0"


class Regression(TaskKind):
    """Labels are the values of score bins; a score trains on the word of its nearest bin."""

    name = "regression"
    metrics = ("pearson",)
    label_set = bins = perturbable = True

    def check(self, spec: TaskSpec, where: str) -> None:
        _check_label_words(spec, where)
        try:
            values = [float(lab) for lab in spec.labels]
        except ValueError:
            raise DataError(f"{where}: regression labels are the bins' values, got {list(spec.labels)}") from None
        if values != sorted(values):
            raise DataError(f"{where}: regression bins must be in increasing order, got {list(spec.labels)}")

    def answer(self, spec: TaskSpec, label: str) -> str:
        return spec.label_words[self.nearest_bin(spec, label)]

    def nearest_bin(self, spec: TaskSpec, score: str) -> str:
        try:
            value = float(score)
        except ValueError:
            raise DataError(f"task {spec.name!r}: regression label {score!r} is not a number") from None
        if not math.isfinite(value):
            raise DataError(f"task {spec.name!r}: regression label {score!r} is not finite")
        # Ties go to the upper bin (2.5 -> 3), whatever Python's round-half-even would do.
        return min(spec.labels, key=lambda lab: (abs(float(lab) - value), -float(lab)))

    def values(self, spec: TaskSpec) -> tuple[float, ...]:
        return tuple(float(label) for label in spec.labels)

    def decide(self, verbalizer, scores) -> float:
        # The bins' values weighted by the softmax of their scores (float32, as the scores).
        weights = scores.float().softmax(-1)
        return float(weights @ weights.new_tensor(verbalizer.values))

    def result(self, verbalizer, decided, probabilities: list[float]) -> dict:
        return {"prediction": decided}

    def score(self, spec: Scored, preds: Sequence, golds: Sequence[Sequence[str]], groups) -> dict[str, float]:
        return correlation_metrics([float(p) for p in preds], [float(g[0]) for g in golds])

    def constant_answer(self, spec: Scored, golds: Sequence[str]) -> float:
        return sum(float(g) for g in golds) / len(golds)


class Extraction(TaskKind):
    """The answer is a span of the input field ``spec.span_field``, generated up to ``STOP``."""

    name = "extraction"
    metrics = ("span_f1",)
    ranks = False
    text_answer = True
    shown = "generated span"

    def check(self, spec: TaskSpec, where: str) -> None:
        if not spec.span_field or spec.span_field not in template_fields(spec.template):
            raise DataError(
                f"{where}: field 'span_field' is {spec.span_field!r}, not an input field of the "
                f"template {spec.template!r}"
            )
        if spec.max_new_tokens < 1:
            raise DataError(f"{where}: field 'max_new_tokens' must be >= 1 for extraction, got {spec.max_new_tokens}")

    def answer_text(self, spec: TaskSpec, ex: Example) -> str:
        return ("" if spec.language == "zh" else " ") + ex.label + STOP

    def candidates(self, spec: TaskSpec, ex: Example) -> list[str]:
        return []

    def answer_room(self, spec: TaskSpec, answer: list[int], candidates: tuple, training: bool) -> int:
        # Training holds the gold span; prediction holds whatever it generates.
        return len(answer) if training else spec.max_new_tokens

    def window(self, spec: TaskSpec, ex: Example, tokenizer, budget: int) -> list[int] | None:
        """The passage cut to a window around the gold span, or None when no window fits."""
        passage, start = ex.fields[spec.span_field], ex.fields.get("answer_start", -1)
        if not isinstance(start, int) or start < 0 or passage[start : start + len(ex.label)] != ex.label:
            return None
        end = start + len(ex.label)
        offsets = tokenizer(passage, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
        first = next(i for i, (_, stop) in enumerate(offsets) if stop > start)
        last = max(i for i, (begin, _) in enumerate(offsets) if begin < end)
        size = len(offsets)
        # Re-tokenising a cut passage can shift its length by a token or two, so shrink until it fits.
        for _ in range(8):
            size = min(size, len(offsets))
            if size < last - first + 1:
                return None
            left = min(max(0, first - (size - (last - first + 1)) // 2), len(offsets) - size)
            window = passage[offsets[left][0] : offsets[left + size - 1][1]]
            text = spec.render({**ex.fields, spec.span_field: window}, ex.uid)
            prompt = tokenizer(text, add_special_tokens=True)["input_ids"]
            if len(prompt) <= budget:
                return prompt
            size -= len(prompt) - budget
        return None

    def score(self, spec: Scored, preds: Sequence, golds: Sequence[Sequence[str]], groups) -> dict[str, float]:
        return span_metrics(preds, golds, spec.language)

    def request_example(self, spec: TaskSpec, fields: dict) -> tuple[dict, str]:
        return fields, ""


# ---------------------------------------------------------------- finding a kind by its name
def _kind_classes() -> dict[str, type[TaskKind]]:
    """Every TaskKind subclass that names itself, by name, in the order they were defined."""
    found: dict[str, type[TaskKind]] = {}
    todo = list(TaskKind.__subclasses__())
    while todo:
        cls = todo.pop(0)
        todo += cls.__subclasses__()
        if "name" in cls.__dict__:
            if cls.name in found and found[cls.name] is not cls:
                raise TypeError(f"two task kinds are named {cls.name!r}: {found[cls.name]} and {cls}")
            found[cls.name] = cls
    return found


def kind_names() -> tuple[str, ...]:
    return tuple(_kind_classes())


def find_kind(name: str) -> TaskKind | None:
    cls = _kind_classes().get(name)
    return cls() if cls is not None else None


def task_kind(name: str) -> TaskKind:
    """The kind a spec names, or a DataError listing the kinds there are."""
    kind = find_kind(name)
    if kind is None:
        raise DataError(f"kind {name!r} is not one of {', '.join(kind_names())}")
    return kind


def known_metrics() -> tuple[str, ...]:
    return tuple(dict.fromkeys(METRICS + tuple(m for cls in _kind_classes().values() for m in cls.metrics)))


# ---------------------------------------------------------------- a task's scores
def compute_metrics(
    spec: Scored, preds: Sequence, golds: Sequence[Sequence[str]], groups: Sequence[str] | None = None
) -> dict[str, float]:
    """Metrics of one task, as its kind scores them (talora/tasks/metrics.py lists them); ``golds[i]``
    lists every acceptable answer of example i."""
    check_predictions(preds, golds)
    return task_kind(spec.kind).score(spec, preds, golds, groups)


def majority_baseline(spec: Scored, train: Sequence[Example], evaluation: Sequence[Example]) -> dict[str, float] | None:
    """The metrics of always answering the train split's most frequent answer (regression: its mean
    score); None where answers are generated, with no answer to repeat."""
    kind = task_kind(spec.kind)
    if not kind.ranks:
        return None
    if not train:
        raise DataError("majority baseline needs training examples to count labels")
    golds = [ex.answers for ex in evaluation]
    answer = kind.constant_answer(spec, [ex.label for ex in train])
    return compute_metrics(spec, [answer] * len(evaluation), golds, [question_of(ex.uid) for ex in evaluation])
