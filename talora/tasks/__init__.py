"""Tasks as text: examples, their prompt templates and label words, few-shot sampling and metrics.

Kinds: classification, multiple_choice, regression and extraction (see ``kinds``; a new kind is a
``TaskKind`` subclass there); the JSONL loader maps every task type of the shared data folder onto
them (see ``jsonl``).

Two sources of tasks share one interface: the embedded synthetic suite (``data_dir=None``) and a
data folder in the ../shared/data layout (``MANIFEST.json`` + ``<lang>/<task>/<split>.jsonl``), or
one without a manifest (a folder per task, or a single .jsonl/.json/.csv/.tsv/.parquet file) whose
tasks are read by ``records`` and inferred from their records by ``infer`` (docs/data.md).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from . import jsonl, synthetic
from .base import Example, Task, TaskSpec
from .kinds import TaskKind, compute_metrics, majority_baseline, task_kind
from .metrics import question_of
from .sampling import K_ALL, KS, SHOT_MODES, evaluation_split, few_shot, is_k, parse_k, sample_k_shot, scored_sample
from .synthetic import SYNTHETIC_SOURCE_TASKS, SYNTHETIC_TARGET_TASKS


def load_tasks(data_dir: str | Path | None = None, names: Sequence[str] | None = None) -> dict[str, Task]:
    """The named tasks (all loadable ones when ``names`` is None), reading only their files."""
    if data_dir is None:
        return synthetic.load(names)
    return jsonl.load(data_dir, names)


def describe_tasks(data_dir: str | Path | None = None) -> list[dict]:
    """One row per task (name, language, kind, role, metric, labels, split sizes, and ``inferred``: what
    was inferred, or None). A task the manifest describes is listed without reading its data; any other
    is read to infer what it is. A task that cannot be read has ``supported`` false and a ``problem``."""
    if data_dir is None:
        return synthetic.describe()
    return jsonl.describe(Path(data_dir))


def check_tasks(data_dir: str | Path) -> list[dict]:
    """``describe_tasks``' rows after reading every record of every task: split sizes are the examples
    loaded, and a task with an unreadable record has ``supported`` false and the ``problem`` (file, line)."""
    return jsonl.check(Path(data_dir))


__all__ = [
    "Example",
    "TaskSpec",
    "Task",
    "TaskKind",
    "task_kind",
    "load_tasks",
    "describe_tasks",
    "check_tasks",
    "sample_k_shot",
    "scored_sample",
    "few_shot",
    "parse_k",
    "is_k",
    "K_ALL",
    "SHOT_MODES",
    "evaluation_split",
    "KS",
    "compute_metrics",
    "majority_baseline",
    "question_of",
    "SYNTHETIC_SOURCE_TASKS",
    "SYNTHETIC_TARGET_TASKS",
]
