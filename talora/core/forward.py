"""The frozen backbone run with a method's prompts in place, and the training loss.

Layers below the first prompted one run once without autograd (or are read from the
lower-layer cache); only the positions that predict answer tokens go through the
output head: never (batch x seq x vocab) logits. For the same reason the last layer
runs its MLP and attention output projection at those positions alone. Prediction
(ranking, generation) builds on this in ``talora.core.predict``.

Precision. The frozen model may live in bfloat16 or float16; trainable parameters
stay float32 (master weights). Every model pass runs under ``compute_precision``:
autocast to the backbone's dtype, so float32 prompts meet half-precision weights
in half precision matmuls, while the prompt attention's separate softmax and gate
(talora.core.attention) and the cross-entropy here are computed in float32.

Memory. With ``checkpoint=True`` the prompted layers are recomputed in backward
instead of keeping their activations (the backward crosses them anyway); the
frozen lower layers never keep activations, having run without autograd.

The temporary layer swaps below change the shared model for the duration of one
pass: one backbone serves one pass at a time (a server runs its passes on one worker).
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint as recompute

from .backbone import Backbone
from .batching import Batch

if TYPE_CHECKING:
    from .lower_cache import LowerLayerCaches
    from .prompts import Prompter, PromptInputs


class _PassThrough(nn.Module):
    """Stands in for a decoder layer that must not run (its input is its output)."""

    def forward(self, hidden_states, *args, **kwargs):
        return hidden_states


_PASS = _PassThrough()


class _LayerWrapper(nn.Module):
    def __init__(self, layer: nn.Module):
        super().__init__()
        self.layer = layer

    def __getattr__(self, name):  # the decoder reads per-layer attributes (e.g. attention_type)
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(self.layer, name)


class _Recomputed(_LayerWrapper):
    """A decoder layer whose activations are recomputed in backward rather than kept."""

    def forward(self, *args, **kwargs):
        if not torch.is_grad_enabled():
            return self.layer(*args, **kwargs)
        return recompute(self.layer, *args, use_reentrant=False, **kwargs)


class _AtPositions(nn.Module):
    """A position-wise block (MLP, output projection) run only at ``index`` of the flattened
    (batch x seq) positions; its output is zero elsewhere."""

    def __init__(self, block: nn.Module, index: torch.Tensor):
        super().__init__()
        self.block, self.index = block, index

    def forward(self, x, *args, **kwargs):
        if args or kwargs or x.dim() != 3:
            return self.block(x, *args, **kwargs)
        y = self.block(x.flatten(0, 1).index_select(0, self.index))
        if not isinstance(y, torch.Tensor):  # e.g. a mixture of experts that also returns router logits
            return self.block(x)
        out = y.new_zeros(x.shape[0] * x.shape[1], y.shape[-1]).index_copy(0, self.index, y)
        return out.view(*x.shape[:2], -1)


class _ScoredOnly(_LayerWrapper):
    """The last decoder layer, with its position-wise blocks run at the scored positions only.

    Nothing reads the last layer's output elsewhere, and its MLP (most of a layer's cost)
    and attention output projection act on each position alone; keys and values still
    come from every position. The blocks are swapped inside ``forward`` so that a
    recomputation in backward (gradient checkpointing) swaps them again.
    """

    def __init__(self, layer: nn.Module, index: torch.Tensor):
        super().__init__(layer)
        self.index = index

    def forward(self, *args, **kwargs):
        attn = getattr(self.layer, "self_attn", None)
        slots = [(self.layer, "mlp"), (attn, "o_proj")]
        slots = [(owner, name) for owner, name in slots if isinstance(getattr(owner, name, None), nn.Module)]
        kept = [getattr(owner, name) for owner, name in slots]
        try:
            for (owner, name), block in zip(slots, kept):
                setattr(owner, name, _AtPositions(block, self.index))
            return self.layer(*args, **kwargs)
        finally:
            for (owner, name), block in zip(slots, kept):
                setattr(owner, name, block)


def compute_precision(backbone: Backbone):
    """Autocast to the frozen model's dtype (nothing to do when it is float32)."""
    dtype = backbone.dtype
    return torch.autocast(backbone.device.type, dtype=dtype, enabled=dtype != torch.float32)


def scored_index(rows: torch.Tensor, cols: torch.Tensor, seq_len: int) -> torch.Tensor:
    """The distinct scored positions as indices of the flattened (batch x seq_len) positions."""
    return torch.unique(rows * seq_len + cols)


