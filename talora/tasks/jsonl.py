"""Tasks from a data folder in the ../shared/data layout: ``MANIFEST.json`` + ``<lang>/<task>/<split>.jsonl``.

The manifest alone is enough to list tasks; a task's JSONL files are parsed only when it is loaded.
Every complaint about a file names the file, the 1-based line and the field. An example's uid is
``<path>/<split>/<line>`` (e.g. ``en/sst2/train/17``), so it points back at its line.

A task's kind and input form come from the manifest's ``type`` (or, for an unfamiliar type, from
the field names of its ``format``). Records become examples as follows:

* classification forms: the input strings and the label (an integer code matches its string);
* ``multi_answer`` (MultiRC): one example per candidate answer, uid ``<path>/<split>/<line>/<answer_idx>``,
  label ``true``/``false``; scored by F1a over all candidates (and EM per question);
* ``relation`` (SanWen, FinRE): a (sentence, head, tail) triple listed more than once is kept once,
  at its first line, with the first line's relation as its label (what it trains on) and every
  relation listed for it as its golds (any of them counts as right);
* ``multiple_choice`` (C3): label = index of the right choice; ``{options}`` lists the choices;
* ``extractive_qa`` (CMRC 2018, DRCD) and ``span`` (COTE): label = the first reference span found in
  the passage (else the first), golds = every reference span, ``answer_start`` = its offset;
* regression (STS-B): label = the score, written as a float.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..errors import DataError
from .base import Example, Task, TaskSpec, template_fields
from .templates import TEMPLATES_FILE, listed_labels, prompting_for, regression_bins, score_range

MANIFEST = "MANIFEST.json"

# Input strings of each form, besides the label (and the lists some forms carry).
FORMS = {
    "single": ("text",),
    "pair": ("text_a", "text_b"),
    "relation": ("text", "head", "tail"),
    "passage_question": ("question", "context"),
    "word_pair": ("word", "text_a", "text_b"),
    "coreference": ("text", "span1_text", "span2_text"),
    "multi_answer": ("context", "question"),
    "single_score": ("text",),
    "pair_score": ("text_a", "text_b"),
    "multiple_choice": ("context", "question"),
    "extractive_qa": ("context", "question"),
    "span": ("text",),
}
# Fields built from a record for the template to use.
DERIVED = {"multi_answer": ("answer",), "multiple_choice": ("options",)}
# Extraction forms: the field whose span is the answer.
SPAN_FIELD = {"extractive_qa": "context", "span": "text"}
OPTION_SEPARATOR = {"zh": "；"}
BINARY = ["false", "true"]

# (phrase in the manifest's `type`, kind, form); the first match wins, so the specific phrases come first.
TYPE_RULES = (
    ("extractive qa", "extraction", "extractive_qa"),
    ("multiple-choice", "multiple_choice", "multiple_choice"),
    ("extraction", "extraction", "span"),
    ("regression", "regression", "score"),
    ("multi-answer", "classification", "multi_answer"),
    ("coreference", "classification", "coreference"),
    ("relation classification", "classification", "relation"),
    ("yes/no qa", "classification", "passage_question"),
    ("word-in-context", "classification", "word_pair"),
    ("sentence-pair classification", "classification", "pair"),
    ("single-sentence classification", "classification", "single"),
)
# For a type none of the rules knows: the format's field names decide, most specific first.
FORMAT_RULES = (
    (("choices",), "multiple_choice", "multiple_choice"),
    (("target_start",), "extraction", "span"),
    (("answer_start",), "extraction", "extractive_qa"),
    (("span1_text", "span2_text"), "classification", "coreference"),
)


def kind_and_form(entry: dict) -> tuple[str, str | None]:
    kind_type = str(entry.get("type", "")).lower()
    fmt = str(entry.get("format", ""))
    for phrase, kind, form in TYPE_RULES:
        if phrase in kind_type:
            if form == "score":
                form = "pair_score" if "text_a" in fmt or "pair" in kind_type else "single_score"
            return kind, form
    for fields, kind, form in FORMAT_RULES:
        if all(f in fmt for f in fields):
            return kind, form
    # A label list plus known field names still make a classifier.
    if entry.get("label_list"):
        for form in ("word_pair", "relation", "passage_question", "pair", "single"):
            if all(f in fmt for f in FORMS[form]):
                return "classification", form
    return "unknown", None


def normalise_role(raw: str) -> str:
    # The manifest says e.g. "target (DTVG), source (TPV)": the first paper's role is the headline one.
    first = raw.strip().split(" ", 1)[0].lower() if raw else ""
    return first if first in ("source", "target") else ""


def normalise_metric(raw: str, kind: str = "classification", form: str | None = None) -> str:
    """The headline metric: fixed by the kind except for classification, where the manifest's first
    words decide ("Accuracy (TPV: macro F1)" -> accuracy, "macro F1" or "F1 (...)" -> macro_f1,
    "Matthews ..." -> matthews); MultiRC-style candidates are scored by F1a."""
    if kind == "extraction":
        return "span_f1"
    if kind == "regression":
        return "pearson"
    if kind == "multiple_choice":
        return "accuracy"
    if form == "multi_answer":
        return "f1a"
    text = raw.lower()
    if text.startswith("matthews"):
        return "matthews"
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
        entries[name] = {
            **entry,
            "language": language,
            "path": entry.get("path") or f"{language}/{name}",
            "_where": f"{path}: tasks[{i}]",
        }
    return entries


def split_files(data_dir: Path, entry: dict) -> dict[str, Path]:
    splits = entry.get("splits")
    if isinstance(splits, dict) and splits:
        return {
            s: data_dir / ((info.get("file") if isinstance(info, dict) else None) or f"{entry['path']}/{s}.jsonl")
            for s, info in splits.items()
        }
    return {p.stem: p for p in sorted((data_dir / entry["path"]).glob("*.jsonl"))}


def describe(data_dir: Path) -> list[dict]:
    rows = []
    for name, entry in read_manifest(Path(data_dir)).items():
        kind, form = kind_and_form(entry)
        splits = entry.get("splits") if isinstance(entry.get("splits"), dict) else {}
        row = {
            "name": name,
            "language": entry["language"],
            "kind": kind,
            "form": form,
            "role": normalise_role(str(entry.get("role", ""))),
            "role_detail": str(entry.get("role", "")),
            "metric": normalise_metric(str(entry.get("metric", "")), kind, form),
            "labels": list(entry.get("label_list") or []),
            "splits": {s: info.get("kept") if isinstance(info, dict) else None for s, info in splits.items()},
            "path": entry["path"],
            "type": entry.get("type", ""),
            "supported": True,
        }
        try:
            spec, _ = make_spec(entry)
            row["labels"] = list(spec.labels)
        except DataError as err:
            row.update(supported=False, problem=str(err))
        rows.append(row)
    return rows


def task_labels(entry: dict, kind: str, form: str) -> list[str]:
    name, where = entry["task"], entry["_where"]
    if kind == "regression":
        return listed_labels(name) or regression_bins(*score_range(str(entry.get("type", ""))))
    if kind != "classification":
        return []
    labels = entry.get("label_list") or (BINARY if form == "multi_answer" else None)
    if not labels or not all(isinstance(lab, str) for lab in labels):
        raise DataError(f"{where}: field 'label_list' is missing or not a list of strings")
    return list(labels)


def make_spec(entry: dict) -> tuple[TaskSpec, str]:
    """The spec of a manifest entry and its input form."""
    name = entry["task"]
    kind, form = kind_and_form(entry)
    if form is None:
        raise DataError(
            f"task {name!r} of type {entry.get('type', '?')!r}: cannot tell its kind from the type "
            f"or from the fields of its format {entry.get('format', '?')!r}"
        )
    labels = task_labels(entry, kind, form)
    prompting = prompting_for(name, entry["language"], form, labels, entry.get("label_desc"))
    inputs = FORMS[form] + DERIVED.get(form, ())
    unknown = template_fields(prompting.template) - set(inputs)
    if unknown:
        raise DataError(
            f"{TEMPLATES_FILE}: task {name!r}: field 'template' uses {sorted(unknown)}, "
            f"but {form} examples only have {list(inputs)}"
        )
    spec = TaskSpec(
        name=name,
        language=entry["language"],
        kind=kind,
        labels=tuple(labels),
        label_words=prompting.label_words,
        template=prompting.template,
        metric=normalise_metric(str(entry.get("metric", "")), kind, form),
        role=normalise_role(str(entry.get("role", ""))),
        span_field=SPAN_FIELD.get(form, ""),
        max_new_tokens=prompting.max_new_tokens if kind == "extraction" else 0,
    )
    return spec, form


# ---------------------------------------------------------------- records -> examples
def _strings(obj: dict, names: Sequence[str], where: str) -> dict[str, str]:
    for name in names:
        if name not in obj:
            raise DataError(f"{where}: field {name!r} is missing")
        if not isinstance(obj[name], str):
            raise DataError(f"{where}: field {name!r} must be a string, got {type(obj[name]).__name__}")
    return {name: obj[name] for name in names}


def _field(obj: dict, name: str, types: type | tuple[type, ...], where: str) -> Any:
    if name not in obj:
        raise DataError(f"{where}: field {name!r} is missing")
    value = obj[name]
    if not isinstance(value, types) or isinstance(value, bool):
        wanted = " or ".join(t.__name__ for t in (types if isinstance(types, tuple) else (types,)))
        raise DataError(f"{where}: field {name!r} must be {wanted}, got {type(value).__name__}")
    return value


def _class_label(value: Any, spec: TaskSpec, where: str, field: str = "label") -> str:
    # Integer codes are accepted where the label list spells them as strings ("0"/"1").
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if value not in spec.labels:
        raise DataError(
            f"{where}: field {field!r} is {value!r}, not one of the manifest's label_list {list(spec.labels)}"
        )
    return value


def _locate(passage: str, text: str, start: Any) -> int:
    """The offset of ``text`` in ``passage``: the given one when it points at the text, else the first match."""
    if (
        isinstance(start, int)
        and not isinstance(start, bool)
        and start >= 0
        and passage[start : start + len(text)] == text
    ):
        return start
    return passage.find(text)


def _spans(obj: dict, form: str, where: str) -> tuple[str, tuple[str, ...], int]:
    """(label, golds, answer_start) of an extraction record."""
    passage = obj[SPAN_FIELD[form]]
    if form == "span":
        target = _field(obj, "target", str, where)
        if not target:
            raise DataError(f"{where}: field 'target' is empty")
        return target, (target,), _locate(passage, target, obj.get("target_start"))
    answers = _field(obj, "answers", list, where)
    located: list[tuple[str, int]] = []
    for j, answer in enumerate(answers):
        if not isinstance(answer, dict) or not isinstance(answer.get("text"), str) or not answer["text"]:
            raise DataError(f"{where}: field 'answers'[{j}] must be an object with a non-empty 'text'")
        located.append((answer["text"], _locate(passage, answer["text"], answer.get("answer_start"))))
    if not located:
        raise DataError(f"{where}: field 'answers' is empty")
    golds = tuple(dict.fromkeys(text for text, _ in located))
    label, start = next(((t, s) for t, s in located if s >= 0), located[0])
    return label, golds, start


def parse_record(obj: dict, spec: TaskSpec, form: str, where: str) -> list[tuple[str, dict, str, tuple[str, ...]]]:
    """(uid suffix, fields, label, golds) of each example a record holds."""
    fields: dict[str, Any] = _strings(obj, FORMS[form], where)
    if form == "multi_answer":
        out = []
        for j, answer in enumerate(_field(obj, "answers", list, where)):
            here = f"{where}: field 'answers'[{j}]"
            if not isinstance(answer, dict) or not isinstance(answer.get("text"), str):
                raise DataError(f"{here} must be an object with a string 'text'")
            label = _class_label(answer.get("label"), spec, here)
            out.append((f"/{answer.get('answer_idx', j)}", {**fields, "answer": answer["text"]}, label, ()))
        if not out:
            raise DataError(f"{where}: field 'answers' is empty")
        return out
    if form == "multiple_choice":
        choices = _field(obj, "choices", list, where)
        if len(choices) < 2 or not all(isinstance(c, str) and c for c in choices):
            raise DataError(f"{where}: field 'choices' must list at least two non-empty strings")
        index = _field(obj, "label", (int, str), where)
        if not str(index).isdigit() or int(index) >= len(choices):
            raise DataError(f"{where}: field 'label' is {index!r}, not the index of one of the {len(choices)} choices")
        options = OPTION_SEPARATOR.get(spec.language, "; ").join(choices)
        return [("", {**fields, "choices": list(choices), "options": options}, str(int(index)), ())]
    if form in SPAN_FIELD:
        label, golds, start = _spans(obj, form, where)
        return [("", {**fields, "answer_start": start}, label, golds)]
    if spec.kind == "regression":
        score = _field(obj, "label", (int, float), where)
        if not math.isfinite(score):
            raise DataError(f"{where}: field 'label' is {score!r}, not a finite score")
        return [("", fields, repr(float(score)), ())]
    if "label" not in obj:
        raise DataError(f"{where}: field 'label' is missing")
    return [("", fields, _class_label(obj["label"], spec, where), ())]


def merge_repeated_triples(examples: list[Example]) -> list[Example]:
    """One example per (text, head, tail): the first line's, with every relation listed as a gold."""
    merged: list[Example] = []
    seen: dict[tuple, int] = {}
    for ex in examples:
        key = (ex.fields["text"], ex.fields["head"], ex.fields["tail"])
        if key not in seen:
            seen[key] = len(merged)
            merged.append(ex)
            continue
        first = merged[seen[key]]
        if ex.label not in first.answers:
            merged[seen[key]] = dataclasses.replace(first, golds=first.answers + (ex.label,))
    return merged


