"""`talora plan`: counts from the methods themselves, models on the meta device only (never a 7B
weight in memory), the activation estimate against what autograd really keeps, the shipped
Qwen2.5 shapes and the paper configs."""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path

import pytest
import torch
from real_data import REAL_DATA, needs_real_data, real_data  # noqa: F401 (real_data: the fixture)
from transformers import AutoModelForCausalLM, Gemma3TextConfig, Qwen2Config

from talora.cli import main
from talora.config import from_dict, load_config
from talora.core import attention
from talora.core.backbone import Backbone
from talora.core.batching import Batch
from talora.core.forward import answer_loss
from talora.errors import ConfigError
from talora.methods import METHODS
from talora.recipes.plan import (
    GIB,
    ModelShape,
    activation_estimate,
    make_plan,
    meta_backbone,
    model_config,
    shipped_models,
)

REPO = Path(__file__).parent.parent
PAPER_CONFIGS = sorted((REPO / "configs" / "paper").glob("talora-*.yaml"))
PAPER_SWEEPS = sorted((REPO / "configs" / "paper").glob("zh-talora-table*.yaml"))
PAPER_7B = REPO / "configs" / "paper" / "talora-zh-qwen2.5-7b.yaml"
# The published config.json fields of the three shipped models: (d, layers, heads, kv heads, MLP,
# vocab, tied embeddings, parameters).
QWEN25 = {
    "qwen2.5-7b-instruct": (3584, 28, 28, 4, 18944, 152064, False, 7_615_616_512),
    "qwen2.5-1.5b-instruct": (1536, 28, 12, 2, 8960, 151936, True, 1_543_714_304),
    "qwen2.5-0.5b-instruct": (896, 24, 14, 2, 4864, 151936, True, 494_032_768),
}


def _tiny_folder(tmp_path: Path, **overrides) -> Path:
    fields = dict(
        vocab_size=320,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=2,
    )
    Qwen2Config(**{**fields, **overrides}).save_pretrained(tmp_path / "tiny")
    return tmp_path / "tiny"


