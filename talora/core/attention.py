"""Prompt attention on the last L decoder layers, hooked where the post-rotary queries exist.

Transformers 5.x attention modules (Llama, Qwen2, Qwen3, ...) compute q/k/v, apply
rotary embeddings and q/k norms, then call the function registered in
``ALL_ATTENTION_FUNCTIONS`` under ``config._attn_implementation`` with the module
itself and every extra keyword argument given to the model's forward. We register
``talora_sdpa``: it runs the stock SDPA path unchanged and, at prompted layers, adds

    tanh(g[l, h]) * softmax(Q K_p^T * scaling) V_p                  (mode "gated")

where K_p, V_p are the per-example prompt vectors passed through the layer's own
frozen k/v projections (and Qwen3's k_norm; no rotary: prompts have no position).
With g = 0 the output is bit-identical to the frozen model's. Mode "plain" is the
ablation: the prompt keys/values join the input's in one softmax (classic prefix
attention), which cannot start as the frozen model.

Hooking here (rather than re-implementing each architecture's attention forward, as
PEFT's AdaptionPrompt does) keeps us independent of how each model builds its
queries; a test per architecture catches an upgrade that changes the interface.

What the prompt term takes from the layer, so that it follows each architecture (Gemma 3
differs most): the queries after its q norm and rotary; its ``scaling`` argument
(Gemma 3: ``query_pre_attn_scalar ** -0.5``, not ``head_dim ** -0.5``); its k_norm for
the prompt keys; its key/value head count (Gemma 3 270M has one, shared by every query
head); and a ``softcap`` argument when the layer passes one (tanh capping of the scores,
applied to the input's and the prompt's scores alike; transformers' Gemma 3 passes none,
whatever ``attn_logit_softcapping`` says, so neither does the prompt term). The mask is
the layer's own, so a sliding-window layer keeps its window over the input, while every
input token sees every prompt vector at every layer: prompts have no position, hence no
distance to fall outside a window.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

ATTN_IMPLEMENTATION = "talora_sdpa"
MODES = ("gated", "plain")


@dataclass
class LayerPrompts:
    """Per-example prompts for the prompted layers of one forward pass.

    prompts: (L, B, m, d) hidden-size prompt vectors, one set per prompted layer and example
        (already gathered by task id, so a batch may mix tasks).
    gates: (L, H) raw gate parameters shared by the batch, or (L, B, H) one set per example
        (tanh is applied here); unused in "plain" mode.
    first_layer: index of the first prompted decoder layer (layers first_layer .. first_layer+L-1).
    """

    prompts: torch.Tensor
    gates: torch.Tensor | None
    first_layer: int
    mode: str = "gated"
    _layers: list | None = field(default=None, init=False, repr=False, compare=False)

    def for_layer(self, layer_idx: int) -> tuple[torch.Tensor, torch.Tensor | None] | None:
        i = layer_idx - self.first_layer
        if i < 0 or i >= self.prompts.shape[0]:
            return None
        if self._layers is None:
            # Split once for every layer: indexing the stacked tensor layer by layer makes each
            # layer's backward allocate, and add up, a gradient the size of all L layers' prompts.
            gates = [None] * self.prompts.shape[0] if self.gates is None else self.gates.unbind(0)
            self._layers = list(zip(self.prompts.unbind(0), gates))
        return self._layers[i]


def _prompt_kv(module: torch.nn.Module, prompt: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Project (B, m, d) prompts to keys/values of shape (B, H_kv, m, head_dim)."""
    b, m, _ = prompt.shape
    shape = (b, m, -1, module.head_dim)
    keys = module.k_proj(prompt).view(shape)
    if getattr(module, "k_norm", None) is not None:  # Qwen3 normalises keys per head before attention
        keys = module.k_norm(keys)
    values = module.v_proj(prompt).view(shape)
    return keys.transpose(1, 2), values.transpose(1, 2)


def _attend(query, keys, values, mask, scaling, softcap) -> torch.Tensor:
    """softmax(cap(Q K^T * scaling) + mask) V, (B, H, q, hd); ``mask`` boolean or additive, or None.

    Without a cap this is SDPA (enable_gqa lets query heads share their key/value head without
    repeated copies); SDPA cannot cap the scores, so a capped layer gets the plain computation.
    """
    if softcap is None:
        return F.scaled_dot_product_attention(query, keys, values, attn_mask=mask, scale=scaling, enable_gqa=True)
    groups = query.shape[1] // keys.shape[1]
    keys, values = keys.repeat_interleave(groups, dim=1), values.repeat_interleave(groups, dim=1)
    scores = torch.tanh((query @ keys.transpose(-1, -2)) * scaling / softcap) * softcap
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf")) if mask.dtype == torch.bool else scores + mask
    return torch.softmax(scores, dim=-1, dtype=torch.float32).to(query.dtype) @ values


