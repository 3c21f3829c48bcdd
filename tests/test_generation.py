"""Greedy generation and candidate scoring with the method's prompts, against references computed from the
model's full logits; stopping rules; evaluation over a batch that mixes every kind of task."""

from __future__ import annotations

import contextlib

import pytest
import torch
from reference_scores import full_logit_accuracy

from talora.core import predict as predict_mod
from talora.core.batching import Encoded, encode
from talora.core.predict import Verbalizer, evaluate, generate, predict
from talora.methods.base import NoPrompt
from talora.methods.prompt_tuning import PromptTuning, PromptTuningConfig
from talora.methods.talora import TALoRA, TALoRAConfig
from talora.tasks import Example, TaskSpec

TASKS = ["a", "b", "c"]


def _method(backbone, kind: str, tasks: list[str] = TASKS):
    if kind.startswith("talora"):
        attention = "plain" if kind == "talora_plain" else "gated"
        m = TALoRA(TALoRAConfig(length=4, rank=2, attention=attention), backbone, tasks)
        with torch.no_grad():
            m.u.normal_()
            m.gates.fill_(0.5)
        return m
    if kind == "prompt_tuning":
        return PromptTuning(PromptTuningConfig(length=3), backbone, TASKS)
    return NoPrompt(backbone, TASKS)


def _items(n: int = 5, seed: int = 0) -> list[Encoded]:
    gen = torch.Generator().manual_seed(seed)
    return [
        Encoded(f"x{i}", i % 3, tuple(torch.randint(2, 300, (4 + 3 * i,), generator=gen).tolist()), (), "")
        for i in range(n)
    ]


@torch.no_grad()
def _logits(backbone, m, ids: list[int], task_id: int) -> torch.Tensor:
    """Full-vocabulary logits at every position of one unpadded sequence, the method's prompts in place."""
    prompts = m.prompt_inputs(torch.tensor([task_id]))
    if prompts.input_prefix is not None:
        embeds = backbone.model.get_input_embeddings()(torch.tensor([ids]))
        embeds = torch.cat([prompts.input_prefix, embeds], 1)
        return backbone.model(inputs_embeds=embeds).logits[0, prompts.input_prefix.shape[1] :]
    return backbone.model(input_ids=torch.tensor([ids]), talora_prompts=prompts.layer_prompts).logits[0]


def _reference_generate(backbone, m, item: Encoded, limit: int) -> str:
    tok = backbone.tokenizer
    out: list[int] = []
    while len(out) < limit:
        token = int(_logits(backbone, m, list(item.prompt) + out, item.task_id)[-1].argmax())
        if token == tok.eos_token_id:
            break
        out.append(token)
        if "\n" in tok.decode(out):
            break
    return tok.decode(out).split("\n", 1)[0].strip()


@pytest.mark.parametrize("kind", ["talora", "talora_plain", "prompt_tuning", "zero_shot"])
def test_generation_equals_a_one_by_one_full_logits_loop(family_backbone, kind):
    backbone = family_backbone  # the key/value cache path on every architecture
    m = _method(backbone, kind)
    items = _items()
    limits = [6, 1, 4, 6, 3]
    got = generate(backbone, m, items, limits)
    assert got == [_reference_generate(backbone, m, e, n) for e, n in zip(items, limits)]
    assert generate(backbone, m, items, 4) == [_reference_generate(backbone, m, e, 4) for e in items]


SCRIPT = {0: "ab\ncd", 1: "abc<eos>", 2: "abcdefgh", 3: "\nxyz"}


@pytest.fixture
def scripted(monkeypatch, backbone):
    """The model says each task id's SCRIPT, one token per step, whatever the prompt; steps counted."""
    tok = backbone.tokenizer
    ids = lambda text: [tok.convert_tokens_to_ids(c) for c in text.replace("\n", "Ċ")]  # noqa: E731 (byte level)
    scripts = {
        t: ids(s.removesuffix("<eos>")) + ([tok.eos_token_id] if s.endswith("<eos>") else []) for t, s in SCRIPT.items()
    }
    steps = []

    class ScriptedDecoder:
        def __init__(self, backbone, method, rows):
            self.tasks = [e.task_id for e in rows]

        def step(self):
            steps.append(len(self.tasks))
            n = len(steps) - 1
            return [scripts[t][n] if n < len(scripts[t]) else tok.eos_token_id for t in self.tasks]

    monkeypatch.setattr(predict_mod, "GreedyDecoder", ScriptedDecoder)
    return steps


def test_generation_stops_at_newline_eos_or_budget(backbone, scripted):
    items = [Encoded(f"x{t}", t, (5, 6, 7), (), "") for t in SCRIPT]
    assert generate(backbone, NoPrompt(backbone, TASKS), items, [8, 8, 5, 8]) == ["ab", "abc", "abcde", ""]
    assert len(scripted) == 5  # the batch steps until its last row is done (the budget of 5)
    assert generate(backbone, NoPrompt(backbone, TASKS), items[:1], 0) == [""]
    assert len(scripted) == 5  # a zero budget runs nothing


