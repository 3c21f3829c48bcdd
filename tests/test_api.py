"""The Python API on tiny models: TaloraModel in transformers.Trainer and in a plain loop, its adapters
saved, loaded and read by the CLI's recipes, and train/transfer/evaluate returning their metrics."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import Trainer, TrainingArguments

import talora
from talora import tasks as T
from talora.adapters.files import read_sidecar
from talora.cli import main
from talora.core.batching import answer_batch, encode
from talora.core.forward import answer_loss
from talora.errors import AdapterError, ConfigError, DataError
from talora.recipes.pipeline import run_eval

TASKS = ["movie_sentiment", "news_topic"]


@pytest.fixture(scope="module")
def suite() -> dict[str, T.Task]:
    return T.load_tasks(None, TASKS)


def _records(suite, split: str = "train", per_task: int = 8) -> list[dict]:
    return [
        {"text": task.spec.prompt(ex), "answer": task.spec.answer_text(ex), "task": name}
        for name, task in suite.items()
        for ex in task.splits[split][:per_task]
    ]


def _weights(backbone) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in backbone.model.state_dict().items()}


def _same_weights(backbone, before: dict[str, torch.Tensor]) -> bool:
    after = backbone.model.state_dict()
    return after.keys() == before.keys() and all(torch.equal(after[k], before[k]) for k in before)


def _model(backbone, method="talora", specs=None, **config):
    config = config or ({"length": 4} if method == "prompt_tuning" else {"length": 4, "layers": 2})
    return talora.TaloraModel(backbone, talora.get_method(method, backbone, tasks=TASKS, **config), specs)


def test_get_method_reads_its_config_strictly(backbone):
    method = talora.get_method("talora", backbone, tasks=TASKS, length=4, layers=2, rank=2)
    assert (method.name, method.config.rank, method.task_names) == ("talora", 2, TASKS)
    with pytest.raises(ConfigError, match="unknown key.*rnak"):
        talora.get_method("talora", backbone, tasks=TASKS, rnak=2)
    with pytest.raises(ConfigError, match="expected int"):
        talora.get_method("talora", backbone, tasks=TASKS, rank="2")
    with pytest.raises(ConfigError, match="unknown method"):
        talora.get_method("nope", backbone, tasks=TASKS)


def test_collate_labels_only_the_answer(backbone):
    tok = backbone.tokenizer
    examples = [
        {"text": "Review: great", "answer": " positive", "task": "news_topic"},
        {"text": "Review: the food was awful and slow", "answer": " negative", "task": 0},
    ]
    batch = talora.collate(examples, tok, TASKS)
    assert batch["task_ids"].tolist() == [1, 0]
    for i, ex in enumerate(examples):
        prompt = tok(ex["text"])["input_ids"]
        answer = tok(ex["answer"], add_special_tokens=False)["input_ids"]
        row = batch["labels"][i]
        assert row[row != -100].tolist() == answer
        assert (row[: len(prompt)] == -100).all()
        assert batch["input_ids"][i, : len(prompt) + len(answer)].tolist() == prompt + answer
        assert batch["attention_mask"][i].sum() == len(prompt) + len(answer)
    keep = len(answer) + 3
    short = talora.collate(examples[1:], tok, TASKS, max_length=keep)
    assert short["input_ids"][0].tolist() == prompt[-3:] + answer  # the prompt lost its start
    with pytest.raises(DataError, match="unknown task 'sst2'"):
        talora.collate([{"text": "a", "answer": " b", "task": "sst2"}], tok, TASKS)
    with pytest.raises(DataError, match="no 'task' given"):
        talora.collate([{"text": "a", "answer": " b"}], tok, TASKS)


@pytest.mark.parametrize("method", ["talora", "prompt_tuning", "lora"])
def test_loss_is_talora_answer_loss(backbone, suite, method):
    config = {"rank": 2} if method == "lora" else None
    model = _model(backbone, method, **(config or {})).eval()
    records = _records(suite, per_task=3)
    items = [
        encode(suite[r["task"]].spec, ex, backbone.tokenizer, 256, TASKS.index(r["task"]), training=True)
        for r, ex in zip(records, [ex for t in suite.values() for ex in t.splits["train"][:3]])
    ]
    with torch.no_grad():
        with model.method.applied(backbone):
            expected = answer_loss(backbone, model.method, answer_batch(items, backbone.tokenizer.pad_token_id))
        batch = model.collate(records)
        out = model(**batch)
        full = model(batch["input_ids"], batch["attention_mask"], task_ids=batch["task_ids"]).logits
    assert out.loss.item() == pytest.approx(expected.item(), abs=1e-5)
    shifted = batch["labels"][:, 1:]
    rows, cols = (shifted != -100).nonzero(as_tuple=True)
    assert out.logits.shape == (len(rows), full.shape[-1])
    assert full.shape[:2] == batch["input_ids"].shape
    assert torch.allclose(full[rows, cols], out.logits, atol=1e-4)


def test_only_the_method_is_exposed(backbone):
    model = _model(backbone)
    assert {id(p) for p in model.parameters()} == {id(p) for p in model.method.parameters()}
    assert all(k.startswith("method.") for k in model.state_dict())
    model.train()
    assert model.method.training and not backbone.model.training
    with pytest.raises(ValueError, match="task_ids are needed"):
        model(torch.ones(1, 3, dtype=torch.long))
    model.double()  # .to() and friends reach the backbone too
    assert backbone.model.get_input_embeddings().weight.dtype == torch.float64


def test_trainer_trains_the_method_and_leaves_the_backbone(tiny_models, suite, tmp_path):
    backbone = tiny_models["tiny"]
    before = _weights(backbone)
    model = _model(backbone, specs={n: t.spec for n, t in suite.items()})
    start = {k: v.detach().clone() for k, v in model.method.named_parameters()}
    args = TrainingArguments(
        output_dir=str(tmp_path / "trainer"),
        max_steps=3,
        per_device_train_batch_size=2,
        learning_rate=3e-2,
        report_to=[],
        use_cpu=True,
        save_strategy="no",
        logging_steps=1,
        remove_unused_columns=False,
        disable_tqdm=True,
    )
    trainer = Trainer(model=model, args=args, train_dataset=_records(suite), data_collator=model.collate)
    trainer.train()
    losses = [r["loss"] for r in trainer.state.log_history if "loss" in r]
    assert len(losses) == 3 and all(torch.isfinite(torch.tensor(losses)))
    moved = [k for k, v in model.method.named_parameters() if not torch.equal(v, start[k])]
    assert "u" in moved and "theta0" in moved
    assert _same_weights(backbone, before) and not backbone.model.training
    assert trainer.evaluate(_records(suite, "validation", 2))["eval_loss"] > 0  # eval mode, logits gathered

    model.eval()
    batch = model.collate(_records(suite, "validation", 4))
    with torch.no_grad():
        out = model(**batch)
    model.save_pretrained(tmp_path / "adapter")
    loaded = talora.TaloraModel.from_pretrained(tmp_path / "adapter", backbone).eval()
    assert not any(p.requires_grad for p in loaded.parameters())  # for inference unless is_trainable
    with torch.no_grad():
        again = loaded(**batch)
    assert torch.equal(again.logits, out.logits) and again.loss.item() == out.loss.item()
    assert loaded.task_specs == model.task_specs

    # the same files are a talora adapter: the recipes and the CLI read them
    summary = run_eval(tmp_path / "adapter", "movie_sentiment", "validation")
    assert 0 <= summary["metrics"]["accuracy"] <= 1 and summary["examples"] == 100
    assert talora.evaluate(tmp_path / "adapter", "news_topic")["examples"] == 100
    assert main(["eval", "--adapter", str(tmp_path / "adapter"), "--task", "movie_sentiment", "--json"]) in (0, None)
    assert talora.TaloraModel.from_pretrained(tmp_path / "adapter").backbone.model_id == "tiny"  # from config.yaml


def test_plain_loop_trains_and_round_trips(tiny_models, suite, tmp_path):
    backbone = tiny_models["tiny"]
    before = _weights(backbone)
    model = _model(backbone, "prompt_tuning").train()
    optimizer = torch.optim.AdamW(model.param_groups())
    batch = model.collate(_records(suite, per_task=4))
    losses = []
    for _ in range(4):
        loss = model(**batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    assert losses[-1] < losses[0]
    assert _same_weights(backbone, before)

    model.save_pretrained(tmp_path / "pt")
    sidecar = read_sidecar(tmp_path / "pt")
    # without task specs the tasks are recorded as free text: the prompt is the example's text
    assert [t["template"] for t in sidecar["tasks"]] == ["{text}", "{text}"]
    assert sidecar["method"] == "prompt_tuning" and sidecar["base_model"]["id"] == "tiny"
    loaded = talora.TaloraModel.from_pretrained(tmp_path / "pt", backbone, is_trainable=True)
    assert all(p.requires_grad for p in loaded.parameters())
    model.eval(), loaded.eval()
    with torch.no_grad():
        a, b = model(**batch), loaded(**batch)
    assert torch.equal(a.logits, b.logits) and a.loss.item() == b.loss.item()


def test_an_adapter_for_another_base_model_is_refused(tiny_models, tmp_path):
    model = _model(tiny_models["tiny"])
    model.save_pretrained(tmp_path / "adapter")
    with pytest.raises(AdapterError, match="made for base model 'tiny'"):
        talora.TaloraModel.from_pretrained(tmp_path / "adapter", tiny_models["tiny-qwen3"])


def test_trainer_loss_with_accumulation_weighs_every_answer_token(backbone, suite):
    model = _model(backbone, "prompt_tuning").eval()
    batch = model.collate(_records(suite, per_task=2))
    count = (batch["labels"][:, 1:] != -100).sum()
    with torch.no_grad():
        mean = model(**batch).loss
        halves = [
            model(**{k: v[s] for k, v in batch.items()}, num_items_in_batch=count).loss
            for s in (slice(0, 2), slice(2, None))
        ]
    assert sum(halves).item() == pytest.approx(mean.item(), rel=1e-5)


def test_recipes_return_their_metrics(tiny_models, tmp_path):
    config = {
        "method": "prompt_tuning",
        "model": "tiny",
        "tasks": TASKS,
        "max_length": 48,
        "train_examples": 8,
        "validation_examples": 6,
        "test_examples": 6,
        "method_args": {"length": 4},
        "train": {"steps": 2, "batch_size": 4, "warmup_steps": 1, "eval_every": 0},
        "transfer": {"steps": 2, "batch_size": 4, "warmup_steps": 1, "eval_every": 0},
    }
    (tmp_path / "run.yaml").write_text(json.dumps(config))  # JSON is YAML
    summary = talora.train(tmp_path / "run.yaml", tmp_path / "src", overrides={"train": {"steps": 3}})
    assert summary["steps"] == 3 and set(summary["metrics"]) == set(TASKS)
    assert talora.train(config, tmp_path / "again", backbone=tiny_models["tiny"])["steps"] == 2

    res = talora.transfer(tmp_path / "src", task="product_sentiment", k=2, output=tmp_path / "tgt")
    assert res["task"] == "product_sentiment" and 0 <= res["score"] <= 1
    scratch = talora.transfer(
        config=config, overrides={"seed": 1}, task="product_sentiment", k=2, output=tmp_path / "scratch"
    )
    assert scratch["examples"] == 6
    scored = talora.evaluate(tmp_path / "tgt", "product_sentiment", split="test")  # all 100, not test_examples
    assert scored["examples"] == 100 and 0 <= scored["metrics"]["accuracy"] <= 1

    with pytest.raises(ConfigError, match="overrides need config"):
        talora.transfer(tmp_path / "src", task="product_sentiment", k=2, output=tmp_path / "x", overrides={"seed": 2})
    with pytest.raises(ConfigError, match="unknown key"):
        talora.train({**config, "stpes": 3}, tmp_path / "bad")


def test_talora_train_is_the_recipe_and_the_trainer_is_its_own_module():
    from talora import train
    from talora.training import trainer

    assert train is talora.api.train and callable(train)
    assert trainer.MixtureSampler.__module__ == "talora.training.trainer"  # what the trainer's tests patch
