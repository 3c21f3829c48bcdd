"""Templates and label words for data-folder tasks: ``templates.yaml`` first, a generic fallback otherwise.

The generic fallback needs only what the manifest says of a task (its input form, language and
label set), so a new folder in the same layout trains without any entry here.
"""

from __future__ import annotations

import re
import string
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import yaml

TEMPLATES_FILE = Path(__file__).with_name("templates.yaml")


def template_fields(template: str) -> set[str]:
    """Names a ``str.format`` template refers to (so examples keep only the fields a prompt uses)."""
    return {name for _, name, _, _ in string.Formatter().parse(template) if name}


@dataclass(frozen=True)
class Prompting:
    """How a task is put to the model: its template, label words and (extraction) generation budget."""

    template: str
    label_words: dict[str, str] = field(default_factory=dict)
    max_new_tokens: int = 0


def _read_table() -> dict:
    with open(TEMPLATES_FILE, encoding="utf-8") as fh:
        return yaml.safe_load(fh)


TABLE = _read_table()  # packaged data: read once at import, never changed


def generic_word(label: str, language: str, desc: str | None = None) -> str:
    """'not_duplicate' -> ' not duplicate', 'OfficeHolder' -> ' office holder'; Chinese words get no space."""
    text = desc or label
    text = re.sub(r"(?<=[a-z])(?=[A-Z])", " ", text)
    text = re.sub(r"[_\-\s]+", " ", text).strip()
    if language == "zh":
        return text
    return " " + text.lower()


def generic_words(labels: Sequence[str], language: str, label_desc: Mapping[str, str] | None) -> dict[str, str]:
    words = {lab: generic_word(lab, language, (label_desc or {}).get(lab)) for lab in labels}
    if len(set(words.values())) < len(words):
        # Normalising merged two names (or two descriptions coincide): the raw names are distinct.
        words = {lab: ("" if language == "zh" else " ") + lab for lab in labels}
    return words


def regression_bins(low: float, high: float) -> list[str]:
    """Bin values for a score range: its integers when it is whole and 3 to 10 wide, else 11 even steps."""
    if low.is_integer() and high.is_integer() and 3 <= high - low <= 10:
        return [str(v) for v in range(int(low), int(high) + 1)]
    step = (high - low) / 10
    return [f"{low + i * step:g}" for i in range(11)]


def score_range(type_text: str) -> tuple[float, float]:
    """The range a manifest type states ("... (similarity 0-5)"); 0-5 when it states none."""
    found = re.search(r"(-?\d+(?:\.\d+)?)\s*(?:-|–|to)\s*(-?\d+(?:\.\d+)?)", type_text)
    if found and float(found.group(1)) < float(found.group(2)):
        return float(found.group(1)), float(found.group(2))
    return 0.0, 5.0


def prompting_for(
    task: str, language: str, form: str, labels: Sequence[str], label_desc: Mapping[str, str] | None = None
) -> Prompting:
    """A per-task entry wins, label by label, over the generic words; its template over the generic one."""
    table = TABLE
    words = generic_words(labels, language, label_desc)
    entry = table["tasks"].get(task)
    budget = int(table["generation_budget"])
    if entry is None:
        generic = table["generic"].get(language, table["generic"]["en"])
        return Prompting(generic[form], words, budget)
    words.update({lab: w for lab, w in entry.get("label_words", {}).items() if lab in words})
    return Prompting(entry["template"], words, int(entry.get("max_new_tokens", budget)))


def listed_labels(task: str) -> list[str]:
    """The labels a task's entry gives words for (regression tasks list their bins this way)."""
    return list(TABLE["tasks"].get(task, {}).get("label_words", {}))
