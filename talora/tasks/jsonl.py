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

A task the manifest does not describe (its type and format name no known kind), every task of a folder
without ``MANIFEST.json`` and a single data file are read through ``records`` (files and splits) and
``infer``: the kind, the file's fields, the labels and the language come from the records, and a note
says what was inferred.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..errors import DataError
from .base import Example, Task, TaskSpec
from .infer import Guess, UnknownKind, infer, seen_fields
from .kinds import Classification, find_kind, task_kind
from .records import Record, Splits, discover, hold_out_validation, layout_hint, read_records, read_splits
from .templates import TEMPLATES_FILE, listed_labels, prompting_for, regression_bins, score_range, template_fields

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
    """The headline metric: the kind's reading of the manifest's (``TaskKind.metric_from``: fixed by the
    kind but for classification); MultiRC-style candidates are scored by F1a. A type no kind knows
    is read as a classifier's."""
    if form == "multi_answer":
        return "f1a"
    return (find_kind(kind) or Classification()).metric_from(raw)


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


def catalogue(data_dir: Path) -> dict[str, dict]:
    """Entries by task name: the manifest's, or (a folder without one, a single data file) those found
    by ``discover``."""
    data_dir = Path(data_dir)
    if (data_dir / MANIFEST).is_file():
        return read_manifest(data_dir)
    if not data_dir.exists():
        raise DataError(
            f"{data_dir}: no such data folder or file (a folder with a {MANIFEST}, a folder of task folders, "
            f"or one data file)"
        )
    entries = discover(data_dir)
    if not entries:
        raise DataError(
            f"{data_dir / MANIFEST}: no {MANIFEST} in data folder {data_dir}, and no task found without it "
            f"({layout_hint(data_dir)})"
        )
    return entries


def _declared(entry: dict) -> bool:
    return not entry.get("_discovered") and kind_and_form(entry)[1] is not None


def _split_size(path: Path, recorded) -> int | None:
    """Records in a split file: the manifest's count when it has one (then only the first record is
    looked for, to tell an empty file), else the non-blank lines counted (one record per JSONL line,
    without parsing any). None when the file does not exist."""
    if not path.is_file():
        return None
    if path.suffix.lower() != ".jsonl":
        return len(read_records(path))
    with path.open("rb") as lines:
        if isinstance(recorded, int) and not isinstance(recorded, bool) and recorded > 0:
            return recorded if any(line.strip() for line in lines) else 0
        return sum(1 for line in lines if line.strip())


def empty_split(path: Path, form: str | None) -> str:
    expected = f"the inputs {list(FORMS[form])} and a label" if form in FORMS else "a record"
    return f"{path}, line 1: split file is empty ({expected} expected on every line)"


def describe(data_dir: Path) -> list[dict]:
    """One row per task. A task the manifest describes is listed from the manifest and its split files'
    line counts (where the manifest records no count), without parsing a record; a missing or empty
    split file makes it unsupported, as it makes loading it fail. Any other task is read in full to
    infer what it is (its row's ``inferred`` says what was inferred)."""
    rows = []
    for name, entry in catalogue(Path(data_dir)).items():
        if not _declared(entry):
            rows.append(_inferred_row(Path(data_dir), entry))
            continue
        kind, form = kind_and_form(entry)
        splits = entry.get("splits") if isinstance(entry.get("splits"), dict) else {}
        files = split_files(Path(data_dir), entry)
        sizes = {
            s: _split_size(f, splits[s].get("kept") if isinstance(splits.get(s), dict) else None)
            for s, f in files.items()
        }
        row = {
            "name": name,
            "language": entry["language"],
            "kind": kind,
            "form": form,
            "role": normalise_role(str(entry.get("role", ""))),
            "role_detail": str(entry.get("role", "")),
            "metric": normalise_metric(str(entry.get("metric", "")), kind, form),
            "labels": list(entry.get("label_list") or []),
            "splits": {s: n or 0 for s, n in sizes.items()},
            "path": entry["path"],
            "type": entry.get("type", ""),
            "supported": True,
            "inferred": None,
        }
        try:
            spec, _ = make_spec(entry)
            row["labels"] = list(spec.labels)
        except DataError as err:
            row.update(supported=False, problem=str(err))
        unreadable = [
            f"{files[s]}: split file of task {name!r} does not exist" if n is None else empty_split(files[s], form)
            for s, n in sizes.items()
            if not n
        ]
        if row["supported"] and unreadable:  # what loading the task would say first
            row.update(supported=False, problem=unreadable[0])
        rows.append(row)
    return rows


def _row(entry: dict, task: Task, form: str | None, note: str | None) -> dict:
    spec = task.spec
    return {
        "name": spec.name,
        "language": spec.language,
        "kind": spec.kind,
        "form": form,
        "role": spec.role,
        "role_detail": str(entry.get("role", "")),
        "metric": spec.metric,
        "labels": list(spec.labels),
        "splits": {s: len(exs) for s, exs in task.splits.items()},
        "path": entry["path"],
        "type": entry.get("type", ""),
        "supported": True,
        "inferred": note,
    }