def _run_config(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "run.yaml"
    path.write_text(text)
    return path


@pytest.fixture(scope="module")
def qwen7b() -> Backbone:
    config, _ = model_config("qwen2.5-7b-instruct")
    return meta_backbone(config, "qwen2.5-7b-instruct")


def test_tiny_model_counts_come_from_the_method(tmp_path):
    folder = _tiny_folder(tmp_path)
    cfg = load_config(
        _run_config(
            tmp_path,
            f"model: {folder}\ntasks: [a, b, c]\nmethod_args: {{length: 5, layers: 2, rank: 3}}\n",
        )
    )
    plan = make_plan(cfg)
    stage1, stage2 = plan.rows
    assert (stage1.stage, stage2.stage) == ("stage 1", "stage 2")
    L, m, d, r, H, T = 2, 5, 64, 3, 4, 3
    groups = {g["name"]: g["params"] for g in stage2.groups}
    assert groups == {"theta0": L * m * d, "B": L * m * r, "uv": T * L * (r + d), "gate": L * H}
    assert (stage2.shared, stage2.per_task) == (L * m * d + L * m * r + L * H, L * (r + d))
    assert {g["name"]: g["params"] for g in stage1.groups} == {"prompt": T * L * m * d, "gate": T * L * H}
    assert stage2.memory.optimizer == 16 * stage2.trainable
    assert stage2.memory.weights >= ModelShape.of(meta_backbone(*model_config(str(folder)))).parameters * 2


def test_every_registered_method_is_planned_on_the_meta_device(tmp_path):
    cfg = load_config(_run_config(tmp_path, f"model: {_tiny_folder(tmp_path)}\ntasks: [a, b]\n"))
    plan = make_plan(cfg, all_methods=True)
    assert {row.method for row in plan.rows} == set(METHODS)
    assert [row.method for row in plan.rows if row.not_planned] == []
    assert all(row.memory.total > 0 and row.trainable > 0 for row in plan.rows)


def test_a_method_that_cannot_be_built_is_reported_not_planned(tmp_path):
    folder = _tiny_folder(tmp_path)
    cfg = load_config(_run_config(tmp_path, f"model: {folder}\ntasks: [a]\nmethod_args: {{layers: 9}}\n"))
    (row,) = make_plan(cfg).rows
    assert row.memory is None and "cannot prompt 9 layers" in row.not_planned


@pytest.mark.parametrize("name", sorted(QWEN25))
def test_shipped_configs_are_the_published_shapes(name):
    assert name in shipped_models()
    config, source = model_config(name)
    backbone = meta_backbone(config, name)
    shape = ModelShape.of(backbone)
    d, layers, heads, kv, mlp, vocab, tied, params = QWEN25[name]
    assert shape.architecture == "Qwen2ForCausalLM" and shape.head_dim == d // heads
    assert (shape.hidden, shape.layers, shape.heads, shape.kv_heads, shape.intermediate, shape.vocab) == (
        d,
        layers,
        heads,
        kv,
        mlp,
        vocab,
    )
    assert (shape.tied_embeddings, shape.parameters) == (tied, params)
    assert config.rope_parameters["rope_theta"] == 1_000_000.0 and config.rms_norm_eps == 1e-6
    assert all(p.is_meta for p in backbone.model.parameters())


def test_gemma3_270m_is_planned_from_its_shipped_config_without_the_packages(tmp_path, capsys, monkeypatch):
    """The named model plans offline and without its weights' packages: its published shapes (head_dim 256
    apart from d/H = 160, one key/value head, a 262,144-token tied vocabulary, four norms per layer)."""
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if "gemma3_270m" in name else real(name, *a))
    config, source = model_config("gemma3-270m")
    assert "shipped" in source and config.model_type == "gemma3_text"
    shape = ModelShape.of(meta_backbone(config, "gemma3-270m"))
    assert (shape.architecture, shape.layers, shape.hidden, shape.heads, shape.kv_heads) == (
        "Gemma3ForCausalLM",
        18,
        640,
        4,
        1,
    )
    assert (shape.head_dim, shape.intermediate, shape.vocab, shape.tied_embeddings) == (256, 2048, 262_144, True)
    assert (shape.parameters, shape.norms, shape.qk_norms) == (268_098_176, 4, True)
    assert config.query_pre_attn_scalar == 256 and config.sliding_window == 512
    assert config.layer_types.count("full_attention") == 3
    cfg = _run_config(tmp_path, "tasks: [a, b]\nmethod_args: {layers: 9, length: 20, rank: 4}\n")
    assert main(["plan", "--config", str(cfg), "--model", "gemma3-270m", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    stage2 = next(row for row in out["rows"] if row["stage"] == "stage 2")
    L, m, d, r, H, T = 9, 20, 640, 4, 4, 2
    assert {g["name"]: g["params"] for g in stage2["groups"]} == {
        "theta0": L * m * d,
        "B": L * m * r,
        "uv": T * L * (r + d),
        "gate": L * H,
    }
    # The answer logits of a batch: 16 answer tokens per example over the 262,144-token vocabulary.
    assert stage2["memory_bytes"]["activations"] > 8 * 16 * 262_144 * 8


def test_a_known_hub_id_resolves_to_its_shipped_config_offline():
    config, source = model_config("Qwen/Qwen2.5-7B-Instruct")
    assert config.hidden_size == 3584
    assert "cache" in source or "shipped" in source


def test_a_missing_model_folder_is_a_one_line_error(tmp_path, capsys):
    cfg = _run_config(tmp_path, "tasks: [a]\n")
    assert main(["plan", "--config", str(cfg), "--model", str(tmp_path / "nope")]) == 2
    assert "model folder not found" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="no config.json"):
        model_config(str(tmp_path))


def test_plan_reports_the_paper_formula_for_the_7b_config(capsys):
    """The paper's setting: d = 3584, L = 14 of 28 layers, m = 20, H = 28, 8 source tasks; r from the config."""
    assert main(["plan", "--config", str(PAPER_7B), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    stage2 = next(row for row in out["rows"] if row["stage"] == "stage 2")
    r = load_config(PAPER_7B).method_args["rank"]
    d, L, m, H, T = 3584, 14, 20, 28, 8
    assert len(out["tasks"]) == T
    groups = {g["name"]: g["params"] for g in stage2["groups"]}
    assert groups == {"theta0": L * m * d, "B": L * m * r, "uv": T * L * (r + d), "gate": L * H}
    assert stage2["shared"] == L * m * d + L * m * r + L * H
    assert stage2["per_task"] == L * (r + d)
    assert stage2["trainable"] == stage2["shared"] + T * stage2["per_task"] == 1_405_320 + 392 * r
    memory = stage2["memory_bytes"]
    assert memory["weights"] >= 7_615_616_512 * 2  # bfloat16
    assert memory["optimizer"] == 16 * stage2["trainable"]


def test_the_7b_plan_never_holds_weights(qwen7b, tmp_path):
    cfg = load_config(PAPER_7B)
    plan = make_plan(cfg, backbone=qwen7b, all_methods=True)
    assert [row.method for row in plan.rows if row.not_planned] == []
    full = next(row for row in plan.rows if row.method == "full_finetune")
    assert full.trainable == 7_615_616_512  # counted on meta copies: nothing was allocated
    assert all(p.is_meta for p in qwen7b.model.parameters())


@pytest.mark.parametrize("path", PAPER_CONFIGS, ids=lambda p: p.name)
def test_paper_configs_validate_and_plan_with_the_shipped_model(path):
    cfg = load_config(path)
    assert cfg.model.startswith("Qwen/") and cfg.data_dir == "../shared/data"
    plan = make_plan(cfg)  # the hub id is matched to the shipped config by name
    assert plan.shape.parameters == QWEN25[cfg.model.split("/")[1].lower()][-1]
    stage1, stage2 = plan.rows
    # The header quotes `talora plan`: keep it in step with the estimate.
    header = re.search(r"bfloat16: stage 1 ([\d.]+) GiB, stage 2 ([\d.]+) GiB", path.read_text())
    assert header, f"{path.name}: no memory figures in the header"
    assert float(header[1]) == round(stage1.memory.total / GIB, 1)
    assert float(header[2]) == round(stage2.memory.total / GIB, 1)


def test_plan_prints_a_table(capsys):
    assert main(["plan", "--config", str(PAPER_7B), "--model", "qwen2.5-0.5b-instruct"]) == 0
    out = capsys.readouterr().out
    assert "| talora | stage 2 |" in out and f"theta0 {14 * 20 * 896:,}" in out  # the config's L = 14, d = 896
    assert "shapes from" in out and "(shipped)" in out


# --- the activation estimate against the tensors autograd keeps --------------------------------


def _saved_bytes(method_name: str, args: dict, family: str = "qwen2") -> tuple[int, int]:
    """(bytes autograd saves for one loss, the plan's estimate) on a tiny float32 Qwen2, or a tiny
    Gemma 3 shaped like the 270M (four norms per layer, q/k norms, one key/value head, hd > d/H)."""
    fields = dict(vocab_size=512, hidden_size=128, num_hidden_layers=4, num_attention_heads=4, tie_word_embeddings=True)
    if family == "gemma3":
        config = Gemma3TextConfig(
            **fields,
            intermediate_size=416,
            num_key_value_heads=1,
            head_dim=64,
            query_pre_attn_scalar=64,
            sliding_window=32,
        )
    else:
        config = Qwen2Config(**fields, intermediate_size=352, num_key_value_heads=2)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config, attn_implementation="sdpa")
    attention.install(model)
    for p in model.parameters():
        p.requires_grad_(False)
    backbone = Backbone(model, None, "tiny")
    cls = METHODS[method_name]
    method = cls(from_dict(cls.config_cls, args), backbone, ["a", "b"])
    b, s, n = 4, 96, 3
    ids = torch.randint(0, 512, (b, s))
    mask = torch.ones(b, s, dtype=torch.long)
    mask[0, -10:] = 0  # padding, so attention gets a mask as in real batches
    ends = [s - 11, s - 1, s - 1, s - 1]
    cols = torch.tensor([end - n + j for end in ends for j in range(n)])
    batch = Batch(ids, mask, torch.tensor([0, 1, 0, 1]), torch.arange(b).repeat_interleave(n), cols, cols % 512)
    owned = {p.untyped_storage().data_ptr() for p in [*model.parameters(), *method.parameters()]}
    saved: dict[int, int] = {}

    def keep(t: torch.Tensor) -> torch.Tensor:
        ptr = t.untyped_storage().data_ptr()
        if ptr not in owned:
            saved[ptr] = max(saved.get(ptr, 0), t.untyped_storage().nbytes())
        return t

    with torch.autograd.graph.saved_tensors_hooks(keep, lambda t: t), method.applied(backbone):
        answer_loss(backbone, method, batch)
    estimate = activation_estimate(method, ModelShape.of(backbone), b, s, n, dtype_bytes=4)
    return sum(saved.values()), estimate


@pytest.mark.parametrize(
    "method_name, args",
    [
        ("talora", {"layers": 3, "length": 20}),
        ("deep_prompt_tuning", {"layers": 2}),
        ("prompt_tuning", {}),
        ("lora", {}),
        ("bitfit", {}),
        ("adapter", {}),
        ("full_finetune", {}),
    ],
)
@pytest.mark.parametrize("family", ["qwen2", "gemma3"])
def test_activation_estimate_matches_what_autograd_saves(method_name, args, family):
    measured, estimate = _saved_bytes(method_name, args, family)
    assert estimate == pytest.approx(measured, rel=0.06)


@needs_real_data
@pytest.mark.parametrize("path", PAPER_SWEEPS, ids=lambda p: p.name)
def test_paper_table_sweeps_load_and_plan_with_the_shipped_model(path):
    from talora.recipes.sweep import load_sweep

    assert len(PAPER_SWEEPS) == 3
    sweep, runs = load_sweep(path, data_dir=str(REAL_DATA))  # the suite's tasks are checked against the data
    assert len(sweep.targets) >= 4 and runs["talora"][0].method_args == {"layers": 14}
    stage1, stage2 = make_plan(runs["talora"][0]).rows
    # The header's "about N GiB" per GPU is the planned stage 2 in bfloat16 with gradient checkpointing.
    quoted = float(re.search(r"about ([\d.]+) GiB", path.read_text())[1])
    assert abs(quoted - stage2.memory.total / GIB) < 1.0


def test_plan_of_a_sweep_plans_each_method_of_it(tmp_path, capsys):
    import yaml

    short = {"steps": 2, "batch_size": 4}
    sweep = {
        "run": {
            "model": "qwen2.5-0.5b-instruct",
            "tasks": ["movie_sentiment", "news_topic", "emotion"],
            "max_length": 64,
            "train": short,
            "transfer": {"steps": 2, "batch_size": 2},
        },
        "methods": {
            "talora": {"method_args": {"layers": 4}},
            "pt": {"method": "prompt_tuning"},
            "lora": {"from_scratch": True},
        },
        "targets": ["product_sentiment"],
        "ks": [16],
    }
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(sweep, sort_keys=False))
    assert main(["plan", "--config", str(path)]) == 0
    out = capsys.readouterr().out
    headers = re.findall(r"^## (.+)$", out, re.M)
    assert headers == [
        "talora: method talora, trained on the sources",
        "pt: method prompt_tuning, trained on the sources",
        "lora: method lora, trained from scratch on each target (product_sentiment planned, transfer budget)",
    ]
    assert "| talora | stage 2 |" in out and "| prompt_tuning | train |" in out and "| lora | train |" in out
    assert "setting: 1 tasks, max_length 64, batch 8 (stage 1) / 2 (train)" in out  # lora: the transfer batch

    assert main(["plan", "--config", str(path), "--json", "--run.max_length", "32"]) == 0
    plans = json.loads(capsys.readouterr().out)
    assert list(plans) == ["talora", "pt", "lora"] and all(p["max_length"] == 32 for p in plans.values())
    own = make_plan(load_config(None, {**sweep["run"], "method": "prompt_tuning", "max_length": 32}))
    assert plans["pt"]["rows"] == own.to_json()["rows"]
    assert plans["talora"]["rows"][0]["stage"] == "stage 1" and plans["lora"]["tasks"] == ["product_sentiment"]


@needs_real_data
def test_plan_of_a_paper_table_sweep(capsys):
    assert main(["plan", "--config", str(PAPER_SWEEPS[0])]) == 0
    out = capsys.readouterr().out
    assert re.findall(r"^## (\w+):", out, re.M) == [
        "talora",
        "prompt_tuning",
        "spot",
        "attempt",
        "mpt",
        "lora",
        "adapter",
        "bitfit",
        "full_finetune",
    ]
