"""Data-parallel training on 2 CPU processes (Gloo), started by torchrun or accelerate launch:
the same adapter as one process, also when one rank is killed mid-run and the run resumed."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

SHORT = dict(steps=4, batch_size=4, warmup_steps=1, eval_every=2, eval_examples=6, log_every=1)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _command(args: list[str], processes: int, launcher: str, logs: Path) -> list[str]:
    """``logs``: where the launcher keeps a folder per rank it started (attempt_0/<rank>)."""
    port = str(_free_port())
    if processes == 1:
        start = [sys.executable, "-m"]
    elif launcher == "torchrun":
        start = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={processes}"]
        start += ["--master_addr=127.0.0.1", f"--master_port={port}", f"--log-dir={logs}", "-m"]
    elif launcher == "accelerate":
        # accelerate's --cpu starts ONE process unless mpirun is set up; --multi_gpu is its torchrun-style
        # launcher, and with no GPU visible talora's ranks still run on the CPU with Gloo.
        start = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", f"--num_processes={processes}"]
        start += ["--num_machines=1", "--mixed_precision=no", "--dynamo_backend=no"]
        start += ["--main_process_ip=127.0.0.1", f"--main_process_port={port}", f"--log_dir={logs}", "-m"]
    else:
        raise ValueError(launcher)
    return [*start, "talora", *args]


def _env() -> dict[str, str]:
    # HF_HOME in the test's folder: accelerate launch reads (and never finds) its default config there, not
    # the user's; no visible GPU keeps both launchers on CPU processes talking over Gloo.
    hf_home = Path.cwd() / "hf-home"
    return {
        **os.environ,
        "TALORA_QUIET": "1",
        "OMP_NUM_THREADS": "1",
        "CUDA_VISIBLE_DEVICES": "",
        "HF_HOME": str(hf_home),
    }


def _ranks(logs: Path) -> int:
    return len(list(logs.glob("*/attempt_0/*"))) or 1


def _talora(args: list[str], processes: int, launcher: str = "torchrun") -> None:
    logs = Path(tempfile.mkdtemp(prefix="launch-", dir=Path.cwd()))
    out = subprocess.run(
        _command(args, processes, launcher, logs), capture_output=True, text=True, env=_env(), timeout=600
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert _ranks(logs) == processes, f"{launcher} started {_ranks(logs)} processes, not {processes}"


def _same_adapter(a, b, atol=1e-5) -> None:
    ta, tb = load_file(a / "adapter.safetensors"), load_file(b / "adapter.safetensors")
    assert ta.keys() == tb.keys()
    for k in ta:
        torch.testing.assert_close(ta[k], tb[k], atol=atol, rtol=1e-4, msg=k)


def _checkpoint(run: Path) -> dict[str, torch.Tensor]:
    folder = run / "checkpoint"
    return load_file(folder / json.loads((folder / "latest.json").read_text())["current"] / "tensors.safetensors")


def _same_checkpoint(a: Path, b: Path) -> None:
    """The last checkpoints agree, AdamW's moments included: Adam's step hardly changes when every gradient
    is scaled by one factor (as a wrong world-size scaling would), but its moments scale with it, unless
    gradient clipping has already rescaled every gradient to the same norm."""
    ta, tb = _checkpoint(a), _checkpoint(b)
    assert ta.keys() == tb.keys()
    assert any(".exp_avg_sq" in k for k in ta)
    for k in ta:
        scale = float(ta[k].abs().max()) if ta[k].is_floating_point() and ta[k].numel() else 1.0
        torch.testing.assert_close(ta[k], tb[k], atol=1e-4 * scale, rtol=1e-4, msg=k)


def _write_config(path: Path, **fields) -> Path:
    data = dict(tasks=["movie_sentiment", "news_topic"], max_length=48, train_examples=16, validation_examples=8)
    path.write_text(yaml.safe_dump({"model": "tiny", **data, **fields}))
    return path


@pytest.fixture
def config(tiny_models, tmp_path):
    return _write_config(
        tmp_path / "cfg.yaml",
        method="talora",
        # Rates a tenth of the defaults: Adam turns a rounding-level gradient difference on an element whose
        # gradient nearly cancels into a full step; at the defaults one element of u drifted by 5e-4 between
        # the 1- and 2-process runs (half-size per-rank batches round differently), with losses identical.
        method_args={"length": 2, "layers": 2, "lr_fast": 3e-3, "lr_slow": 1e-4, "lr_gate": 1e-3, "lr_target": 1e-2},
        stage1=SHORT,
        train=SHORT,
        transfer=dict(steps=2, batch_size=4, warmup_steps=1, eval_every=0),
    )


def test_two_ranks_train_and_transfer_as_one_process(config, tmp_path):
    _talora(["train", "--config", str(config), "--output", "one"], 1)
    _talora(["train", "--config", str(config), "--output", "two"], 2)
    for sub in (".", "stage1"):
        _same_adapter(tmp_path / "one" / sub, tmp_path / "two" / sub)
        _same_checkpoint(tmp_path / "one" / sub, tmp_path / "two" / sub)
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


def test_accelerate_launch_trains_and_transfers_as_one_process(config, tmp_path):
    _talora(["train", "--config", str(config), "--output", "one"], 1)
    _talora(["train", "--config", str(config), "--output", "acc"], 2, launcher="accelerate")
    for sub in (".", "stage1"):
        _same_adapter(tmp_path / "one" / sub, tmp_path / "acc" / sub)
        _same_checkpoint(tmp_path / "one" / sub, tmp_path / "acc" / sub)
    one = json.loads((tmp_path / "one" / "metrics.json").read_text())
    acc = json.loads((tmp_path / "acc" / "metrics.json").read_text())
    assert one["metrics"] == acc["metrics"]
    for run, n in (("one", 1), ("acc", 2)):
        args = ["transfer", "--from", run, "--task", "tweet_emotion", "--k", "2", "--output", f"{run}-t"]
        _talora(args, n, launcher="accelerate")
    _same_adapter(tmp_path / "one-t", tmp_path / "acc-t")
    assert not (tmp_path / "hf-home").exists()  # no accelerate config was written either


def test_two_ranks_train_lora_as_one_process(tiny_models, tmp_path):
    # A weight-changing method: peft's wrappers live outside the module tree DDP sees, only their A and B
    # are the method's parameters, and those must get the single-process gradient. Without clipping, even
    # its scale shows (a missing world-size factor fails both comparisons below).
    train = {**SHORT, "grad_clip": 0.0}
    config = _write_config(tmp_path / "lora.yaml", method="lora", method_args={"rank": 2}, train=train)
    _talora(["train", "--config", str(config), "--output", "one"], 1)
    _talora(["train", "--config", str(config), "--output", "two"], 2)
    _same_adapter(tmp_path / "one", tmp_path / "two")
    _same_checkpoint(tmp_path / "one", tmp_path / "two")
    one = json.loads((tmp_path / "one" / "metrics.json").read_text())
    two = json.loads((tmp_path / "two" / "metrics.json").read_text())
    assert one["metrics"] == two["metrics"]


def _children(pid: int) -> list[int]:
    return [int(c) for task in Path(f"/proc/{pid}/task").iterdir() for c in (task / "children").read_text().split()]


def _rank_pid(launcher_pid: int, rank: int) -> int:
    for child in _children(launcher_pid):
        environ = Path(f"/proc/{child}/environ").read_bytes().split(b"\0")
        if f"RANK={rank}".encode() in environ:
            return child
    raise AssertionError(f"no worker of rank {rank} under the launcher {launcher_pid}")


def _checkpoint_step(run: Path) -> int:
    try:
        return int(json.loads((run / "checkpoint" / "latest.json").read_text())["current"].split("-")[1])
    except (OSError, ValueError, KeyError):
        return 0  # not written yet, or being replaced right now


@pytest.mark.parametrize("victim", [0, 1])
def test_rank_killed_mid_run_then_resumed_on_two_ranks_equals_one_process(tiny_models, tmp_path, victim):
    # Many short steps: the run is far from its end when the kill lands. A small learning rate keeps the
    # 1- and 2-process trajectories within float noise of each other over all of them.
    train = dict(steps=200, batch_size=4, warmup_steps=1, eval_every=10, eval_examples=4, log_every=10)
    args = {"length": 4, "lr": 3e-3}
    config = _write_config(tmp_path / "pt.yaml", method="prompt_tuning", method_args=args, train=train)
    _talora(["train", "--config", str(config), "--output", "one"], 1)

    run = tmp_path / "killed"
    logs = Path(tempfile.mkdtemp(prefix="launch-", dir=tmp_path))
    cmd = _command(["train", "--config", str(config), "--output", str(run)], 2, "torchrun", logs)
    with open(tmp_path / "killed.err", "w") as err:
        launcher = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err, env=_env(), start_new_session=True)
    try:
        deadline = time.monotonic() + 300
        while _checkpoint_step(run) < 20 and launcher.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        assert launcher.poll() is None, f"the run ended before the kill:\n{(tmp_path / 'killed.err').read_text()}"
        assert _checkpoint_step(run) >= 20, "no checkpoint at step 20 after 300 s"
        os.kill(_rank_pid(launcher.pid, victim), signal.SIGKILL)
        try:
            code = launcher.wait(timeout=120)
        except subprocess.TimeoutExpired:
            pytest.fail("torchrun did not tear the other rank down within 120 s")
    finally:
        if launcher.poll() is None:
            os.killpg(launcher.pid, signal.SIGKILL)
            launcher.wait()
    assert code != 0
    stopped_at = _checkpoint_step(run)
    assert not (run / "metrics.json").exists(), "the run finished before the kill took effect: raise steps"
    assert 20 <= stopped_at < train["steps"]

    _talora(["train", "--config", str(config), "--output", str(run), "--resume"], 2)
    _same_adapter(tmp_path / "one", run)
    _same_checkpoint(tmp_path / "one", run)
    one = json.loads((tmp_path / "one" / "metrics.json").read_text())
    resumed = json.loads((run / "metrics.json").read_text())
    assert (one["metrics"], one["best_step"]) == (resumed["metrics"], resumed["best_step"])
    log = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert log[-1]["step"] == train["steps"]
