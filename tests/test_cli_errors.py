"""Every user error of the CLI ends in one ``talora: error:`` line, exit status 2, no traceback and
nothing written. A catalogue of wrong invocations and wrong files, each run in-process.

No case may load a model: a check that comes after the model is loaded is a bug (the user waits for
the model, then learns the task name was misspelt). An autouse guard makes any model load fail the case.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import transformers

from talora.cli import main


@pytest.fixture(autouse=True)
def no_model_loads(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError(f"this case loaded a model ({args[:1]}): the error must come before that")

    for cls in (transformers.AutoModelForCausalLM, transformers.AutoTokenizer):
        monkeypatch.setattr(cls, "from_pretrained", refuse)
    import talora.core.backbone

    monkeypatch.setattr(talora.core.backbone, "_cached_gguf_dir", refuse, raising=False)  # the embedded model


def _file(d: Path, name: str, text: str | bytes) -> str:
    path = d / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text) if isinstance(text, bytes) else path.write_text(text, encoding="utf-8")
    return str(path)


def _config(d: Path, text: str) -> str:
    return _file(d, "c.yaml", text)


def _data(d: Path, train_lines: list[str] | None = None) -> str:
    """A data folder in the shared layout with one source task; ``train_lines`` replaces its train file."""
    rows = [{"text": "fine film", "label": "good"}, {"text": "dull film", "label": "bad"}]
    lines = train_lines or [json.dumps(r) for r in rows]
    root = d / "data"
    _file(root, "en/reviews/train.jsonl", "".join(line + "\n" for line in lines))
    _file(root, "en/reviews/validation.jsonl", json.dumps(rows[0]) + "\n")
    entry = {
        "task": "reviews",
        "language": "en",
        "role": "source",
        "type": "single-sentence classification",
        "metric": "Accuracy",
        "label_list": ["bad", "good"],
        "path": "en/reviews",
        "splits": {s: {"file": f"en/reviews/{s}.jsonl"} for s in ("train", "validation")},
    }
    _file(root, "MANIFEST.json", json.dumps({"tasks": [entry]}))
    return str(root)


def _train(d: Path, config: str, *more: str) -> list[str]:
    return ["train", "--config", _config(d, config), "--output", str(d / "out"), *more]


def _adapter_like(d: Path) -> str:
    """A folder with a run config but no adapter files (e.g. a run that died before saving)."""
    folder = d / "run"
    _file(folder, "config.yaml", "method: prompt_tuning\n")
    return str(folder)


SMALL = "method: prompt_tuning\ntasks: [movie_sentiment]\n"

# id -> (argv built in the case's folder, what the error line must name)
CASES = {
    # config files
    "config-missing": (lambda d: ["train", "--config", str(d / "nope.yaml"), "--output", str(d / "out")], "nope.yaml"),
    "config-is-a-folder": (lambda d: ["train", "--config", str(d), "--output", str(d / "out")], "not found"),
    "config-invalid-yaml": (lambda d: _train(d, "train: {steps: 5\nseed: 1\n"), "not valid YAML"),
    "config-top-level-list": (lambda d: _train(d, "- method: talora\n- seed: 1\n"), "expected a mapping"),
    "config-top-level-scalar": (lambda d: _train(d, "42\n"), "expected a mapping"),
    "config-not-text": (
        lambda d: ["train", "--config", _file(d, "c.yaml", b"\xff\xfe\x00\x81binary"), "--output", str(d / "out")],
        "c.yaml",
    ),
    "config-unknown-key": (lambda d: _train(d, "colour: red\n"), "colour"),
    "config-unknown-nested-key": (lambda d: _train(d, "train: {stepz: 5}\n"), "stepz"),
    "config-wrong-type": (lambda d: _train(d, 'train: {steps: "ten"}\n'), "train.steps"),
    "config-bad-value": (lambda d: _train(d, "train: {steps: 0}\n"), "steps"),
    "config-unknown-method": (lambda d: _train(d, "method: nosuch\n"), "nosuch"),
    "flag-unknown-method": (lambda d: _train(d, "", "--method", "nosuch"), "nosuch"),
    "config-bad-method-args": (lambda d: _train(d, "method: prompt_tuning\nmethod_args: {rnak: 2}\n"), "rnak"),
    "config-method-args-wrong-type": (
        lambda d: _train(d, "method: prompt_tuning\nmethod_args: {length: two}\n"),
        "length",
    ),
    "config-unknown-task": (lambda d: _train(d, "tasks: [movie_sentiment, nosuch_task]\n"), "nosuch_task"),
    "model-folder-missing": (lambda d: _train(d, SMALL + "model: ./no/such/dir\n"), "no/such/dir"),
    "model-gguf-missing": (lambda d: _train(d, SMALL + "model: ./no/such.gguf\n"), "such.gguf"),
    # data folders
    "data-dir-missing": (lambda d: _train(d, "", "--data-dir", str(d / "nodata")), "MANIFEST.json"),
    "data-dir-empty": (
        lambda d: _train(d, "", "--data-dir", str((d / "empty").mkdir() or d / "empty")),
        "MANIFEST.json",
    ),
    "data-dir-malformed-jsonl": (
        lambda d: _train(
            d,
            "",
            "--data-dir",
            _data(d, [json.dumps({"text": "fine film", "label": "good"}), '{"text": "dull film", "label": ']),
        ),
        "line 2",
    ),
    "data-dir-bad-label": (
        lambda d: _train(d, "", "--data-dir", _data(d, [json.dumps({"text": "fine film", "label": "meh"})])),
        "meh",
    ),
    # overrides
    "override-without-value": (lambda d: _train(d, SMALL, "--train.steps"), "--train.steps"),
    "override-unknown-key": (lambda d: _train(d, SMALL, "--train.stepz", "5"), "stepz"),
    "override-wrong-type": (lambda d: _train(d, SMALL, "--train.steps", "ten"), "train.steps"),
    "override-stray-positional": (lambda d: _train(d, SMALL, "stray"), "stray"),
    "override-repeated": (lambda d: _train(d, SMALL, "--max_length=32", "--max_length", "64"), "--max_length"),
    "override-and-option": (lambda d: _train(d, SMALL, "--data-dir", str(d), "--data_dir", str(d)), "data_dir"),
    "override-abbreviated-option": (lambda d: _train(d, SMALL, "--data", str(d)), "data"),  # not --data-dir
    "override-invalid-yaml": (lambda d: _train(d, SMALL, "--tasks", "[a, b"), "--tasks"),
    "output-is-a-file": (lambda d: ["train", "--config", _config(d, SMALL), "--output", _file(d, "out", "x")], "out"),
    # transfer
    "transfer-both-starts": (
        lambda d: [
            "transfer",
            "--from",
            str(d),
            "--config",
            _config(d, SMALL),
            "--task",
            "tweet_emotion",
            "--k",
            "2",
            "--output",
            str(d / "out"),
        ],
        "--from",
    ),
    "transfer-no-start": (
        lambda d: ["transfer", "--task", "tweet_emotion", "--k", "2", "--output", str(d / "out")],
        "--from",
    ),
    "transfer-k-zero": (
        lambda d: [
            "transfer",
            "--config",
            _config(d, SMALL),
            "--task",
            "tweet_emotion",
            "--k",
            "0",
            "--output",
            str(d / "out"),
        ],
        "--k",
    ),
    "transfer-k-negative": (
        lambda d: [
            "transfer",
            "--config",
            _config(d, SMALL),
            "--task",
            "tweet_emotion",
            "--k",
            "-3",
            "--output",
            str(d / "out"),
        ],
        "--k",
    ),
    "transfer-k-not-a-number": (
        lambda d: [
            "transfer",
            "--config",
            _config(d, SMALL),
            "--task",
            "tweet_emotion",
            "--k",
            "two",
            "--output",
            str(d / "out"),
        ],
        "--k",
    ),
    "transfer-from-missing": (
        lambda d: [
            "transfer",
            "--from",
            str(d / "nope"),
            "--task",
            "tweet_emotion",
            "--k",
            "2",
            "--output",
            str(d / "out"),
        ],
        "nope",
    ),
    "transfer-from-overrides": (
        lambda d: [
            "transfer",
            "--from",
            str(d),
            "--task",
            "tweet_emotion",
            "--k",
            "2",
            "--output",
            str(d / "out"),
            "--transfer.steps",
            "3",
        ],
        "--config",
    ),
    "transfer-config-override-unknown": (
        lambda d: [
            "transfer",
            "--config",
            _config(d, SMALL),
            "--task",
            "tweet_emotion",
            "--k",
            "2",
            "--output",
            str(d / "out"),
            "--transfer.stepz",
            "3",
        ],
        "stepz",
    ),
    "transfer-unknown-task": (
        lambda d: [
            "transfer",
            "--config",
            _config(d, SMALL),
            "--task",
            "nosuch_task",
            "--k",
            "2",
            "--output",
            str(d / "out"),
        ],
        "nosuch_task",
    ),
    "transfer-from-not-an-adapter": (
        lambda d: [
            "transfer",
            "--from",
            _adapter_like(d),
            "--task",
            "tweet_emotion",
            "--k",
            "2",
            "--output",
            str(d / "out"),
        ],
        "adapter",
    ),
    # eval
    "eval-not-an-adapter": (lambda d: ["eval", "--adapter", str(d), "--task", "movie_sentiment"], "adapter"),
    "eval-adapter-missing": (lambda d: ["eval", "--adapter", str(d / "nope"), "--task", "movie_sentiment"], "nope"),
    "eval-unknown-argument": (
        lambda d: ["eval", "--adapter", str(d), "--task", "x", "--train.steps", "5"],
        "--train.steps",
    ),
    # other commands
    "tasks-unknown-suite": (lambda d: ["tasks", "--suite", "nosuch"], "nosuch"),
    "tasks-data-dir-missing": (lambda d: ["tasks", "--data-dir", str(d / "nodata")], "MANIFEST.json"),
    "sweep-config-missing": (
        lambda d: ["sweep", "--config", str(d / "nope.yaml"), "--output", str(d / "out")],
        "nope.yaml",
    ),
    "sweep-override-wrong-type": (
        lambda d: [
            "sweep",
            "--config",
            _config(d, "methods: {prompt_tuning: {}}\n"),
            "--output",
            str(d / "out"),
            "--ks",
            "16",
        ],
        "ks",
    ),
    "sweep-override-unknown-run-key": (
        lambda d: [
            "sweep",
            "--config",
            _config(d, "methods: {prompt_tuning: {}}\n"),
            "--output",
            str(d / "out"),
            "--run.train.stepz",
            "5",
        ],
        "stepz",
    ),
    "demo-config-missing": (
        lambda d: ["demo", "--config", str(d / "nope.yaml"), "--output", str(d / "out")],
        "nope.yaml",
    ),
    "analyze-tpv-inits-no-source": (lambda d: ["analyze", "tpv-inits", "--output", str(d / "out")], "--runs"),
    "bench-unknown-row": (lambda d: ["bench", "speed", "--rows", "nosuch"], "nosuch"),
    # usage errors (argparse)
    "no-command": (lambda d: [], "command"),
    "unknown-command": (lambda d: ["frobnicate"], "frobnicate"),
    "train-without-config": (lambda d: ["train", "--output", str(d / "out")], "--config"),
    "train-seed-not-a-number": (lambda d: _train(d, SMALL, "--seed", "one"), "--seed"),
    "tasks-unknown-flag": (lambda d: ["tasks", "--frobnicate"], "--frobnicate"),
}


def run_cli(argv: list[str], capsys) -> tuple[int, str, str]:
    try:
        code = main(argv)
    except SystemExit as stop:  # argparse's usage errors
        code = stop.code
    out, err = capsys.readouterr()
    return code, out, err


def _snapshot(folder: Path) -> dict[str, bytes] | None:
    if not folder.exists():
        return None
    if folder.is_file():
        return {"": folder.read_bytes()}
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("case", list(CASES))
def test_user_error_is_one_line(case, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # ./no/such/dir and friends are relative to the case's folder
    monkeypatch.delenv("TALORA_DATA", raising=False)
    build, named = CASES[case]
    argv = build(tmp_path)
    out_dir = Path(argv[argv.index("--output") + 1]) if "--output" in argv else tmp_path / "out"
    before = _snapshot(out_dir)
    code, out, err = run_cli(argv, capsys)
    assert "Traceback" not in out + err
    assert code == 2, (code, err)
    lines = [line for line in err.splitlines() if line.startswith("talora: error: ")]
    assert len(lines) == 1, err
    assert named in lines[0], lines[0]
    # Only argparse's usage lines may come besides the error line.
    assert all(line.startswith(("usage: ", " ")) for line in err.splitlines() if line not in lines), err
    assert _snapshot(out_dir) == before  # nothing written
