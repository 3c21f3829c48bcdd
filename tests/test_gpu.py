"""On a CUDA machine: bfloat16 training whose adapter scores the same on a CPU in float32, and
`talora bench speed` in bfloat16. Marked ``gpu`` and skipped without CUDA (benchmarks/gpu_check.sh
runs them); the check of that script's syntax runs everywhere."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
import torch
from reference_scores import adapter_accuracy
from test_precision import SOURCES, _items

from talora.adapters.files import load_adapter
from talora.bench.speed import FLOOR_ROW
from talora.cli import main
from talora.config import RunConfig, TrainConfig
from talora.core.backbone import load_backbone
from talora.core.batching import answer_batch
from talora.core.forward import answer_loss
from talora.recipes import pipeline

ROOT = Path(__file__).resolve().parents[1]


def needs_cuda(test):
    return pytest.mark.gpu(pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")(test))


@needs_cuda
def test_bf16_training_on_cuda_scores_alike_on_cpu_in_float32(tiny_models, tmp_path):
    short = TrainConfig(steps=6, batch_size=4, warmup_steps=1, eval_every=0, eval_examples=4, log_every=1)
    cfg = RunConfig(
        method="talora",
        model="tiny",
        device="cuda",
        dtype="bfloat16",
        tasks=SOURCES,
        max_length=48,
        train_examples=16,
        validation_examples=12,
        method_args={"length": 2, "layers": 2},
        stage1=short,
        train=short,
    )
    pipeline.run_train(cfg, tmp_path / "src")
    gpu = pipeline.run_eval(tmp_path / "src", SOURCES[0], "validation", placement={"device": "cuda"})
    cpu = pipeline.run_eval(tmp_path / "src", SOURCES[0], "validation", placement={"device": "cpu", "dtype": "float32"})
    assert cpu["examples"] == gpu["examples"] > 0
    # bf16 rounding may flip near-ties on a random model; most predictions must agree.
    assert abs(cpu["metrics"]["accuracy"] - gpu["metrics"]["accuracy"]) <= 0.15
    cpu_backbone = load_backbone("tiny", "float32", "cpu")
    by_hand = adapter_accuracy(cpu_backbone, tmp_path / "src", SOURCES[0], "validation", 48, cpu["examples"])
    assert cpu["metrics"]["accuracy"] == pytest.approx(by_hand, abs=1e-9)
    # The same adapter's loss on one batch: bf16 on the GPU against float32 on the CPU.
    losses = []
    for backbone in (load_backbone("tiny", "bfloat16", "cuda"), cpu_backbone):
        method, _ = load_adapter(tmp_path / "src", backbone)
        batch = answer_batch(_items(backbone.tokenizer), backbone.tokenizer.pad_token_id)
        with torch.no_grad(), method.applied(backbone):
            losses.append(answer_loss(backbone, method.placed(backbone), batch).cpu())
    torch.testing.assert_close(losses[0], losses[1], rtol=5e-2, atol=5e-2)


@needs_cuda
def test_bench_speed_runs_on_cuda_in_bf16(tiny_models, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("TALORA_CACHE", str(tmp_path / "cache"))
    rows = ["talora", "talora_cached", "peft_adaption_prompt", "peft_lora", FLOOR_ROW]
    args = ["bench", "speed", "--model", "tiny", "--device", "cuda", "--dtype", "bfloat16", "--batch-size", "2"]
    args += ["--seq-len", "16", "--prompt-length", "3", "--layers", "2", "--repeats", "2", "--rows", ",".join(rows)]
    assert not main([*args, "--json", str(tmp_path / "bench.json")])
    assert f"talora_cached / {FLOOR_ROW}:" in capsys.readouterr().out
    records = {r["name"]: r for r in json.loads((tmp_path / "bench.json").read_text())}
    assert list(records) == rows
    assert all(r["median_step_s"] > 0 and r["peak_mem_mb"] > 0 for r in records.values())
    assert records[FLOOR_ROW]["ratio_to_floor"] == 1.0 and records["talora_cached"]["ratio_to_floor"] > 0


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_the_gpu_check_script_parses():
    subprocess.run(["bash", "-n", str(ROOT / "benchmarks" / "gpu_check.sh")], check=True)
