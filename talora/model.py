"""A frozen backbone driven by a method's prompts: the loss, candidate scores and generation.

Only the positions that predict answer tokens go through the output head, and when
ranking one-token labels only their rows of it: never (batch x seq x vocab) logits.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn
from transformers import DynamicCache

from . import attention
from .backbone import Backbone
from .batching import Batch, Encoded, answer_batch, prompt_batch
from .lower_cache import LowerLayerCache
from .methods import Method
from .tasks.base import STOP

if TYPE_CHECKING:
    from .tasks import TaskSpec


def prepare(backbone: Backbone) -> None:
    """Install the prompt attention (idempotent); with no prompts the model is unchanged."""
    attention.install(backbone.model)


class _PassThrough(nn.Module):
    """Stands in for a decoder layer that must not run (its input is its output)."""

    def forward(self, hidden_states, *args, **kwargs):
        return hidden_states


_PASS = _PassThrough()


@contextlib.contextmanager
def _layers_only(decoder, start: int, stop: int, final_norm: bool):
    """Run only decoder layers ``start .. stop-1``, keeping every layer's index (and so its
    prompts, its mask type and its position in ``config.layer_types``) where it was."""
    layers, norm = decoder.layers, decoder.norm
    decoder.layers = nn.ModuleList([layer if start <= i < stop else _PASS for i, layer in enumerate(layers)])
    if not final_norm:
        decoder.norm = nn.Identity()
    try:
        yield
    finally:
        decoder.layers, decoder.norm = layers, norm


@torch.no_grad()
def lower_states(backbone: Backbone, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                 first: int) -> torch.Tensor:
    """Hidden states entering layer ``first`` of the frozen model (no autograd: nothing there learns)."""
    decoder = backbone.model.get_decoder()
    with _layers_only(decoder, 0, first, final_norm=False):
        return decoder(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).last_hidden_state


def _lower_cache(backbone: Backbone, first: int) -> LowerLayerCache:
    caches = backbone.__dict__.setdefault("_lower_caches", {})
    if first not in caches:
        caches[first] = LowerLayerCache(backbone, first)
    return caches[first]


def hidden_at(backbone: Backbone, method: Method, batch: Batch) -> torch.Tensor:
    """Final hidden states (N, d) at the batch's scored positions, with the method's prompts in place.

    When the method leaves layers below ``method.frozen_below`` untouched, they run once
    without autograd, or not at all when the backbone's lower-layer cache is on.
    """
    model = backbone.model
    decoder = model.get_decoder()
    prompts = method.prompt_inputs(batch.task_ids, batch=batch)
    mask, cols = batch.attention_mask, batch.cols
    first = method.frozen_below
    if first > 0 and prompts.input_prefix is None:
        if backbone.cache_lower_layers:
            states = _lower_cache(backbone, first).states(
                batch.input_ids, mask, lambda ids, m: lower_states(backbone, ids, m, first))
        else:
            states = lower_states(backbone, batch.input_ids, mask, first)
        with _layers_only(decoder, first, len(decoder.layers), final_norm=True):
            out = decoder(inputs_embeds=states.to(model.dtype), attention_mask=mask, use_cache=False,
                          talora_prompts=prompts.layer_prompts)
        return out.last_hidden_state[batch.rows, cols]
    embeds = model.get_input_embeddings()(batch.input_ids)
    if prompts.input_prefix is not None:
        prefix = prompts.input_prefix.to(embeds.dtype)
        embeds = torch.cat([prefix, embeds], dim=1)
        mask = torch.cat([mask.new_ones(mask.shape[0], prefix.shape[1]), mask], dim=1)
        cols = cols + prefix.shape[1]
    out = decoder(inputs_embeds=embeds, attention_mask=mask, use_cache=False, talora_prompts=prompts.layer_prompts)
    return out.last_hidden_state[batch.rows, cols]


def _head(backbone: Backbone):
    head = backbone.model.get_output_embeddings()
    return head.weight, head.bias


def answer_loss(backbone: Backbone, method: Method, batch: Batch) -> torch.Tensor:
    """Mean next-token cross-entropy over the answer tokens (full vocabulary, answer positions only)."""
    weight, bias = _head(backbone)
    logits = F.linear(hidden_at(backbone, method, batch), weight, bias)
    return F.cross_entropy(logits.float(), batch.targets)


@dataclass(frozen=True)
class Verbalizer:
    """How one task's answers are scored: the tokenised words ranked for each example (classification:
    label words, in label order; regression: the bins' words, with the bins' values), or, for
    multiple choice, each example's own choices; extraction generates up to ``max_new_tokens``."""

    labels: tuple[str, ...]
    words: tuple[tuple[int, ...], ...]
    kind: str = "classification"
    metric: str = "accuracy"
    language: str = "en"
    values: tuple[float, ...] = ()
    max_new_tokens: int = 0

    @classmethod
    def of(cls, spec: TaskSpec, tokenizer) -> "Verbalizer":
        words = tuple(tuple(tokenizer(spec.label_words[label], add_special_tokens=False)["input_ids"])
                      for label in spec.labels)
        values = tuple(float(label) for label in spec.labels) if spec.kind == "regression" else ()
        return cls(tuple(spec.labels), words, spec.kind, spec.metric, spec.language, values, spec.max_new_tokens)

    def candidates(self, item: Encoded) -> tuple[tuple[int, ...], ...]:
        return item.candidates if self.kind == "multiple_choice" else self.words

    def decide(self, scores: torch.Tensor) -> str | float:
        """The prediction from one example's candidate scores (log-likelihoods up to a constant)."""
        if self.kind == "regression":
            return float(scores.float().softmax(-1) @ torch.tensor(self.values))
        best = int(scores.argmax())
        return str(best) if self.kind == "multiple_choice" else self.labels[best]


