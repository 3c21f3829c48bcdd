"""Data from anywhere: folders without a manifest, single CSV/JSONL/JSON/Parquet files, manifest tasks of an
unfamiliar type, ``talora data check`` and ``talora data pull`` (the hub fetch replaced by in-memory rows)."""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path

import pytest

from talora.cli import main
from talora.errors import DataError
from talora.tasks import check_tasks, describe_tasks, few_shot, hub, load_tasks
from talora.tasks.infer import UnknownKind


def jsonl(path: Path, rows: list) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def nli_rows(n: int) -> list[dict]:
    labels = ["entailment", "neutral", "contradiction"]
    return [{"premise": f"premise {i}", "hypothesis": f"hypothesis {i}", "gold_label": labels[i % 3]} for i in range(n)]


def folder_of_tasks(root: Path) -> Path:
    """One sub-folder per task, each in its own field names, no MANIFEST.json."""
    jsonl(root / "reviews" / "train.jsonl", [{"text": f"film {i}", "label": ["bad", "good"][i % 2]} for i in range(20)])
    jsonl(root / "reviews" / "validation.jsonl", [{"text": "a film", "label": "good"}])
    jsonl(root / "reviews" / "test.jsonl", [{"text": "a play", "label": "bad"}])
    jsonl(root / "nli" / "train.jsonl", nli_rows(30))
    jsonl(root / "nli" / "dev.jsonl", nli_rows(3))
    mc = [
        {"article": f"story {i}", "question": "who?", "options": ["Ann", "Bo", "Cy"], "answer": "ABC"[i % 3]}
        for i in range(10)
    ]
    jsonl(root / "quiz" / "train.jsonl", mc)
    squad = {
        "context": "Paris is the capital of France.",
        "question": "What is the capital of France?",
        "answers": {"text": ["Paris"], "answer_start": [0]},
    }
    jsonl(root / "squadish" / "train.jsonl", [squad] * 4)
    sts = [{"sentence1": f"a{i}", "sentence2": f"b{i}", "label": round(i * 0.45, 2)} for i in range(10)]
    jsonl(root / "similar" / "train.jsonl", sts)
    yesno = [{"question": f"is {i} even?", "passage": f"{i} is a number", "answer": i % 2 == 0} for i in range(6)]
    jsonl(root / "yesno" / "train.jsonl", yesno)
    jsonl(root / "zhsent" / "train.jsonl", [{"sentence": f"这部电影很好看{i}", "label": i % 2} for i in range(8)])
    (root / "README.md").write_text("not data\n")
    return root


def test_a_folder_without_manifest_names_tasks_by_folder_and_infers_them(tmp_path):
    root = folder_of_tasks(tmp_path / "data")
    tasks = load_tasks(root)
    assert sorted(tasks) == ["nli", "quiz", "reviews", "similar", "squadish", "yesno", "zhsent"]

    reviews = tasks["reviews"]
    assert (reviews.spec.kind, reviews.spec.metric, reviews.spec.labels) == (
        "classification",
        "accuracy",
        ("bad", "good"),
    )
    assert {s: len(e) for s, e in reviews.splits.items()} == {"train": 20, "validation": 1, "test": 1}
    assert reviews.splits["train"][0].uid == "reviews/train/1"

    nli = tasks["nli"]
    assert nli.spec.labels == ("contradiction", "entailment", "neutral")  # the sorted set of train labels
    ex = nli.splits["validation"][0]  # dev.jsonl is the validation split
    assert ex.fields == {"text_a": "premise 0", "text_b": "hypothesis 0"} and ex.label == "entailment"
    assert nli.spec.prompt(ex) == "Sentence 1: premise 0\nSentence 2: hypothesis 0\nLabel:"

    quiz = tasks["quiz"]
    q = quiz.splits["train"][1]
    assert quiz.spec.kind == "multiple_choice" and q.label == "1" and q.fields["choices"] == ["Ann", "Bo", "Cy"]
    assert quiz.spec.prompt(q) == "Passage: story 1\nQuestion: who?\nOptions: Ann; Bo; Cy\nAnswer:"

    squad = tasks["squadish"]
    assert squad.spec.kind == "extraction" and squad.spec.metric == "span_f1"
    assert squad.splits["train"][0].label == "Paris" and squad.splits["train"][0].fields["answer_start"] == 0

    similar = tasks["similar"]
    assert (similar.spec.kind, similar.spec.metric) == ("regression", "pearson")
    assert similar.spec.labels == ("0", "1", "2", "3", "4", "5")  # bins over the train range 0..4.05
    assert tasks["yesno"].spec.labels == ("false", "true")
    assert tasks["yesno"].splits["train"][0].fields == {"question": "is 0 even?", "context": "0 is a number"}

    zh = tasks["zhsent"]
    assert zh.spec.language == "zh" and zh.spec.labels == ("0", "1")
    assert zh.spec.prompt(zh.splits["train"][0]).startswith("文本：")


