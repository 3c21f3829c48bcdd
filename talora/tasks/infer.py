"""Tasks nobody described: their kind, fields, labels and language inferred from the records themselves.

Three sources need it (docs/data.md states the rules for users):

* a manifest task whose ``type`` and ``format`` name no kind the loader knows;
* a data folder without ``MANIFEST.json``: one sub-folder per task holding ``train``, ``validation`` and
  ``test`` files (``dev``, ``valid`` and ``val`` also name the validation split), or loose data files;
* a single data file, one task named by its stem: split by its ``split`` column when it has one, else
  every record is train.

Files may be ``.jsonl`` (one object per line), ``.json`` (an array of objects, or JSON lines), ``.csv``,
``.tsv`` (header row first) or ``.parquet`` (needs ``pyarrow``). A task found without a manifest that has
no validation split gets one: a seeded slice of train (10%, at most 5,000), held out so that every class
keeps a training example. Records keep the file's own field names and are converted to the loader's
(``premise`` -> ``text_a``, an ``answer`` letter -> the choice's index, ...) one at a time, so a bad
record is reported with its file, line and the fields it has. Whatever was inferred is said once, in
a note (``describe_tasks``' ``inferred``, ``talora tasks``, ``talora data check``).
"""

from __future__ import annotations

import csv
import io
import json
import math
import random
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import DataError
from .kinds import task_kind
from .templates import regression_bins

DATA_SUFFIXES = (".jsonl", ".json", ".csv", ".tsv", ".parquet")
SPLIT_NAMES = {
    "train": "train",
    "validation": "validation",
    "valid": "validation",
    "val": "validation",
    "dev": "validation",
    "test": "test",
}
SPLIT_ORDER = ("train", "validation", "test")
SPLIT_COLUMN = "split"
HELD_OUT_SHARE = 0.1
HELD_OUT_CAP = 5000  # the shared data's cap on a validation split
MAX_CLASSES = 100  # beyond this a "label" is free text: ranking that many label words is no classifier
SAMPLE = 200  # records looked at to decide between readings and to guess the language
SPAN_SHARE = 0.5  # share of sampled records whose answer must occur in the passage to read answers as spans

# The file's field names each input may have, most usual first.
LABEL_FIELDS = ("label", "gold_label", "class", "category", "sentiment", "score", "y")
TEXT_FIELDS = ("text", "sentence", "content", "review", "document", "input", "comment", "tweet")
PAIR_FIELDS = (
    ("text_a", "text_b"),
    ("premise", "hypothesis"),
    ("sentence1", "sentence2"),
    ("sentence_a", "sentence_b"),
    ("question1", "question2"),
    ("text1", "text2"),
    ("question", "sentence"),
)
PASSAGE_FIELDS = ("context", "passage", "article", "paragraph", "story")
QUESTION_FIELDS = ("question", "query")
CHOICE_FIELDS = ("choices", "options", "candidates", "endings")
CHOICE_ANSWER_FIELDS = ("label", "answer", "answerKey", "gold", "correct")
SPAN_ANSWER_FIELDS = ("answers", "answer")
BINARY = ("false", "true")

FORM_NAMES = {
    "single": "single-text classification",
    "pair": "text-pair classification",
    "passage_question": "passage + question classification",
    "relation": "relation classification",
    "word_pair": "word-in-context classification",
    "coreference": "coreference classification",
    "multi_answer": "candidate-answer classification",
    "single_score": "single-text regression",
    "pair_score": "text-pair regression",
    "multiple_choice": "multiple choice",
    "extractive_qa": "extractive QA (answer spans of the passage)",
    "span": "span extraction (a target span of the text)",
}
CJK = re.compile(r"[\u3400-\u9fff\uf900-\ufaff]")
LATIN = re.compile(r"[A-Za-z]")

# (number, where, record): number is the line (row, item) the record starts its uid with; where names it
# in messages ("<file>, line 7").
Record = tuple[int, str, dict]


class UnknownKind(DataError):
    """The records fit no kind the loader reads (loading every task skips such a task)."""


# ---------------------------------------------------------------- reading files
def _text(path: Path) -> str:
    data = path.read_bytes()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = data[: err.start].count(b"\n") + 1
        raise DataError(f"{path}, line {line}: not UTF-8 text ({err.reason} at byte {err.start})") from None