@contextlib.contextmanager
def _layers_only(
    decoder, start: int, stop: int, final_norm: bool, checkpoint: bool = False, scored: torch.Tensor | None = None
):
    """Run only decoder layers ``start .. stop-1``, keeping every layer's index (and so its
    prompts, its mask type and its position in ``config.layer_types``) where it was.

    ``scored`` (from ``scored_index``): only those positions of the output are read, so the
    last layer runs its position-wise blocks there alone (other positions' outputs are wrong).
    """
    layers, norm = decoder.layers, decoder.norm

    def kept(i: int, layer: nn.Module) -> nn.Module:
        if scored is not None and i == stop - 1:
            layer = _ScoredOnly(layer, scored)
        return _Recomputed(layer) if checkpoint else layer

    decoder.layers = nn.ModuleList([kept(i, layer) if start <= i < stop else _PASS for i, layer in enumerate(layers)])
    if not final_norm:
        decoder.norm = nn.Identity()
    try:
        yield
    finally:
        decoder.layers, decoder.norm = layers, norm


def prefix_left_padded(
    prefix: torch.Tensor, embeds: torch.Tensor, mask: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """A soft prompt (B, m, d) put before left-padded input embeddings, each row's padding moved in front
    of the prompt: [pad][prompt][text], and the mask to match.

    Sliding-window layers (Gemma 3) measure distance in sequence slots, padding included, and a
    sliding key/value cache keeps the last slots: padding between the prompt and the text would
    push the prompt out of a window that, without the padding, holds it.
    """
    embeds = torch.cat([prefix.to(embeds.dtype), embeds], dim=1)
    mask = torch.cat([mask.new_ones(mask.shape[0], prefix.shape[1]), mask], dim=1)
    order = torch.sort(mask, dim=1, stable=True).indices  # zeros first; the rest keep their order
    return embeds.gather(1, order[..., None].expand_as(embeds)), mask.gather(1, order)


@torch.no_grad()
def lower_states(backbone: Backbone, input_ids: torch.Tensor, attention_mask: torch.Tensor, first: int) -> torch.Tensor:
    """Hidden states entering layer ``first`` of the frozen model (no autograd: nothing there learns)."""
    decoder = backbone.model.get_decoder()
    with _layers_only(decoder, 0, first, final_norm=False), compute_precision(backbone):
        return decoder(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).last_hidden_state


def hidden_at(
    backbone: Backbone,
    method: Prompter,
    batch: Batch,
    lower: LowerLayerCaches | None = None,
    checkpoint: bool = False,
) -> torch.Tensor:
    """Final hidden states (N, d) at the batch's scored positions, with the method's prompts in place."""
    batch = batch.to(backbone.device)
    prompts = method.prompt_inputs(batch.task_ids, batch=batch)
    return prompted_hidden(backbone, prompts, batch, method.frozen_below, lower, checkpoint)


def prompted_hidden(
    backbone: Backbone,
    prompts: PromptInputs,
    batch: Batch,
    frozen_below: int = 0,
    lower: LowerLayerCaches | None = None,
    checkpoint: bool = False,
) -> torch.Tensor:
    """Final hidden states (N, d) at the batch's scored positions with ``prompts`` in place.

    Layers below ``frozen_below`` (which the prompts leave untouched) run once without
    autograd, or are read from ``lower`` (a run's lower-layer caches) when one is given;
    ``checkpoint`` recomputes the layers that run with autograd in backward.
    """
    batch = batch.to(backbone.device)
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
        scored = scored_index(batch.rows, cols, states.shape[1])
        layers = _layers_only(decoder, first, len(decoder.layers), True, checkpoint, scored)
        with layers, compute_precision(backbone):
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
    scored = scored_index(batch.rows, cols, embeds.shape[1])
    layers = _layers_only(decoder, 0, len(decoder.layers), True, checkpoint, scored)
    with layers, compute_precision(backbone):
        out = decoder(inputs_embeds=embeds, attention_mask=mask, use_cache=False, talora_prompts=prompts.layer_prompts)
    return out.last_hidden_state[batch.rows, cols]


def output_head(backbone: Backbone) -> tuple[torch.Tensor, torch.Tensor | None]:
    head = backbone.model.get_output_embeddings()
    return head.weight, head.bias


def answer_loss(
    backbone: Backbone,
    method: Prompter,
    batch: Batch,
    lower: LowerLayerCaches | None = None,
    checkpoint: bool = False,
    reduction: str = "mean",
) -> torch.Tensor:
    """Next-token cross-entropy over the answer tokens (full vocabulary, answer positions only), their
    mean or (``reduction="sum"``, for data-parallel steps) their sum."""
    batch = batch.to(backbone.device)
    weight, bias = output_head(backbone)
    hidden = hidden_at(backbone, method, batch, lower, checkpoint)
    logits = F.linear(hidden.to(weight.dtype), weight, bias)
    return F.cross_entropy(logits.float(), batch.targets, reduction=reduction)
