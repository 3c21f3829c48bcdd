"""Examples to token ids, and token ids to padded batches that may mix tasks.

An example becomes a prompt (the task's template over its fields) and an answer
(the verbalised label). The loss and the scores need the model's output only at
the positions that predict answer tokens, so batches carry those positions and
nothing downstream ever builds (batch x sequence x vocabulary) logits.

Truncation rule (examples longer than ``max_length`` tokens): the template and the
answer are kept whole; tokens are cut from the end of the longest input field, one
field at a time, until prompt + answer fit. A template that cannot fit even with
empty fields is refused with a DataError naming the task.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from .errors import DataError

if TYPE_CHECKING:
    from .tasks import Example, TaskSpec


@dataclass(frozen=True)
class Encoded:
    uid: str
    task_id: int
    prompt: tuple[int, ...]
    answer: tuple[int, ...]
    label: str
    truncated: bool = False


def tokenize(tokenizer, text: str, special: bool) -> list[int]:
    return tokenizer(text, add_special_tokens=special)["input_ids"]


def encode(spec: TaskSpec, ex: Example, tokenizer, max_length: int, task_id: int) -> Encoded:
    answer = tokenize(tokenizer, spec.answer(ex.label), special=False)
    fields = dict(ex.fields)
    prompt = tokenize(tokenizer, spec.template.format(**fields), special=True)
    truncated = False
    while len(prompt) + len(answer) > max_length:
        text_fields = {k: v for k, v in fields.items() if isinstance(v, str) and v}
        if not text_fields:
            raise DataError(f"task {spec.name!r}: max_length={max_length} cannot hold the template and answer "
                            f"of example {ex.uid} even with empty fields")
        longest = max(text_fields, key=lambda k: len(text_fields[k]))
        ids = tokenize(tokenizer, fields[longest], special=False)
        excess = len(prompt) + len(answer) - max_length
        fields[longest] = tokenizer.decode(ids[: max(0, len(ids) - excess)])
        prompt = tokenize(tokenizer, spec.template.format(**fields), special=True)
        truncated = True
    return Encoded(ex.uid, task_id, tuple(prompt), tuple(answer), ex.label, truncated)


def _pad(rows: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = torch.tensor(r, dtype=torch.long)
        mask[i, : len(r)] = 1
    return ids, mask


@dataclass
class Batch:
    """Right-padded token ids plus where to read the model's output.

    rows/cols index the positions whose next token is scored (answer tokens, or the
    last prompt token for single-token ranking); targets are those next tokens.
    """

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    task_ids: torch.Tensor
    rows: torch.Tensor
    cols: torch.Tensor
    targets: torch.Tensor


def answer_batch(items: list[Encoded], pad_id: int) -> Batch:
    """prompt + answer per example; the loss is on the answer tokens only."""
    ids, mask = _pad([list(e.prompt) + list(e.answer) for e in items], pad_id)
    rows, cols, targets = [], [], []
    for i, e in enumerate(items):
        start = len(e.prompt) - 1
        rows += [i] * len(e.answer)
        cols += range(start, start + len(e.answer))
        targets += e.answer
    as_long = lambda x: torch.tensor(x, dtype=torch.long)  # noqa: E731
    return Batch(ids, mask, as_long([e.task_id for e in items]), as_long(rows), as_long(cols), as_long(targets))


def prompt_batch(items: list[Encoded], pad_id: int) -> Batch:
    """Prompts only; the scored position is each prompt's last token (targets unused)."""
    ids, mask = _pad([list(e.prompt) for e in items], pad_id)
    as_long = lambda x: torch.tensor(x, dtype=torch.long)  # noqa: E731
    last = [len(e.prompt) - 1 for e in items]
    return Batch(ids, mask, as_long([e.task_id for e in items]), torch.arange(len(items)), as_long(last),
                 torch.zeros(len(items), dtype=torch.long))