def _json_lines(path: Path, text: str) -> list[Record]:
    records = []
    for lineno, line in enumerate(text.split("\n"), 1):
        if not line.strip():
            continue
        where = f"{path}, line {lineno}"
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as err:
            raise DataError(f"{where}: malformed JSON ({err.msg})") from None
        if not isinstance(obj, dict):
            raise DataError(f"{where}: expected a JSON object, got {type(obj).__name__}")
        records.append((lineno, where, obj))
    return records


def _json_array(path: Path, text: str) -> list[Record]:
    try:
        items = json.loads(text)
    except json.JSONDecodeError as err:
        raise DataError(f"{path}, line {err.lineno}: malformed JSON ({err.msg})") from None
    if not isinstance(items, list):
        raise DataError(f"{path}: expected an array of JSON objects, got {type(items).__name__}")
    records = []
    for i, obj in enumerate(items, 1):
        where = f"{path}, item {i}"
        if not isinstance(obj, dict):
            raise DataError(f"{where}: expected a JSON object, got {type(obj).__name__}")
        records.append((i, where, obj))
    return records


def _delimited(path: Path, text: str, delimiter: str) -> list[Record]:
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    records: list[Record] = []
    header: list[str] | None = None
    try:
        for row in reader:
            lineno = reader.line_num
            if not any(cell.strip() for cell in row):
                continue
            if header is None:
                header = [cell.strip() for cell in row]
                repeated = [name for name, n in Counter(header).items() if n > 1]
                if repeated or "" in header:
                    what = f"repeats column {repeated[0]!r}" if repeated else "has an empty column name"
                    raise DataError(f"{path}, line {lineno}: the header row {what}")
                continue
            where = f"{path}, line {lineno}"
            if len(row) > len(header):
                raise DataError(f"{where}: {len(row)} cells, more than the header's {len(header)} columns")
            # A short row lacks its last columns: they are missing fields, reported where they are needed.
            records.append((lineno, where, dict(zip(header, row))))
    except csv.Error as err:
        raise DataError(f"{path}, line {reader.line_num}: unreadable {path.suffix} row ({err})") from None
    return records


def _parquet(path: Path) -> list[Record]:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise DataError(
            f"{path}: reading Parquet needs the 'pyarrow' package: pip install pyarrow (or save the data as "
            f".jsonl or .csv)"
        ) from None
    try:
        rows = pq.read_table(path).to_pylist()
    except Exception as err:  # pyarrow's own errors are not one class; any of them means an unreadable file
        raise DataError(f"{path}: unreadable Parquet file ({type(err).__name__}: {err})") from None
    return [(i, f"{path}, row {i}", row) for i, row in enumerate(rows, 1)]


def read_records(path: Path) -> list[Record]:
    """Every record of a data file, by its suffix; blank lines and rows are skipped."""
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        return _parquet(path)
    text = _text(path)
    if suffix in (".csv", ".tsv"):
        return _delimited(path, text, "\t" if suffix == ".tsv" else ",")
    if suffix == ".json" and text.lstrip().startswith("["):
        return _json_array(path, text)
    return _json_lines(path, text)


# ---------------------------------------------------------------- finding tasks without a manifest
def split_files(folder: Path) -> tuple[dict[str, Path], list[str]]:
    """The split files directly in ``folder`` and the names of the other data files there (ignored)."""
    found: dict[str, Path] = {}
    ignored = []
    for path in sorted(folder.iterdir()):
        if not path.is_file() or path.suffix.lower() not in DATA_SUFFIXES:
            continue
        split = SPLIT_NAMES.get(path.stem.lower())
        if split is None:
            ignored.append(path.name)
        elif split in found:
            raise DataError(f"{folder}: both {found[split].name} and {path.name} hold the {split} split; keep one")
        else:
            found[split] = path
    return found, ignored


