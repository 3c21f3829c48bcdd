"""TPV and DTVG end to end on a tiny model and the synthetic suite: the shipped configs, train, transfer,
the analyses and their CLI commands; plus the analyses' numbers on hand-made adapters."""

import json
import math
from pathlib import Path

import pytest
import torch
import yaml
from reference_scores import adapter_accuracy

from talora import tasks as T
from talora.adapters.files import load_adapter, save_adapter
from talora.analysis.tpv import grouping_segments, init_transfer_rows, similarity
from talora.cli import main
from talora.config import RunConfig, dump_config, from_dict
from talora.methods.tpv import TPV, TPVConfig
from talora.recipes import pipeline

CONFIGS = Path(__file__).resolve().parent.parent / "configs"
SOURCES = ["movie_sentiment", "news_topic", "emotion"]
SHORT = {"steps": 3, "batch_size": 4, "warmup_steps": 1, "eval_every": 3, "eval_examples": 4, "log_every": 1}


@pytest.fixture(autouse=True)
def tiny_model(tiny_models):
    return tiny_models["tiny"]


def _shipped(name: str, tmp_path: Path, tasks=SOURCES, **method_args) -> Path:
    """A shipped config on the tiny model with a few steps; everything else as shipped."""
    data = yaml.safe_load((CONFIGS / name).read_text())
    data.update(model="tiny", tasks=tasks, max_length=48, train_examples=12, validation_examples=6)
    data["method_args"] = {**data["method_args"], "length": 2, **method_args}
    for stage in ("stage1", "train"):
        if stage in data:
            data[stage] = {**data[stage], **SHORT}
    data["transfer"] = {**data.get("transfer", {}), **SHORT, "eval_every": 0}
    path = tmp_path / name
    path.write_text(dump_config(from_dict(RunConfig, data)))
    return path


