"""Examples to token ids, and token ids to padded batches that may mix tasks.

An example becomes a prompt (the task's template over its fields) and an answer
(what it trains on: a label word, the right choice, a score's bin word or a span;
see talora/tasks/base.py). The loss and the scores need the model's output only at
the positions that predict answer tokens, so batches carry those positions and
nothing downstream ever builds (batch x sequence x vocabulary) logits.

Truncation rule (examples longer than ``max_length`` tokens). Room is kept for the
answer: the gold answer's tokens, the longest choice of a multiple-choice example,
and, when an extraction example is evaluated, the task's ``max_new_tokens``.

* Extraction, training: the passage (``spec.span_field``) is cut to a window that
  holds the gold span: the window is as long as the room left allows, centred on
  the span and shifted to stay inside the passage; cuts fall on character bounds.
  Where the span is not in the passage or longer than the room, the rule below applies.
* Everything else (extraction at evaluation included, which so keeps the start of
  the context): the template and the answer are kept whole; tokens are cut from
  the end of the longest input field, one field at a time, until prompt + answer fit.

A template that cannot fit even with empty fields is refused with a DataError naming
the task. Every cut example is marked ``truncated`` (counted in ``metrics.json``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from ..errors import DataError

if TYPE_CHECKING:
    from ..tasks import Example, TaskSpec


@dataclass(frozen=True)
class Encoded:
    uid: str
    task_id: int
    prompt: tuple[int, ...]
    answer: tuple[int, ...]
    label: str
    truncated: bool = False
    golds: tuple[str, ...] = ()  # every acceptable answer (scoring); empty = just the label
    candidates: tuple[tuple[int, ...], ...] = ()  # multiple choice: each choice's token ids


def tokenize(tokenizer, text: str, special: bool) -> list[int]:
    return tokenizer(text, add_special_tokens=special)["input_ids"]


def encode(spec: TaskSpec, ex: Example, tokenizer, max_length: int, task_id: int, training: bool = False) -> Encoded:
    """Prompt and answer ids of one example under the truncation rule; the room kept for the answer
    and, in training, a window that keeps the answer in the prompt are the task kind's to say."""
    kind = spec.task_kind
    answer = tokenize(tokenizer, spec.answer_text(ex), special=False)
    candidates = kind.candidate_ids(spec, ex, tokenizer)
    room = kind.answer_room(spec, answer, candidates, training)
    fields = dict(ex.fields)
    prompt = tokenize(tokenizer, spec.render(fields, ex.uid), special=True)
    truncated = len(prompt) + room > max_length
    if truncated and training:
        prompt = kind.window(spec, ex, tokenizer, max_length - room) or prompt
    while len(prompt) + room > max_length:
        text_fields = {k: v for k, v in fields.items() if isinstance(v, str) and v}
        if not text_fields:
            raise DataError(
                f"task {spec.name!r}: max_length={max_length} cannot hold the template and answer "
                f"of example {ex.uid} even with empty fields"
            )
        longest = max(text_fields, key=lambda k: len(text_fields[k]))
        fields[longest] = _cut_end(tokenizer, fields[longest], len(prompt) + room - max_length)
        prompt = tokenize(tokenizer, spec.render(fields, ex.uid), special=True)
    return Encoded(ex.uid, task_id, tuple(prompt), tuple(answer), ex.label, truncated, tuple(ex.golds), candidates)


def full_length(spec: TaskSpec, ex: Example, tokenizer) -> int:
    """Tokens of an example's whole prompt and the room its answer needs, before any truncation."""
    kind = spec.task_kind
    answer = tokenize(tokenizer, spec.answer_text(ex), special=False)
    room = kind.answer_room(spec, answer, kind.candidate_ids(spec, ex, tokenizer), training=False)
    return len(tokenize(tokenizer, spec.prompt(ex), special=True)) + room


def _cut_end(tokenizer, text: str, excess: int) -> str:
    """``text`` less about ``excess`` tokens at its end, cut before the first dropped token's character
    (a byte-level token can hold part of a character; decoding such a prefix would leave a U+FFFD that
    re-tokenises longer). Always at least one character shorter, so the loop above ends."""
    offsets = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
    keep = max(0, len(offsets) - excess)
    end = offsets[keep][0] if keep < len(offsets) else len(text)
    return text[: min(end, len(text) - 1)]


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

    def to(self, device: torch.device) -> Batch:
        """The same batch on ``device`` (itself when it is there already)."""
        if self.input_ids.device == torch.device(device):
            return self
        return Batch(**{f.name: getattr(self, f.name).to(device) for f in dataclasses.fields(self)})


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
    return Batch(
        ids,
        mask,
        as_long([e.task_id for e in items]),
        torch.arange(len(items)),
        as_long(last),
        torch.zeros(len(items), dtype=torch.long),
    )
