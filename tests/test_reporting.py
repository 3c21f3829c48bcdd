"""report_to: the trainer's log points reach TensorBoard, W&B and MLflow; a missing backend is a config error."""

from __future__ import annotations

import importlib.machinery
import importlib.util
import sys
import types

import pytest

from talora import reporting
from talora.config import RunConfig, TrainConfig, load_config
from talora.errors import ConfigError
from talora.recipes import pipeline

SOURCES = ["movie_sentiment", "emotion"]


def _tiny_talora(report_to: str) -> RunConfig:
    short = TrainConfig(
        steps=4, batch_size=4, warmup_steps=1, eval_every=2, eval_examples=4, log_every=2, report_to=report_to
    )
    return RunConfig(
        method="talora",
        model="tiny",
        tasks=SOURCES,
        max_length=48,
        train_examples=8,
        validation_examples=4,
        method_args={"length": 4, "layers": 2},
        stage1=short,
        train=short,
    )


def test_tensorboard_event_files_hold_every_log_point(tmp_path, tiny_models):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = tmp_path / "run"
    pipeline.run_train(_tiny_talora("tensorboard"), out)
    for phase in (out / "stage1", out):
        events = EventAccumulator(str(phase / "tensorboard"))
        events.Reload()
        tags = set(events.Tags()["scalars"])
        # two prompted layers of the four: decoder layers 2 and 3
        expected = {"train/loss", "gate/layer_02", "gate/layer_03", "eval/score"}
        expected |= {f"eval/{task}/accuracy" for task in SOURCES}
        assert expected <= tags, tags
        assert any(t.startswith("lr/") for t in tags)
        assert [e.step for e in events.Scalars("train/loss")] == [2, 4]
        assert [e.step for e in events.Scalars("eval/score")] == [2, 4]
    stage2 = EventAccumulator(str(out / "tensorboard"))
    stage2.Reload()
    tags = set(stage2.Tags()["scalars"])
    assert "train/regulariser" in tags  # the orthogonality term of stage 2
    assert len([t for t in tags if t.startswith("lr/")]) >= 2  # slow and fast weights are separate AdamW groups
    assert (out / "log.jsonl").is_file()  # the JSONL log is written as before


def test_report_to_is_checked_when_the_config_is_read(tmp_path, monkeypatch):
    path = tmp_path / "c.yaml"
    path.write_text("train:\n  report_to: comet\n")
    with pytest.raises(ConfigError, match=r"train: report_to must be one of"):
        load_config(path)
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "wandb" else real(name, *a))
    path.write_text("stage1:\n  report_to: wandb\n")
    with pytest.raises(ConfigError, match=r"stage1: report_to: wandb is not installed: pip install wandb"):
        load_config(path)


def _fake_module(monkeypatch, name: str, **attrs) -> types.ModuleType:
    module = types.ModuleType(name)
    module.__spec__ = importlib.machinery.ModuleSpec(name, None)
    module.__dict__.update(attrs)
    monkeypatch.setitem(sys.modules, name, module)
    return module


def test_wandb_and_mlflow_get_the_same_scalars(tmp_path, monkeypatch):
    calls = []

    class Run:
        def log(self, values, step):
            calls.append(("wandb.log", step, dict(values)))

        def finish(self):
            calls.append(("wandb.finish",))

    _fake_module(monkeypatch, "wandb", init=lambda **kw: calls.append(("wandb.init", kw)) or Run())
    _fake_module(
        monkeypatch,
        "mlflow",
        active_run=lambda: None,
        start_run=lambda **kw: calls.append(("mlflow.start_run", kw)),
        log_params=lambda params: calls.append(("mlflow.log_params", params)),
        log_metrics=lambda values, step: calls.append(("mlflow.log_metrics", step, dict(values))),
        end_run=lambda: calls.append(("mlflow.end_run",)),
    )
    record = {"step": 10, "loss": 1.5, "reg": 0.25, "lr": {"fast": 0.03, "slow": 0.001}, "gates": [0.1, 0.2]}
    scalars = reporting.train_scalars(record, first_layer=14)
    assert scalars == {
        "train/loss": 1.5,
        "train/regulariser": 0.25,
        "lr/fast": 0.03,
        "lr/slow": 0.001,
        "gate/layer_14": 0.1,
        "gate/layer_15": 0.2,
    }
    evals = reporting.eval_scalars({"sst2": {"accuracy": 0.5, "f1": 0.4}}, 0.5)
    assert evals == {"eval/score": 0.5, "eval/sst2/accuracy": 0.5, "eval/sst2/f1": 0.4}
    for backend in ("wandb", "mlflow"):
        cfg = TrainConfig(report_to=backend)  # the fake package counts as installed
        reporter = reporting.open_reporter(backend, tmp_path, "runs/x", cfg)
        reporter.log(10, scalars)
        reporter.log(10, evals)
        reporter.close()
    assert calls[0] == (
        "wandb.init",
        {"project": "talora", "name": "runs/x", "dir": str(tmp_path), "config": calls[0][1]["config"]},
    )
    assert calls[0][1]["config"]["report_to"] == "wandb"
    assert calls[1:4] == [("wandb.log", 10, scalars), ("wandb.log", 10, evals), ("wandb.finish",)]
    assert calls[4] == ("mlflow.start_run", {"run_name": "runs/x", "nested": False})
    assert calls[5][0] == "mlflow.log_params" and calls[5][1]["steps"] == 200
    assert calls[6:] == [("mlflow.log_metrics", 10, scalars), ("mlflow.log_metrics", 10, evals), ("mlflow.end_run",)]


def test_none_reports_nothing(tmp_path):
    reporter = reporting.open_reporter("none", tmp_path, "x", TrainConfig())
    reporter.log(1, {"train/loss": 1.0})
    reporter.close()
    assert not any(tmp_path.iterdir())
