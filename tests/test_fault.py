"""kill -9 in the middle of training, then --resume: the result equals an uninterrupted run."""

import json
import os
import signal
import subprocess
import sys
import time

import torch
from conftest import make_backbone
from safetensors.torch import load_file

from talora.config import RunConfig, TrainConfig, dump_config


def _config(tmp_path) -> str:
    model_dir = tmp_path / "model"
    tiny = make_backbone("llama")
    tiny.model.save_pretrained(model_dir)
    tiny.tokenizer.save_pretrained(model_dir)
    steps = TrainConfig(steps=120, batch_size=4, warmup_steps=1, eval_every=5, eval_examples=4, log_every=5)
    cfg = RunConfig(
        method="prompt_tuning",
        model=str(model_dir),
        tasks=["movie_sentiment", "emotion"],
        max_length=48,
        train_examples=32,
        validation_examples=8,
        method_args={"length": 4},
        train=steps,
    )
    path = tmp_path / "c.yaml"
    path.write_text(dump_config(cfg))
    return str(path)


def _train(config, out, resume=False):
    cmd = [sys.executable, "-m", "talora.cli", "train", "--config", config, "--output", str(out)]
    return subprocess.Popen(
        cmd + (["--resume"] if resume else []),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "TQDM_DISABLE": "1"},
    )


def test_kill_9_then_resume_equals_uninterrupted(tmp_path):
    config = _config(tmp_path)
    assert _train(config, tmp_path / "full").wait(timeout=300) == 0

    victim = _train(config, tmp_path / "killed")
    pointer = tmp_path / "killed" / "checkpoint" / "latest.json"
    deadline = time.time() + 300
    while time.time() < deadline:  # kill once at least two checkpoints exist
        if pointer.is_file() and json.loads(pointer.read_text())["current"] not in ("ckpt-5",):
            break
        time.sleep(0.05)
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    assert not (tmp_path / "killed" / "metrics.json").exists()  # it really died before the end
    assert _train(config, tmp_path / "killed", resume=True).wait(timeout=300) == 0

    full = load_file(str(tmp_path / "full" / "adapter.safetensors"))
    resumed = load_file(str(tmp_path / "killed" / "adapter.safetensors"))
    assert all(torch.allclose(full[k], resumed[k], atol=1e-6) for k in full)
    a = json.loads((tmp_path / "full" / "metrics.json").read_text())
    b = json.loads((tmp_path / "killed" / "metrics.json").read_text())
    assert a["metrics"] == b["metrics"] and a["best_step"] == b["best_step"]


# Runs the CLI in a child process that SIGKILLs itself half-way through writing its second checkpoint:
# the new checkpoint folder is complete but the pointer to it is not yet replaced.
KILL_DURING_WRITE = """
import os, signal, sys
import talora.training.checkpoint as ck
real = ck.atomic_write  # checkpoint.py's own reference, the one it calls
def dying_write(path, data):
    if path.name == ck.POINTER and b"ckpt-10" in data:
        with open(str(path) + ".partial", "wb") as f:
            f.write(data[: len(data) // 2])
        os.kill(os.getpid(), signal.SIGKILL)
    real(path, data)
ck.atomic_write = dying_write
from talora.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_kill_9_during_a_checkpoint_write_keeps_the_previous_one(tmp_path):
    config = _config(tmp_path)
    assert _train(config, tmp_path / "full").wait(timeout=300) == 0
    out = tmp_path / "killed"
    child = subprocess.run(
        [sys.executable, "-c", KILL_DURING_WRITE, "train", "--config", config, "--output", str(out)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "TQDM_DISABLE": "1"},
        timeout=300,
    )
    assert child.returncode == -signal.SIGKILL
    assert json.loads((out / "checkpoint" / "latest.json").read_text())["current"] == "ckpt-5"
    assert _train(config, out, resume=True).wait(timeout=300) == 0
    full = load_file(str(tmp_path / "full" / "adapter.safetensors"))
    resumed = load_file(str(out / "adapter.safetensors"))
    assert all(torch.allclose(full[k], resumed[k], atol=1e-6) for k in full)
