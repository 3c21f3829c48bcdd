"""Command-line overrides of config fields (talora.overrides) and their way into the resolved config."""

from __future__ import annotations

import pytest

from talora.config import load_config
from talora.errors import ConfigError
from talora.overrides import merge, parse_overrides


@pytest.mark.parametrize(
    "args, expected",
    [
        ([], {}),
        (["--train.steps", "100"], {"train": {"steps": 100}}),
        (["--train.steps=100"], {"train": {"steps": 100}}),
        (["--max_length", "128"], {"max_length": 128}),
        (
            ["--train.steps", "5", "--train.batch_size=2", "--method_args.rank", "8"],
            {"train": {"steps": 5, "batch_size": 2}, "method_args": {"rank": 8}},
        ),
        (["--cache_lower_layers", "true"], {"cache_lower_layers": True}),
        (["--data_dir", "null"], {"data_dir": None}),
        (["--data_dir="], {"data_dir": None}),
        (["--ks", "[16, 32]"], {"ks": [16, 32]}),
        (["--tasks=[sst2, rte]"], {"tasks": ["sst2", "rte"]}),
        (["--method_args.lr_fast", "3e-2"], {"method_args": {"lr_fast": 0.03}}),  # PyYAML alone keeps "3e-2" a str
        (["--method_args.lr_fast", "-1E5"], {"method_args": {"lr_fast": -100000.0}}),
        (["--method_args.scale", "0.5"], {"method_args": {"scale": 0.5}}),
        (["--method_args.scale", "-2"], {"method_args": {"scale": -2}}),
        (["--method", "prompt_tuning"], {"method": "prompt_tuning"}),
        (["--model", "./models/x"], {"model": "./models/x"}),
        (["--model=a=b"], {"model": "a=b"}),  # only the first `=` splits
        (["--method_args", "{rank: 2, length: 4}"], {"method_args": {"rank": 2, "length": 4}}),
        (["--run.train.steps", "5", "--ks", "[16]"], {"run": {"train": {"steps": 5}}, "ks": [16]}),
    ],
)
def test_parse(args, expected):
    assert parse_overrides(args) == expected


@pytest.mark.parametrize(
    "args, named",
    [
        (["stray"], "'stray'"),
        (["--train.steps", "5", "stray"], "'stray'"),
        (["-x", "5"], "'-x'"),
        (["--train.steps"], "'--train.steps'"),  # no value at the end
        (["--train.steps", "--seed", "3"], "'--train.steps'"),  # no value before the next flag
        (["--train.steps", "5", "--train.steps=6"], "'--train.steps=6'"),  # repeated key
        (["--train", "{steps: 5}", "--train.steps", "6"], "'--train.steps'"),  # key and its sub-key
        (["--train.steps", "6", "--train", "{steps: 5}"], "'--train'"),
        (["--train..steps", "5"], "'--train..steps'"),
        (["--train.", "5"], "'--train.'"),
        (["--=5"], "'--=5'"),
        (["--", "5"], "'--'"),
        (["--ks", "[16, 32"], "'--ks'"),  # invalid YAML
    ],
)
def test_parse_refuses_naming_the_argument(args, named):
    with pytest.raises(ConfigError, match=named.replace(".", r"\.").replace("[", r"\[")) as info:
        parse_overrides(args)
    assert "\n" not in str(info.value)


def test_merge_is_deep_and_returns_a_new_dict():
    base = {"train": {"steps": 200, "batch_size": 8}, "tasks": ["a", "b"], "method_args": {"rank": 4}, "seed": 0}
    over = {"train": {"steps": 5}, "tasks": ["c"], "method_args": {"length": 2}, "model": "x"}
    out = merge(base, over)
    assert out == {
        "train": {"steps": 5, "batch_size": 8},
        "tasks": ["c"],
        "method_args": {"rank": 4, "length": 2},
        "seed": 0,
        "model": "x",
    }
    assert base == {
        "train": {"steps": 200, "batch_size": 8},
        "tasks": ["a", "b"],
        "method_args": {"rank": 4},
        "seed": 0,
    }
    assert over == {"train": {"steps": 5}, "tasks": ["c"], "method_args": {"length": 2}, "model": "x"}
    out["train"]["steps"] = 1
    assert base["train"]["steps"] == 200  # nothing shared with the inputs


def test_merge_replaces_non_mappings():
    assert merge({"train": None}, {"train": {"steps": 3}}) == {"train": {"steps": 3}}
    assert merge({"train": {"steps": 3}}, {"train": 7}) == {"train": 7}
    assert merge({"a": {"b": {"c": 1, "d": 2}}}, {"a": {"b": {"c": 9}}}) == {"a": {"b": {"c": 9, "d": 2}}}