def test_describe_says_what_was_inferred(tmp_path, capsys):
    root = folder_of_tasks(tmp_path / "data")
    rows = {r["name"]: r for r in describe_tasks(root)}
    assert all(r["supported"] for r in rows.values())
    nli = rows["nli"]["inferred"]
    assert "no MANIFEST.json" in nli and "'premise', 'hypothesis'" in nli and "'gold_label'" in nli
    assert "dev.jsonl read as the validation split" in nli
    assert "held out" in rows["quiz"]["inferred"]  # no validation split of its own
    assert "held out" not in rows["reviews"]["inferred"]
    assert rows["similar"]["form"] == "pair_score"
    assert main(["tasks", "--data-dir", str(root)]) == 0
    out = capsys.readouterr().out
    assert out.count("inferred: no MANIFEST.json") == 7


def test_held_out_validation_is_seeded_and_keeps_every_class(tmp_path):
    rows = [{"text": f"t{i}", "label": "rare" if i == 0 else "common"} for i in range(40)]
    path = jsonl(tmp_path / "one" / "train.jsonl", rows)
    first, again = load_tasks(path.parent)["one"], load_tasks(path.parent)["one"]
    val = [ex.uid for ex in first.splits["validation"]]
    assert val == [ex.uid for ex in again.splits["validation"]] and len(val) == 4
    assert all(uid.startswith("one/train/") for uid in val)  # uids still point at their train line
    assert "rare" in {ex.label for ex in first.splits["train"]}
    assert not {ex.uid for ex in first.splits["train"]} & set(val)
    assert len(few_shot(first, 2, 0)) == 3  # k per class, the rare class included


def test_a_csv_file_with_a_split_column(tmp_path):
    path = tmp_path / "pairs.csv"
    path.write_text(
        "sentence1,sentence2,label,split\n"
        'a,b,yes,train\n"c, with comma",d,no,train\ne,f,yes,train\ng,h,no,dev\ni,j,yes,test\n',
        encoding="utf-8",
    )
    task = load_tasks(path)["pairs"]
    assert {s: len(e) for s, e in task.splits.items()} == {"train": 3, "validation": 1, "test": 1}
    assert task.splits["train"][1].fields == {"text_a": "c, with comma", "text_b": "d"}
    assert task.splits["train"][1].uid == "pairs/train/3"  # line 3 of the file (the header is line 1)
    row = describe_tasks(path)[0]
    assert row["name"] == "pairs" and "one data file" in row["inferred"] and "'split' column" in row["inferred"]


def test_a_file_without_splits_is_train_with_a_held_out_validation(tmp_path):
    tsv = tmp_path / "topics.tsv"
    tsv.write_text("text\tcategory\n" + "".join(f"doc {i}\t{['a', 'b', 'c'][i % 3]}\n" for i in range(30)))
    task = load_tasks(tsv)["topics"]
    assert {s: len(e) for s, e in task.splits.items()} == {"train": 27, "validation": 3}
    note = describe_tasks(tsv)[0]["inferred"]
    assert "every record is train" in note and "3 of the 30 train records held out" in note

    array = tmp_path / "arr.json"
    array.write_text(json.dumps([{"review": f"r{i}", "sentiment": ["neg", "pos"][i % 2]} for i in range(10)]))
    task = load_tasks(array)["arr"]
    assert task.spec.labels == ("neg", "pos") and task.splits["train"][0].uid == "arr/train/1"

    lines = jsonl(tmp_path / "plain.jsonl", [{"text": f"x{i}", "label": i % 2 == 0} for i in range(10)])
    assert load_tasks(lines)["plain"].spec.labels == ("false", "true")


