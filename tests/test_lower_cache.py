"""The lower-layer shortcut and its on-disk cache change nothing but the time."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import FAMILIES, make_backbone, tiny_config, tiny_tokenizer
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten
from transformers import AutoModelForCausalLM

from talora.core.backbone import Backbone, freeze
from talora.core.batching import Encoded, answer_batch
from talora.core.forward import answer_loss, lower_states
from talora.core.lower_cache import LowerLayerCache, LowerLayerCaches, weights_digest
from talora.methods.talora import TALoRA, TALoRAConfig

TASKS = ["a", "b"]


def _items(tokenizer) -> list[Encoded]:
    texts = [
        "the movie was wonderful",
        "the food was awful and the service was slow",
        "is a dog an animal?",
        "great product",
    ]
    items = []
    for i, text in enumerate(texts):
        ids = tokenizer(text)["input_ids"]
        answer = tokenizer(" positive", add_special_tokens=False)["input_ids"]
        items.append(Encoded(f"u{i}", i % 2, tuple(ids), tuple(answer), "positive"))
    return items


def _loss_and_grads(backbone, method, batch, lower=None):
    method.zero_grad(set_to_none=True)
    loss = answer_loss(backbone, method, batch, lower)
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in method.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("family", FAMILIES)
def test_shortcut_and_cache_match_the_full_forward(family, tmp_path, monkeypatch):
    monkeypatch.setenv("TALORA_CACHE", str(tmp_path))
    backbone = make_backbone(family)
    method = TALoRA(TALoRAConfig(length=3, rank=2, layers=2), backbone, TASKS)
    with torch.no_grad():
        method.u.normal_()
        method.gates.fill_(0.5)  # open gates, so the prompts matter
    batch = answer_batch(_items(backbone.tokenizer), backbone.tokenizer.pad_token_id)
    assert method.frozen_below == 2

    first = method.frozen_below
    method.frozen_below = 0  # the plain path: every layer in one forward
    reference = _loss_and_grads(backbone, method, batch)
    method.frozen_below = first
    shortcut = _loss_and_grads(backbone, method, batch)
    lower = LowerLayerCaches(backbone)
    cold = _loss_and_grads(backbone, method, batch, lower)
    warm = _loss_and_grads(backbone, method, batch, lower)
    cache = lower.layer(first)
    assert (cache.misses, cache.hits) == (4, 4)
    for other in (shortcut, cold, warm):
        torch.testing.assert_close(other[0], reference[0], atol=1e-5, rtol=0)
        assert other[1].keys() == reference[1].keys() == {"theta0", "B", "u", "v", "gates"}
        for name in reference[1]:
            torch.testing.assert_close(other[1][name], reference[1][name], atol=1e-5, rtol=1e-5)


def test_cache_survives_a_torn_index_and_detects_corruption(tmp_path):
    backbone = make_backbone("llama")
    tok = backbone.tokenizer
    ids = torch.tensor([tok("the movie was wonderful")["input_ids"]])
    mask = torch.ones_like(ids)
    compute = lambda i, m: lower_states(backbone, i, m, 2)  # noqa: E731
    folder, hidden = tmp_path / "L2", backbone.model.config.hidden_size
    cache = LowerLayerCache(folder, hidden)
    expected = cache.states(ids, mask, compute)
    torch.testing.assert_close(expected, lower_states(backbone, ids, mask, 2))

    with open(cache.index_path, "a") as fh:  # an append interrupted mid-line
        fh.write('{"key": "abc", "off')
    again = LowerLayerCache(folder, hidden)
    assert len(again.index) == 1
    assert torch.equal(again.states(ids, mask, compute), expected) and again.hits == 1

    data = bytearray(cache.data_path.read_bytes())  # flip bytes inside the stored rows
    data[8:12] = b"\xff\xff\xff\x7f"
    cache.data_path.write_bytes(bytes(data))
    damaged = LowerLayerCache(folder, hidden)
    assert torch.equal(damaged.states(ids, mask, compute), expected)
    assert (damaged.hits, damaged.misses) == (0, 1)  # the CRC caught it; recomputed, not read
    lines = [json.loads(line) for line in cache.index_path.read_text().splitlines() if line.endswith("}")]
    assert len(lines) == 2  # the recomputed entry was appended, nothing rewritten in place
    assert all(cache.index_path.read_text().splitlines())  # no blank lines: a newline only after a torn one


def test_another_checkpoint_of_the_same_shape_gets_its_own_cache(tmp_path):
    a, b = make_backbone("llama", seed=0), make_backbone("llama", seed=1)
    assert a.fingerprint == b.fingerprint
    assert weights_digest(a) != weights_digest(b)
    assert LowerLayerCaches(a, tmp_path).layer(2).folder != LowerLayerCaches(b, tmp_path).layer(2).folder


class _WidestVocabRows(TorchDispatchMode):
    """Records the most rows any computed tensor with a last dimension of ``vocab`` had (logits-shaped);
    views of the output head's own weight (its transpose, d x vocab) are not computed logits."""

    def __init__(self, weight: torch.Tensor):
        super().__init__()
        self.vocab, self.weight, self.rows = weight.shape[0], weight.untyped_storage().data_ptr(), 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor) and t.dim() and t.shape[-1] == self.vocab:
                if t.untyped_storage().data_ptr() != self.weight:
                    self.rows = max(self.rows, t.numel() // self.vocab)
        return out


def test_gemma3_vocabulary_logits_only_at_answer_positions(tmp_path):
    """Gemma 3's 262,144-token vocabulary: the loss, its backward and a cached pass make logits at the
    answer positions only (never batch x sequence x vocabulary), and agree with the full model's logits."""
    cfg = tiny_config("gemma3")
    cfg.vocab_size = 262_144
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(cfg, attn_implementation="sdpa")
    backbone = freeze(Backbone(model, tiny_tokenizer(), "tiny-gemma3-262k"))
    assert model.get_output_embeddings().weight is model.get_input_embeddings().weight
    method = TALoRA(TALoRAConfig(length=3, rank=2, layers=2), backbone, TASKS)
    with torch.no_grad():
        method.u.normal_()
        method.gates.fill_(0.5)
    items = _items(backbone.tokenizer)
    batch = answer_batch(items, backbone.tokenizer.pad_token_id)
    answer_tokens, positions = len(batch.targets), batch.input_ids.numel()
    assert positions > 2 * answer_tokens
    lower = LowerLayerCaches(backbone, tmp_path)
    for cache in (None, lower, lower):  # plain, cold, warm
        spy = _WidestVocabRows(model.get_output_embeddings().weight)
        with spy:
            loss = answer_loss(backbone, method, batch, cache)
            loss.backward()
        assert 0 < spy.rows <= answer_tokens
    assert (lower.layer(method.frozen_below).hits, lower.layer(method.frozen_below).misses) == (4, 4)
    with torch.no_grad():
        prompts = method.prompt_inputs(batch.task_ids).layer_prompts
        logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask, talora_prompts=prompts).logits
        want = torch.nn.functional.cross_entropy(logits[batch.rows, batch.cols], batch.targets)
    torch.testing.assert_close(loss.detach(), want, atol=1e-5, rtol=1e-5)
