"""The transfer budget curve: the learning rate chosen on the shots alone, then scored on evaluation data."""

import json

import pytest
import yaml
from conftest import write_tiny_sweep

from talora.cli import main
from talora.recipes import budget
from talora.tasks import load_tasks


@pytest.fixture
def sweep_file(tmp_path, tiny_models):
    methods = {
        "talora": {"method_args": {"length": 2, "layers": 1}},
        "pt": {"method": "prompt_tuning", "method_args": {"length": 2}, "from_scratch": True},
    }
    return write_tiny_sweep(tmp_path / "sweep.yaml", methods)


def _metrics(folder):
    return json.loads((folder / "metrics.json").read_text())


def test_budget_chooses_the_scale_on_the_shots_and_scores_on_evaluation_data(tmp_path, sweep_file, monkeypatch):
    out = tmp_path / "budget-run"
    shots = 2 * len(load_tasks(None, ["tweet_emotion"])["tweet_emotion"].spec.labels)
    results = budget.run_budget(sweep_file, out, steps_grid=(1, 3), lr_scales=(1.0, 30.0))
    for label in ("talora", "pt"):
        for steps in (1, 3):
            row = results["methods"][label][str(steps)]
            name = f"{label}-tweet_emotion-k2-s0-n{steps}"
            half = {s: _metrics(out / "budget" / f"{name}-x{s:g}-half") for s in (1.0, 30.0)}
            assert all(h["split"] == "shots (held-out half)" for h in half.values())
            assert {(h["train_examples"], h["examples"]) for h in half.values()} == {(shots - shots // 2, shots // 2)}
            chosen = 1.0 if half[1.0]["score"] >= half[30.0]["score"] else 30.0
            assert row["scales"]["tweet_emotion k=2 seed=0"] == chosen
            final = out / "budget" / f"{name}-x{chosen:g}"
            assert row["scores"]["tweet_emotion k=2 seed=0"] == _metrics(final)["score"]
            transfer_cfg = yaml.safe_load((final / "config.yaml").read_text())["transfer"]
            assert (transfer_cfg["steps"], transfer_cfg["lr_scale"]) == (steps, chosen)
            assert _metrics(final)["split"] == "test" and _metrics(final)["train_examples"] == shots
    assert (out / "talora" / "adapter.safetensors").is_file() and not (out / "pt").exists()
    table = (out / "results-budget-sweep.md").read_text()
    assert table.startswith("| transfer steps | pt | talora |") and "| 3 | " in table
    assert (out / "budget-sweep.png").stat().st_size > 0

    monkeypatch.setattr(budget, "run_transfer", lambda *a, **k: pytest.fail("a finished unit ran again"))
    monkeypatch.setattr(budget, "train_unit", lambda *a, **k: lambda: pytest.fail("a finished unit ran again"))
    again = budget.run_budget(sweep_file, out, steps_grid=(1, 3), lr_scales=(1.0, 30.0))
    assert again["methods"] == results["methods"]


def test_budget_cli_refuses_bad_grids(tmp_path, sweep_file, capsys):
    out = tmp_path / "o"
    for flag, value in (("--steps", "10,zero"), ("--lr-scales", "1,-2")):
        with pytest.raises(SystemExit) as exit_info:
            main(["budget", "--config", str(sweep_file), "--output", str(out), flag, value])
        assert exit_info.value.code == 2
        assert "expected" in capsys.readouterr().err and not out.exists()
