"""The one trainer on a tiny model: what moves, what stays, determinism, resume, bad losses."""

import json

import numpy as np
import pytest
import torch
from conftest import make_backbone

from talora.config import RunConfig, TrainConfig
from talora.core import forward as forward_mod
from talora.core.batching import Encoded
from talora.core.predict import Verbalizer, evaluate
from talora.errors import TrainingError
from talora.methods.base import NoPrompt
from talora.methods.prompt_tuning import PromptTuning, PromptTuningConfig
from talora.methods.talora import TALoRA, TALoRAConfig
from talora.recipes.pipeline import encode_split, verbalizers_for
from talora.tasks import load_tasks
from talora.training import trainer as train_mod
from talora.training.trainer import MixtureSampler, mixing_rates, train

NAMES = ["movie_sentiment", "news_topic"]


def _data(backbone, n=24):
    tasks = load_tasks(None, NAMES)
    tr = encode_split(backbone, tasks, NAMES, "train", 64, cap=n)
    ev = encode_split(backbone, tasks, NAMES, "validation", 64, cap=8)
    verbs = verbalizers_for(backbone, [tasks[n].spec for n in NAMES], RunConfig())
    return tr, ev, verbs, {n: tasks[n].spec.metric for n in NAMES}


def _cfg(**kw):
    base = dict(steps=8, batch_size=4, warmup_steps=1, eval_every=4, eval_examples=8, log_every=2, length_buckets=3)
    return TrainConfig(**{**base, **kw})


def _talora(backbone):
    return TALoRA(TALoRAConfig(length=4, rank=2, init_seed=1), backbone, NAMES)


def test_only_the_method_moves(tmp_path):
    backbone = make_backbone()
    frozen = {k: v.clone() for k, v in backbone.model.state_dict().items()}
    m = _talora(backbone)
    with torch.no_grad():
        m.gates.fill_(0.2)
    before = {k: v.clone() for k, v in m.state_dict().items()}
    tr, ev, verbs, metrics = _data(backbone)
    result = train(backbone, m, tr, ev, verbs, metrics, _cfg(eval_every=0), tmp_path, seed=0)
    after = m.state_dict()
    for name in ("theta0", "B", "u", "v", "gates"):
        assert not torch.equal(before[name], after[name]), name
    assert all(torch.equal(v, backbone.model.state_dict()[k]) for k, v in frozen.items())
    log = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    steps = [r for r in log if "loss" in r]
    assert [r["step"] for r in steps] == [2, 4, 6, 8]
    assert len(steps[0]["gates"]) == m.layers and set(steps[0]["lr"]) == {"theta0", "B", "uv", "gate"}
    assert result.best_step == 8 and any("eval" in r for r in log)


def _answer_by_task(n: int, seed: int) -> list[Encoded]:
    """Random inputs whose answer is a word fixed by the task alone: task 0's is "p" (id 40), task 1's
    "q" (id 41). The frozen model, which sees no task id, cannot score well on both at once."""
    gen = torch.Generator().manual_seed(seed)
    return [
        Encoded(
            f"x{seed}-{i}",
            i % 2,
            (*torch.randint(2, 300, (5,), generator=gen).tolist(), 7),
            (40 + i % 2,),
            "pq"[i % 2],
        )
        for i in range(n)
    ]


def test_training_learns_per_task_answers_the_frozen_model_cannot_give(tmp_path):
    backbone = make_backbone()
    verb = Verbalizer(("p", "q"), ((40,), (41,)))
    verbs, held_out = {0: verb, 1: verb}, _answer_by_task(40, seed=1)
    frozen = evaluate(backbone, NoPrompt(backbone, ["a", "b"]), held_out, verbs)
    assert frozen["a"]["accuracy"] + frozen["b"]["accuracy"] <= 1.5  # not both tasks from the input alone
    m = PromptTuning(PromptTuningConfig(length=4, lr=0.1), backbone, ["a", "b"])
    cfg = _cfg(steps=30, eval_every=0, log_every=5)
    result = train(backbone, m, _answer_by_task(24, seed=0), [], verbs, {}, cfg, tmp_path, 0)
    trained = evaluate(backbone, m, held_out, verbs)
    assert trained == {"a": {"accuracy": 1.0, "macro_f1": 1.0}, "b": {"accuracy": 1.0, "macro_f1": 1.0}}
    assert result.seconds > 0


def test_same_seed_same_result_and_resume_equals_uninterrupted(tmp_path, monkeypatch):
    backbone = make_backbone()
    tr, ev, verbs, metrics = _data(backbone)
    a = _talora(backbone)
    train(backbone, a, tr, ev, verbs, metrics, _cfg(), tmp_path / "a", seed=3)

    b = _talora(backbone)
    calls = {"n": 0}
    real = forward_mod.answer_loss

    def crash_at_step_6(*args):
        calls["n"] += 1
        if calls["n"] == 6:
            raise KeyboardInterrupt  # the process dies after the step-4 checkpoint
        return real(*args)

    monkeypatch.setattr(train_mod, "answer_loss", crash_at_step_6)
    with pytest.raises(KeyboardInterrupt):
        train(backbone, b, tr, ev, verbs, metrics, _cfg(), tmp_path / "b", seed=3)
    monkeypatch.setattr(train_mod, "answer_loss", real)
    c = _talora(backbone)
    result = train(backbone, c, tr, ev, verbs, metrics, _cfg(), tmp_path / "b", seed=3, resume=True)
    for k, v in a.state_dict().items():
        assert torch.allclose(v, c.state_dict()[k], atol=1e-6), k
    assert [h["step"] for h in result.history] == [4, 8]