def discover(data_dir: Path) -> dict[str, dict]:
    """Manifest-like entries of the tasks a folder without MANIFEST.json (or a single data file) holds;
    empty when it holds none."""
    if data_dir.is_file():
        if data_dir.suffix.lower() not in DATA_SUFFIXES:
            raise DataError(
                f"{data_dir}: not a data file this loader reads (a folder, or one of {', '.join(DATA_SUFFIXES)})"
            )
        return {data_dir.stem: _entry(data_dir.stem, data_dir, file=data_dir)}
    if not data_dir.is_dir():
        raise DataError(f"{data_dir}: no such data folder or file")
    own, ignored = split_files(data_dir)
    if own:  # the folder is itself one task
        name = data_dir.resolve().name
        return {name: _entry(name, data_dir, files=own, ignored=ignored)}
    entries: dict[str, dict] = {}
    for child in sorted(data_dir.iterdir()):
        if child.name.startswith("."):
            continue
        if child.is_dir():
            files, ignored = split_files(child)
            entry = _entry(child.name, child, files=files, ignored=ignored) if files else None
        elif child.is_file() and child.suffix.lower() in DATA_SUFFIXES:
            entry = _entry(child.stem, child, file=child)
        else:
            entry = None
        if entry is None:
            continue
        if entry["task"] in entries:
            raise DataError(
                f"{data_dir}: task {entry['task']!r} is both {entries[entry['task']]['_where']} and {child}; rename one"
            )
        entries[entry["task"]] = entry
    return entries


def _entry(name: str, where: Path, files: dict[str, Path] | None = None, file: Path | None = None, ignored=()) -> dict:
    return {
        "task": name,
        "path": name,
        "language": "",
        "_where": str(where),
        "_discovered": True,
        "_files": files or {},
        "_file": file,
        "_ignored": list(ignored),
    }


def layout_hint(data_dir: Path) -> str:
    """Why a folder without a manifest held no task, and what to do about it."""
    if not data_dir.is_dir():
        return f"{data_dir} is not a folder"
    deeper = next(
        (p for p in sorted(data_dir.glob("*/*/*")) if p.is_file() and p.suffix.lower() in DATA_SUFFIXES), None
    )
    wanted = (
        "a task is a sub-folder holding train.jsonl (or .json, .csv, .tsv, .parquet; also validation, test), "
        "or one data file"
    )
    if deeper is not None:
        rel = deeper.relative_to(data_dir)
        return (
            f"{wanted}; {rel} is two folders down: pass --data-dir {data_dir / rel.parts[0]} or write a MANIFEST.json"
        )
    return wanted


# ---------------------------------------------------------------- splits of a task
@dataclass
class Splits:
    records: dict[str, list[Record]]
    uid_split: dict[str, str]  # the split its examples' uids name (a held-out slice keeps 'train', its file)
    notes: list[str]

    def ordered(self) -> list[str]:
        """Split names in the usual order (train, validation, test), any others after them."""
        rank = {s: i for i, s in enumerate(SPLIT_ORDER)}
        return sorted(self.records, key=lambda s: (rank.get(s, len(rank)), s))


def read_splits(entry: dict, files: dict[str, Path]) -> Splits:
    """The records of each split: from the split files, or from one file by its ``split`` column."""
    single = entry.get("_file")
    notes = []
    if single is None:
        records = {}
        for split, path in files.items():
            if not path.is_file():
                raise DataError(f"{path}: split file of task {entry['task']!r} does not exist")
            records[split] = read_records(path)
            if path.stem.lower() != split:
                notes.append(f"{path.name} read as the {split} split")
        if entry.get("_ignored"):
            notes.append(f"not split files, ignored: {', '.join(entry['_ignored'])}")
        return Splits(records, {s: s for s in records}, notes)
    rows = read_records(single)
    if not rows:
        raise DataError(f"{single}, line 1: the file holds no records")
    if not any(SPLIT_COLUMN in obj for _, _, obj in rows):
        notes.append(f"no {SPLIT_COLUMN!r} column: every record is train")
        return Splits({"train": rows}, {"train": "train"}, notes)
    records: dict[str, list[Record]] = {}
    for number, where, obj in rows:
        raw = obj.get(SPLIT_COLUMN)
        split = SPLIT_NAMES.get(raw.strip().lower()) if isinstance(raw, str) else None
        if split is None:
            raise DataError(
                f"{where}: field {SPLIT_COLUMN!r} is {raw!r}, not one of train, validation (or dev, valid, val), test"
            )
        records.setdefault(split, []).append((number, where, {k: v for k, v in obj.items() if k != SPLIT_COLUMN}))
    notes.append(f"splits from its {SPLIT_COLUMN!r} column")
    return Splits(records, {s: s for s in records}, notes)


