"""Named suites: their contents, a user's own suite file, every error, and ``talora tasks --suite``."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml
from real_data import REAL_DATA, needs_real_data, real_data  # noqa: F401 (real_data: the fixture)

from talora import data_paths
from talora.cli import main
from talora.data_paths import shared_data_dir
from talora.errors import ConfigError
from talora.recipes.suites import SUITES, SUITES_DIR, load_suite
from talora.tasks import SYNTHETIC_SOURCE_TASKS, SYNTHETIC_TARGET_TASKS


def test_the_named_suites():
    assert SUITES == ("en-dtvg", "en-tpv", "synthetic", "zh-talora")
    syn = load_suite("synthetic")
    assert syn.data_dir is None and syn.sources == SYNTHETIC_SOURCE_TASKS and syn.targets == SYNTHETIC_TARGET_TASKS
    assert syn.ks == (16, 32, 64) and syn.seeds == (0, 1, 2)


@needs_real_data
def test_the_paper_suites_on_the_shared_data():
    zh = load_suite("zh-talora", str(REAL_DATA))
    assert len(zh.sources) == len(zh.targets) == 8 and "cmrc2018" in zh.sources and "c3" in zh.targets
    dtvg = load_suite("en-dtvg", str(REAL_DATA))
    assert dtvg.sources == ("mnli", "qnli", "qqp", "sst2")
    assert {"stsb", "multirc", "wsc", "scitail"} <= set(dtvg.targets)
    tpv = load_suite("en-tpv", str(REAL_DATA))
    assert tpv.targets == ("scitail", "snli") and "stsb" in tpv.sources


DTVG_TASKS = [
    "mnli",
    "qnli",
    "qqp",
    "sst2",
    "stsb",
    "mrpc",
    "rte",
    "cola",
    "multirc",
    "boolq",
    "wic",
    "wsc",
    "cb",
    "scitail",
]


def _manifest(folder: Path, names: list[str] = DTVG_TASKS) -> Path:
    """A data folder with just a MANIFEST.json: enough for a suite's task check."""
    folder.mkdir(parents=True)
    (folder / "MANIFEST.json").write_text(
        json.dumps(
            {
                "tasks": [
                    {"task": n, "language": "en", "type": "sentence-pair classification", "label_list": ["a", "b"]}
                    for n in names
                ]
            }
        )
    )
    return folder


def test_a_user_suite_reads_a_relative_data_dir_from_the_current_directory(tmp_path, monkeypatch):
    _manifest(tmp_path / "shared" / "data")
    mine = tmp_path / "mine.yaml"
    mine.write_text((SUITES_DIR / "en-dtvg.yaml").read_text().replace("data_dir: shared ", "data_dir: ../shared/data "))
    (tmp_path / "repo").mkdir()
    monkeypatch.chdir(tmp_path / "repo")
    assert load_suite(mine).data_dir == "../shared/data"
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match=r"data_dir '../shared/data' cannot be read"):
        load_suite(mine)
    assert load_suite(mine, "shared/data").data_dir == "shared/data"  # --data-dir wins


def test_the_shared_keyword_finds_the_folder_through_TALORA_DATA(tmp_path, monkeypatch):
    data = _manifest(tmp_path / "anywhere" / "mydata")
    elsewhere = tmp_path / "a" / "b"
    elsewhere.mkdir(parents=True)
    monkeypatch.chdir(elsewhere)  # nothing at ../shared/data from here
    monkeypatch.setenv("TALORA_DATA", str(data))
    assert load_suite("en-dtvg").data_dir == str(data.resolve())
    assert shared_data_dir() == data.resolve()


def test_the_shared_keyword_finds_the_folder_beside_the_current_directory(tmp_path, monkeypatch):
    data = _manifest(tmp_path / "shared" / "data")
    (tmp_path / "repo").mkdir()
    monkeypatch.chdir(tmp_path / "repo")
    monkeypatch.delenv("TALORA_DATA", raising=False)
    assert load_suite("en-dtvg").data_dir == str(data.resolve())


