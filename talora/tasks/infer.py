"""Tasks nobody described: their kind, fields, labels and language inferred from the records themselves.

Three sources need it (docs/data.md states the rules for users):

* a manifest task whose ``type`` and ``format`` name no kind the loader knows;
* a data folder without ``MANIFEST.json`` (its tasks and their files are found by ``records``);
* a single data file, one task named by its stem.

Records keep the file's own field names and are converted to the loader's (``premise`` -> ``text_a``, an
``answer`` letter -> the choice's index, ...) one at a time, so a bad record is reported with its file,
line and the fields it has. Whatever was inferred is said once, in a note (``describe_tasks``'
``inferred``, ``talora tasks``, ``talora data check``).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ..errors import DataError
from .kinds import task_kind
from .records import Record
from .templates import regression_bins

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


class UnknownKind(DataError):
    """The records fit no kind the loader reads (loading every task skips such a task)."""


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