@pytest.fixture
def config_file(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("method: talora\nmax_length: 64\ntrain:\n  steps: 12\n  batch_size: 4\nmethod_args:\n  length: 8\n")
    return path


def test_overrides_reach_the_resolved_config(config_file):
    cfg = load_config(
        config_file,
        parse_overrides(
            ["--train.steps", "100", "--method_args.rank=2", "--max_length", "128", "--stage1.warmup_steps", "3"]
        ),
    )
    assert cfg.train.steps == 100 and cfg.train.batch_size == 4  # the file's sibling field survives
    assert cfg.method_args == {"length": 8, "rank": 2}
    assert cfg.method_config().rank == 2 and cfg.method_config().length == 8
    assert cfg.max_length == 128 and cfg.stage1.warmup_steps == 3


def test_override_of_a_float_field_written_in_exponent_form(config_file):
    cfg = load_config(config_file, parse_overrides(["--method_args.lr_fast", "3e-2"]))
    assert cfg.method_config().lr_fast == pytest.approx(0.03)


@pytest.mark.parametrize(
    "args, message",
    [
        # The reader names the key as `<where>.train: unknown key(s) stepz` (or `train.stepz`).
        (["--train.stepz", "5"], r"train(\.|: unknown key\(s\) )stepz"),
        (["--train.steps", "ten"], r"train\.steps: expected int"),
        (["--method_args.rnak", "2"], r"rnak"),
        (["--colour", "red"], r"colour"),
    ],
)
def test_override_errors_name_the_full_key_path(config_file, args, message):
    with pytest.raises(ConfigError, match=message):
        load_config(config_file, parse_overrides(args))


def test_sweep_overrides_apply_to_the_sweep_mapping(tmp_path):
    from talora.recipes.sweep import load_sweep

    path = tmp_path / "s.yaml"
    path.write_text(
        "run: {tasks: [movie_sentiment], train: {steps: 50, batch_size: 4}}\n"
        "methods: {prompt_tuning: {}, deep: {method: deep_prompt_tuning, train: {steps: 7}}}\n"
        "targets: [tweet_emotion]\nks: [16, 32]\n"
    )
    sweep, runs = load_sweep(path, overrides=parse_overrides(["--run.train.steps", "5", "--ks", "[16]"]))
    assert sweep.ks == [16] and sweep.targets == ["tweet_emotion"]
    assert runs["prompt_tuning"][0].train.steps == 5 and runs["prompt_tuning"][0].train.batch_size == 4
    assert runs["deep"][0].train.steps == 7  # a method's own setting still wins over run.*
    _, runs = load_sweep(path, overrides=parse_overrides(["--methods.deep.train.steps=3"]))
    assert runs["deep"][0].train.steps == 3


def _captured(monkeypatch, name: str) -> dict:
    """Replace pipeline.<name> by a recorder: the CLI's wiring is checked without training anything."""
    import talora.recipes.pipeline

    seen: dict = {}

    def record(*args, **kwargs):
        seen["args"], seen["kwargs"] = args, kwargs
        raise SystemExit(0)

    monkeypatch.setattr(talora.recipes.pipeline, name, record)
    return seen


def test_cli_train_passes_overrides_and_options(tmp_path, monkeypatch, config_file):
    from talora.cli import main

    seen = _captured(monkeypatch, "run_train")
    with pytest.raises(SystemExit):
        main(
            [
                "train",
                "--config",
                str(config_file),
                "--output",
                str(tmp_path / "o"),
                "--seed",
                "3",
                "--train.steps",
                "100",
                "--method_args.rank=2",
                "--tasks",
                "[movie_sentiment]",
            ]
        )
    cfg = seen["args"][0]
    assert cfg.seed == 3 and cfg.train.steps == 100 and cfg.train.batch_size == 4
    assert cfg.method_args == {"length": 8, "rank": 2} and cfg.tasks == ["movie_sentiment"]


def test_cli_transfer_with_config_passes_overrides(tmp_path, monkeypatch, config_file):
    from talora.cli import main

    seen = _captured(monkeypatch, "run_transfer")
    with pytest.raises(SystemExit):
        main(
            [
                "transfer",
                "--config",
                str(config_file),
                "--method",
                "prompt_tuning",
                "--task",
                "tweet_emotion",
                "--k",
                "2",
                "--output",
                str(tmp_path / "o"),
                "--transfer.steps",
                "9",
                "--method_args.length",
                "4",
            ]
        )
    cfg = seen["kwargs"]["config"]
    assert cfg.method == "prompt_tuning" and cfg.transfer.steps == 9 and cfg.method_args == {"length": 4}