def test_nan_loss_stops_with_the_step_and_keeps_the_checkpoint(tmp_path, monkeypatch):
    backbone = make_backbone()
    tr, ev, verbs, metrics = _data(backbone)
    real, calls = forward_mod.answer_loss, {"n": 0}

    def nan_at_step_6(*args):
        calls["n"] += 1
        loss = real(*args)
        return loss * float("nan") if calls["n"] == 6 else loss

    monkeypatch.setattr(train_mod, "answer_loss", nan_at_step_6)
    with pytest.raises(TrainingError, match=r"loss became nan at step 6 on batch \["):
        train(backbone, _talora(backbone), tr, ev, verbs, metrics, _cfg(), tmp_path, seed=0)
    assert json.loads((tmp_path / "checkpoint" / "latest.json").read_text())["current"] == "ckpt-4"


def test_mixing_rates():
    assert np.allclose(mixing_rates([100, 300], 1.0), [0.25, 0.75])
    assert np.allclose(mixing_rates([100, 300], 1e9), [0.5, 0.5], atol=1e-6)
    assert np.allclose(mixing_rates([100, 300], 1.0, cap=100), [0.5, 0.5])


def test_sampler_is_deterministic_mixes_tasks_and_covers_each_epoch():
    s1, s2 = MixtureSampler([5, 7], 1.0, 0, seed=4), MixtureSampler([5, 7], 1.0, 0, seed=4)
    draws = [s1.draw(step, 6) for step in range(10)]
    assert draws == [s2.draw(step, 6) for step in range(10)]
    assert any(len({t for t, _ in d}) == 2 for d in draws)  # batches mix tasks
    task0 = [i for d in draws for t, i in d if t == 0]
    assert sorted(task0[:5]) == list(range(5))  # the first epoch of a task visits each example once


def test_rng_states_round_trip_through_json():
    import random

    state = json.loads(json.dumps(train_mod.rng_state()))
    expected = (random.random(), np.random.rand(), torch.rand(1).item())
    train_mod.set_rng_state(state)
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == expected


def test_length_buckets_cut_padding_keep_every_draw_and_mix_tasks():
    lengths = [[3, 40, 5, 38, 4, 41, 6, 39], [2, 37, 7, 42, 1, 36, 8, 35]]
    plain = MixtureSampler([8, 8], 1.0, 0, seed=2)
    draws = [plain.draw(s, 4) for s in range(4)]
    buckets = train_mod.LengthBuckets(MixtureSampler([8, 8], 1.0, 0, seed=2), lengths, 4, 4, seed=2)
    batches = [buckets.batch(s) for s in range(4)]
    assert sorted(p for b in batches for p in b) == sorted(p for d in draws for p in d)  # same examples

    def padding(batch):
        lens = [lengths[t][i] for t, i in batch]
        return sum(max(lens) - n for n in lens)

    assert sum(map(padding, batches)) < sum(map(padding, draws)) / 2
    assert any(len({t for t, _ in b}) == 2 for b in batches)


def test_lr_scale_multiplies_every_group_and_changes_the_result(tmp_path):
    backbone = make_backbone()
    tr, _, verbs, metrics = _data(backbone, n=8)
    finals = {}
    for scale in (1.0, 3.0):
        m = _talora(backbone)
        cfg = _cfg(steps=2, warmup_steps=0, schedule="constant", eval_every=0, log_every=1, lr_scale=scale)
        train(backbone, m, tr, [], verbs, metrics, cfg, tmp_path / str(scale), 0)
        logged = [json.loads(line) for line in (tmp_path / str(scale) / "log.jsonl").read_text().splitlines()]
        lrs = next(r["lr"] for r in logged if "lr" in r)
        assert lrs == pytest.approx({g["name"]: scale * g["lr"] for g in m.param_groups()})
        finals[scale] = m.theta0.detach().clone()
    assert not torch.allclose(finals[1.0], finals[3.0])


def test_gradient_checkpointing_gives_weight_methods_the_same_result(tmp_path):
    from talora.methods.lora import LoRA, LoRAConfig

    backbone = make_backbone()
    tr, _, verbs, metrics = _data(backbone, n=8)
    states = []
    for checkpointing in (False, True):
        m = LoRA(LoRAConfig(rank=2, init_seed=3), backbone, NAMES)
        cfg = _cfg(steps=2, eval_every=0, gradient_checkpointing=checkpointing)
        train(backbone, m, tr, [], verbs, metrics, cfg, tmp_path / str(checkpointing), 0)
        states.append(m.state_dict())
    assert any(
        not torch.equal(v, LoRA(LoRAConfig(rank=2, init_seed=3), backbone, NAMES).state_dict()[k])
        for k, v in states[0].items()
    )
    for k in states[0]:
        torch.testing.assert_close(states[0][k], states[1][k], rtol=1e-5, atol=1e-6, msg=k)
