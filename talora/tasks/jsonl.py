"""Tasks from a data folder: ``MANIFEST.json`` + ``<lang>/<task>/<split>.jsonl`` (see /work/shared/data/README.md).

The manifest alone is enough to list tasks; a task's JSONL files are parsed only when it is loaded.
Every complaint about a file names the file, the 1-based line and the field. An example's uid is
``<path>/<split>/<line>`` (e.g. ``en/sst2/train/17``), so it points back at its line.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

from ..errors import DataError
from .base import Example, Task, TaskSpec, template_fields
from .templates import TEMPLATES_FILE, template_for

MANIFEST = "MANIFEST.json"

# Input fields of each classification form, besides `label`.
FORMS = {
    "single": ("text",),
    "pair": ("text_a", "text_b"),
    "relation": ("text", "head", "tail"),
    "passage_question": ("question", "context"),
    "word_pair": ("word", "text_a", "text_b"),
}

# (phrase in the manifest's `type`, kind, form); the first match wins, so the specific phrases come first.
TYPE_RULES = (
    ("extractive qa", "qa", None),
    ("multiple-choice", "multiple_choice", None),
    ("extraction", "extraction", None),
    ("regression", "regression", None),
    ("multi-answer", "multi_answer", None),
    ("coreference", "coreference", None),
    ("relation classification", "classification", "relation"),
    ("yes/no qa", "classification", "passage_question"),
    ("word-in-context", "classification", "word_pair"),
    ("sentence-pair classification", "classification", "pair"),
    ("single-sentence classification", "classification", "single"),
)


def kind_and_form(entry: dict) -> tuple[str, str | None]:
    kind_type = str(entry.get("type", "")).lower()
    for phrase, kind, form in TYPE_RULES:
        if phrase in kind_type:
            return kind, form
    # A new folder with an unfamiliar type: a label list plus known field names still make a classifier.
    fmt = str(entry.get("format", ""))
    if entry.get("label_list"):
        for form in ("word_pair", "relation", "passage_question", "pair", "single"):
            if all(f in fmt for f in FORMS[form]):
                return "classification", form
    return "unknown", None


def normalise_role(raw: str) -> str:
    # The manifest says e.g. "target (DTVG), source (TPV)": the first paper's role is the headline one.
    first = raw.strip().split(" ", 1)[0].lower() if raw else ""
    return first if first in ("source", "target") else ""


def normalise_metric(raw: str) -> str:
    # "Accuracy (TPV: macro F1)" -> accuracy; "macro F1", "F1 (...)", "Matthews ... (TPV: macro F1)" -> macro_f1.
    text = raw.lower()
    if text.startswith("accuracy") or "f1" not in text:
        return "accuracy"
    return "macro_f1"


def read_manifest(data_dir: Path) -> dict[str, dict]:
    """Manifest entries by task name, each with `path` and `language` filled in."""
    path = data_dir / MANIFEST
    if not path.is_file():
        raise DataError(f"{path}: no {MANIFEST} in data folder {data_dir}")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise DataError(f"{path}, line {err.lineno}: malformed JSON ({err.msg})") from None
    tasks = manifest.get("tasks") if isinstance(manifest, dict) else None
    if not isinstance(tasks, list):
        raise DataError(f"{path}: field 'tasks' is missing or not a list")
    entries: dict[str, dict] = {}
    for i, entry in enumerate(tasks):
        if not isinstance(entry, dict) or not entry.get("task"):
            raise DataError(f"{path}: tasks[{i}]: field 'task' is missing")
        name = entry["task"]
        if name in entries:
            raise DataError(f"{path}: tasks[{i}]: field 'task' repeats the name {name!r}")
        language = entry.get("language") or str(entry.get("path", "en/")).split("/")[0]
        entries[name] = {**entry, "language": language, "path": entry.get("path") or f"{language}/{name}",
                         "_where": f"{path}: tasks[{i}]"}
    return entries


def split_files(data_dir: Path, entry: dict) -> dict[str, Path]:
    splits = entry.get("splits")
    if isinstance(splits, dict) and splits:
        return {s: data_dir / ((info.get("file") if isinstance(info, dict) else None) or f"{entry['path']}/{s}.jsonl")
                for s, info in splits.items()}
    return {p.stem: p for p in sorted((data_dir / entry["path"]).glob("*.jsonl"))}


def describe(data_dir: Path) -> list[dict]:
    rows = []
    for name, entry in read_manifest(Path(data_dir)).items():
        kind, _ = kind_and_form(entry)
        raw_metric = str(entry.get("metric", ""))
        # Kinds not loadable yet keep the manifest's own metric name ("Pearson ..." -> pearson).
        metric = normalise_metric(raw_metric) if kind == "classification" else (raw_metric.split() or [""])[0].lower()
        splits = entry.get("splits") if isinstance(entry.get("splits"), dict) else {}
        rows.append({
            "name": name, "language": entry["language"], "kind": kind,
            "role": normalise_role(str(entry.get("role", ""))), "role_detail": str(entry.get("role", "")),
            "metric": metric, "labels": list(entry.get("label_list") or []),
            "splits": {s: info.get("kept") if isinstance(info, dict) else None for s, info in splits.items()},
            "path": entry["path"], "type": entry.get("type", ""), "supported": kind == "classification",
        })
    return rows


def make_spec(entry: dict) -> tuple[TaskSpec, tuple[str, ...]]:
    """The spec of a manifest entry and the input fields its examples must carry."""
    name, where = entry["task"], entry["_where"]
    kind, form = kind_and_form(entry)
    if kind != "classification":
        raise DataError(f"task {name!r} of type {entry.get('type', '?')!r} is not supported yet "
                        f"(kind {kind!r}; only classification tasks can be loaded)")
    labels = entry.get("label_list")
    if not labels or not all(isinstance(lab, str) for lab in labels):
        raise DataError(f"{where}: field 'label_list' is missing or not a list of strings")
    template, words = template_for(name, entry["language"], form, labels, entry.get("label_desc"))
    unknown = template_fields(template) - set(FORMS[form])
    if unknown:
        raise DataError(f"{TEMPLATES_FILE}: task {name!r}: field 'template' uses {sorted(unknown)}, "
                        f"but {form} examples only have {list(FORMS[form])}")
    spec = TaskSpec(name=name, language=entry["language"], kind=kind, labels=tuple(labels), label_words=words,
                    template=template, metric=normalise_metric(str(entry.get("metric", ""))),
                    role=normalise_role(str(entry.get("role", ""))))
    return spec, FORMS[form]


def read_split(path: Path, spec: TaskSpec, inputs: Sequence[str], uid_prefix: str) -> list[Example]:
    if not path.is_file():
        raise DataError(f"{path}: split file of task {spec.name!r} does not exist")
    labels = set(spec.labels)
    examples = []
    with open(path, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            where = f"{path}, line {lineno}"
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as err:
                raise DataError(f"{where}: malformed JSON ({err.msg})") from None
            if not isinstance(obj, dict):
                raise DataError(f"{where}: expected a JSON object, got {type(obj).__name__}")
            for field in (*inputs, "label"):
                if field not in obj:
                    raise DataError(f"{where}: field {field!r} is missing")
            for field in inputs:
                if not isinstance(obj[field], str):
                    raise DataError(f"{where}: field {field!r} must be a string, got {type(obj[field]).__name__}")
            label = obj["label"]
            # Integer codes are accepted where the label list spells them as strings ("0"/"1").
            if isinstance(label, int) and not isinstance(label, bool):
                label = str(label)
            if label not in labels:
                raise DataError(f"{where}: field 'label' is {label!r}, not one of the manifest's label_list "
                                f"{list(spec.labels)}")
            examples.append(Example(f"{uid_prefix}/{lineno}", spec.name, {f: obj[f] for f in inputs}, label))
    if not examples:
        raise DataError(f"{path}, line 1: split file is empty (field 'label' and the inputs "
                        f"{list(inputs)} expected on every line)")
    return examples


def load(data_dir: str | Path, names: Sequence[str] | None = None) -> dict[str, Task]:
    data_dir = Path(data_dir)
    entries = read_manifest(data_dir)
    if names is None:
        names = [n for n, e in entries.items() if kind_and_form(e)[0] == "classification"]
    by_path = {e["path"]: n for n, e in entries.items()}
    tasks: dict[str, Task] = {}
    for requested in names:
        name = requested if requested in entries else by_path.get(requested)
        if name is None:
            raise DataError(f"{data_dir / MANIFEST}: no task {requested!r}; it has: {', '.join(entries)}")
        spec, inputs = make_spec(entries[name])
        path = entries[name]["path"]
        files = split_files(data_dir, entries[name])
        splits = {s: read_split(f, spec, inputs, f"{path}/{s}") for s, f in files.items()}
        tasks[name] = Task(spec, splits)
    return tasks