# Rows of (example, candidate) scored in one forward pass when candidates are several tokens long.
RANK_ROWS = 64


def score_candidates(backbone: Backbone, method: Method, items: list[Encoded],
                     candidates: list[tuple[tuple[int, ...], ...]]) -> list[torch.Tensor]:
    """Each example's score for each of its candidate answers: the summed log-probability of the
    candidate's tokens after the prompt (no length normalisation).

    When every candidate is one token, distinct within its example, one forward pass of the
    prompts suffices and only those tokens' rows of the output head are used (the scores are then
    logits, which differ from log-probabilities by a constant per example).
    """
    pad = backbone.tokenizer.pad_token_id
    weight, bias = _head(backbone)
    if all(all(len(c) == 1 for c in cs) and len({c[0] for c in cs}) == len(cs) for cs in candidates):
        hidden = hidden_at(backbone, method, prompt_batch(items, pad))
        # Examples differ in candidate count: pad each row's candidate ids and mask the padding out.
        width = max(len(cs) for cs in candidates)
        ids = torch.zeros(len(items), width, dtype=torch.long)
        for i, cs in enumerate(candidates):
            ids[i, : len(cs)] = torch.tensor([c[0] for c in cs])
        scores = torch.einsum("bd,bcd->bc", hidden, weight[ids])
        if bias is not None:
            scores = scores + bias[ids]
        return [scores[i, : len(cs)].float() for i, cs in enumerate(candidates)]
    expanded = [replace(e, answer=c) for e, cs in zip(items, candidates) for c in cs]
    per_row = torch.zeros(len(expanded))
    for start in range(0, len(expanded), RANK_ROWS):
        batch = answer_batch(expanded[start: start + RANK_ROWS], pad)
        logprobs = F.linear(hidden_at(backbone, method, batch), weight, bias).float().log_softmax(-1)
        token_scores = logprobs.gather(1, batch.targets[:, None])[:, 0]
        per_row.index_add_(0, batch.rows + start, token_scores)
    out, start = [], 0
    for cs in candidates:
        out.append(per_row[start: start + len(cs)])
        start += len(cs)
    return out


