"""A frozen backbone driven by a method's prompts: the loss and the label scores.

Only the positions that predict answer tokens go through the output head, and when
ranking labels only the label words' rows of it: never (batch x seq x vocab) logits.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

from . import attention
from .backbone import Backbone
from .batching import Batch, Encoded, answer_batch, prompt_batch
from .lower_cache import LowerLayerCache
from .methods import Method

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


def hidden_at(backbone: Backbone, method: Method, batch: Batch, use_cache: bool = True) -> torch.Tensor:
    """Final hidden states (N, d) at the batch's scored positions, with the method's prompts in place.

    When the method leaves layers below ``method.frozen_below`` untouched, they run once
    without autograd, or not at all when the backbone's lower-layer cache is on
    (``use_cache=False`` bypasses it, e.g. for the ever-growing sequences of generation).
    """
    model = backbone.model
    decoder = model.get_decoder()
    prompts = method.prompt_inputs(batch.task_ids)
    mask, cols = batch.attention_mask, batch.cols
    first = method.frozen_below
    if first > 0 and prompts.input_prefix is None:
        if backbone.cache_lower_layers and use_cache:
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
    """Tokenised label words of one task, in the task's label order."""

    labels: tuple[str, ...]
    words: tuple[tuple[int, ...], ...]

    @classmethod
    def of(cls, spec: TaskSpec, tokenizer) -> "Verbalizer":
        words = tuple(tuple(tokenizer(spec.answer(label), add_special_tokens=False)["input_ids"])
                      for label in spec.labels)
        return cls(tuple(spec.labels), words)

    @property
    def single_token(self) -> bool:
        return all(len(w) == 1 for w in self.words) and len({w[0] for w in self.words}) == len(self.words)


@torch.no_grad()
def rank_labels(backbone: Backbone, method: Method, items: list[Encoded],
                verbalizers: dict[int, Verbalizer]) -> list[str]:
    """Predict each example's label by the log-likelihood of its label words (sum over their tokens).

    When every label word of the batch's tasks is one distinct token, one forward pass
    of the prompts suffices and only those tokens' rows of the output head are used.
    Otherwise each (example, label) pair is scored with the label appended.
    """
    pad = backbone.tokenizer.pad_token_id
    weight, bias = _head(backbone)
    if all(verbalizers[e.task_id].single_token for e in items):
        hidden = hidden_at(backbone, method, prompt_batch(items, pad))
        # Tasks differ in label count: pad each row's candidate ids and mask the padding out.
        width = max(len(verbalizers[e.task_id].words) for e in items)
        ids = torch.zeros(len(items), width, dtype=torch.long)
        valid = torch.zeros(len(items), width, dtype=torch.bool)
        for i, e in enumerate(items):
            words = verbalizers[e.task_id].words
            ids[i, : len(words)] = torch.tensor([w[0] for w in words])
            valid[i, : len(words)] = True
        scores = torch.einsum("bd,bcd->bc", hidden, weight[ids])
        if bias is not None:
            scores = scores + bias[ids]
        best = scores.masked_fill(~valid, float("-inf")).argmax(-1).tolist()
        return [verbalizers[e.task_id].labels[j] for e, j in zip(items, best)]
    expanded = [replace(e, answer=w) for e in items for w in verbalizers[e.task_id].words]
    batch = answer_batch(expanded, pad)
    logprobs = F.linear(hidden_at(backbone, method, batch), weight, bias).float().log_softmax(-1)
    token_scores = logprobs.gather(1, batch.targets[:, None])[:, 0]
    per_row = torch.zeros(len(expanded)).index_add_(0, batch.rows, token_scores)
    preds, start = [], 0
    for e in items:
        verb = verbalizers[e.task_id]
        preds.append(verb.labels[int(per_row[start: start + len(verb.words)].argmax())])
        start += len(verb.words)
    return preds