def _problem_row(entry: dict, err: DataError) -> dict:
    return {
        "name": entry["task"],
        "language": entry.get("language", ""),
        "kind": "unknown",
        "form": None,
        "role": normalise_role(str(entry.get("role", ""))),
        "role_detail": str(entry.get("role", "")),
        "metric": "",
        "labels": list(entry.get("label_list") or []),
        "splits": {},
        "path": entry["path"],
        "type": entry.get("type", ""),
        "supported": False,
        "problem": str(err),
        "inferred": None,
    }


def _inferred_row(data_dir: Path, entry: dict) -> dict:
    try:
        task, form, note = open_task(data_dir, entry)
    except DataError as err:
        return _problem_row(entry, err)
    return _row(entry, task, form, note)


def check(data_dir: str | Path) -> list[dict]:
    """Every task read in full, every record parsed: ``describe``'s row with the examples each split
    holds, or (``supported`` false) the problem, naming file and line."""
    data_dir = Path(data_dir)
    rows = []
    for entry in catalogue(data_dir).values():
        try:
            task, form, note = open_task(data_dir, entry)
        except DataError as err:
            rows.append(_problem_row(entry, err))
            continue
        rows.append(_row(entry, task, form, note))
    return rows


def task_labels(entry: dict, kind: str, form: str) -> list[str]:
    name, where = entry["task"], entry["_where"]
    if task_kind(kind).bins:
        return listed_labels(name) or regression_bins(*score_range(str(entry.get("type", ""))))
    if not task_kind(kind).label_set:
        return []
    labels = entry.get("label_list") or (BINARY if form == "multi_answer" else None)
    if not labels or not all(isinstance(lab, str) for lab in labels):
        raise DataError(f"{where}: field 'label_list' is missing or not a list of strings")
    return list(labels)


def make_spec(entry: dict, guess: Guess | None = None) -> tuple[TaskSpec, str]:
    """The spec of a manifest entry (or of a task read as ``guess`` says) and its input form."""
    name = entry["task"]
    if guess is not None:
        kind, form, language = guess.kind, guess.form, guess.language
        labels = (listed_labels(name) if task_kind(kind).bins else []) or list(guess.labels)
    else:
        kind, form = kind_and_form(entry)
        if form is None:
            raise DataError(
                f"task {name!r} of type {entry.get('type', '?')!r}: cannot tell its kind from the type "
                f"or from the fields of its format {entry.get('format', '?')!r}"
            )
        language = entry["language"]
        labels = task_labels(entry, kind, form)
    prompting = prompting_for(name, language, form, labels, entry.get("label_desc"))
    inputs = FORMS[form] + DERIVED.get(form, ())
    unknown = template_fields(prompting.template) - set(inputs)
    if unknown and guess is not None:
        # A task found by its records may share a name with a templates.yaml task of another form:
        # the generic template of its own form reads it.
        prompting = prompting_for("", language, form, labels, entry.get("label_desc"))
        unknown = template_fields(prompting.template) - set(inputs)
    if unknown:
        raise DataError(
            f"{TEMPLATES_FILE}: task {name!r}: field 'template' uses {sorted(unknown)}, "
            f"but {form} examples only have {list(inputs)}"
        )
    spec = TaskSpec(
        name=name,
        language=language,
        kind=kind,
        labels=tuple(labels),
        label_words=prompting.label_words,
        template=prompting.template,
        metric=normalise_metric(str(entry.get("metric", "")), kind, form),
        role=normalise_role(str(entry.get("role", ""))),
        span_field=SPAN_FIELD.get(form, ""),
        max_new_tokens=0 if task_kind(kind).ranks else prompting.max_new_tokens,
    )
    return spec, form


# ---------------------------------------------------------------- records -> examples
def _strings(obj: dict, names: Sequence[str], where: str) -> dict[str, str]:
    for name in names:
        if name not in obj:
            raise DataError(f"{where}: field {name!r} is missing{seen_fields(obj)}")
        if not isinstance(obj[name], str):
            raise DataError(f"{where}: field {name!r} must be a string, got {type(obj[name]).__name__}")
    return {name: obj[name] for name in names}


def _field(obj: dict, name: str, types: type | tuple[type, ...], where: str) -> Any:
    if name not in obj:
        raise DataError(f"{where}: field {name!r} is missing{seen_fields(obj)}")
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
        raise DataError(f"{where}: field {field!r} is {value!r}, not one of the task's labels {list(spec.labels)}")
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
        options = spec.task_kind.options(spec.language, choices)
        return [("", {**fields, "choices": list(choices), "options": options}, str(int(index)), ())]
    if form in SPAN_FIELD:
        label, golds, start = _spans(obj, form, where)
        return [("", {**fields, "answer_start": start}, label, golds)]
    if spec.task_kind.bins:
        score = _field(obj, "label", (int, float), where)
        if not math.isfinite(score):
            raise DataError(f"{where}: field 'label' is {score!r}, not a finite score")
        return [("", fields, repr(float(score)), ())]
    if "label" not in obj:
        raise DataError(f"{where}: field 'label' is missing{seen_fields(obj)}")
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


