"""The three records every other module speaks: an example, a task's spec, a task with its splits."""

from __future__ import annotations

import string
from dataclasses import dataclass, field
from typing import Any, Mapping

from ..errors import DataError

KINDS = ("classification",)
METRICS = ("accuracy", "macro_f1")


def template_fields(template: str) -> set[str]:
    """Names a ``str.format`` template refers to (so examples keep only the fields a prompt uses)."""
    return {name for _, name, _, _ in string.Formatter().parse(template) if name}


@dataclass(frozen=True)
class Example:
    uid: str
    task: str
    fields: Mapping[str, Any]
    label: str

    # fields is a dict (so dataclasses.asdict and json work); the uid alone identifies an example.
    def __hash__(self) -> int:
        return hash(self.uid)


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

    def __post_init__(self) -> None:
        # Specs also come back from adapter sidecars, so they check themselves rather than trust the loader.
        where = f"task {self.name!r}"
        if self.kind not in KINDS:
            raise DataError(f"{where}: kind {self.kind!r} is not one of {', '.join(KINDS)}")
        if self.metric not in METRICS:
            raise DataError(f"{where}: metric {self.metric!r} is not one of {', '.join(METRICS)}")
        if not self.labels or len(set(self.labels)) != len(self.labels):
            raise DataError(f"{where}: labels must be non-empty and distinct, got {list(self.labels)}")
        missing = [lab for lab in self.labels if not self.label_words.get(lab)]
        if missing:
            raise DataError(f"{where}: field 'label_words' has no word for label(s) {missing}")
        words = [self.label_words[lab] for lab in self.labels]
        if len(set(words)) != len(words):
            raise DataError(f"{where}: field 'label_words' maps two labels to the same word: {words}")
        if not self.template.strip():
            raise DataError(f"{where}: field 'template' is empty")

    def __hash__(self) -> int:
        return hash((self.name, self.template, self.labels))

    def prompt(self, ex: Example) -> str:
        try:
            return self.template.format(**ex.fields)
        except KeyError as err:
            raise DataError(f"task {self.name!r}: example {ex.uid} has no field {err.args[0]!r} "
                            f"that the template needs") from None

    def answer(self, label: str) -> str:
        try:
            return self.label_words[label]
        except KeyError:
            raise DataError(f"task {self.name!r}: unknown label {label!r} "
                            f"(labels: {', '.join(self.labels)})") from None


@dataclass
class Task:
    spec: TaskSpec
    splits: dict[str, list[Example]] = field(default_factory=dict)
