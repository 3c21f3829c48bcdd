"""Device and precision: a half-precision frozen model with float32 master weights, adapters that
move between bfloat16 and float32, gradient checkpointing and the lower-layer cache per dtype."""

from __future__ import annotations

import pytest
import torch
from conftest import make_backbone
from reference_scores import adapter_accuracy
from safetensors.torch import load_file

from talora.config import RunConfig, TrainConfig
from talora.core.backbone import load_backbone, resolve_dtype
from talora.core.batching import Encoded, answer_batch
from talora.core.forward import answer_loss
from talora.core.lower_cache import LowerLayerCaches
from talora.errors import ConfigError
from talora.methods.talora import TALoRA, TALoRAConfig
from talora.recipes import pipeline

SOURCES = ["movie_sentiment", "news_topic"]


def _items(tokenizer) -> list[Encoded]:
    texts = ["the movie was wonderful", "the food was awful and the service was slow", "is a dog an animal?"]
    answer = tuple(tokenizer(" positive", add_special_tokens=False)["input_ids"])
    return [Encoded(f"u{i}", i % 2, tuple(tokenizer(t)["input_ids"]), answer, "positive") for i, t in enumerate(texts)]


def _method(backbone) -> TALoRA:
    method = TALoRA(TALoRAConfig(length=3, rank=2, layers=2), backbone, ["a", "b"]).placed(backbone)
    with torch.no_grad():
        method.u.normal_()
        method.gates.fill_(0.5)
    return method


def test_auto_dtype_is_float32_on_cpu_and_a_missing_gpu_is_refused():
    assert resolve_dtype("auto", torch.device("cpu")) == torch.float32
    assert resolve_dtype("bfloat16", torch.device("cpu")) == torch.bfloat16
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="no such CUDA device"):
            load_backbone("tiny", device="cuda")


@pytest.mark.parametrize("family", ["llama", "gemma3"])
def test_bf16_backbone_keeps_float32_masters_and_close_loss(family):
    fp32 = make_backbone(family)
    bf16 = make_backbone(family)
    bf16.model.to(torch.bfloat16)
    batch = answer_batch(_items(fp32.tokenizer), fp32.tokenizer.pad_token_id)
    a, b = _method(fp32), _method(bf16)
    b.load_state_dict(a.state_dict())
    assert all(p.dtype == torch.float32 for p in b.parameters())
    loss_a, loss_b = answer_loss(fp32, a, batch), answer_loss(bf16, b, batch)
    loss_b.backward()
    assert loss_b.dtype == torch.float32 and all(
        p.grad is None or p.grad.dtype == torch.float32 for p in b.parameters()
    )
    assert b.u.grad is not None and torch.isfinite(b.u.grad).all()
    torch.testing.assert_close(loss_b, loss_a, rtol=5e-2, atol=5e-2)


@pytest.mark.parametrize("family", ["llama", "qwen3", "gemma3"])
def test_gradient_checkpointing_changes_nothing_but_memory(family):
    backbone = make_backbone(family)
    method = _method(backbone)
    batch = answer_batch(_items(backbone.tokenizer), backbone.tokenizer.pad_token_id)
    grads = []
    for checkpoint in (False, True):
        method.zero_grad(set_to_none=True)
        loss = answer_loss(backbone, method, batch, checkpoint=checkpoint)
        loss.backward()
        grads.append((loss.detach(), {n: p.grad.clone() for n, p in method.named_parameters() if p.grad is not None}))
    torch.testing.assert_close(grads[1][0], grads[0][0])
    assert grads[1][1].keys() == grads[0][1].keys() and grads[0][1]
    for name in grads[0][1]:
        torch.testing.assert_close(grads[1][1][name], grads[0][1][name], rtol=1e-5, atol=1e-6)


