"""The run manifest: a re-run of a sweep skips finished, intact units and redoes damaged ones."""

import pytest

from talora import demo, pipeline
from talora.config import RunConfig, dump_config
from talora.train import TrainConfig

from conftest import make_backbone


@pytest.fixture
def tiny_demo(tmp_path, monkeypatch):
    monkeypatch.setattr(pipeline, "_BACKBONES", {"tiny": make_backbone("llama")})
    short = TrainConfig(steps=2, batch_size=2, warmup_steps=0, eval_every=0, eval_examples=2)
    cfg = RunConfig(model="tiny", tasks=["movie_sentiment", "emotion"], max_length=48, train_examples=8,
                    validation_examples=4, method_args={"length": 2, "layers": 1}, stage1=short, train=short,
                    transfer=TrainConfig(steps=1, batch_size=2, warmup_steps=0, eval_every=0))
    path = tmp_path / "demo.yaml"
    path.write_text(dump_config(cfg))
    return path


def test_rerun_skips_finished_units_and_redoes_damaged_ones(tmp_path, tiny_demo, monkeypatch):
    out = tmp_path / "sweep"
    first = demo.run_demo(out, tiny_demo, ks=(2,), targets=["tweet_emotion"])
    calls = []
    real_transfer = demo.run_transfer
    monkeypatch.setattr(demo, "run_train", lambda *a, **k: calls.append("train") or pytest.fail("re-trained"))
    monkeypatch.setattr(demo, "run_transfer", lambda *a, **k: calls.append("transfer") or real_transfer(*a, **k))
    again = demo.run_demo(out, tiny_demo, ks=(2,), targets=["tweet_emotion"])
    assert calls == [] and again["target"] == first["target"]

    damaged = out / "talora-tweet_emotion-k2" / "adapter.safetensors"
    damaged.write_bytes(damaged.read_bytes()[:10])
    third = demo.run_demo(out, tiny_demo, ks=(2,), targets=["tweet_emotion"])
    assert calls == ["transfer"] and third["target"] == first["target"]  # same seed, same result