def test_parquet_needs_pyarrow_and_reads_through_it(tmp_path, monkeypatch):
    path = tmp_path / "data.parquet"
    path.write_bytes(b"PAR1")
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)
    with pytest.raises(DataError, match=r"data.parquet: reading Parquet needs the 'pyarrow' package: pip install"):
        load_tasks(path)
    rows = [{"text": f"t{i}", "label": ["x", "y"][i % 2], "split": "train"} for i in range(6)]
    table = types.SimpleNamespace(to_pylist=lambda: rows + [{"text": "v", "label": "x", "split": "validation"}])
    fake = types.ModuleType("pyarrow.parquet")
    fake.read_table = lambda p: table
    monkeypatch.setitem(sys.modules, "pyarrow", types.ModuleType("pyarrow"))
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", fake)
    task = load_tasks(path)["data"]
    assert {s: len(e) for s, e in task.splits.items()} == {"train": 6, "validation": 1}


def manifest(root: Path, entry: dict) -> Path:
    (root / "MANIFEST.json").write_text(json.dumps({"tasks": [entry]}), encoding="utf-8")
    return root


def test_an_unfamiliar_manifest_type_is_inferred_from_its_lines(tmp_path):
    jsonl(tmp_path / "en/odd/train.jsonl", nli_rows(9))
    jsonl(tmp_path / "en/odd/validation.jsonl", nli_rows(3))
    entry = {"task": "odd", "language": "en", "type": "natural language inference, our way", "metric": "macro F1"}
    root = manifest(tmp_path, {**entry, "path": "en/odd"})
    task = load_tasks(root)["odd"]
    assert task.spec.kind == "classification" and task.spec.metric == "macro_f1"  # the manifest's metric stays
    assert task.spec.labels == ("contradiction", "entailment", "neutral")
    assert set(task.splits) == {"train", "validation"}  # a manifest task's splits are its own: nothing held out
    row = describe_tasks(root)[0]
    assert row["supported"] and "type 'natural language inference, our way'" in row["inferred"]

    # a label list in the manifest is used (and checked) as given
    root = manifest(tmp_path, {**entry, "path": "en/odd", "label_list": ["entailment", "neutral"]})
    with pytest.raises(DataError, match=r"train.jsonl, line 3: field 'label' is 'contradiction', not one of"):
        load_tasks(root)
    assert "gold_label" in str(pytest.raises(DataError, load_tasks, root).value)  # says which field that was


def test_a_missing_type_is_inferred_too(tmp_path):
    jsonl(tmp_path / "t/train.jsonl", [{"text": "a", "label": "x"}, {"text": "b", "label": "y"}])
    root = manifest(tmp_path, {"task": "t", "path": "t", "language": "en"})
    assert load_tasks(root)["t"].spec.labels == ("x", "y")


@pytest.mark.parametrize(
    "rows, what",
    [
        ([{"tokens": ["a"], "tags": ["O"]}], r"has fields \['tags', 'tokens'\]: no label field"),
        (
            [{"context": "abc", "question": "q", "answers": ["zzz"]}] * 3,
            r"the 'answers' of most records are not found in their 'context'",
        ),
        ([{"text": "t", "score_x": 1}], r"has fields \['score_x', 'text'\]: no label field"),
        ([{"id": 1, "label": "x"}], r"a label 'label' but no text field"),
        ([{"question": "q", "options": ["a", "b"]}], r"a choices list 'options' but no answer field"),
    ],
)
def test_what_cannot_be_read_is_refused_naming_file_line_and_fields(tmp_path, rows, what):
    path = jsonl(tmp_path / "data" / "bad" / "train.jsonl", rows)
    with pytest.raises(UnknownKind, match=what) as err:
        load_tasks(tmp_path / "data", ["bad"])
    assert f"{path}, line 1 has fields" in str(err.value) and "task 'bad'" in str(err.value)
    assert load_tasks(tmp_path / "data") == {}  # loading everything skips what nothing says how to read
    row = describe_tasks(tmp_path / "data")[0]
    assert not row["supported"] and "cannot tell its kind" in row["problem"]


