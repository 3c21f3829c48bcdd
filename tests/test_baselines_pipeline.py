"""Every baseline through the recipes on the synthetic suite with a tiny model: train, transfer, eval."""

import json

import pytest
import torch
from reference_scores import adapter_accuracy
from test_baselines import SMALL

from talora.adapters.files import read_sidecar
from talora.config import RunConfig, TrainConfig
from talora.recipes import pipeline

SOURCES = ["movie_sentiment", "news_topic", "emotion"]
BASELINES = ["spot", "spot_retrieval", "attempt", "mpt", "lora", "adapter", "bitfit", "full_finetune"]
WITH_STAGE1 = {"attempt", "mpt"}


@pytest.fixture
def tiny(tiny_models):
    return tiny_models["tiny"]


def _cfg(method: str) -> RunConfig:
    short = TrainConfig(steps=4, batch_size=4, warmup_steps=1, eval_every=2, eval_examples=6, log_every=2)
    return RunConfig(
        method=method,
        model="tiny",
        tasks=SOURCES,
        max_length=48,
        train_examples=16,
        validation_examples=8,
        test_examples=30,
        method_args=dict(SMALL[method]),
        stage1=short,
        train=short,
        transfer=TrainConfig(steps=3, batch_size=4, warmup_steps=1, eval_every=0),
    )


@pytest.mark.parametrize("method", BASELINES)
def test_baseline_trains_transfers_and_reloads(tmp_path, tiny, method):
    frozen = {k: v.clone() for k, v in tiny.model.state_dict().items()}
    src, tgt = tmp_path / "src", tmp_path / "tgt"
    summary = pipeline.run_train(_cfg(method), src)
    assert summary["method"] == method and set(summary["metrics"]) == set(SOURCES)
    assert ("stage1" in summary) == (method in WITH_STAGE1) == (src / "stage1" / "adapter.json").is_file()
    res = pipeline.run_transfer(src, "tweet_emotion", 4, 0, tgt)
    assert res["method"] == method and res["examples"] == 30
    by_hand = adapter_accuracy(tiny, tgt, "tweet_emotion", res["split"], 48, lines=30)
    assert res["score"] == pytest.approx(by_hand, abs=1e-9)  # the saved target adapter reproduces it
    after = tiny.model.state_dict()
    assert after.keys() == frozen.keys() and all(torch.equal(after[k], v) for k, v in frozen.items())
    if method == "spot_retrieval":
        choice = read_sidecar(tgt)["state"]["retrieved_from"]
        assert choice in SOURCES
        log = [json.loads(line) for line in (tgt / "log.jsonl").read_text().splitlines()]
        assert log and all(r.get("retrieved_from") == choice for r in log if "loss" in r)
