"""The frozen backbone run with a method's prompts in place, and the training loss.

Layers below the first prompted one run once without autograd (or are read from the
lower-layer cache); only the positions that predict answer tokens go through the
output head: never (batch x seq x vocab) logits. Prediction (ranking, generation)
builds on this in ``talora.predict``.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

from .backbone import Backbone
from .batching import Batch

if TYPE_CHECKING:
    from .lower_cache import LowerLayerCaches
    from .methods.base import Method, PromptInputs


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
def lower_states(backbone: Backbone, input_ids: torch.Tensor, attention_mask: torch.Tensor, first: int) -> torch.Tensor:
    """Hidden states entering layer ``first`` of the frozen model (no autograd: nothing there learns)."""
    decoder = backbone.model.get_decoder()
    with _layers_only(decoder, 0, first, final_norm=False):
        return decoder(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).last_hidden_state


def hidden_at(backbone: Backbone, method: Method, batch: Batch, lower: LowerLayerCaches | None = None) -> torch.Tensor:
    """Final hidden states (N, d) at the batch's scored positions, with the method's prompts in place."""
    return prompted_hidden(
        backbone, method.prompt_inputs(batch.task_ids, batch=batch), batch, method.frozen_below, lower
    )


def prompted_hidden(
    backbone: Backbone,
    prompts: PromptInputs,
    batch: Batch,
    frozen_below: int = 0,
    lower: LowerLayerCaches | None = None,
) -> torch.Tensor:
    """Final hidden states (N, d) at the batch's scored positions with ``prompts`` in place.

    Layers below ``frozen_below`` (which the prompts leave untouched) run once without
    autograd, or are read from ``lower`` (a run's lower-layer caches) when one is given.
    """
    model = backbone.model
    decoder = model.get_decoder()
    mask, cols = batch.attention_mask, batch.cols
    first = frozen_below
    if first > 0 and prompts.input_prefix is None:
        if lower is not None:
            states = lower.layer(first).states(
                batch.input_ids, mask, lambda ids, m: lower_states(backbone, ids, m, first)
            )
        else:
            states = lower_states(backbone, batch.input_ids, mask, first)
        with _layers_only(decoder, first, len(decoder.layers), final_norm=True):
            out = decoder(
                inputs_embeds=states.to(model.dtype),
                attention_mask=mask,
                use_cache=False,
                talora_prompts=prompts.layer_prompts,
            )
        return out.last_hidden_state[batch.rows, cols]
    embeds = model.get_input_embeddings()(batch.input_ids)
    if prompts.input_prefix is not None:
        prefix = prompts.input_prefix.to(embeds.dtype)
        embeds = torch.cat([prefix, embeds], dim=1)
        mask = torch.cat([mask.new_ones(mask.shape[0], prefix.shape[1]), mask], dim=1)
        cols = cols + prefix.shape[1]
    out = decoder(inputs_embeds=embeds, attention_mask=mask, use_cache=False, talora_prompts=prompts.layer_prompts)
    return out.last_hidden_state[batch.rows, cols]


def output_head(backbone: Backbone) -> tuple[torch.Tensor, torch.Tensor | None]:
    head = backbone.model.get_output_embeddings()
    return head.weight, head.bias


def answer_loss(
    backbone: Backbone, method: Method, batch: Batch, lower: LowerLayerCaches | None = None
) -> torch.Tensor:
    """Mean next-token cross-entropy over the answer tokens (full vocabulary, answer positions only)."""
    weight, bias = output_head(backbone)
    logits = F.linear(hidden_at(backbone, method, batch, lower), weight, bias)
    return F.cross_entropy(logits.float(), batch.targets)
