"""`talora bench speed` runs every configuration and writes the documented JSON (figures are not asserted)."""

import json

import torch
from conftest import make_backbone

from talora.bench import ROWS, Shape, _peft_model, run_speed, write_json


def test_every_row_steps_and_the_json_has_the_documented_fields(tmp_path, monkeypatch):
    monkeypatch.setenv("TALORA_CACHE", str(tmp_path / "cache"))
    backbone = make_backbone("llama")
    frozen = {k: v.clone() for k, v in backbone.model.state_dict().items()}
    shape = Shape(batch_size=2, seq_len=12, prompt_length=3, layers=2)
    rows = run_speed(backbone, None, shape, repeats=1, progress=lambda _: None)
    assert [r.name for r in rows] == list(ROWS)
    assert all(r.median_step_s > 0 and r.examples_per_s > 0 for r in rows)
    assert rows[0].ratio_to_talora == 1.0
    write_json(rows, tmp_path / "bench.json")
    records = json.loads((tmp_path / "bench.json").read_text())
    assert {"name", "median_step_s", "examples_per_s", "peak_mem_mb"} <= set(records[0])
    # PEFT rows train deep copies: the shared backbone is untouched afterwards.
    assert all(torch.equal(v, backbone.model.state_dict()[k]) for k, v in frozen.items())


def test_peft_rows_train_only_their_own_parameters():
    backbone = make_backbone("llama")
    shape = Shape(batch_size=2, seq_len=8, prompt_length=2, layers=2)
    marks = {
        "peft_lora": "lora_",
        "peft_prompt_tuning": "prompt_encoder",
        "peft_prefix_tuning": "prompt_encoder",
        "peft_adaption_prompt": "adaption_",
    }
    for row, mark in marks.items():
        names = [n for n, p in _peft_model(backbone, row, shape, 2).named_parameters() if p.requires_grad]
        assert names and all(mark in n for n in names), (row, names)