def test_a_missing_shared_folder_says_where_it_looked(tmp_path, monkeypatch, capsys):
    elsewhere = tmp_path / "a" / "b"
    elsewhere.mkdir(parents=True)
    monkeypatch.chdir(elsewhere)
    monkeypatch.setenv("TALORA_DATA", str(tmp_path / "nowhere"))
    with pytest.raises(
        ConfigError,
        match=r"en-dtvg.yaml: data_dir shared: TALORA_DATA='.*nowhere': .*nowhere is not "
        r"a data folder \(no MANIFEST.json in it\)",
    ):
        load_suite("en-dtvg")
    with pytest.raises(ConfigError, match=r"TALORA_DATA="):
        shared_data_dir(required=False)  # a wrong explicit folder is an error even when not required
    assert load_suite("en-dtvg", str(_manifest(tmp_path / "given"))).data_dir.endswith("given")  # --data-dir wins

    monkeypatch.delenv("TALORA_DATA")
    monkeypatch.setattr(data_paths, "CHECKOUT_ROOT", tmp_path / "checkout")  # not this machine's checkout
    assert shared_data_dir(required=False) is None
    root = tmp_path.resolve()
    looked = re.escape(f"no MANIFEST.json in {root / 'a' / 'shared' / 'data'} or {root / 'shared' / 'data'}")
    with pytest.raises(
        ConfigError,
        match=rf"en-dtvg.yaml: data_dir shared: shared data folder not found: {looked}; "
        r"set TALORA_DATA or pass --data-dir",
    ):
        load_suite("en-dtvg")
    assert main(["tasks", "--suite", "en-tpv"]) == 2
    assert "set TALORA_DATA or pass --data-dir" in capsys.readouterr().err


def _write(tmp_path: Path, **change) -> Path:
    data = yaml.safe_load((SUITES_DIR / "synthetic.yaml").read_text())
    data.update(change)
    path = tmp_path / "mine.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_a_copied_and_edited_suite_file(tmp_path):
    suite = load_suite(_write(tmp_path, name="mine", targets=["tweet_emotion"], ks=[4], seeds=[7]))
    assert suite.name == "mine" and suite.targets == ("tweet_emotion",) and suite.ks == (4,) and suite.seeds == (7,)


@pytest.mark.parametrize(
    "change, message",
    [
        ({"sources": ["movie_sentiment", "nope"]}, r"sources: no task 'nope' in the synthetic suite"),
        ({"targets": ["movie_sentiment"]}, r"\['movie_sentiment'\] are both sources and targets"),
        ({"ks": [16, 0]}, r"ks: expected a non-empty list of positive integers"),
        ({"seeds": []}, r"seeds: expected a non-empty list"),
        ({"sources": "movie_sentiment"}, r"sources: expected a list, got str"),
        ({"ks": [16, "32"]}, r"ks: expected a non-empty list of positive integers or 'all', got \[16, '32'\]"),
        ({"shots": "per_task"}, r"shots: expected one of per_class, total, got 'per_task'"),
        ({"extra": 1}, r"unknown key\(s\) extra"),
    ],
)
def test_bad_suites_are_refused_by_name(tmp_path, change, message):
    with pytest.raises(ConfigError, match=message):
        load_suite(_write(tmp_path, **change))


def test_unknown_suite_and_missing_data(tmp_path):
    with pytest.raises(ConfigError, match=r"unknown suite 'zh-tallora': not one of en-dtvg, en-tpv, synthetic"):
        load_suite("zh-tallora")
    with pytest.raises(ConfigError, match=r"data_dir '.*nowhere' cannot be read .*pass --data-dir"):
        load_suite("en-dtvg", str(tmp_path / "nowhere"))
    path = _write(tmp_path)
    path.write_text(path.read_text().replace("ks:", "ks_typo:"))
    with pytest.raises(ConfigError, match=r"unknown key\(s\) ks_typo"):
        load_suite(path)


def test_cli_lists_a_suite(capsys):
    assert main(["tasks", "--suite", "synthetic"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("suite synthetic:") and len(out) == 2 + 10
    assert out[2].split()[:5] == ["movie_sentiment", "en", "classification", "source", "accuracy"]
    assert out[-1].split()[3] == "target"
    assert main(["tasks", "--suite", "synthetic", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["name"] == "synthetic" and [t["suite_role"] for t in data["tasks"]] == ["source"] * 6 + ["target"] * 4
    assert main(["tasks", "--suite", "nope"]) == 2


@needs_real_data
def test_cli_lists_every_real_task_with_its_metric(capsys):
    assert main(["tasks", "--data-dir", str(REAL_DATA), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert len(rows) == 33 and all(r["supported"] and r["metric"] and r["splits"] for r in rows)
    assert main(["tasks", "--data-dir", str(REAL_DATA)]) == 0
    out = capsys.readouterr().out
    assert "UNSUPPORTED" not in out and len(out.splitlines()) == 33
    assert main(["tasks", "--suite", "zh-talora", "--data-dir", str(REAL_DATA)]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 2 + 16
