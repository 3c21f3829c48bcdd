"""Templates and label words for data-folder tasks: ``templates.yaml`` first, a generic fallback otherwise."""

from __future__ import annotations

import functools
import re
from pathlib import Path
from typing import Mapping, Sequence

import yaml

TEMPLATES_FILE = Path(__file__).with_name("templates.yaml")


@functools.cache
def _table() -> dict:
    with open(TEMPLATES_FILE, encoding="utf-8") as fh:
        return yaml.safe_load(fh)


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


def template_for(task: str, language: str, form: str, labels: Sequence[str],
                 label_desc: Mapping[str, str] | None = None) -> tuple[str, dict[str, str]]:
    """(template, label words) of a task; a per-task entry wins, label by label, over the generic one."""
    table = _table()
    words = generic_words(labels, language, label_desc)
    entry = table["tasks"].get(task)
    if entry is None:
        generic = table["generic"].get(language, table["generic"]["en"])
        return generic[form], words
    words.update({lab: w for lab, w in entry.get("label_words", {}).items() if lab in words})
    return entry["template"], words