def _causal(query, key) -> torch.Tensor:
    """Causal over the input, aligned to the end of the key sequence (as with a KV cache): what a
    layer means by no mask (SDPA's mask helper drops a mask that only says this)."""
    q_len, kv_len = query.shape[2], key.shape[2]
    allowed = torch.ones(q_len, kv_len, dtype=torch.bool, device=query.device).tril(kv_len - q_len)
    return allowed[None, None].expand(query.shape[0], 1, q_len, kv_len)


def _input_attention(module, query, key, value, attention_mask, dropout, scaling, softcap, **kwargs):
    if softcap is None:
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout, scaling, **kwargs)
    mask = _causal(query, key) if attention_mask is None else attention_mask
    scaling = module.scaling if scaling is None else scaling
    return _attend(query, key, value, mask, scaling, softcap).transpose(1, 2), None


def _gated_prompt_term(module, query, prompt, gate, scaling, softcap=None) -> torch.Tensor:
    keys, values = _prompt_kv(module, prompt.to(query.dtype))
    # No mask: every input token may see every prompt vector (prompts precede the input).
    attended = _attend(query, keys, values, None, scaling, softcap)  # (B, H, q, hd)
    gate = torch.tanh(gate).to(query.dtype)
    gate = gate[None, :, None, None] if gate.dim() == 1 else gate[:, :, None, None]
    return (gate * attended).transpose(1, 2)


def _joint_prefix_attention(module, query, key, value, attention_mask, prompt, scaling, softcap=None) -> torch.Tensor:
    p_keys, p_values = _prompt_kv(module, prompt.to(query.dtype))
    groups = query.shape[1] // key.shape[1]
    keys = torch.cat([p_keys, key], dim=2).repeat_interleave(groups, dim=1)
    values = torch.cat([p_values, value], dim=2).repeat_interleave(groups, dim=1)
    b, q_len, kv_len, m = query.shape[0], query.shape[2], key.shape[2], prompt.shape[1]
    if attention_mask is None:
        attention_mask = _causal(query, key)
    if attention_mask.dtype == torch.bool:
        prefix = torch.ones(b, 1, q_len, m, dtype=torch.bool, device=query.device)
    else:
        prefix = torch.zeros(b, 1, q_len, m, dtype=attention_mask.dtype, device=query.device)
    mask = torch.cat([prefix, attention_mask.expand(b, 1, q_len, kv_len)], dim=-1)
    return _attend(query, keys, values, mask, scaling, softcap).transpose(1, 2)


def talora_attention(module, query, key, value, attention_mask, dropout=0.0, scaling=None, **kwargs):
    """Attention function registered as ``talora_sdpa``; see the module docstring."""
    bundle: LayerPrompts | None = kwargs.pop("talora_prompts", None)
    softcap = kwargs.pop("softcap", None)
    layer = None if bundle is None else bundle.for_layer(module.layer_idx)
    if layer is None:
        return _input_attention(module, query, key, value, attention_mask, dropout, scaling, softcap, **kwargs)
    prompt, gate = layer
    scaling = module.scaling if scaling is None else scaling
    if bundle.mode == "plain":
        return _joint_prefix_attention(module, query, key, value, attention_mask, prompt, scaling, softcap), None
    out, weights = _input_attention(module, query, key, value, attention_mask, dropout, scaling, softcap, **kwargs)
    return out + _gated_prompt_term(module, query, prompt, gate, scaling, softcap), weights


def install(model: torch.nn.Module) -> None:
    """Route the model's attention through ``talora_sdpa`` (idempotent, no weights change)."""
    AttentionInterface.register(ATTN_IMPLEMENTATION, talora_attention)
    AttentionMaskInterface.register(ATTN_IMPLEMENTATION, sdpa_mask)
    model.config._attn_implementation = ATTN_IMPLEMENTATION
    for sub in model.modules():  # sub-configs (some models keep one per decoder) must agree
        cfg = getattr(sub, "config", None)
        if cfg is not None and cfg is not model.config and hasattr(cfg, "_attn_implementation"):
            cfg._attn_implementation = ATTN_IMPLEMENTATION
