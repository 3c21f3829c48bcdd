"""The three records every other module speaks: an example, a task's spec, a task with its splits.

Four kinds of task share them; what an example trains on (its *answer*) and what a prediction
is chosen among (its *candidates*) depend on the kind:

| kind | label | answer (trained on) | prediction |
|---|---|---|---|
| classification | label name | the label's word | the label whose word scores best |
| multiple_choice | index of the right choice ("0", "1", ...) | the right choice's text | best-scoring choice |
| regression | the gold score ("3.8") | the word of the nearest bin (" 4") | expected bin value under softmax |
| extraction | the first gold span | that span + newline | greedy generation up to a newline |
"""

from __future__ import annotations

import math
import string
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..errors import DataError

KINDS = ("classification", "multiple_choice", "regression", "extraction")
METRICS = ("accuracy", "macro_f1", "matthews", "pearson", "span_f1", "f1a")
# The metrics each kind may be scored by (the first is its default).
KIND_METRICS = {
    "classification": ("accuracy", "macro_f1", "matthews", "f1a"),
    "multiple_choice": ("accuracy",),
    "regression": ("pearson",),
    "extraction": ("span_f1",),
}
# Generation ends at the first newline: extraction answers are trained with one after the span.
STOP = "\n"


def template_fields(template: str) -> set[str]:
    """Names a ``str.format`` template refers to (so examples keep only the fields a prompt uses)."""
    return {name for _, name, _, _ in string.Formatter().parse(template) if name}


@dataclass(frozen=True)
class Example:
    uid: str
    task: str
    fields: Mapping[str, Any]
    label: str
    # Every answer that counts as right when scoring (extraction: all reference spans; a relation
    # triple listed with two relations: both). Empty means just ``label``.
    golds: tuple[str, ...] = ()

    # fields is a dict (so dataclasses.asdict and json work); the uid alone identifies an example.
    def __hash__(self) -> int:
        return hash(self.uid)

    @property
    def answers(self) -> tuple[str, ...]:
        return self.golds or (self.label,)


@dataclass(frozen=True)
class TaskSpec:
    name: str
    language: str
    kind: str
    labels: tuple[str, ...]
    label_words: Mapping[str, str]
    template: str
    metric: str
    role: str = ""
    # extraction only: the input field answers are spans of, and the generation budget in tokens.
    span_field: str = ""
    max_new_tokens: int = 0

    def __post_init__(self) -> None:
        # Specs also come back from adapter sidecars, so they check themselves rather than trust the loader.
        where = f"task {self.name!r}"
        if self.kind not in KINDS:
            raise DataError(f"{where}: kind {self.kind!r} is not one of {', '.join(KINDS)}")
        if self.metric not in METRICS:
            raise DataError(f"{where}: metric {self.metric!r} is not one of {', '.join(METRICS)}")
        if self.metric not in KIND_METRICS[self.kind]:
            raise DataError(
                f"{where}: metric {self.metric!r} does not apply to kind {self.kind!r} "
                f"(use one of {', '.join(KIND_METRICS[self.kind])})"
            )
        if not self.template.strip():
            raise DataError(f"{where}: field 'template' is empty")
        if self.kind in ("classification", "regression"):
            self._check_labels(where)
        if self.kind == "extraction":
            if not self.span_field or self.span_field not in template_fields(self.template):
                raise DataError(
                    f"{where}: field 'span_field' is {self.span_field!r}, not an input field of the "
                    f"template {self.template!r}"
                )
            if self.max_new_tokens < 1:
                raise DataError(
                    f"{where}: field 'max_new_tokens' must be >= 1 for extraction, got {self.max_new_tokens}"
                )

    def _check_labels(self, where: str) -> None:
        if not self.labels or len(set(self.labels)) != len(self.labels):
            raise DataError(f"{where}: labels must be non-empty and distinct, got {list(self.labels)}")
        missing = [lab for lab in self.labels if not self.label_words.get(lab)]
        if missing:
            raise DataError(f"{where}: field 'label_words' has no word for label(s) {missing}")
        words = [self.label_words[lab] for lab in self.labels]
        if len(set(words)) != len(words):
            raise DataError(f"{where}: field 'label_words' maps two labels to the same word: {words}")
        if self.kind == "regression":
            try:
                values = [float(lab) for lab in self.labels]
            except ValueError:
                raise DataError(f"{where}: regression labels are the bins' values, got {list(self.labels)}") from None
            if values != sorted(values):
                raise DataError(f"{where}: regression bins must be in increasing order, got {list(self.labels)}")

    def __hash__(self) -> int:
        return hash((self.name, self.template, self.labels))

    def prompt(self, ex: Example) -> str:
        return self.render(ex.fields, ex.uid)

    def render(self, fields: dict, uid: str) -> str:
        """The template filled with ``fields`` (an example's, or a truncated copy): the one place
        a prompt's text is made, for training, evaluation and display alike."""
        try:
            return self.template.format(**fields)
        except KeyError as err:
            raise DataError(
                f"task {self.name!r}: example {uid} has no field {err.args[0]!r} that the template needs"
            ) from None

    def answer(self, label: str) -> str:
        """The word of a label (classification) or of the bin nearest a score (regression)."""
        if self.kind == "regression":
            return self.label_words[self.nearest_bin(label)]
        try:
            return self.label_words[label]
        except KeyError:
            raise DataError(f"task {self.name!r}: unknown label {label!r} (labels: {', '.join(self.labels)})") from None

    def nearest_bin(self, score: str) -> str:
        try:
            value = float(score)
        except ValueError:
            raise DataError(f"task {self.name!r}: regression label {score!r} is not a number") from None
        if not math.isfinite(value):
            raise DataError(f"task {self.name!r}: regression label {score!r} is not finite")
        # Ties go to the upper bin (2.5 -> 3), whatever Python's round-half-even would do.
        return min(self.labels, key=lambda lab: (abs(float(lab) - value), -float(lab)))

    def answer_text(self, ex: Example) -> str:
        """What an example trains on (see the module's table)."""
        if self.kind == "multiple_choice":
            return self._choice(ex, ex.label)
        if self.kind == "extraction":
            return ("" if self.language == "zh" else " ") + ex.label + STOP
        return self.answer(ex.label)

    def candidates(self, ex: Example) -> list[str]:
        """The answers a prediction is ranked among; extraction generates instead (empty)."""
        if self.kind == "multiple_choice":
            return list(ex.fields["choices"])
        if self.kind == "extraction":
            return []
        return [self.label_words[lab] for lab in self.labels]

    def _choice(self, ex: Example, index: str) -> str:
        choices = ex.fields.get("choices") or []
        if not index.isdigit() or int(index) >= len(choices):
            raise DataError(
                f"task {self.name!r}: example {ex.uid}: label {index!r} is not the index of one of "
                f"its {len(choices)} choices"
            )
        return choices[int(index)]


@dataclass
class Task:
    spec: TaskSpec
    splits: dict[str, list[Example]] = field(default_factory=dict)
