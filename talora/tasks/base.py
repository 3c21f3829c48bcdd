"""The three records every other module speaks: an example, a task's spec, a task with its splits.

Every kind of task (talora/tasks/kinds.py) shares them; what an example trains on (its *answer*)
and what a prediction is chosen among (its *candidates*) are its kind's to say.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..errors import DataError
from .kinds import TaskKind, known_metrics, task_kind


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
        try:
            kind = self.task_kind
        except DataError as err:
            raise DataError(f"{where}: {err}") from None
        if self.metric not in known_metrics():
            raise DataError(f"{where}: metric {self.metric!r} is not one of {', '.join(known_metrics())}")
        if self.metric not in kind.metrics:
            raise DataError(
                f"{where}: metric {self.metric!r} does not apply to kind {self.kind!r} "
                f"(use one of {', '.join(kind.metrics)})"
            )
        if not self.template.strip():
            raise DataError(f"{where}: field 'template' is empty")
        kind.check(self, where)

    @property
    def task_kind(self) -> TaskKind:
        """The object that answers for ``kind`` (talora/tasks/kinds.py)."""
        return task_kind(self.kind)

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
        return self.task_kind.answer(self, label)

    def answer_text(self, ex: Example) -> str:
        """What an example trains on (talora/tasks/kinds.py)."""
        return self.task_kind.answer_text(self, ex)

    def candidates(self, ex: Example) -> list[str]:
        """The answers a prediction is ranked among; empty where it is generated."""
        return self.task_kind.candidates(self, ex)


@dataclass
class Task:
    spec: TaskSpec
    splits: dict[str, list[Example]] = field(default_factory=dict)
