"""The evidence a score stands on: which lines are scored (a seeded, stratified sample, the same for every
method and seed of a sweep, never the first N), how label words are compared (sum, mean, calibrated,
each against a value computed by hand from the model's full logits), and what every unit records."""

from __future__ import annotations

import json
import math
from collections import Counter

import pytest
import torch
from conftest import write_tiny_sweep

from talora import tasks as T
from talora.core.batching import encode
from talora.core.predict import CONTENT_FREE, Verbalizer, label_priors, predict
from talora.methods.base import NoPrompt
from talora.recipes.sweep import run_sweep
from talora.tasks import Example, TaskSpec


def _grouped(n_a: int, n_b: int) -> list[Example]:
    """A split grouped by label, as five shared files once were: every 'a' line first."""
    return [Example(f"t/validation/{i}", "t", {"text": str(i)}, "a" if i < n_a else "b") for i in range(n_a + n_b)]


def test_scored_lines_are_a_stratified_sample_never_the_first_lines():
    examples = _grouped(300, 100)
    index = T.scored_sample(examples, 40, 0, ("a", "b"))
    assert index != list(range(40)) and index == sorted(index) and len(set(index)) == 40
    assert Counter(examples[i].label for i in index) == {"a": 30, "b": 10}  # the split's 3:1, exactly
    assert T.scored_sample(examples, 40, 0, ("a", "b")) == index  # seeded: the same lines every time
    assert T.scored_sample(examples, 40, 1, ("a", "b")) != index
    assert T.scored_sample(examples, 0, 0) == list(range(400)) == T.scored_sample(examples, 999, 0)
    unstratified = T.scored_sample(examples, 40, 0)
    assert len(unstratified) == 40 and unstratified != list(range(40))


def test_a_rare_class_keeps_a_line_and_quotas_add_up():
    examples = _grouped(997, 3)
    index = T.scored_sample(examples, 10, 0, ("a", "b"))
    assert len(index) == 10 and Counter(examples[i].label for i in index) == {"a": 9, "b": 1}


SPEC = TaskSpec(
    "t",
    "en",
    "classification",
    ("neg", "pos"),
    {"neg": " bad", "pos": " very good"},
    "Text: {text}\nIs it:",
    "accuracy",
)


def _logprob(backbone, prompt: list[int], answer: list[int]) -> float:
    """log P(answer | prompt) from one full forward of the frozen model: the hand-computed reference."""
    ids = torch.tensor([prompt + answer])
    with torch.no_grad():
        logits = backbone.model(input_ids=ids).logits[0].float().log_softmax(-1)
    return sum(float(logits[len(prompt) - 1 + j, tok]) for j, tok in enumerate(answer))


def test_each_label_scoring_mode_against_a_hand_computed_value(backbone):
    tok = backbone.tokenizer
    ex = Example("t/validation/0", "t", {"text": "the film was long"}, "pos")
    words = [tok(SPEC.label_words[lab], add_special_tokens=False)["input_ids"] for lab in SPEC.labels]
    assert len(words[0]) != len(words[1])  # the modes differ only when the label words differ in length
    item = encode(SPEC, ex, tok, 64, 0)
    sums = [_logprob(backbone, list(item.prompt), w) for w in words]
    cf_probs = []
    for filler in CONTENT_FREE:
        prompt = tok(SPEC.template.format(text=filler))["input_ids"]
        cf = [math.exp(_logprob(backbone, prompt, w)) for w in words]
        cf_probs.append([p / sum(cf) for p in cf])
    prior = [math.log(sum(ps[i] for ps in cf_probs) / len(cf_probs)) for i in range(2)]
    z = math.log(sum(math.exp(s) for s in sums))
    expected = {
        "sum": sums,
        "mean": [s / len(w) for s, w in zip(sums, words)],
        "calibrated": [s - z - p for s, p in zip(sums, prior)],
    }
    method = NoPrompt(backbone, ["t"])
    for mode, want in expected.items():
        verb = Verbalizer.of(SPEC, tok, mode, 64)
        priors = label_priors(backbone, method, {0: verb}, [0])
        got = verb.adjust(predict_scores(backbone, method, item, verb), verb.words, priors.get(0))
        assert got.tolist() == pytest.approx(want, abs=1e-4), mode
        assert predict(backbone, method, [item], {0: verb}) == [SPEC.labels[max(range(2), key=want.__getitem__)]]


def predict_scores(backbone, method, item, verb):
    from talora.core.predict import score_candidates

    return score_candidates(backbone, method, [item], [verb.candidates(item)])[0]


def test_an_unknown_scoring_mode_is_refused(backbone):
    from talora.errors import ConfigError

    with pytest.raises(ConfigError, match="label_scoring must be one of sum, mean, calibrated"):
        Verbalizer.of(SPEC, backbone.tokenizer, "max")