def read_split(path: Path, spec: TaskSpec, form: str, uid_prefix: str) -> list[Example]:
    if not path.is_file():
        raise DataError(f"{path}: split file of task {spec.name!r} does not exist")
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
            for suffix, fields, label, golds in parse_record(obj, spec, form, where):
                examples.append(Example(f"{uid_prefix}/{lineno}{suffix}", spec.name, fields, label, golds))
    if not examples:
        raise DataError(
            f"{path}, line 1: split file is empty (the inputs {list(FORMS[form])} and a label expected on every line)"
        )
    return merge_repeated_triples(examples) if form == "relation" else examples


def load(data_dir: str | Path, names: Sequence[str] | None = None) -> dict[str, Task]:
    data_dir = Path(data_dir)
    entries = read_manifest(data_dir)
    if names is None:
        names = [n for n, e in entries.items() if kind_and_form(e)[1] is not None]
    by_path = {e["path"]: n for n, e in entries.items()}
    tasks: dict[str, Task] = {}
    for requested in names:
        name = requested if requested in entries else by_path.get(requested)
        if name is None:
            raise DataError(f"{data_dir / MANIFEST}: no task {requested!r}; it has: {', '.join(entries)}")
        spec, form = make_spec(entries[name])
        path = entries[name]["path"]
        files = split_files(data_dir, entries[name])
        splits = {s: read_split(f, spec, form, f"{path}/{s}") for s, f in files.items()}
        tasks[name] = Task(spec, splits)
    return tasks