@torch.no_grad()
def _reference_scores(backbone, m, item: Encoded, candidates) -> list[float]:
    scores = []
    for c in candidates:
        logp = _logits(backbone, m, list(item.prompt) + list(c), item.task_id).log_softmax(-1)
        scores.append(sum(logp[len(item.prompt) - 1 + j, t].item() for j, t in enumerate(c)))
    return scores


@pytest.mark.parametrize("kind", ["talora", "prompt_tuning"])
def test_candidate_scoring_of_every_ranked_kind(backbone, kind):
    m = _method(backbone, kind)
    words = ((40, 41), (42,), (43, 44, 45))  # multi-token label words
    bins = ((50,), (51, 52), (53,))
    verbs = {
        0: Verbalizer(("p", "q", "r"), words),
        1: Verbalizer((), (), kind="multiple_choice"),
        2: Verbalizer(("0", "1", "2"), bins, kind="regression", metric="pearson", values=(0.0, 1.0, 2.0)),
    }
    gen = torch.Generator().manual_seed(3)
    items = []
    for i in range(6):
        prompt = tuple(torch.randint(2, 300, (4 + i,), generator=gen).tolist())
        choices = tuple(tuple(torch.randint(2, 300, (1 + j % 3,), generator=gen).tolist()) for j in range(2 + i % 3))
        items.append(Encoded(f"x{i}", i % 3, prompt, (), "", candidates=choices if i % 3 == 1 else ()))
    preds = predict(backbone, m, items, verbs)
    for e, pred in zip(items, preds):
        cands = verbs[e.task_id].candidates(e)
        ref = torch.tensor(_reference_scores(backbone, m, e, cands))
        if e.task_id == 0:
            assert pred == "pqr"[int(ref.argmax())]
        elif e.task_id == 1:
            assert pred == str(int(ref.argmax())) and len(cands) == len(e.candidates)
        else:
            assert pred == pytest.approx(float(ref.softmax(-1) @ torch.tensor([0.0, 1.0, 2.0])), abs=1e-4)


def _specs() -> list[TaskSpec]:
    return [
        TaskSpec(
            "cls",
            "en",
            "classification",
            ("neg", "pos"),
            {"neg": " bad", "pos": " good"},
            "Text: {text}\nIs it:",
            "macro_f1",
        ),
        TaskSpec("mc", "en", "multiple_choice", (), {}, "{context}\nQ: {question}\nA:", "accuracy"),
        TaskSpec(
            "sts",
            "en",
            "regression",
            ("0", "1", "2"),
            {"0": " 0", "1": " 1", "2": " 2"},
            "{text_a} / {text_b}:",
            "pearson",
        ),
        TaskSpec(
            "qa",
            "zh",
            "extraction",
            (),
            {},
            "文章：{context}\n答案：",
            "span_f1",
            span_field="context",
            max_new_tokens=3,
        ),
    ]


def _examples(i: int) -> list[Example]:
    return [
        Example(f"cls/validation/{i}", "cls", {"text": "the movie was good" * (1 + i % 3)}, ("neg", "pos")[i % 2]),
        Example(
            f"mc/validation/{i}",
            "mc",
            {"context": "the food", "question": "how?", "choices": ["good", "bad", "ok"]},
            str(i % 3),
        ),
        Example(f"sts/validation/{i}", "sts", {"text_a": "a" * (i + 1), "text_b": "b"}, f"{i * 0.4:.1f}"),
        Example(
            f"qa/validation/{i}",
            "qa",
            {"context": "北京是首都" * (1 + i % 2), "answer_start": 0},
            "北京",
            ("北京", "北京市"),
        ),
    ]


def test_evaluate_mixes_every_kind_inside_the_methods_context(backbone, monkeypatch):
    specs = _specs()
    m = _method(backbone, "talora", [s.name for s in specs])
    items = [encode(specs[t], ex, backbone.tokenizer, 64, t) for i in range(5) for t, ex in enumerate(_examples(i))]
    verbs = {t: Verbalizer.of(s, backbone.tokenizer) for t, s in enumerate(specs)}
    inside = []

    @contextlib.contextmanager
    def applied(backbone):
        inside.append(True)
        yield
        inside.pop()

    real = predict_mod.hidden_at

    def checked(*args, **kwargs):
        assert inside, "the model ran outside method.applied()"
        return real(*args, **kwargs)

    monkeypatch.setattr(m, "applied", applied)
    monkeypatch.setattr(predict_mod, "hidden_at", checked)
    results = evaluate(backbone, m, items, verbs, batch_size=3)
    assert set(results) == {"cls", "mc", "sts", "qa"}
    for s in specs:
        assert s.metric in results[s.name], s.name
    assert set(results["qa"]) == {"span_f1", "exact_match"} and set(results["sts"]) == {"pearson", "spearman"}
    cls, mc = ([e for e in items if e.task_id == t] for t in (0, 1))
    assert results["cls"]["accuracy"] == pytest.approx(
        full_logit_accuracy(backbone, m, cls, verbs[0].words, ["neg", "pos"])
    )
    assert results["mc"]["accuracy"] == pytest.approx(full_logit_accuracy(backbone, m, mc))
    # batching and ordering do not change anything
    again = evaluate(backbone, m, items[::-1], verbs, batch_size=32)
    assert {t: pytest.approx(v, abs=1e-4) for t, v in results.items()} == again