def test_every_method_and_seed_of_a_sweep_scores_the_same_recorded_lines(tiny_models, tmp_path):
    config = write_tiny_sweep(tmp_path / "sweep.yaml", {"talora": {}, "prompt_tuning": {"from_scratch": True}}, (0, 1))
    out = tmp_path / "out"
    results = run_sweep(config, out)
    folders = [f for m in ("talora", "prompt_tuning") for f in results["units"][m]["tweet_emotion (k=2)"]]
    folders.append("zero_shot/target-tweet_emotion")
    uids = {tuple(json.loads((out / f / "predictions.json").read_text())["tweet_emotion"]["uids"]) for f in folders}
    assert len(uids) == 1 and len(next(iter(uids))) == 6  # one sample of test_examples lines for all
    split = T.load_tasks(None, ["tweet_emotion"])["tweet_emotion"]
    lines = [e.uid for e in split.splits[T.evaluation_split(split)]]
    assert list(next(iter(uids))) != lines[:6]
    metrics = json.loads((out / folders[0] / "metrics.json").read_text())
    card = metrics["scored"]
    assert card["lines"] == 6 and 0 <= card["truncated"] <= 1 and sum(card["histogram"].values()) == 6
    golds = json.loads((out / folders[0] / "predictions.json").read_text())["tweet_emotion"]["golds"]
    commonest = Counter(g[0] for g in golds).most_common(1)[0][1]
    assert card["majority"]["metrics"]["accuracy"] == pytest.approx(commonest / 6)
    brief = results["scored"]["talora"]["tweet_emotion (k=2)"][0]
    # the unit's overhead is visible; each figure is rounded to 0.1 s, so allow that rounding
    assert brief["seconds"]["wall"] >= brief["seconds"]["compute"] - 0.15 and brief["seconds"]["compute"] >= 0
    assert isinstance(results["target"]["zero_shot"]["tweet_emotion"], float)  # one score, not one per seed


def test_tasks_prints_token_length_percentiles_on_a_model(tiny_models, capsys):
    from talora.cli import main

    assert main(["tasks", "--suite", "synthetic", "--model", "tiny", "--max-length", "20", "--lines", "50"]) == 0
    out = capsys.readouterr().out
    row = next(line for line in out.splitlines() if line.startswith("product_sentiment") and "%" in line)
    p50, p90, p95, longest = (int(v) for v in row.split()[2:6])
    assert 0 < p50 <= p90 <= p95 <= longest
    share = float(row.split()[-1].rstrip("%")) / 100
    assert (share > 0) == (longest > 20)


def test_truncation_keeps_the_whole_template_and_answer(backbone):
    tok = backbone.tokenizer
    ex = Example("t/validation/1", "t", {"text": "the film was long and the plot was thin " * 20}, "pos")
    full = encode(SPEC, ex, tok, 10_000, 0)
    cut = encode(SPEC, ex, tok, 40, 0)
    assert cut.truncated and not full.truncated
    assert len(cut.prompt) + len(cut.answer) <= 40 and cut.answer == full.answer
    text = tok.decode(cut.prompt)
    assert text.startswith("Text: the film") and text.endswith("\nIs it:")  # the text field lost its end


def test_a_finished_sweep_states_its_task_level_comparisons(tiny_models, tmp_path):
    config = write_tiny_sweep(tmp_path / "sweep.yaml", {"talora": {}, "prompt_tuning": {"from_scratch": True}}, (0, 1))
    results = run_sweep(config, tmp_path / "out")
    first, other = [m for m in results["target"] if m != "zero_shot"]  # the sweep's methods, in its order
    against = {c["b"]: c for c in results["comparisons"]}
    assert set(against) == {"zero_shot", other} and all(c["a"] == first for c in against.values())
    c = against[other]
    assert c["tasks"] == 1 and c["min_p"] == 1.0 and c["interval"][0] <= c["mean_difference"] <= c["interval"][1]
    table = (tmp_path / "out" / "results-sweep.md").read_text()
    assert f"| {first} - {other} | all | 1 |" in table and "too few tasks for any outcome" in table


def test_an_interrupted_source_training_resumes_from_its_finished_stage(tiny_models, tmp_path, monkeypatch):
    from talora.recipes import pipeline

    config = write_tiny_sweep(tmp_path / "sweep.yaml", {"talora": {}})
    out = tmp_path / "out"
    run_sweep(config, out)
    # What a session's end leaves: the unit is not in the sweep's manifest, its stage 1 is finished.
    manifest = json.loads((out / "manifest.json").read_text())
    train_unit = next(u for u in manifest if " train talora" in u)
    del manifest[train_unit]
    (out / "manifest.json").write_text(json.dumps(manifest))
    stages = []
    real_fit = pipeline._fit
    monkeypatch.setattr(pipeline, "_fit", lambda *a, **k: stages.append(a[8]) or real_fit(*a, **k))
    run_sweep(config, out)
    assert stages == ["stage 2"]  # stage 1 came from the interrupted run
    # Another training config in the same folder starts over.
    stages.clear()
    run_sweep(config, out, overrides={"run": {"train": {"steps": 3}}})
    assert stages == ["stage 1", "stage 2"]
