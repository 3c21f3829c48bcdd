"""Ranking multi-token candidates from each prompt's key/value cache gives the scores of the reference that runs
every (example, candidate) pair in full, for every way a method changes the model, on every architecture; and
predictions and evaluation over a batch that mixes every kind of task are unchanged."""

from __future__ import annotations

import contextlib

import pytest
import torch
from conftest import FAMILIES, make_backbone
from reference_scores import score_candidates_by_expansion
from test_generation import _examples, _specs

from talora.core import predict as predict_mod
from talora.core.batching import Encoded, encode
from talora.core.predict import Verbalizer, evaluate, predict, score_candidates
from talora.methods.attempt import ATTEMPT, ATTEMPTConfig
from talora.methods.base import NoPrompt
from talora.methods.deep_prompt_tuning import DeepPromptTuning, DeepPromptTuningConfig
from talora.methods.lora import LoRA, LoRAConfig
from talora.methods.prompt_tuning import PromptTuning, PromptTuningConfig
from talora.methods.talora import TALoRA, TALoRAConfig

TASKS = ["a", "b", "c"]
KINDS = ["talora", "talora_plain", "deep_prompt_tuning", "prompt_tuning", "attempt", "zero_shot", "lora"]
# Label words of different lengths, three of them sharing their first token.
WORDS = ((40, 41), (40, 42, 43), (44,), (40, 41, 45, 46))


def _method(backbone, kind: str, tasks: list[str] = TASKS):
    gen = torch.Generator().manual_seed(5)
    if kind.startswith("talora"):
        attention = "plain" if kind == "talora_plain" else "gated"
        m = TALoRA(TALoRAConfig(length=4, rank=2, attention=attention), backbone, tasks)
        with torch.no_grad():  # opened gates and distinct task vectors, so the prompts change the scores
            m.u.normal_(generator=gen)
            m.gates.fill_(0.5)
        return m
    if kind == "deep_prompt_tuning":  # per-example gates (L, B, H), unlike TA-LoRA's shared ones
        m = DeepPromptTuning(DeepPromptTuningConfig(length=4, layers=2), backbone, tasks)
        with torch.no_grad():
            m.gates.normal_(generator=gen)
        return m
    if kind == "prompt_tuning":
        return PromptTuning(PromptTuningConfig(length=3), backbone, tasks)
    if kind == "attempt":
        m = ATTEMPT(ATTEMPTConfig(length=4, temperature=0.5), backbone, tasks)
        m.init_from_stage1(m.stage1(backbone))
        with torch.no_grad():  # distinct sources, so the mixture depends on the input
            m.source_prompts.normal_(generator=gen)
        return m
    if kind == "lora":
        m = LoRA(LoRAConfig(rank=2), backbone, tasks)
        with torch.no_grad():  # B starts at zero (the frozen model); a random B changes the weights
            for name, p in m.named_parameters():
                if "lora_B" in name:
                    p.normal_(generator=gen)
        return m
    return NoPrompt(backbone, tasks)


def _batch(seed: int = 0) -> tuple[list[Encoded], list[tuple[tuple[int, ...], ...]]]:
    """Prompts of different lengths (so left padding varies); task 1 is multiple choice with 2 to 5 choices of 1 to
    3 tokens, some sharing a first token; the others rank WORDS."""
    gen = torch.Generator().manual_seed(seed)
    items, candidates = [], []
    for i in range(7):
        prompt = tuple(torch.randint(2, 300, (3 + 2 * i,), generator=gen).tolist())
        items.append(Encoded(f"x{i}", i % 3, prompt, (), ""))
        if i % 3 == 1:
            choices = [tuple(torch.randint(2, 300, (1 + j % 3,), generator=gen).tolist()) for j in range(2 + i % 4)]
            choices[-1] = (choices[0][0], *choices[-1])  # shares the first choice's first token
            candidates.append(tuple(choices))
        else:
            candidates.append(WORDS)
    return items, candidates


@torch.no_grad()
def _both(backbone, m, items, candidates):
    with m.applied(backbone):
        got = score_candidates(backbone, m, items, candidates)
        return got, score_candidates_by_expansion(backbone, m, items, candidates)