def _log(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_tpv_train_and_transfer_with_a_combination(tmp_path, tiny_model, capsys):
    cfg = _shipped("tpv-transfer.yaml", tmp_path, lambdas=[1.0, 0.0])
    assert main(["train", "--config", str(cfg), "--output", str(tmp_path / "src")]) == 0
    src, _ = load_adapter(tmp_path / "src", tiny_model, expect_method="tpv")
    assert src.task_names == SOURCES and torch.count_nonzero(src.tpv) > 0
    assert (
        main(
            [
                "transfer",
                "--from",
                str(tmp_path / "src"),
                "--task",
                "product_sentiment",
                "--k",
                "2",
                "--output",
                str(tmp_path / "tgt"),
            ]
        )
        == 0
    )
    records = [r for r in _log(tmp_path / "tgt" / "log.jsonl") if "loss" in r]
    assert len(records) == SHORT["steps"]
    chosen = records[0]["lambdas"]
    assert set(chosen) == set(SOURCES) and set(chosen.values()) <= {0.0, 1.0}
    target, _ = load_adapter(tmp_path / "tgt", tiny_model, expect_method="tpv")
    assert torch.equal(target.init, src.init)  # the target's initialisation travels with its adapter
    capsys.readouterr()
    assert main(["analyze", "grouping", "--log", str(tmp_path / "tgt" / "log.jsonl")]) == 2
    assert "no DTVG grouping records" in capsys.readouterr().err


def test_dtvg_train_transfer_and_grouping_plot(tmp_path, tiny_model):
    cfg = _shipped("dtvg-transfer.yaml", tmp_path, target_tpv_steps=2)
    summary = pipeline.run_train(from_dict(RunConfig, yaml.safe_load(cfg.read_text())), tmp_path / "src")
    assert "stage1" in summary
    stage1, _ = load_adapter(tmp_path / "src" / "stage1", tiny_model, expect_method="tpv")
    src, _ = load_adapter(tmp_path / "src", tiny_model, expect_method="dtvg")
    assert torch.equal(src.source_tpvs, stage1.tpv) and torch.equal(src.init, stage1.init)
    seen = _log(tmp_path / "src" / "log.jsonl")[0]["group"]
    assert all(task not in group for task, group in seen.items())  # a source never borrows itself

    res = pipeline.run_transfer(tmp_path / "src", "product_sentiment", 2, 0, tmp_path / "tgt")
    assert res["method"] == "dtvg"
    by_hand = adapter_accuracy(tiny_model, tmp_path / "tgt", "product_sentiment", "test", 48, lines=res["examples"])
    assert res["score"] == pytest.approx(by_hand, abs=1e-9)
    target, _ = load_adapter(tmp_path / "tgt", tiny_model, expect_method="dtvg")
    assert target.source_names == SOURCES and torch.equal(target.source_tpvs, src.source_tpvs)
    records = [r for r in _log(tmp_path / "tgt" / "log.jsonl") if "group" in r]
    assert [r["step"] for r in records] == [1, 2, 3]  # log_every: 1 logs the group of every step
    assert set(records[0]["sim"]["product_sentiment"]) == set(SOURCES)
    assert pipeline.run_eval(tmp_path / "tgt", "product_sentiment", "test")["metrics"] == res["metrics"]

    assert main(["analyze", "grouping", "--log", str(tmp_path / "tgt" / "log.jsonl")]) == 0
    for suffix in ("md", "png", "json"):
        assert (tmp_path / "tgt" / f"grouping.{suffix}").stat().st_size > 0
    assert "## product_sentiment:" in (tmp_path / "tgt" / "grouping.md").read_text()
    assert main(["analyze", "similarity", "--runs", str(tmp_path / "src"), "--output", str(tmp_path / "sim")]) == 0
    sims = json.loads((tmp_path / "sim" / "similarity.json").read_text())
    assert sims["tasks"] == SOURCES and sims["init_pairs"] == 1


def test_init_study_trains_once_per_seed_and_writes_table_and_plots(tmp_path, tiny_model, capsys):
    cfg = _shipped("tpv-inits.yaml", tmp_path, tasks=SOURCES[:2])
    out = tmp_path / "inits"
    args = [
        "analyze",
        "tpv-inits",
        "--config",
        str(cfg),
        "--init-seeds",
        "0",
        "1",
        "--output",
        str(out),
        "--examples",
        "4",
    ]
    assert main(args) == 0
    table = (out / "tpv-inits.md").read_text()
    assert "| **average** |" in table and all(f"| {t} |" in table for t in SOURCES[:2])
    result = json.loads((out / "tpv-inits.json").read_text())
    assert result["init_seeds"] == [0, 1] and len(result["scores"]["news_topic"]) == 2
    adapter = (out / "init-0" / "adapter.safetensors").stat().st_mtime_ns
    assert main(args) == 0  # finished runs are not trained again
    assert (out / "init-0" / "adapter.safetensors").stat().st_mtime_ns == adapter

    runs = [str(out / "init-0"), str(out / "init-1")]
    assert main(["analyze", "similarity", "--runs", *runs, "--output", str(out)]) == 0
    sims = json.loads((out / "similarity.json").read_text())
    assert sims["init_pairs"] == 2 and (out / "similarity.png").stat().st_size > 0
    capsys.readouterr()
    assert main(["analyze", "tpv-inits", "--runs", runs[0], "--output", str(out)]) == 2
    assert "at least two tpv runs" in capsys.readouterr().err
    assert main(["analyze", "tpv-inits", "--runs", runs[0], runs[0], "--output", str(out)]) == 2
    assert "share one initialisation" in capsys.readouterr().err


def _adapter(folder: Path, backbone, tpvs: list[list[float]], init_seed: int) -> None:
    """A tpv adapter over two synthetic tasks whose two tokens both carry the given vectors."""
    names = SOURCES[:2]
    m = TPV(TPVConfig(length=2, init_seed=init_seed), backbone, names)
    with torch.no_grad():
        m.tpv.zero_()
        for t, vec in enumerate(tpvs):
            m.tpv[t, :, : len(vec)] = torch.tensor(vec)
    specs = {n: t.spec for n, t in T.load_tasks(None, names).items()}
    save_adapter(folder, m, backbone, specs)


def test_similarity_numbers_on_hand_made_vectors(tmp_path, tiny_model):
    _adapter(tmp_path / "r0", tiny_model, [[1.0, 0.0], [0.0, 1.0]], init_seed=0)  # x = e0, y = e1
    _adapter(tmp_path / "r1", tiny_model, [[1.0, 1.0], [0.0, 1.0]], init_seed=1)  # x = e0 + e1, y = e1
    got = similarity([tmp_path / "r0", tmp_path / "r1"])
    h = 1 / math.sqrt(2)
    # mean of cos(run0, run1) and cos(run1, run0): [[h, 0], [h, 1]] and [[h, h], [0, 1]]
    assert torch.allclose(torch.tensor(got["tpv_cosine"]), torch.tensor([[h, h / 2], [h / 2, 1.0]]))
    # eq. 2 within each run ([[1, 0], [0, 1]] and [[2, 1], [1, 1]]), averaged over the runs
    assert torch.allclose(torch.tensor(got["tpv_dot"]), torch.tensor([[1.5, 0.5], [0.5, 1.0]]))
    assert got["init_pairs"] == 2 and got["tasks"] == SOURCES[:2]


def test_original_and_mixed_rows_and_grouping_segments():
    result = {"tasks": ["x"], "scores": {"x": [[0.9, 0.5], [0.7, 0.8]]}}
    x, avg = init_transfer_rows(result)
    assert x["original"] == pytest.approx(0.85) and x["original_std"] == pytest.approx(0.05)
    assert x["mixed"] == pytest.approx(0.6) and x["mixed_std"] == pytest.approx(0.1)
    assert avg["task"] == "average" and avg["mixed"] == pytest.approx(0.6)
    segments = grouping_segments([1, 2, 3, 4, 5], [["a"], ["a"], ["b", "a"], ["b", "a"], ["a"]])
    assert segments == [(1, 2, ["a"]), (3, 4, ["b", "a"]), (5, 5, ["a"])]