@pytest.mark.parametrize(
    "name, text, what",
    [
        ("one.jsonl", '{"text": "a", "label": "x"}\n{"text": "b", "label": "x"}\n', r"line 1: every train record"),
        (
            "many.jsonl",
            "".join(json.dumps({"text": str(i), "label": f"l{i}"}) + "\n" for i in range(120)),
            r"line 1: field 'label' has 120 different values",
        ),
        (
            "gap.jsonl",
            '{"premise": "p", "hypothesis": "h", "label": "a"}\n{"premise": "p", "label": "b"}\n',
            r"gap.jsonl, line 2: field 'hypothesis' is missing \(the record has fields 'premise', 'label'\)",
        ),
        ("cells.csv", "text,label\na,x\nb,y,extra\n", r"cells.csv, line 3: 3 cells, more than the header's 2 columns"),
        ("split.csv", "text,label,split\na,x,train\nb,y,holdout\n", r"line 3: field 'split' is 'holdout', not one of"),
        ("header.csv", "text,text,label\na,b,x\n", r"header.csv, line 1: the header row repeats column 'text'"),
        ("latin1.jsonl", b'{"text": "a", "label": "x"}\n{"text": "\xe9", "label": "y"}\n', r"line 2: not UTF-8"),
        (
            "choice.jsonl",
            '{"question": "q", "choices": ["a", "b"], "answer": "c?"}\n',
            r"line 1: field 'answer' is 'c\?': neither an index, a letter",
        ),
        ("empty.csv", "text,label\n", r"empty.csv, line 1: the file holds no records"),
        (
            "null.jsonl",
            '{"text": null, "label": "x"}\n{"text": "b", "label": "y"}\n',
            r"line 1: field 'text' must be a",
        ),
        (
            "nolabel.jsonl",
            '{"text": "a", "label": "x"}\n{"text": "b", "label": "y"}\n{"text": "c", "label": null}\n',
            r"line 3: field 'label' is null",
        ),
        ("bad.jsonl", '{"text": "a", "label": "x"}\n{"text": \n', r"bad.jsonl, line 2: malformed JSON"),
    ],
)
def test_bad_files_are_refused_naming_file_and_line(tmp_path, name, text, what):
    path = tmp_path / name
    path.write_bytes(text) if isinstance(text, bytes) else path.write_text(text, encoding="utf-8")
    with pytest.raises(DataError, match=what) as err:
        load_tasks(path)
    assert str(path) in str(err.value)


def test_folders_that_hold_no_task_say_what_a_task_looks_like(tmp_path):
    jsonl(tmp_path / "nested" / "en" / "sst2" / "train.jsonl", [{"text": "a", "label": "x"}])
    with pytest.raises(DataError, match=r"MANIFEST.json: no MANIFEST.json .* en/sst2/train.jsonl is two folders down"):
        load_tasks(tmp_path / "nested")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match=r"no task found without it \(a task is a sub-folder holding train.jsonl"):
        describe_tasks(tmp_path / "empty")
    with pytest.raises(DataError, match=r"nowhere: no such data folder or file .*MANIFEST.json"):
        load_tasks(tmp_path / "nowhere")
    jsonl(tmp_path / "two" / "train.jsonl", [{"text": "a", "label": "x"}])
    (tmp_path / "two" / "train.csv").write_text("text,label\na,x\n")
    with pytest.raises(DataError, match=r"both train.csv and train.jsonl hold the train split"):
        load_tasks(tmp_path / "two")