def _assert_close(got, want):
    assert [len(s) for s in got] == [len(s) for s in want]
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, atol=1e-4, rtol=0)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("family", FAMILIES)
def test_scores_from_the_prompt_cache_equal_the_expanded_reference(family, kind):
    backbone = make_backbone(family)
    m = _method(backbone, kind)
    items, candidates = _batch()
    got, want = _both(backbone, m, items, candidates)
    _assert_close(got, want)
    assert all(torch.all(s < 0) for s in got)  # summed log-probabilities, not logits
    if kind != "zero_shot":  # the method's prompts (or weights) are in place on both paths
        frozen = _both(backbone, NoPrompt(backbone, TASKS), items, candidates)[1]
        assert not all(torch.allclose(g, f, atol=1e-3) for g, f in zip(got, frozen))


def test_scores_do_not_depend_on_how_examples_are_grouped(monkeypatch):
    backbone = make_backbone("llama")
    m = _method(backbone, "attempt")  # the input-dependent prompts must not see a neighbour's tokens
    items, candidates = _batch(seed=1)
    whole = _both(backbone, m, items, candidates)[0]
    monkeypatch.setattr(predict_mod, "RANK_ROWS", 3)  # groups of one or two examples; task 1's 5 choices alone
    got, want = _both(backbone, m, items, candidates)
    _assert_close(got, want)
    _assert_close(got, whole)
    assert [len(g) for g in predict_mod._rank_groups(candidates)] == [1, 1, 1, 1, 1, 1, 1]


def test_one_token_candidates_that_share_a_token_and_empty_ones():
    backbone = make_backbone("qwen3")
    m = _method(backbone, "talora")
    items, _ = _batch()
    # Not the one-token fast path (a repeated token); nothing to feed after the prompt.
    candidates = [((40,), (40,), (41,))] * len(items)
    _assert_close(*_both(backbone, m, items, candidates))
    candidates = [((40,), (), (41, 42))] * len(items)
    got, want = _both(backbone, m, items, candidates)
    _assert_close(got, want)
    assert all(s[1] == 0 for s in got)


def test_label_words_sharing_their_first_tokens_share_a_feed():
    # WORDS less their last tokens: (40, 41, 45) holds (40,), so (40, 41) reads its row; (40, 42) stands
    # alone; (44,) needs no second pass. Two feeds, where one per candidate would be four.
    feeds, home = predict_mod._continuations([WORDS, ((7,), (8, 9))])
    assert feeds == [(0, (40, 41, 45)), (0, (40, 42)), (1, (8,))]
    assert home == [0, 1, -1, 0, -1, 2]


@pytest.mark.parametrize("kind", ["talora", "attempt"])
def test_predict_and_evaluate_are_unchanged_on_a_mixed_batch(monkeypatch, kind):
    backbone = make_backbone("llama")
    specs = _specs()
    m = _method(backbone, kind, [s.name for s in specs])
    items = [encode(specs[t], ex, backbone.tokenizer, 64, t) for i in range(5) for t, ex in enumerate(_examples(i))]
    verbs = {t: Verbalizer.of(s, backbone.tokenizer) for t, s in enumerate(specs)}
    assert any(len(w) > 1 for w in verbs[0].words)  # the path under test, not the one-token one
    inside = []

    @contextlib.contextmanager
    def applied(backbone):
        inside.append(True)
        yield
        inside.pop()

    real = predict_mod._score_after_prompt

    def checked(*args, **kwargs):
        assert inside, "the model ran outside method.applied()"
        return real(*args, **kwargs)

    monkeypatch.setattr(m, "applied", applied)
    monkeypatch.setattr(predict_mod, "_score_after_prompt", checked)
    with torch.no_grad(), m.applied(backbone):
        preds = predict(backbone, m, items, verbs)
    results = evaluate(backbone, m, items, verbs, batch_size=3)
    monkeypatch.setattr(predict_mod, "score_candidates", score_candidates_by_expansion)
    with torch.no_grad(), m.applied(backbone):
        ref_preds = predict(backbone, m, items, verbs)
    ref_results = evaluate(backbone, m, items, verbs, batch_size=3)
    assert preds == [pytest.approx(p, abs=1e-4) if isinstance(p, float) else p for p in ref_preds]
    assert {t: pytest.approx(v, abs=1e-4) for t, v in ref_results.items()} == results
