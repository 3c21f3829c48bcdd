"""Recipes end to end on a tiny model: train (both TA-LoRA stages), transfer, eval, adapter checks."""

import dataclasses
import json

import pytest
import torch
from reference_scores import adapter_accuracy

from talora.adapters.files import load_adapter
from talora.cli import main
from talora.config import RunConfig, TrainConfig, load_config
from talora.errors import AdapterError
from talora.recipes import pipeline

SOURCES = ["movie_sentiment", "news_topic", "emotion"]


@pytest.fixture(autouse=True)
def _in_a_folder_with_tiny_models(tiny_models):
    return tiny_models


def _cfg(method="talora", **kw):
    short = TrainConfig(steps=4, batch_size=4, warmup_steps=1, eval_every=2, eval_examples=6, log_every=2)
    return RunConfig(
        method=method,
        model="tiny",
        tasks=SOURCES,
        max_length=48,
        train_examples=16,
        method_args={"length": 4, "layers": 2, **kw},
        stage1=short,
        train=short,
        transfer=TrainConfig(steps=3, batch_size=4, warmup_steps=1, eval_every=0),
    )


def test_talora_train_transfer_eval(tmp_path, tiny_models):
    out = tmp_path / "src"
    summary = pipeline.run_train(_cfg(), out)
    for name in (
        "adapter.safetensors",
        "adapter.json",
        "metrics.json",
        "config.yaml",
        "log.jsonl",
        "stage1/adapter.json",
        "checkpoint/latest.json",
    ):
        assert (out / name).is_file(), name
    assert set(summary["metrics"]) == set(SOURCES) and "stage1" in summary
    # Stage 1 only initialises stage 2: it is chosen on the selection slice and its report split is not scored.
    stage1_metrics = json.loads((out / "stage1" / "metrics.json").read_text())
    assert "scored" not in stage1_metrics and "metrics" not in stage1_metrics
    assert 0.0 <= summary["stage1"]["selection_average"] <= 1.0 and summary["stage1"]["seconds"] >= 0
    assert load_config(out / "config.yaml") == _cfg()

    stage1, _ = load_adapter(out / "stage1", tiny_models["tiny"])
    trained, specs = load_adapter(out, tiny_models["tiny"])
    assert set(specs) == set(SOURCES)
    # theta0 started as the stage-1 mean and moved only at the slow rate
    assert (trained.theta0 - stage1.prompts.mean(1)).abs().max() < 0.05

    res = pipeline.run_transfer(out, "product_sentiment", 4, 1, tmp_path / "tgt")
    assert res["k"] == 4 and res["split"] == "test" and res["examples"] == 100
    by_hand = adapter_accuracy(tiny_models["tiny"], tmp_path / "tgt", "product_sentiment", "test", 48)
    assert res["score"] == res["metrics"]["accuracy"] == pytest.approx(by_hand, abs=1e-9)
    target, _ = load_adapter(tmp_path / "tgt", tiny_models["tiny"])
    assert torch.equal(target.theta0, trained.theta0) and torch.equal(target.B, trained.B)

    again = pipeline.run_eval(tmp_path / "tgt", "product_sentiment", "test")
    assert again["metrics"] == res["metrics"]  # the saved adapter reproduces the transfer's score
    assert again["majority_baseline"]["accuracy"] == pytest.approx(0.5)


@pytest.mark.parametrize("method", ["prompt_tuning", "deep_prompt_tuning"])
def test_baselines_train_and_transfer(tmp_path, method):
    cfg = _cfg(method)
    cfg.method_args = {"length": 4} if method == "prompt_tuning" else {"length": 4, "layers": 2}
    pipeline.run_train(cfg, tmp_path / "src")
    res = pipeline.run_transfer(tmp_path / "src", "tweet_emotion", 4, 0, tmp_path / "tgt")
    assert res["method"] == method