def test_lower_layer_cache_keys_and_stores_the_compute_dtype(tmp_path):
    backbone = make_backbone("llama")
    backbone.model.to(torch.bfloat16)
    method = _method(backbone)
    batch = answer_batch(_items(backbone.tokenizer), backbone.tokenizer.pad_token_id)
    lower = LowerLayerCaches(backbone, tmp_path)
    with torch.no_grad():
        plain = answer_loss(backbone, method, batch)
        cold = answer_loss(backbone, method, batch, lower)
        warm = answer_loss(backbone, method, batch, lower)
    cache = lower.layer(method.frozen_below)
    assert cache.folder.name.endswith("-bfloat16") and cache.data_path.name == "states.bfloat16"
    assert (cache.hits, cache.misses) == (3, 3)
    assert torch.equal(cold, plain) and torch.equal(warm, plain)


@pytest.mark.parametrize("train_dtype, eval_dtype", [("bfloat16", "float32"), ("float32", "bfloat16")])
def test_an_adapter_moves_between_bf16_and_fp32(tiny_models, tmp_path, train_dtype, eval_dtype):
    short = TrainConfig(steps=3, batch_size=4, warmup_steps=1, eval_every=0, eval_examples=4, log_every=1)
    cfg = RunConfig(
        method="talora",
        model="tiny",
        dtype=train_dtype,
        tasks=SOURCES,
        max_length=48,
        train_examples=12,
        validation_examples=6,
        method_args={"length": 2, "layers": 2},
        stage1=short,
        train=short,
    )
    pipeline.run_train(cfg, tmp_path / "src")
    tensors = load_file(tmp_path / "src" / "adapter.safetensors")
    assert all(t.dtype == torch.float32 for t in tensors.values())  # master weights, whatever the backbone
    here = pipeline.run_eval(tmp_path / "src", SOURCES[0], "validation", placement={"dtype": train_dtype})
    there = pipeline.run_eval(tmp_path / "src", SOURCES[0], "validation", placement={"dtype": eval_dtype})
    assert there["examples"] == here["examples"] > 0
    # Half-precision rounding may flip near-ties on a random model; most predictions must agree.
    assert abs(there["metrics"]["accuracy"] - here["metrics"]["accuracy"]) <= 0.15
    res = pipeline.run_transfer(
        tmp_path / "src", "tweet_emotion", 2, 0, tmp_path / "tgt", placement={"dtype": eval_dtype}
    )
    by_hand = adapter_accuracy(tiny_models["tiny"], tmp_path / "tgt", "tweet_emotion", "test", 48, res["examples"])
    assert res["score"] == pytest.approx(by_hand, abs=1e-9 if eval_dtype == "float32" else 0.15)  # by hand: float32


def test_ranking_and_generation_run_on_a_bf16_model():
    from reference_scores import score_candidates_by_expansion

    from talora.core.predict import generate, score_candidates

    backbone = make_backbone("qwen3")
    backbone.model.to(torch.bfloat16)
    method = _method(backbone)
    tok = backbone.tokenizer
    items = _items(tok)
    words = [tuple(tok(w, add_special_tokens=False)["input_ids"]) for w in (" good movie", " bad food", " same")]
    fast = score_candidates(backbone, method, items, [tuple(words)] * len(items))
    slow = score_candidates_by_expansion(backbone, method, items, [tuple(words)] * len(items))
    for a, b in zip(fast, slow):
        assert a.dtype == torch.float32 and a.device.type == "cpu"
        torch.testing.assert_close(a, b, rtol=5e-2, atol=0.1)  # bf16 rounding differs between the two paths
    texts = generate(backbone, method, items, 3)
    assert len(texts) == len(items) and all(isinstance(t, str) for t in texts)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA")
@pytest.mark.parametrize(
    "flags, message",
    [
        (["--device", "cuda"], "no such CUDA device"),
        (["--dtype", "float8"], "float8"),
        (["--device", "tpu"], "tpu"),
    ],
)
def test_placement_errors_are_one_line_and_write_nothing(tiny_models, tmp_path, capsys, flags, message):
    from talora.cli import main

    out, cfg = tmp_path / "out", tmp_path / "cfg.yaml"
    cfg.write_text("method: prompt_tuning\nmodel: tiny\ntrain: {steps: 1}\n")
    code = main(["train", "--config", str(cfg), "--output", str(out), *flags])
    err = capsys.readouterr().err.strip()
    assert code == 2 and message in err and len(err.splitlines()) == 1 and err.startswith("talora: error:"), err
    assert not out.exists()
