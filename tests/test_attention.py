"""The prompt attention: exact identity at gate 0, influence once open, the plain-mode ablation."""

import pytest
import torch
from conftest import make_backbone
from transformers import AttentionInterface

from talora.core.attention import ATTN_IMPLEMENTATION, LayerPrompts, talora_attention


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
    assert torch.equal(frozen, prompted)  # bit for bit: the closed gate adds an exact zero


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


def _reference_attention(module, q, k, v, prompt, mode, gate, scaling, allowed=None, softcap=None):
    """Straight-line math: the definition, head by head, no SDPA. ``allowed``: (B, 1, n, n) boolean,
    which input keys each query sees (default causal); ``softcap``: tanh capping of the scores."""
    b, h, n, dh = q.shape
    groups = h // k.shape[1]
    pk = module.k_proj(prompt).view(b, -1, k.shape[1], dh)
    if getattr(module, "k_norm", None) is not None:
        pk = module.k_norm(pk)
    pk, pv = pk.transpose(1, 2), module.v_proj(prompt).view(b, -1, k.shape[1], dh).transpose(1, 2)
    if allowed is None:
        allowed = torch.ones(n, n, dtype=torch.bool).tril()[None, None]
    out = torch.zeros(b, h, n, dh)
    for head in range(h):
        kv = head // groups  # the key/value head this query head reads
        s_in = (q[:, head] @ k[:, kv].transpose(-1, -2)) * scaling
        s_p = (q[:, head] @ pk[:, kv].transpose(-1, -2)) * scaling
        if softcap is not None:
            s_in, s_p = (torch.tanh(t / softcap) * softcap for t in (s_in, s_p))
        s_in = s_in.masked_fill(~allowed[:, 0], float("-inf"))
        if mode == "plain":
            w = torch.softmax(torch.cat([s_p, s_in], -1), -1)
            out[:, head] = w @ torch.cat([pv[:, kv], v[:, kv]], 1)
        else:
            prompt_part = torch.tanh(gate[head]) * (torch.softmax(s_p, -1) @ pv[:, kv])
            out[:, head] = torch.softmax(s_in, -1) @ v[:, kv] + prompt_part
    return out.transpose(1, 2)


@pytest.mark.parametrize("softcap", [None, 2.0])
@pytest.mark.parametrize("mode", ["gated", "plain"])
def test_attention_function_matches_the_definition(family_backbone, mode, softcap):
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
    # The layer's own scaling (Gemma 3: query_pre_attn_scalar ** -0.5), as its forward passes it.
    extra = {} if softcap is None else {"softcap": softcap}
    with torch.no_grad():
        out, _ = talora_attention(module, q, k, v, None, scaling=module.scaling, talora_prompts=bundle, **extra)
        ref = _reference_attention(module, q, k, v, prompt[0], mode, gate, module.scaling, softcap=softcap)
    assert torch.allclose(out, ref, atol=1e-5)


def test_a_capped_layer_without_prompts_is_the_eager_attention(family_backbone):
    """A layer that passes ``softcap`` (SDPA refuses one) gets the eager computation, prompts or not."""
    from transformers.models.gemma2.modeling_gemma2 import eager_attention_forward
    from transformers.models.llama.modeling_llama import eager_attention_forward as llama_eager

    module = family_backbone.model.get_decoder().layers[1].self_attn
    cfg = family_backbone.model.config
    gen = torch.Generator().manual_seed(3)
    q = torch.randn(2, cfg.num_attention_heads, 6, module.head_dim, generator=gen)
    k, v = (torch.randn(2, cfg.num_key_value_heads, 6, module.head_dim, generator=gen) for _ in range(2))
    causal = torch.ones(6, 6, dtype=torch.bool).tril()[None, None].expand(2, 1, 6, 6)
    additive = torch.zeros(2, 1, 6, 6).masked_fill(~causal, float("-inf"))
    with torch.no_grad():
        out, _ = talora_attention(module, q, k, v, causal, scaling=module.scaling, softcap=3.0)
        want, _ = eager_attention_forward(module, q, k, v, additive, scaling=module.scaling, softcap=3.0)
        plain, _ = talora_attention(module, q, k, v, causal, scaling=module.scaling)
        uncapped, _ = llama_eager(module, q, k, v, additive, scaling=module.scaling)
    torch.testing.assert_close(out, want, atol=1e-5, rtol=0)
    torch.testing.assert_close(plain, uncapped, atol=1e-5, rtol=0)
    assert not torch.allclose(out, plain, atol=1e-3)


@pytest.mark.parametrize("mode", ["gated", "plain"])
def test_gemma3_sliding_layers_keep_their_window_and_see_every_prompt(mode):
    """Inside the real Gemma 3 forward: a sliding-window layer hands the prompt attention its banded
    mask, which the input part keeps while every prompt vector stays visible to every token."""
    backbone = make_backbone("gemma3")
    cfg = backbone.model.config
    assert cfg.layer_types[2] == "sliding_attention" and cfg.sliding_window < 12
    ids, mask = _ids(backbone, length=12)
    seen = {}

    def spy(module, q, k, v, attention_mask, **kwargs):
        if module.layer_idx == 2:
            seen.update(module=module, q=q, k=k, v=v, mask=attention_mask, scaling=kwargs.get("scaling"))
        return talora_attention(module, q, k, v, attention_mask, **kwargs)

    prompts = _prompts(backbone, 3, gate=0.7, mode=mode)
    AttentionInterface.register(ATTN_IMPLEMENTATION, spy)
    try:
        _logits(backbone, ids, mask, prompts)
    finally:
        AttentionInterface.register(ATTN_IMPLEMENTATION, talora_attention)
    module, allowed = seen["module"], seen["mask"]
    assert seen["scaling"] == module.scaling == cfg.query_pre_attn_scalar**-0.5 != module.head_dim**-0.5
    assert allowed.dtype == torch.bool and not allowed[0, 0, 11, 11 - cfg.sliding_window]  # outside the window
    assert allowed[0, 0, 11, 11 - cfg.sliding_window + 1]
    gate = prompts.gates[0]
    with torch.no_grad():
        out, _ = talora_attention(
            module, seen["q"], seen["k"], seen["v"], allowed, scaling=module.scaling, talora_prompts=prompts
        )
        ref = _reference_attention(
            module, seen["q"], seen["k"], seen["v"], prompts.prompts[0], mode, gate, module.scaling, allowed
        )
    rows = mask.bool()  # padded query rows attend to nothing real; compare the real ones
    torch.testing.assert_close(out[rows], ref[rows], atol=1e-5, rtol=0)