def read_split(
    path: Path,
    spec: TaskSpec,
    form: str,
    uid_prefix: str,
    records: list[Record] | None = None,
    convert=None,
    renames: dict[str, str] | None = None,
) -> list[Example]:
    """The examples of one split file (or of ``records`` already read from it), each record passed
    through ``convert`` first when the file's fields are not the loader's."""
    if records is None:
        if not path.is_file():
            raise DataError(f"{path}: split file of task {spec.name!r} does not exist")
        records = read_records(path)
    examples = []
    for number, where, obj in records:
        record = convert(obj, where) if convert else obj
        try:
            parsed = parse_record(record, spec, form, where)
        except DataError as err:
            if not renames:
                raise
            read_as = ", ".join(f"{src!r} as {dst!r}" for src, dst in renames.items())
            raise DataError(f"{err} (the file's fields are read under the loader's names: {read_as})") from None
        for suffix, fields, label, golds in parsed:
            examples.append(Example(f"{uid_prefix}/{number}{suffix}", spec.name, fields, label, golds))
    if not examples:
        raise DataError(empty_split(path, form))
    return merge_repeated_triples(examples) if form == "relation" else examples


def infer_entry(data_dir: Path, entry: dict) -> tuple[Guess, Splits, dict[str, Path]]:
    """How to read a task nobody described (see ``infer``), its records by split and its split files."""
    discovered = bool(entry.get("_discovered"))
    files = entry["_files"] if discovered else split_files(data_dir, entry)
    splits = read_splits(entry, files)
    name = entry["task"]
    if discovered:
        what = f"task {name!r} ({entry['_where']}): cannot tell its kind from its records"
    else:
        what = (
            f"task {name!r} of type {entry.get('type', '?')!r}: cannot tell its kind from the type, "
            f"the fields of its format {entry.get('format', '?')!r} or its records"
        )
    train = splits.records.get("train")
    records = train or [r for recs in splits.records.values() for r in recs]
    declared = entry.get("label_list")
    guess = infer(
        records,
        what,
        language=entry.get("language", ""),
        declared_labels=declared if isinstance(declared, list) and declared else None,
        labels_from="train" if train else "every split (no train split)",
    )
    if discovered:
        label = guess.label_field
        classes = task_kind(guess.kind).per_class and guess.form != "multi_answer" and label
        hold_out_validation(splits, name, (lambda obj: repr(obj.get(label))) if classes else None)
    return guess, splits, files


def open_task(data_dir: Path, entry: dict) -> tuple[Task, str | None, str | None]:
    """A task with every split read: (task, input form, what was inferred or None)."""
    path = entry["path"]
    if _declared(entry):
        spec, form = make_spec(entry)
        splits = {s: read_split(f, spec, form, f"{path}/{s}") for s, f in split_files(data_dir, entry).items()}
        return Task(spec, splits), form, None
    guess, splits, files = infer_entry(data_dir, entry)
    spec, form = make_spec(entry, guess)
    examples = {
        s: read_split(
            files.get(s) or entry.get("_file") or Path(entry["_where"]),
            spec,
            form,
            f"{path}/{splits.uid_split[s]}",
            records=splits.records[s],
            convert=guess.convert,
            renames=guess.renames,
        )
        for s in splits.ordered()
    }
    if not entry.get("_discovered"):
        source = f"the manifest's type {entry.get('type', '')!r} and format {entry.get('format', '')!r} name no kind"
    else:
        source = f"one data file, no {MANIFEST}" if entry.get("_file") else f"no {MANIFEST}"
    note = "; ".join([f"{source}: read as {guess.describe()}; metric {spec.metric}", *splits.notes])
    return Task(spec, examples), form, note


def load(data_dir: str | Path, names: Sequence[str] | None = None) -> dict[str, Task]:
    data_dir = Path(data_dir)
    entries = catalogue(data_dir)
    by_path = {e["path"]: n for n, e in entries.items()}
    tasks: dict[str, Task] = {}
    for requested in names if names is not None else list(entries):
        name = requested if requested in entries else by_path.get(requested)
        if name is None:
            where = data_dir / MANIFEST if (data_dir / MANIFEST).is_file() else data_dir
            raise DataError(f"{where}: no task {requested!r}; it has: {', '.join(entries)}")
        try:
            tasks[name], _, _ = open_task(data_dir, entries[name])
        except UnknownKind:
            if names is None:  # loading everything skips what nothing says how to read
                continue
            raise
    return tasks
