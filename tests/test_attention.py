"""The prompt attention: exact identity at gate 0, influence once open, the plain-mode ablation."""

import math

import pytest
import torch
from conftest import make_backbone

from talora.attention import LayerPrompts, talora_attention


def _ids(backbone, batch=3, length=12, seed=1):
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(2, 300, (batch, length), generator=gen)
    mask = torch.ones_like(ids)
    mask[1, length - 4 :] = 0  # one right-padded row
    return ids, mask


def _logits(backbone, ids, mask, prompts=None):
    with torch.no_grad():
        return backbone.model(input_ids=ids, attention_mask=mask, talora_prompts=prompts).logits


def _prompts(backbone, batch, first=2, gate=0.0, mode="gated", m=5, seed=2):
    cfg = backbone.model.config
    layers = cfg.num_hidden_layers - first
    gen = torch.Generator().manual_seed(seed)
    p = torch.randn(layers, batch, m, cfg.hidden_size, generator=gen)
    gates = torch.full((layers, cfg.num_attention_heads), gate)
    return LayerPrompts(p, gates, first, mode)


def test_gate_zero_is_the_frozen_model(family_backbone):
    ids, mask = _ids(family_backbone)
    frozen = _logits(family_backbone, ids, mask)
    prompted = _logits(family_backbone, ids, mask, _prompts(family_backbone, 3, gate=0.0))
    assert torch.allclose(frozen, prompted, atol=1e-5, rtol=0)


def test_open_gate_lets_the_prompt_in(family_backbone):
    ids, mask = _ids(family_backbone)
    frozen = _logits(family_backbone, ids, mask)
    prompted = _logits(family_backbone, ids, mask, _prompts(family_backbone, 3, gate=0.5))
    assert (frozen - prompted).abs().max() > 1e-3
    # Layers below the first prompted one are untouched: a prompt only on the last layer changes less.
    top_only = _logits(family_backbone, ids, mask, _prompts(family_backbone, 3, first=3, gate=0.5))
    assert not torch.allclose(top_only, prompted)


def test_per_example_gates_match_shared_gates():
    backbone = make_backbone("qwen3")
    ids, mask = _ids(backbone)
    shared = _prompts(backbone, 3, gate=0.3)
    per_example = LayerPrompts(shared.prompts, shared.gates[:, None].expand(-1, 3, -1).clone(), 2)
    assert torch.allclose(_logits(backbone, ids, mask, shared), _logits(backbone, ids, mask, per_example), atol=1e-6)


def _reference_attention(module, q, k, v, prompt, mode, gate):
    """Straight-line math: the definition, head by head, no SDPA."""
    b, h, n, dh = q.shape
    groups = h // k.shape[1]
    pk = module.k_proj(prompt).view(b, -1, k.shape[1], dh)
    if getattr(module, "k_norm", None) is not None:
        pk = module.k_norm(pk)
    pk, pv = pk.transpose(1, 2), module.v_proj(prompt).view(b, -1, k.shape[1], dh).transpose(1, 2)
    k, v, pk, pv = (t.repeat_interleave(groups, 1) for t in (k, v, pk, pv))
    causal = torch.ones(n, n, dtype=torch.bool).tril()
    s_in = (q @ k.transpose(-1, -2)) / math.sqrt(dh)
    s_in = s_in.masked_fill(~causal, float("-inf"))
    s_p = (q @ pk.transpose(-1, -2)) / math.sqrt(dh)
    if mode == "plain":
        w = torch.softmax(torch.cat([s_p, s_in], -1), -1)
        out = w @ torch.cat([pv, v], 2)
    else:
        out = torch.softmax(s_in, -1) @ v + torch.tanh(gate)[None, :, None, None] * (torch.softmax(s_p, -1) @ pv)
    return out.transpose(1, 2)


@pytest.mark.parametrize("mode", ["gated", "plain"])
def test_attention_function_matches_the_definition(family_backbone, mode):
    module = family_backbone.model.get_decoder().layers[3].self_attn
    cfg = family_backbone.model.config
    dh = module.head_dim
    gen = torch.Generator().manual_seed(0)
    q = torch.randn(2, cfg.num_attention_heads, 7, dh, generator=gen)
    k = torch.randn(2, cfg.num_key_value_heads, 7, dh, generator=gen)
    v = torch.randn(2, cfg.num_key_value_heads, 7, dh, generator=gen)
    prompt = torch.randn(1, 2, 4, cfg.hidden_size, generator=gen)
    gate = torch.linspace(-1, 1, cfg.num_attention_heads)
    bundle = LayerPrompts(prompt, gate[None], first_layer=3, mode=mode)
    with torch.no_grad():
        out, _ = talora_attention(module, q, k, v, None, scaling=dh**-0.5, talora_prompts=bundle)
        ref = _reference_attention(module, q, k, v, prompt[0], mode, gate)
    assert torch.allclose(out, ref, atol=1e-5)