def hold_out_validation(splits: Splits, task: str, class_of=None) -> None:
    """Give a task without a validation split a seeded slice of train; every class keeps a train record."""
    if "validation" in splits.records:
        return
    train = splits.records.get("train") or []
    wanted = min(HELD_OUT_CAP, max(1, int(len(train) * HELD_OUT_SHARE))) if len(train) >= 2 else 0
    if not wanted:
        splits.notes.append("no validation split, and too few train records to hold one out")
        return
    # A string seed goes through SHA-512, so the slice depends on the task name alone, not on PYTHONHASHSEED.
    order = list(range(len(train)))
    random.Random(f"held-out:{task}").shuffle(order)
    left = Counter(class_of(obj) for _, _, obj in train) if class_of else Counter()
    picked = set()
    for i in order:
        if len(picked) == wanted:
            break
        cls = class_of(train[i][2]) if class_of else None
        if class_of and left[cls] <= 1:
            continue
        left[cls] -= 1
        picked.add(i)
    if not picked:
        splits.notes.append("no validation split, and no train record could be held out without losing a class")
        return
    splits.records["validation"] = [r for i, r in enumerate(train) if i in picked]
    splits.records["train"] = [r for i, r in enumerate(train) if i not in picked]
    splits.uid_split["validation"] = "train"
    splits.notes.append(
        f"no validation split: {len(picked)} of the {len(train)} train records held out as validation "
        f"(seeded by the task name)"
    )


# ---------------------------------------------------------------- the kind of a task
def seen_fields(obj: dict) -> str:
    return f" (the record has fields {', '.join(map(repr, obj))})" if obj else " (the record has no fields)"


def _first(obj: dict, names: Sequence[str]) -> str | None:
    return next((n for n in names if n in obj), None)


def _number(value: Any) -> float | None:
    """A label's value as a number (numbers, and numeric strings as CSV cells hold them), else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value.strip())
        except ValueError:
            return None
    return None


def _maybe_json(value: Any) -> Any:
    # A CSV cell cannot hold a list; a JSON-encoded one is read as such.
    if isinstance(value, str) and value.strip()[:1] in ("[", "{"):
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            return value
    return value


def _span_answers(value: Any, field: str, where: str) -> list[dict]:
    """A record's reference answers as ``[{text, answer_start?}]``: from a string, a list of strings or
    objects, or SQuAD's ``{text: [...], answer_start: [...]}``."""
    value = _maybe_json(value)
    if isinstance(value, str):
        return [{"text": value}]
    if isinstance(value, dict):
        texts, starts = value.get("text"), value.get("answer_start")
        if isinstance(texts, list):
            starts = starts if isinstance(starts, list) else []
            return [
                {"text": t, **({"answer_start": starts[i]} if i < len(starts) else {})} for i, t in enumerate(texts)
            ]
        if isinstance(texts, str):
            return [{"text": texts, **({"answer_start": starts} if starts is not None else {})}]
    if isinstance(value, list):
        out = []
        for item in value:
            if isinstance(item, str):
                out.append({"text": item})
            elif isinstance(item, dict):
                out.append({k: item[k] for k in ("text", "answer_start") if k in item})
            else:
                raise DataError(f"{where}: field {field!r} lists a {type(item).__name__}, not a string or an object")
        return out
    raise DataError(
        f"{where}: field {field!r} is {type(value).__name__}, not an answer string, a list of them or "
        f"{{text, answer_start}}"
    )


