"""Data-parallel training under torchrun (2 CPU processes, Gloo): the same adapter as one process."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import pytest
import torch
import yaml
from safetensors.torch import load_file

SHORT = dict(steps=4, batch_size=4, warmup_steps=1, eval_every=2, eval_examples=6, log_every=1)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _talora(args: list[str], processes: int) -> None:
    launcher = (
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nproc_per_node",
            str(processes),
            "--master_addr",
            "127.0.0.1",
            "--master_port",
            str(_free_port()),
        ]
        if processes > 1
        else [sys.executable]
    )
    env = {**os.environ, "TALORA_QUIET": "1", "OMP_NUM_THREADS": "1"}
    out = subprocess.run([*launcher, "-m", "talora", *args], capture_output=True, text=True, env=env, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]


def _same_adapter(a, b, atol=1e-5) -> None:
    ta, tb = load_file(a / "adapter.safetensors"), load_file(b / "adapter.safetensors")
    assert ta.keys() == tb.keys()
    for k in ta:
        torch.testing.assert_close(ta[k], tb[k], atol=atol, rtol=1e-4, msg=k)


@pytest.fixture
def config(tiny_models, tmp_path):
    path = tmp_path / "cfg.yaml"
    path.write_text(
        yaml.safe_dump(
            dict(
                method="talora",
                model="tiny",
                tasks=["movie_sentiment", "news_topic"],
                max_length=48,
                train_examples=16,
                validation_examples=8,
                method_args={"length": 2, "layers": 2},
                stage1=SHORT,
                train=SHORT,
                transfer=dict(steps=2, batch_size=4, warmup_steps=1, eval_every=0),
            )
        )
    )
    return path


def test_two_ranks_train_and_transfer_as_one_process(config, tmp_path):
    _talora(["train", "--config", str(config), "--output", "one"], 1)
    _talora(["train", "--config", str(config), "--output", "two"], 2)
    _same_adapter(tmp_path / "one", tmp_path / "two")
    _same_adapter(tmp_path / "one" / "stage1", tmp_path / "two" / "stage1")
    losses = [
        [
            json.loads(line)["loss"]
            for line in (tmp_path / run / "log.jsonl").read_text().splitlines()
            if '"loss"' in line
        ]
        for run in ("one", "two")
    ]
    assert losses[0] == pytest.approx(losses[1], abs=1e-5)  # the global batch's mean loss, logged by rank 0
    one = json.loads((tmp_path / "one" / "metrics.json").read_text())
    two = json.loads((tmp_path / "two" / "metrics.json").read_text())
    assert one["metrics"] == two["metrics"]  # sharded evaluation, gathered

    # --resume with two ranks reads rank 0's checkpoint on both and changes nothing of a finished run.
    before = (tmp_path / "two" / "adapter.safetensors").read_bytes()
    _talora(["train", "--config", str(config), "--output", "two", "--resume"], 2)
    assert (tmp_path / "two" / "adapter.safetensors").read_bytes() == before

    for run, n in (("one", 1), ("two", 2)):
        _talora(["transfer", "--from", run, "--task", "tweet_emotion", "--k", "2", "--output", f"{run}-t"], n)
    _same_adapter(tmp_path / "one-t", tmp_path / "two-t")
