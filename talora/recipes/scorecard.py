"""What every scored evaluation records beside its metrics, so a reader can tell a score from an
artefact: which lines were scored (a seeded, stratified sample: ``tasks.scored_sample``), what the
best constant answer scores on those same lines, how the predictions spread over the labels, and
how many prompts lost text to truncation.

``scored_examples`` draws the lines; ``scorecard`` summarises one task's predictions on them (the
short record that goes into ``metrics.json``); ``write_lines`` keeps every line's gold answer and
prediction in ``predictions.json`` beside it, which the statistics of ``talora analyze compare``
resample.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from pathlib import Path

from .. import tasks as T
from ..atomic import atomic_write
from ..core.batching import Encoded
from ..tasks.base import TaskSpec

PREDICTIONS = "predictions.json"
# A method whose predictions are this share or more one answer is flagged in tables: its score may
# only record a constant output.
CONSTANT_SHARE = 0.9


def scored_examples(spec: TaskSpec, examples: list[T.Example], n: int, seed: int) -> tuple[list[int], list[T.Example]]:
    """The positions and examples of a split that are scored (``n`` = 0: all of them)."""
    labels = spec.labels if spec.task_kind.per_class else ()
    index = T.scored_sample(examples, n, seed, labels)
    return index, [examples[i] for i in index]


def _gold(item: Encoded) -> str:
    return (item.golds or (item.label,))[0]


def majority(spec: TaskSpec, items: list[Encoded]) -> tuple[str | float, dict[str, float]] | None:
    """The best constant answer on these lines (their most frequent gold; regression: their mean gold)
    and its metrics; None for extraction, which has no answer to repeat."""
    kind = spec.task_kind
    if not kind.ranks or not items:
        return None
    golds = [item.golds or (item.label,) for item in items]
    answer = kind.constant_answer(spec, [_gold(i) for i in items])
    questions = [T.question_of(i.uid) for i in items]
    return answer, T.compute_metrics(spec, [answer] * len(items), golds, questions)


def scorecard(
    spec: TaskSpec, split: str, index: list[int], of: int, items: list[Encoded], preds: list, metrics: dict
) -> dict:
    """The record of one task scored on ``items`` (the lines ``index`` of a split of ``of`` lines)."""
    card = {
        "split": split,
        "lines": len(items),
        "of": of,
        "sample": hashlib.sha256(json.dumps(index).encode()).hexdigest()[:16],
        "metrics": metrics,
        "truncated": sum(i.truncated for i in items) / len(items),
    }
    if (base := majority(spec, items)) is not None:
        card["majority"] = {"answer": base[0], "metrics": base[1]}
    if spec.task_kind.counts_answers:
        histogram = Counter(str(p) for p in preds)
        card["histogram"] = dict(sorted(histogram.items()))
        card["top_share"] = max(histogram.values()) / len(preds)
    return card


def write_lines(folder: Path, name: str, index: list[int], items: list[Encoded], preds: list) -> None:
    """Every scored line of task ``name``: its position in the split, gold answers and prediction."""
    path = Path(folder) / PREDICTIONS
    lines = json.loads(path.read_text()) if path.is_file() else {}
    lines[name] = {
        "index": index,
        "golds": [list(i.golds or (i.label,)) for i in items],
        "predictions": preds,
        "uids": [i.uid for i in items],
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, json.dumps(lines).encode())


def read_lines(folder: Path) -> dict:
    path = Path(folder) / PREDICTIONS
    return json.loads(path.read_text()) if path.is_file() else {}
