"""The real Gemma 3 270M (``--model gemma3-270m``, from the talora[gemma] packages). Marked slow; skipped
when the packages are not installed (nothing else in the suite needs them)."""

import importlib.util

import pytest
import torch

from talora.core.attention import LayerPrompts
from talora.core.backbone import GEMMA3_270M_ID, GEMMA3_270M_PACKAGES, load_backbone
from talora.recipes.plan import ModelShape, meta_backbone, model_config

MISSING = [name for module, name, _ in GEMMA3_270M_PACKAGES if importlib.util.find_spec(module) is None]
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(bool(MISSING), reason=f"needs {', '.join(MISSING)} (pip install talora[gemma])"),
]


@pytest.fixture(scope="module")
def gemma():
    return load_backbone("gemma3-270m")


def test_the_loaded_model_has_the_shapes_talora_plan_reads(gemma):
    assert gemma.model_id == GEMMA3_270M_ID and type(gemma.model).__name__ == "Gemma3ForCausalLM"
    config, _ = model_config("gemma3-270m")
    planned = ModelShape.of(meta_backbone(config, "gemma3-270m", torch.float32))
    assert ModelShape.of(gemma) == planned
    for field in ("query_pre_attn_scalar", "sliding_window", "layer_types", "rope_parameters"):
        assert getattr(gemma.model.config, field) == getattr(config, field), field
    assert not any(p.requires_grad for p in gemma.model.parameters())


def test_gate_zero_is_the_frozen_gemma3_270m(gemma):
    ids = gemma.tokenizer(["Review: a wonderful film.\nSentiment:"], return_tensors="pt")
    cfg = gemma.model.config
    layers, first = 9, cfg.num_hidden_layers - 9
    prompts = torch.randn(layers, 1, 10, cfg.hidden_size, generator=torch.Generator().manual_seed(0))
    closed = LayerPrompts(prompts, torch.zeros(layers, cfg.num_attention_heads), first)
    opened = LayerPrompts(prompts, torch.full((layers, cfg.num_attention_heads), 0.5), first)
    with torch.no_grad():
        frozen = gemma.model(**ids).logits
        at_zero = gemma.model(**ids, talora_prompts=closed).logits
        at_half = gemma.model(**ids, talora_prompts=opened).logits
    assert torch.equal(frozen, at_zero)
    assert (frozen - at_half).abs().max() > 1e-2
