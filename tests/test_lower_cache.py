"""The lower-layer shortcut and its on-disk cache change nothing but the time."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import make_backbone

from talora.batching import Encoded, answer_batch
from talora.forward import answer_loss, lower_states
from talora.lower_cache import LowerLayerCache, LowerLayerCaches, weights_digest
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


@pytest.mark.parametrize("family", ["llama", "qwen2", "qwen3"])
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