@dataclass
class Guess:
    """One reading of a task's records: its form, the file's field for each input, and its labels."""

    kind: str
    form: str
    inputs: dict[str, str | None]  # loader field -> the file's field (None: absent, read as "")
    label_field: str | None = None
    extra_field: str | None = None  # the file's choices, answers or target field
    label_mode: str = "classes"  # classes | numeric_classes | score
    labels: tuple[str, ...] = ()
    language: str = "en"
    labels_from: str = "train"

    @property
    def renames(self) -> dict[str, str]:
        """The file's fields read under another name (for messages)."""
        pairs = {src: dst for dst, src in self.inputs.items() if src and src != dst}
        if self.extra_field and self.form in ("multiple_choice", "extractive_qa", "multi_answer", "span"):
            dst = {"multiple_choice": "choices", "span": "target"}.get(self.form, "answers")
            if self.extra_field != dst:
                pairs[self.extra_field] = dst
        if self.label_field and self.label_field != "label":
            pairs[self.label_field] = "label"
        return pairs

    def describe(self) -> str:
        fields = [f"{src!r}" for src in self.inputs.values() if src]
        if self.extra_field:
            fields.append(f"{self.extra_field!r}")
        text = f"{FORM_NAMES[self.form]} from {', '.join(fields)}"
        if self.label_field:
            text += f" and label {self.label_field!r}"
        absent = [dst for dst, src in self.inputs.items() if src is None]
        if absent:
            text += f" (no {' or '.join(absent)}: left empty)"
        kind = task_kind(self.kind)
        if kind.bins:
            text += f"; scores binned as {', '.join(self.labels)} (from the {self.labels_from} range)"
        elif kind.label_set:
            shown = ", ".join(self.labels[:8]) + (f", ... ({len(self.labels)})" if len(self.labels) > 8 else "")
            text += f"; labels from {self.labels_from}: {shown}"
        return f"{text}; language {self.language}"

    # ------------------------------------------------------------ one record
    def convert(self, obj: dict, where: str) -> dict:
        """A file record as the loader's record for this form (``jsonl.parse_record`` checks the rest)."""
        out: dict[str, Any] = {}
        for dst, src in self.inputs.items():
            if src is None:
                out[dst] = ""
                continue
            if src not in obj:
                raise DataError(f"{where}: field {src!r} is missing{seen_fields(obj)}")
            if not isinstance(obj[src], str):
                raise DataError(f"{where}: field {src!r} must be a string, got {type(obj[src]).__name__}")
            out[dst] = obj[src]
        if self.form == "multiple_choice":
            out["choices"] = self._choices(obj, where)
            out["label"] = self._choice_index(obj, out["choices"], where)
        elif self.form == "extractive_qa":
            out["answers"] = _span_answers(self._need(obj, self.extra_field, where), self.extra_field, where)
        elif self.form == "span":
            out["target"] = self._need(obj, self.extra_field, where)
            if "target_start" in obj:
                out["target_start"] = _number(obj["target_start"])
                out["target_start"] = int(out["target_start"]) if out["target_start"] is not None else None
        elif self.form == "multi_answer":
            out["answers"] = self._candidates(obj, where)
        else:
            value = self._need(obj, self.label_field, where)
            if value == "":
                raise DataError(f"{where}: field {self.label_field!r} is empty")
            out["label"] = self.label_value(value, where)
        return out

    @staticmethod
    def _need(obj: dict, field: str | None, where: str) -> Any:
        if field is None or field not in obj:
            raise DataError(f"{where}: field {field!r} is missing{seen_fields(obj)}")
        if obj[field] is None:
            raise DataError(f"{where}: field {field!r} is null")
        return obj[field]

    def label_value(self, value: Any, where: str, field: str | None = None) -> Any:
        field = field or self.label_field
        if self.label_mode == "score":
            number = _number(value)
            if number is None or not math.isfinite(number):
                raise DataError(f"{where}: field {field!r} is {value!r}, not a finite score")
            return number
        if self.label_mode == "numeric_classes":
            number = _number(value)
            if number is not None and number.is_integer():
                return str(int(number))
        return class_name(value, field, where)

    def _choices(self, obj: dict, where: str) -> list:
        value = _maybe_json(self._need(obj, self.extra_field, where))
        if not isinstance(value, list):
            raise DataError(
                f"{where}: field {self.extra_field!r} must be a list of choices, got {type(value).__name__}"
            )
        return value

    def _choice_index(self, obj: dict, choices: list, where: str) -> int:
        value = self._need(obj, self.label_field, where)
        number = _number(value)
        if number is not None and number.is_integer():
            return int(number)
        if isinstance(value, str):
            if value in choices:
                return choices.index(value)
            letter = value.strip().upper()
            if len(letter) == 1 and "A" <= letter <= "Z":
                return ord(letter) - ord("A")
        raise DataError(
            f"{where}: field {self.label_field!r} is {value!r}: neither an index, a letter (A, B, ...) nor the "
            f"text of one of the choices in {self.extra_field!r}"
        )

    def _candidates(self, obj: dict, where: str) -> list[dict]:
        value = self._need(obj, self.extra_field, where)
        if not isinstance(value, list):
            raise DataError(f"{where}: field {self.extra_field!r} must be a list of candidate answers")
        out = []
        for j, item in enumerate(value):
            here = f"{where}: field {self.extra_field!r}[{j}]"
            if not isinstance(item, dict) or "label" not in item:
                raise DataError(f"{here} must be an object with 'text' and 'label'")
            out.append({**item, "label": candidate_label(item["label"], here)})
        return out


