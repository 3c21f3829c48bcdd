"""Evening out the source tasks' sizes before multi-task training (TA-LoRA, Appendix B).

The paper up-samples its small source tasks, perturbing the copies (synonym substitution,
random insertion and deletion), and down-samples its large ones. Here:

* a task above ``max_examples`` keeps a seeded draw of that many examples;
* a task below ``min_examples`` is filled up to it with copies of seeded random examples.
  With ``augment``, a copy of a classification or regression example has each of its text
  fields perturbed by one operation drawn per copy: delete words, insert words taken from
  the same text (the paper inserts synonyms; without a synonym table the text's own words
  are what is at hand), or replace words by a synonym from ``synonyms``. A "word" is a
  space-separated token, or a character in non-ASCII text without spaces (Chinese); a synonym
  table's entries are matched as substrings in such text. Multiple-choice and extraction
  copies are repeated unchanged: an edit could remove the answer span or break a choice.

Every draw depends only on (task name, seed), never on PYTHONHASHSEED. The mixing rates
(``mixing_temperature``, ``mixing_cap``) then act on the balanced sizes.
"""

from __future__ import annotations

import random
from pathlib import Path

from ..errors import ConfigError
from .base import Example, TaskSpec
from .templates import template_fields


def read_synonyms(path: str | Path) -> dict[str, list[str]]:
    """word -> the other members of its group, from a file of space-separated groups."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise ConfigError(f"balance.synonyms: file not found: {path}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"balance.synonyms: {path} is not UTF-8 text") from None
    table: dict[str, list[str]] = {}
    for line in lines:
        group = list(dict.fromkeys(line.split()))
        for word in group:
            table.setdefault(word, []).extend(w for w in group if w != word)
    return {w: others for w, others in table.items() if others}


def perturb(text: str, rng: random.Random, rate: float, synonyms: dict[str, list[str]]) -> str:
    """``text`` with one seeded edit: delete, insert or (given a table that matches) substitute words."""
    spaced = " " in text.strip() or text.isascii()  # a lone English word stays a word, not letters
    units = text.split() if spaced else list(text)
    if len(units) < 2:
        return text
    n = max(1, round(rate * len(units)))
    found = [u for u in dict.fromkeys(units) if u in synonyms] if spaced else [w for w in synonyms if w in text]
    operation = rng.choice(["delete", "insert"] + (["synonym"] if found else []))
    if operation == "delete":
        drop = set(rng.sample(range(len(units)), min(n, len(units) - 1)))
        units = [u for i, u in enumerate(units) if i not in drop]
    elif operation == "insert":
        for _ in range(n):
            units.insert(rng.randrange(len(units) + 1), rng.choice(units))
    else:
        for word in rng.sample(found, min(n, len(found))):
            if spaced:
                units = [rng.choice(synonyms[u]) if u == word else u for u in units]
            else:
                text = text.replace(word, rng.choice(synonyms[word]), 1)
        if not spaced:
            return text
    return (" " if spaced else "").join(units)


def balance(
    examples: list[Example],
    spec: TaskSpec,
    min_examples: int,
    max_examples: int,
    seed: int,
    augment: bool = False,
    synonyms: dict[str, list[str]] | None = None,
    rate: float = 0.1,
) -> list[Example]:
    """The task's training examples evened out to [min_examples, max_examples] (0 = no bound)."""
    rng = random.Random(f"balance:{spec.name}:{seed}")
    if max_examples and len(examples) > max_examples:
        return rng.sample(examples, max_examples)
    if not (min_examples and 0 < len(examples) < min_examples):
        return list(examples)
    fields = template_fields(spec.template) if augment and spec.task_kind.perturbable else set()
    copies = []
    for i in range(min_examples - len(examples)):
        ex = rng.choice(examples)
        changed = {
            k: perturb(v, rng, rate, synonyms or {}) if k in fields and isinstance(v, str) else v
            for k, v in ex.fields.items()
        }
        copies.append(Example(f"{ex.uid}+copy{i}", ex.task, changed, ex.label, ex.golds))
    return list(examples) + copies