# ---------------------------------------------------------------- talora data check
def test_data_check_lists_every_task_it_read(tmp_path, capsys):
    root = folder_of_tasks(tmp_path / "data")
    assert main(["data", "check", str(root)]) == 0
    out, err = capsys.readouterr()
    line = next(x for x in out.splitlines() if x.startswith("nli "))
    assert "classification" in line and "accuracy" in line and "train=30, validation=3" in line
    assert out.count("inferred: no MANIFEST.json") == 7
    assert "7 task(s)" in err and "every record readable" in err

    assert main(["data", "check", str(root), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert {r["name"]: r["splits"] for r in rows}["squadish"] == {"train": 3, "validation": 1}


def test_data_check_of_a_manifest_folder_reads_every_line(tmp_path, capsys):
    jsonl(tmp_path / "en/r/train.jsonl", [{"text": "a", "label": "x"}, {"text": "b", "label": "y"}])
    jsonl(tmp_path / "en/r/validation.jsonl", [{"text": "c", "label": "x"}])
    entry = {"task": "r", "path": "en/r", "language": "en", "type": "single-sentence classification"}
    root = manifest(tmp_path, {**entry, "label_list": ["x", "y"], "metric": "Accuracy"})
    assert main(["data", "check", str(root)]) == 0
    assert "declared by the manifest" in capsys.readouterr().out
    # describe (talora tasks) trusts the manifest; check reads the lines and finds the bad one
    (tmp_path / "en/r/validation.jsonl").write_text('{"text": "c", "label": "x"}\n{"text": "d", "label": "z"}\n')
    assert describe_tasks(root)[0]["supported"]
    assert main(["data", "check", str(root)]) == 2
    out, err = capsys.readouterr()
    assert "r                  cannot be read" in out
    assert err.count("talora: error:") == 1
    assert "data check: 1 of 1 task(s)" in err and "validation.jsonl, line 2: field 'label' is 'z'" in err
    assert not check_tasks(root)[0]["supported"]


def test_data_check_of_what_holds_no_task(tmp_path, capsys):
    assert main(["data", "check", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("talora: error: ") and "no task found without it" in err


# ---------------------------------------------------------------- talora data pull
HUB_ROWS = {
    ("nyu-mll/glue", "sst2"): [
        {"sentence": "a fine film", "label": 1, "idx": 0},
        {"sentence": "a dull film", "label": 0, "idx": 1},
        {"sentence": "hidden", "label": -1, "idx": 2},
    ],
    ("aps/super_glue", "rte"): [
        {"premise": "p", "hypothesis": "h", "label": 0, "idx": 0},
        {"premise": "q", "hypothesis": "i", "label": 1, "idx": 1},
    ],
}


@pytest.fixture
def fake_fetch(monkeypatch):
    calls = []

    def fetch(source, split, cache_dir=None):
        calls.append((source.dataset, source.config, split))
        return HUB_ROWS[(source.dataset, source.config)]

    monkeypatch.setattr(hub, "fetch_rows", fetch)
    return calls


def test_data_pull_writes_a_folder_the_loader_reads_and_adds_up(tmp_path, capsys, fake_fetch):
    out = tmp_path / "hubdata"
    assert main(["data", "pull", "sst2", "--output", str(out)]) == 0
    stdout, err = capsys.readouterr()
    assert stdout.startswith("sst2 ") and "train=2, validation=2" in stdout and f"data check {out}" in err
    assert fake_fetch == [("nyu-mll/glue", "sst2", "train"), ("nyu-mll/glue", "sst2", "validation")]
    assert main(["data", "pull", "rte", "--output", str(out)]) == 0
    tasks = load_tasks(out)
    assert sorted(tasks) == ["rte", "sst2"]  # the second pull kept the first task
    assert [ex.label for ex in tasks["sst2"].splits["train"]] == ["positive", "negative"]  # the unlabelled row dropped
    capsys.readouterr()
    assert main(["data", "check", str(out)]) == 0
    assert capsys.readouterr().out.count("declared by the manifest") == 2


def test_data_pull_errors(tmp_path, capsys, monkeypatch, fake_fetch):
    assert main(["data", "pull", "finre", "--output", str(tmp_path / "o")]) == 2
    assert "no hub dataset is known for task 'finre'" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()

    def offline(source, split, cache_dir=None):
        raise DataError(f"hub dataset {source.dataset} ({source.config}) split {split!r} could not be fetched (x)")

    monkeypatch.setattr(hub, "fetch_rows", offline)
    assert main(["data", "pull", "sst2", "--output", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err.count("talora: error:") == 1 and "nyu-mll/glue (sst2) split 'train' could not be fetched" in err
    assert not (tmp_path / "o" / "MANIFEST.json").exists()


def test_fetching_without_the_datasets_package_or_the_network(monkeypatch):
    monkeypatch.setitem(sys.modules, "datasets", None)
    with pytest.raises(Exception, match=r"needs the 'datasets' package"):
        hub.fetch_rows(hub.HUB["sst2"], "train")
    fake = types.ModuleType("datasets")

    def unreachable(*args, **kwargs):
        raise ConnectionError("Couldn't reach 'nyu-mll/glue' on the Hub (LocalEntryNotFoundError)\nmore")

    fake.load_dataset = unreachable
    monkeypatch.setitem(sys.modules, "datasets", fake)
    with pytest.raises(DataError, match=r"split 'train' could not be fetched \(ConnectionError: Couldn't reach"):
        hub.fetch_rows(hub.HUB["sst2"], "train")