def class_name(value: Any, field: str | None, where: str) -> str:
    """A label value as a class name: strings as they are, true/false, whole numbers as digits."""
    if isinstance(value, bool):
        return BINARY[value]
    if isinstance(value, str):
        return value
    if isinstance(value, int) or (isinstance(value, float) and value.is_integer()):
        return str(int(value))
    raise DataError(f"{where}: field {field!r} is {value!r}: a class name, a whole number or true/false expected")


def candidate_label(value: Any, where: str) -> str:
    # MultiRC-style candidates are judged true/false, written as booleans, 0/1 or the words.
    if isinstance(value, bool) or value in (0, 1):
        return BINARY[int(value)]
    return class_name(value, "label", where)


def guess_language(texts: Sequence[str]) -> str:
    """zh when Chinese characters make up over 30% of the letters, else en (the two template languages)."""
    cjk = sum(len(CJK.findall(t)) for t in texts)
    latin = sum(len(LATIN.findall(t)) for t in texts)
    return "zh" if cjk > 0.3 * (cjk + latin) else "en"


def _occurs(obj: dict, answers: list[dict], passage_field: str) -> bool:
    passage = obj.get(passage_field)
    return isinstance(passage, str) and any(
        isinstance(a.get("text"), str) and a["text"] and a["text"] in passage for a in answers
    )


def _span_share(sample: list[Record], passage: str, field: str) -> float:
    hits = 0
    for _, where, obj in sample:
        try:
            hits += _occurs(obj, _span_answers(obj.get(field), field, where), passage)
        except DataError:
            pass
    return hits / len(sample)


def _reading(obj: dict, sample: list[Record]) -> tuple[str, dict, str | None, str | None] | str:
    """(form, inputs, label field, extra field) of the first record, or why it has none."""
    passage, question = _first(obj, PASSAGE_FIELDS), _first(obj, QUESTION_FIELDS)
    label = _first(obj, LABEL_FIELDS)
    choices = next((f for f in CHOICE_FIELDS if isinstance(_maybe_json(obj.get(f)), list)), None)
    if choices:
        answer = _first(obj, CHOICE_ANSWER_FIELDS)
        context = passage or _first(obj, ("text",))
        if answer is None:
            return f"a choices list {choices!r} but no answer field ({', '.join(CHOICE_ANSWER_FIELDS)})"
        if context is None and question is None:
            return f"a choices list {choices!r} but no passage or question field"
        return "multiple_choice", {"context": context, "question": question}, answer, choices
    if passage and question:
        inputs = {"context": passage, "question": question}
        answers = obj.get("answers")
        if isinstance(answers, list) and answers and all(isinstance(a, dict) and "label" in a for a in answers):
            return "multi_answer", inputs, None, "answers"
        if label:
            return "passage_question", {"question": question, "context": passage}, label, None
        if isinstance(obj.get("answer"), bool):
            return "passage_question", {"question": question, "context": passage}, "answer", None
        span = _first(obj, SPAN_ANSWER_FIELDS)
        if span is None:
            return f"a passage {passage!r} and a question {question!r} but no label or answer(s) field"
        if _span_share(sample, passage, span) < SPAN_SHARE:
            return (
                f"the {span!r} of most records are not found in their {passage!r}: only answers that are spans "
                f"of the passage can be read (free-form answers cannot be scored here)"
            )
        return "extractive_qa", inputs, None, span
    text = _first(obj, TEXT_FIELDS)
    if text and isinstance(obj.get("target"), str) and not label:
        if _span_share(sample, text, "target") >= SPAN_SHARE:
            return "span", {"text": text}, None, "target"
        label = "target"  # a class name that happens to be called target
    if label is None:
        return f"no label field ({', '.join(LABEL_FIELDS)})"
    if "span1_text" in obj and "span2_text" in obj and text:
        return "coreference", {"text": text, "span1_text": "span1_text", "span2_text": "span2_text"}, label, None
    pair = next((p for p in PAIR_FIELDS if p[0] in obj and p[1] in obj), None)
    if "word" in obj and pair:
        return "word_pair", {"word": "word", "text_a": pair[0], "text_b": pair[1]}, label, None
    if text and "head" in obj and "tail" in obj:
        return "relation", {"text": text, "head": "head", "tail": "tail"}, label, None
    if pair:
        return "pair", {"text_a": pair[0], "text_b": pair[1]}, label, None
    if text:
        return "single", {"text": text}, label, None
    return f"a label {label!r} but no text field ({', '.join(TEXT_FIELDS)}) or text pair ({PAIR_FIELDS[0][0]}/...)"


