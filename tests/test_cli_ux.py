"""The command line for people and logs: --version, --quiet, bars as plain lines in a log, `analyze run`
and `analyze interlayer`; options declared once (shared ones, and those that stand for a config field)."""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys

import pytest
import torch

from talora import __version__
from talora.cli import build_parser, main
from talora.config import RunConfig, TrainConfig, dump_config, field_help
from talora.methods.deep_prompt_tuning import DeepPromptTuning, DeepPromptTuningConfig
from talora.progress import progress
from talora.recipes import pipeline

SOURCES = ["movie_sentiment", "emotion"]
# What a tqdm bar looks like in any of its forms: "12%|##  |", "3/8 [00:01<...", a redraw's carriage return.
BAR = re.compile(r"\d+%\||\d+/\d+ \[|\r")


def _config(tmp_path):
    short = TrainConfig(steps=4, batch_size=4, warmup_steps=1, eval_every=2, eval_examples=4, log_every=2)
    cfg = RunConfig(
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
    path = tmp_path / "c.yaml"
    path.write_text(dump_config(cfg))
    return path, cfg


def test_version_names_talora_and_its_stack(capsys):
    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"talora {__version__} (torch ")
    assert "transformers " in out and "peft " in out


def _leaf_parsers(parser, path=()):
    """(command path, parser) of every command that runs something (``store add``, ``train``, ...)."""
    groups = [a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction"]
    if not groups:
        yield path, parser
    for group in groups:
        for name, sub in group.choices.items():
            yield from _leaf_parsers(sub, (*path, name))


def test_every_command_takes_quiet_before_or_after_its_name():
    parser = build_parser()
    leaves = dict(_leaf_parsers(parser))
    assert len(leaves) > 25
    missing = [" ".join(path) for path, sub in leaves.items() if "--quiet" not in sub._option_string_actions]
    assert not missing, missing
    train = ["train", "--config", "c.yaml", "--output", "o"]
    assert parser.parse_known_args(["--quiet", *train])[0].quiet
    assert parser.parse_known_args([*train, "--quiet"])[0].quiet
    assert not parser.parse_known_args(train)[0].quiet


def test_options_that_set_a_config_field_are_that_field():
    options = dict(_leaf_parsers(build_parser()))[("train",)]._option_string_actions
    helps = field_help(RunConfig)
    for flag, field in (("--seed", "seed"), ("--data-dir", "data_dir"), ("--method", "method"), ("--dtype", "dtype")):
        assert options[flag].dest == field and options[flag].help.startswith(helps[field]), flag
    assert options["--seed"].type is int


def test_quiet_keeps_results_on_stdout_and_stderr_free_of_bars(tmp_path, tiny_models):
    path, _ = _config(tmp_path)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TQDM_", "TALORA_QUIET"))}
    cmd = [sys.executable, "-m", "talora.cli", "--quiet", "train", "--config", str(path), "--output", "out"]
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr
    for task in SOURCES:
        assert re.search(rf"^{task}\s+accuracy=", done.stdout, re.M), done.stdout
    assert not BAR.search(done.stderr), done.stderr
    assert "average" in done.stderr  # the closing summary line is not a bar and stays

    # The same run's evaluation without --quiet does draw bars (stderr is a pipe here: plain lines).
    loud = subprocess.run(
        [sys.executable, "-m", "talora.cli", "eval", "--adapter", "out", "--task", SOURCES[0]],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert loud.returncode == 0, loud.stderr
    assert re.search(r"^evaluate: +\d+%\|", loud.stderr, re.M), loud.stderr
    assert "\r" not in loud.stderr and "\x1b[" not in loud.stderr


def test_a_bar_in_a_log_is_plain_ascii_lines(monkeypatch):
    monkeypatch.delenv("TALORA_QUIET", raising=False)
    monkeypatch.delenv("RANK", raising=False)
    log = io.StringIO()  # not a terminal
    monkeypatch.setattr(sys, "stderr", log)
    for _ in progress(range(3), desc="outer"):
        for _ in progress(range(2), desc="inner"):
            pass
    lines = log.getvalue().splitlines()
    assert lines[0].startswith("outer:   0%|") and lines[-1].startswith("outer: 100%|##########| 3/3")
    assert all(line.isascii() and "\r" not in line and "\x1b" not in line for line in lines)
    monkeypatch.setenv("TALORA_QUIET", "1")
    log.truncate(0)
    for _ in progress(range(3), desc="hidden"):
        pass
    assert log.getvalue() == ""


def test_analyze_run_plots_both_stages(tmp_path, tiny_models, capsys, monkeypatch):
    for name, value in (("TQDM_MININTERVAL", "30"), ("TQDM_ASCII", "1")):  # main() sets these for a log
        monkeypatch.setenv(name, value)
    _, cfg = _config(tmp_path)
    pipeline.run_train(cfg, tmp_path / "run")
    assert main(["analyze", "run", str(tmp_path / "run")]) == 0
    png = tmp_path / "run" / "run.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("stage 1: ") and out[1].startswith("training: ")
    assert "4 steps" in out[1] and "best score" in out[1]

    assert main(["analyze", "run", str(tmp_path / "run"), "--output", str(tmp_path / "figs")]) == 0
    assert (tmp_path / "figs" / "run.png").is_file()
    assert main(["analyze", "run", str(tmp_path / "run" / "stage1"), "--output", str(tmp_path / "s1.png")]) == 0
    assert (tmp_path / "s1.png").is_file()

    capsys.readouterr()
    assert main(["analyze", "interlayer", str(tmp_path / "run"), "--output", str(tmp_path / "il")]) == 0
    assert (tmp_path / "il" / "interlayer.png").read_bytes()[:4] == b"\x89PNG"
    rows = [r for r in capsys.readouterr().out.splitlines() if r.startswith("| ") and not r.startswith("| layer")]
    # the tiny model has 4 layers and stage 1 prompts the last 2: layers 3 and 4, logged at steps 2 and 4
    assert [r.split(" | ")[0] for r in rows] == ["| 3", "| 4"]
    logged = [json.loads(line) for line in (tmp_path / "run" / "stage1" / "log.jsonl").read_text().splitlines()]
    last = [r for r in logged if "base_similarity" in r][-1]["base_similarity"]
    assert rows[1].endswith(f"{last['4']:.4f} |")
    assert main(["analyze", "interlayer", str(tmp_path / "run" / "s1.png")]) == 2
    assert "no log with base_similarity" in capsys.readouterr().err


def test_base_similarity_is_the_mean_pairwise_cosine_of_the_task_prompts(backbone):
    tasks = ["a", "b", "c"]
    method = DeepPromptTuning(DeepPromptTuningConfig(length=3, layers=3), backbone, tasks)
    logged = method.log_state()["base_similarity"]
    first = method.first_layer
    assert sorted(logged, key=int) == [str(first + 1), str(first + 2), str(first + 3)]
    for i in range(3):
        p = method.prompts.detach()[i]
        naive = [
            torch.nn.functional.cosine_similarity(p[s].flatten(), p[t].flatten(), dim=0).item()
            for s in range(3)
            for t in range(3)
            if s != t
        ]
        assert logged[str(first + i + 1)] == pytest.approx(sum(naive) / len(naive), abs=1e-6)
    with torch.no_grad():
        method.prompts[:, 1] = 2 * method.prompts[:, 0]  # same direction: cosine 1 for the pair (a, b)
        method.prompts[:, 2] = -method.prompts[:, 0]  # opposite: -1 for (a, c) and (b, c)
    assert all(v == pytest.approx(-1 / 3, abs=1e-6) for v in method.log_state()["base_similarity"].values())
    assert DeepPromptTuning(DeepPromptTuningConfig(length=3), backbone, ["a"]).log_state() == {}


def test_analyze_run_names_what_is_wrong(tmp_path, capsys, monkeypatch):
    for name, value in (("TQDM_MININTERVAL", "30"), ("TQDM_ASCII", "1")):
        monkeypatch.setenv(name, value)
    assert main(["analyze", "run", str(tmp_path / "nope")]) == 2
    assert "no such run folder" in capsys.readouterr().err
    (tmp_path / "log.jsonl").write_text('{"step": 1, "loss": 2.0}\nnot json\n')
    assert main(["analyze", "run", str(tmp_path)]) == 2
    assert f"{tmp_path / 'log.jsonl'}:2: not a JSON line" in capsys.readouterr().err