@torch.no_grad()
def predict(backbone: Backbone, method: Method, items: list[Encoded],
            verbalizers: dict[int, Verbalizer]) -> list[str | float]:
    """One prediction per example: a label (classification), a choice index as a string (multiple
    choice), a score (regression: the bins' values weighted by the softmax of their scores) or
    generated text (extraction)."""
    preds: list[str | float] = [""] * len(items)
    ranked = [i for i, e in enumerate(items) if verbalizers[e.task_id].kind != "extraction"]
    if ranked:
        chunk = [items[i] for i in ranked]
        scores = score_candidates(backbone, method, chunk, [verbalizers[e.task_id].candidates(e) for e in chunk])
        for i, e, s in zip(ranked, chunk, scores):
            preds[i] = verbalizers[e.task_id].decide(s)
    generated = [i for i, e in enumerate(items) if verbalizers[e.task_id].kind == "extraction"]
    if generated:
        chunk = [items[i] for i in generated]
        texts = generate(backbone, method, chunk, [verbalizers[e.task_id].max_new_tokens for e in chunk])
        for i, text in zip(generated, texts):
            preds[i] = text
    return preds


class GreedyDecoder:
    """Greedy next tokens of a fixed batch of prompts with the method's prompts in place.

    The first step runs the left-padded prompts and fills the key/value cache; each later
    step costs one position per row. Prompt vectors are not in the cache: the gated term
    reads them at every step, like the prefix keys of plain mode. The method's prompts are
    computed once, from the prompts alone (ATTEMPT pools the input, never generated tokens).
    """

    def __init__(self, backbone: Backbone, method: Method, rows: list[Encoded]):
        pad = backbone.tokenizer.pad_token_id
        self.model, self.decoder = backbone.model, backbone.model.get_decoder()
        self.weight, self.bias = _head(backbone)
        self.prompts = method.prompt_inputs(torch.tensor([e.task_id for e in rows]), batch=prompt_batch(rows, pad))
        width = max(len(e.prompt) for e in rows)
        ids = torch.full((len(rows), width), pad, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for r, e in enumerate(rows):  # left padding: every row's next token lands in the same column
            ids[r, width - len(e.prompt):] = torch.tensor(e.prompt)
            mask[r, width - len(e.prompt):] = 1
        embeds = self.model.get_input_embeddings()(ids)
        if self.prompts.input_prefix is not None:
            prefix = self.prompts.input_prefix.to(embeds.dtype)
            embeds = torch.cat([prefix, embeds], dim=1)
            mask = torch.cat([mask.new_ones(len(rows), prefix.shape[1]), mask], dim=1)
        self.mask, self.positions = mask, (mask.cumsum(1) - 1).clamp(min=0)
        self.inputs = {"inputs_embeds": embeds}
        self.cache = DynamicCache(config=self.model.config)

    @torch.no_grad()
    def step(self) -> list[int]:
        hidden = self.decoder(**self.inputs, attention_mask=self.mask, position_ids=self.positions,
                              past_key_values=self.cache, use_cache=True,
                              talora_prompts=self.prompts.layer_prompts).last_hidden_state[:, -1]
        next_ids = F.linear(hidden, self.weight, self.bias).argmax(-1)
        self.inputs = {"input_ids": next_ids[:, None]}
        self.mask = torch.cat([self.mask, self.mask.new_ones(len(next_ids), 1)], dim=1)
        self.positions = self.positions[:, -1:] + 1
        return next_ids.tolist()


@torch.no_grad()
def generate(backbone: Backbone, method: Method, items: list[Encoded],
             max_new_tokens: int | list[int]) -> list[str]:
    """Greedy continuation of each prompt with the method's prompts in place, up to the first newline
    (the answer's end in training), the end-of-sequence token or ``max_new_tokens`` (one budget, or
    one per example). Returns the text before the newline, stripped. Rows that finish early keep
    stepping with the batch (their tokens are ignored) until every row is done."""
    tokenizer = backbone.tokenizer
    eos = tokenizer.eos_token_id
    limits = max_new_tokens if isinstance(max_new_tokens, list) else [max_new_tokens] * len(items)
    out: list[list[int]] = [[] for _ in items]
    todo = [i for i, n in enumerate(limits) if n > 0]
    decoder = GreedyDecoder(backbone, method, [items[i] for i in todo]) if todo else None
    live = list(range(len(todo)))
    while live:
        next_ids = decoder.step()
        still = []
        for r in live:
            token, i = next_ids[r], todo[r]
            if token == eos:
                continue
            out[i].append(token)
            if STOP not in tokenizer.decode(out[i]) and len(out[i]) < limits[i]:
                still.append(r)
        live = still
    return [tokenizer.decode(ids).split(STOP, 1)[0].strip() for ids in out]