def infer(
    train: list[Record],
    what: str,
    language: str = "",
    declared_labels: Sequence[str] | None = None,
    labels_from: str = "train",
) -> Guess:
    """The reading of a task from its train records (``what`` names the task in a refusal)."""
    if not train:
        raise UnknownKind(f"{what}: no records to tell its kind from")
    sample = train[:SAMPLE]
    _, where, first = train[0]
    reading = _reading(first, sample)
    if isinstance(reading, str):
        raise UnknownKind(f"{what}: {where} has fields {sorted(first)}: {reading}")
    form, inputs, label_field, extra = reading
    kind = {"multiple_choice": "multiple_choice", "extractive_qa": "extraction", "span": "extraction"}.get(
        form, "classification"
    )
    texts = [obj[f] for _, _, obj in sample for f in inputs.values() if f and isinstance(obj.get(f), str)]
    guess = Guess(kind, form, inputs, label_field, extra, language=language or guess_language(texts))
    guess.labels_from = labels_from
    if form == "multi_answer":
        values = {
            candidate_label(a["label"], where)
            for _, where, obj in train
            for a in (obj.get("answers") or [])
            if isinstance(a, dict) and "label" in a
        }
        guess.labels = tuple(declared_labels or sorted(values))
    elif task_kind(kind).label_set:
        _class_labels(guess, train, declared_labels)
    return guess


def _class_labels(guess: Guess, train: list[Record], declared: Sequence[str] | None) -> None:
    field = guess.label_field
    values = [(where, obj[field]) for _, where, obj in train if obj.get(field) not in (None, "")]
    numbers = [_number(v) for _, v in values]
    if values and all(n is not None for n in numbers):
        if any(not n.is_integer() for n in numbers) and guess.form in ("single", "pair"):
            low, high = min(numbers), max(numbers)
            if low == high:
                raise DataError(f"{values[0][0]}: every {field!r} score is {low:g}: nothing to learn")
            guess.kind, guess.form, guess.label_mode = "regression", guess.form + "_score", "score"
            guess.labels = tuple(regression_bins(float(math.floor(low)), float(math.ceil(high))))
            return
        guess.label_mode = "numeric_classes"
    if declared:
        guess.labels, guess.labels_from = tuple(declared), "the manifest's label_list"
        return
    names = {guess.label_value(v, where) for where, v in values}
    if guess.label_mode == "numeric_classes":
        labels = sorted(names, key=float)
    else:
        labels = sorted(names)
    where = values[0][0] if values else train[0][1]
    if len(labels) < 2:
        raise DataError(
            f"{where}: every {guess.labels_from} record has {field!r} {labels[0] if labels else None!r}: "
            f"a classifier needs at least two labels"
        )
    if len(labels) > MAX_CLASSES:
        raise DataError(
            f"{where}: field {field!r} has {len(labels)} different values in {guess.labels_from} (e.g. "
            f"{', '.join(map(repr, labels[:3]))}): more than {MAX_CLASSES} looks like free text, not classes"
        )
    guess.labels = tuple(labels)