def test_adapter_for_another_model_is_refused(tmp_path, tiny_models):
    pipeline.run_train(_cfg(), tmp_path / "src")
    with pytest.raises(AdapterError, match="made for base model 'tiny'"):
        load_adapter(tmp_path / "src", tiny_models["tiny-qwen3"])
    with pytest.raises(AdapterError, match="is for method 'talora', not 'prompt_tuning'"):
        load_adapter(tmp_path / "src", tiny_models["tiny"], expect_method="prompt_tuning")


def test_truncated_adapter_is_refused_and_not_modified(tmp_path, tiny_models):
    pipeline.run_train(_cfg(), tmp_path / "src")
    path = tmp_path / "src" / "adapter.safetensors"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(AdapterError, match="adapter.safetensors: not a readable safetensors file"):
        load_adapter(tmp_path / "src", tiny_models["tiny"])
    assert path.read_bytes() == data[: len(data) // 2]


def test_cli_reports_errors_without_traceback(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("train:\n  steps: 2\n  colour: red\n")
    assert main(["train", "--config", str(bad), "--output", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "talora: error:" in err and "colour" in err and "Traceback" not in err
    assert not (tmp_path / "o").exists()  # nothing written for a rejected config


def test_cli_resume_continues_a_run(tmp_path, tiny_models):
    cfg = tmp_path / "c.yaml"
    from talora.config import dump_config

    cfg.write_text(dump_config(_cfg()))
    assert main(["train", "--config", str(cfg), "--output", str(tmp_path / "o")]) == 0
    first = json.loads((tmp_path / "o" / "metrics.json").read_text())
    assert main(["train", "--config", str(cfg), "--output", str(tmp_path / "o"), "--resume"]) == 0
    second = json.loads((tmp_path / "o" / "metrics.json").read_text())
    assert first["metrics"] == second["metrics"]  # stage 1 and 2 were already complete


def test_rejected_inputs_write_nothing(tmp_path):
    from talora.errors import DataError

    cfg = _cfg()
    cfg.tasks = ["movie_sentiment", "no_such_task"]
    with pytest.raises(DataError, match="no_such_task"):
        pipeline.run_train(cfg, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    pipeline.run_train(_cfg(), tmp_path / "src")
    before = sorted(p.name for p in (tmp_path / "src").iterdir())
    with pytest.raises(DataError, match=r"k must be a positive number of shots or 'all', got 0"):
        pipeline.run_transfer(tmp_path / "src", "tweet_emotion", 0, 0, tmp_path / "tgt")
    assert not (tmp_path / "tgt").exists() and sorted(p.name for p in (tmp_path / "src").iterdir()) == before


def test_resume_reruns_a_damaged_stage1(tmp_path):
    out = tmp_path / "src"
    pipeline.run_train(_cfg(), out)
    (out / "stage1" / "adapter.safetensors").write_bytes(b"garbage")
    pipeline.run_train(_cfg(), out, resume=True)  # the stage-1 unit no longer verifies: trained again
    from talora.recipes.runs import RunManifest

    assert RunManifest(out).finished("stage1", out / "stage1") is not None


def test_cli_transfer_from_scratch_needs_exactly_one_start(tmp_path, capsys, tiny_models):
    out = tmp_path / "o"
    assert main(["transfer", "--task", "tweet_emotion", "--k", "2", "--output", str(out)]) == 2
    assert "--from" in capsys.readouterr().err and not out.exists()
    cfg = tmp_path / "c.yaml"
    from talora.config import dump_config

    cfg.write_text(dump_config(dataclasses.replace(_cfg("deep_prompt_tuning"), method_args={"length": 4})))
    assert (
        main(
            [
                "transfer",
                "--config",
                str(cfg),
                "--method",
                "prompt_tuning",
                "--task",
                "tweet_emotion",
                "--k",
                "2",
                "--output",
                str(out),
                "--json",
            ]
        )
        == 0
    )
    summary = json.loads(capsys.readouterr().out)
    assert summary["method"] == "prompt_tuning" and summary["k"] == 2
    by_hand = adapter_accuracy(tiny_models["tiny"], out, "tweet_emotion", summary["split"], 48)
    assert summary["score"] == pytest.approx(by_hand, abs=1e-9)
    assert json.loads((out / "adapter.json").read_text())["source_adapter"] is None
