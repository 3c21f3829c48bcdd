"""The data-folder loader on tiny folders written here, and on the real shared data when present."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from real_data import REAL_DATA, needs_real_data, real_data  # noqa: F401 (real_data: the fixture)

from talora.errors import DataError
from talora.tasks import Example, describe_tasks, load_tasks
from talora.tasks.jsonl import make_spec, parse_record, read_manifest
from talora.tasks.templates import TABLE

GOOD = {
    "reviews": (
        "en",
        "single-sentence classification (sentiment)",
        ["bad", "good"],
        None,
        [{"text": "fine film", "label": "good"}, {"text": "dull film", "label": "bad"}],
    ),
    "dupes": (
        "en",
        "sentence-pair classification (paraphrase)",
        ["0", "1"],
        {"0": "not_duplicate", "1": "duplicate"},
        [{"text_a": "a", "text_b": "b", "label": "0"}, {"text_a": "c", "text_b": "c", "label": 1}],
    ),
    "zh_rel": (
        "zh",
        "relation classification",
        ["unknown", "Family"],
        None,
        [{"text": "母亲和姥姥", "head": "母亲", "tail": "姥姥", "label": "Family"}],
    ),
    "spans": (
        "zh",
        "extractive QA (span)",
        None,
        None,
        [{"context": "北京是首都", "question": "首都是哪里", "answers": [{"text": "北京", "answer_start": 0}]}],
    ),
}


def write_folder(root: Path, tasks: dict = GOOD, lines: dict[str, list[str]] | None = None) -> Path:
    """A folder in the shared layout; ``lines`` replaces a task's train file with raw text lines."""
    entries = []
    for name, (lang, kind, labels, desc, rows) in tasks.items():
        folder = root / lang / name
        folder.mkdir(parents=True, exist_ok=True)
        raw = (lines or {}).get(name) or [json.dumps(r, ensure_ascii=False) for r in rows]
        (folder / "train.jsonl").write_text("".join(line + "\n" for line in raw), encoding="utf-8")
        (folder / "validation.jsonl").write_text(json.dumps(rows[0], ensure_ascii=False) + "\n", encoding="utf-8")
        entry = {
            "task": name,
            "language": lang,
            "role": "target (A), source (B)",
            "type": kind,
            "metric": "Accuracy",
            "label_list": labels,
            "path": f"{lang}/{name}",
            "splits": {
                s: {"kept": len(rows) if s == "train" else 1, "file": f"{lang}/{name}/{s}.jsonl"}
                for s in ("train", "validation")
            },
        }
        if desc:
            entry["label_desc"] = desc
        entries.append(entry)
    (root / "MANIFEST.json").write_text(json.dumps({"tasks": entries}), encoding="utf-8")
    return root


def test_loads_each_form_with_generic_templates(tmp_path):
    tasks = load_tasks(write_folder(tmp_path))
    assert set(tasks) == {"reviews", "dupes", "zh_rel", "spans"}
    reviews = tasks["reviews"]
    assert reviews.spec.role == "target" and reviews.spec.metric == "accuracy"
    assert reviews.spec.label_words == {"bad": " bad", "good": " good"}
    ex = reviews.splits["train"][0]
    assert ex.uid == "en/reviews/train/1" and ex.fields == {"text": "fine film"} and ex.label == "good"
    assert reviews.spec.prompt(ex) == "Text: fine film\nLabel:"
    dupes = tasks["dupes"]
    assert dupes.spec.label_words == {"0": " not duplicate", "1": " duplicate"}
    assert dupes.splits["train"][1].label == "1"  # an integer code matches its string label
    rel = tasks["zh_rel"]
    assert rel.spec.answer("Family") == "Family" and rel.spec.prompt(rel.splits["train"][0]).endswith("关系：")


def test_describe_reads_only_the_manifest(tmp_path):
    folder = write_folder(tmp_path)
    (folder / "en" / "reviews" / "train.jsonl").write_text("not json\n")
    rows = {r["name"]: r for r in describe_tasks(folder)}
    assert rows["reviews"]["splits"] == {"train": 2, "validation": 1}
    assert rows["spans"]["kind"] == "extraction" and rows["spans"]["metric"] == "span_f1"
    assert all(r["supported"] for r in rows.values())
    assert rows["dupes"]["labels"] == ["0", "1"] and rows["dupes"]["role"] == "target"


def test_loading_is_lazy_per_task(tmp_path):
    folder = write_folder(tmp_path)
    (folder / "en" / "reviews" / "train.jsonl").write_text("not json\n")
    assert list(load_tasks(folder, ["dupes"])) == ["dupes"]
    assert list(load_tasks(folder, ["en/dupes"])) == ["dupes"]  # a task's folder path also names it


def test_unknown_and_unsupported_tasks(tmp_path):
    tags = ("en", "sequence tagging", None, None, [{"tokens": ["a"], "tags": ["O"]}])
    folder = write_folder(tmp_path, {**GOOD, "tags": tags})
    with pytest.raises(DataError, match=r"no task 'nope'.*reviews, dupes, zh_rel, spans, tags"):
        load_tasks(folder, ["nope"])
    with pytest.raises(DataError, match=r"task 'tags' of type 'sequence tagging': cannot tell its kind"):
        load_tasks(folder, ["tags"])
    row = {r["name"]: r for r in describe_tasks(folder)}["tags"]
    assert not row["supported"] and "cannot tell its kind" in row["problem"]
    assert "tags" not in load_tasks(folder)  # loading everything skips what it cannot read


@pytest.mark.parametrize(
    "line, line_no, field, what",
    [
        ('{"text": "ok", "label": "good"}\n{"text": "oops", "label": ', 2, None, "malformed JSON"),
        ('{"text": "ok", "label": "good"}\n{"label": "good"}', 2, "'text'", "is missing"),
        ('{"text": "ok"}', 1, "'label'", "is missing"),
        ('{"text": "ok", "label": "good"}\n\n{"text": "x", "label": "meh"}', 3, "'label'", "'meh', not one of"),
        ('{"text": 5, "label": "good"}', 1, "'text'", "must be a string"),
        ('["text", "label"]', 1, None, "expected a JSON object"),
    ],
)
def test_bad_lines_name_file_line_and_field(tmp_path, line, line_no, field, what):
    folder = write_folder(tmp_path, lines={"reviews": line.split("\n")})
    with pytest.raises(DataError) as err:
        load_tasks(folder, ["reviews"])
    msg = str(err.value)
    assert f"{folder / 'en' / 'reviews' / 'train.jsonl'}, line {line_no}:" in msg
    assert what in msg
    if field:
        assert f"field {field}" in msg


def test_empty_split_file(tmp_path):
    folder = write_folder(tmp_path)
    path = folder / "en" / "reviews" / "validation.jsonl"
    path.write_text("\n")
    with pytest.raises(DataError, match=rf"{path}, line 1: split file is empty"):
        load_tasks(folder, ["reviews"])


def test_missing_split_file_and_manifest(tmp_path):
    folder = write_folder(tmp_path)
    (folder / "en" / "dupes" / "validation.jsonl").unlink()
    with pytest.raises(DataError, match="validation.jsonl: split file of task 'dupes' does not exist"):
        load_tasks(folder, ["dupes"])
    (folder / "MANIFEST.json").unlink()
    for call in (load_tasks, describe_tasks):
        with pytest.raises(DataError, match=r"MANIFEST.json: no MANIFEST.json"):
            call(folder)


def test_malformed_manifest(tmp_path):
    (tmp_path / "MANIFEST.json").write_text('{"tasks": [\n{"task": "a",}\n]}')
    with pytest.raises(DataError, match=r"MANIFEST.json, line 2: malformed JSON"):
        describe_tasks(tmp_path)
    (tmp_path / "MANIFEST.json").write_text('{"tasks": [{"language": "en"}]}')
    with pytest.raises(DataError, match=r"tasks\[0\]: field 'task' is missing"):
        describe_tasks(tmp_path)


def test_label_word_collisions_fall_back_to_raw_names(tmp_path):
    tasks = {"odd": ("en", "single-sentence classification", ["a_b", "A b"], None, [{"text": "t", "label": "a_b"}])}
    spec = load_tasks(write_folder(tmp_path, tasks))["odd"].spec
    assert spec.label_words == {"a_b": " a_b", "A b": " A b"}


@needs_real_data
def test_real_sst2_and_chnsenticorp():
    tasks = load_tasks(REAL_DATA, ["sst2", "chnsenticorp"])
    sst2, chn = tasks["sst2"], tasks["chnsenticorp"]
    assert sst2.spec.language == "en" and sst2.spec.role == "source"
    assert chn.spec.language == "zh" and chn.spec.role == "target"
    sizes = {r["name"]: r["splits"] for r in describe_tasks(REAL_DATA)}
    for task in (sst2, chn):
        assert {s: len(exs) for s, exs in task.splits.items()} == sizes[task.spec.name]
        assert {ex.label for ex in task.splits["validation"]} == set(task.spec.labels)
    assert sst2.spec.answer("positive") == " positive"
    ex = chn.splits["train"][0]
    assert chn.spec.prompt(ex) == f"评论：{ex.fields['text']}\n情感："
    assert chn.spec.answer(ex.label) in ("正面", "负面")


@needs_real_data
def test_every_templates_entry_fits_the_real_manifest():
    entries = read_manifest(REAL_DATA)
    assert set(TABLE["tasks"]) == set(entries)  # every task of the shared folder has its own template
    for name, entry in TABLE["tasks"].items():
        spec, _ = make_spec(entries[name])
        assert set(entry.get("label_words", {})) <= set(spec.labels), name
        words = entry.get("label_words", {}).values()
        assert all(w.startswith(" ") == (spec.language == "en") for w in words), name
        # written in the task's language: Chinese templates carry Chinese, English ones none
        assert bool(re.search(r"[\u4e00-\u9fff]", entry["template"])) == (spec.language == "zh"), name


def test_manifest_without_splits_finds_the_files(tmp_path):
    folder = write_folder(tmp_path)
    manifest = json.loads((folder / "MANIFEST.json").read_text())
    for entry in manifest["tasks"]:
        del entry["splits"]
    (folder / "MANIFEST.json").write_text(json.dumps(manifest))
    assert sorted(load_tasks(folder, ["reviews"])["reviews"].splits) == ["train", "validation"]


FORMS = {
    "mc": (
        "zh",
        "multiple-choice reading comprehension",
        None,
        None,
        [{"context": "男：去哪？\n女：回家。", "question": "女的去哪？", "choices": ["学校", "家"], "label": 1}],
    ),
    "qa": (
        "zh",
        "extractive QA (span)",
        None,
        None,
        [
            {
                "context": "上海在东部，北京是首都。",
                "question": "首都是哪里？",
                "answers": [
                    {"text": "北京", "answer_start": 3},
                    {"text": "北京市", "answer_start": -1},
                    {"text": "北京", "answer_start": 6},
                ],
            }
        ],
    ),
    "ote": (
        "zh",
        "opinion target extraction (one span per text)",
        None,
        None,
        [{"text": "杜甫草堂很美", "target": "杜甫草堂", "target_start": 0}],
    ),
    "sts": (
        "en",
        "sentence-pair regression (similarity 0-5)",
        None,
        None,
        [{"text_a": "a", "text_b": "b", "label": 4.75}, {"text_a": "c", "text_b": "d", "label": 0}],
    ),
    "coref": (
        "en",
        "coreference (does span2 refer to span1?)",
        ["false", "true"],
        None,
        [
            {
                "text": "Ann met Bo; she smiled.",
                "span1_text": "Ann",
                "span1_index": 0,
                "span2_text": "she",
                "span2_index": 4,
                "label": "true",
            }
        ],
    ),
    "mrc": (
        "en",
        "multi-answer reading comprehension",
        None,
        None,
        [
            {
                "context": "p",
                "question": "q",
                "answers": [
                    {"text": "x", "label": "true", "answer_idx": 0},
                    {"text": "y", "label": "false", "answer_idx": 1},
                ],
            }
        ],
    ),
    "rel": (
        "zh",
        "relation classification (entity pair given)",
        ["unknown", "持股", "拥有"],
        None,
        [
            {"text": "甲持有乙", "head": "甲", "tail": "乙", "label": "持股"},
            {"text": "甲持有乙", "head": "乙", "tail": "甲", "label": "unknown"},
            {"text": "甲持有乙", "head": "甲", "tail": "乙", "label": "拥有"},
            {"text": "甲持有乙", "head": "甲", "tail": "乙", "label": "持股"},
        ],
    ),
}


def test_every_kind_loads_from_its_lines(tmp_path):
    tasks = load_tasks(write_folder(tmp_path, FORMS))
    mc = tasks["mc"].splits["train"][0]
    assert tasks["mc"].spec.kind == "multiple_choice" and mc.label == "1"
    assert mc.fields["choices"] == ["学校", "家"] and mc.fields["options"] == "学校；家"
    assert tasks["mc"].spec.prompt(mc).endswith("选项：学校；家\n答案：")

    qa = tasks["qa"].splits["train"][0]
    assert tasks["qa"].spec.kind == "extraction" and tasks["qa"].spec.span_field == "context"
    # the first located reference is the label; its given offset 3 was wrong and is re-anchored to 6
    assert qa.label == "北京" and qa.fields["answer_start"] == 6 and qa.answers == ("北京", "北京市")

    ote = tasks["ote"].splits["train"][0]
    assert tasks["ote"].spec.span_field == "text" and ote.label == "杜甫草堂" and ote.fields["answer_start"] == 0

    sts = tasks["sts"]
    assert sts.spec.kind == "regression" and sts.spec.metric == "pearson"
    assert sts.spec.labels == ("0", "1", "2", "3", "4", "5")  # bins from the type's "0-5"
    assert [ex.label for ex in sts.splits["train"]] == ["4.75", "0.0"]

    coref = tasks["coref"]
    assert coref.spec.kind == "classification" and set(coref.splits["train"][0].fields) == {
        "text",
        "span1_text",
        "span2_text",
    }

    mrc = tasks["mrc"]
    assert mrc.spec.metric == "f1a" and mrc.spec.labels == ("false", "true")
    assert [(ex.uid, ex.fields["answer"], ex.label) for ex in mrc.splits["train"]] == [
        ("en/mrc/train/1/0", "x", "true"),
        ("en/mrc/train/1/1", "y", "false"),
    ]

    rel = tasks["rel"].splits["train"]
    # one example per triple: the first line's relation is trained on, every listed relation is a gold
    assert [(ex.uid, ex.label, ex.answers) for ex in rel] == [
        ("zh/rel/train/1", "持股", ("持股", "拥有")),
        ("zh/rel/train/2", "unknown", ("unknown",)),
    ]


@pytest.mark.parametrize(
    "task, line, what",
    [
        ("mc", '{"context": "c", "question": "q", "choices": ["a", "b"], "label": 2}', "not the index of one of the 2"),
        ("mc", '{"context": "c", "question": "q", "choices": ["a"], "label": 0}', "at least two non-empty strings"),
        ("qa", '{"context": "c", "question": "q", "answers": []}', "field 'answers' is empty"),
        ("qa", '{"context": "c", "question": "q", "answers": [{"answer_start": 0}]}', "non-empty 'text'"),
        ("ote", '{"text": "t", "target_start": 0}', "field 'target' is missing"),
        ("sts", '{"text_a": "a", "text_b": "b", "label": "high"}', "field 'label' must be int or float"),
        (
            "mrc",
            '{"context": "p", "question": "q", "answers": [{"text": "x", "label": "maybe"}]}',
            "'maybe', not one of",
        ),
    ],
)
def test_bad_lines_of_each_kind_name_file_line_and_field(tmp_path, task, line, what):
    folder = write_folder(tmp_path, FORMS, lines={task: [line]})
    with pytest.raises(DataError, match=re.escape(what)) as err:
        load_tasks(folder, [task])
    assert f"{task}{'/'}train.jsonl, line 1:" in str(err.value)


@needs_real_data
def test_every_real_task_is_listed_and_its_lines_parse():
    rows = describe_tasks(REAL_DATA)
    assert len(rows) == 33 and all(r["supported"] for r in rows)
    by_name = {r["name"]: r for r in rows}
    expected = {
        "cola": ("classification", "matthews"),
        "stsb": ("regression", "pearson"),
        "cmrc2018": ("extraction", "span_f1"),
        "drcd": ("extraction", "span_f1"),
        "cote_bd": ("extraction", "span_f1"),
        "c3": ("multiple_choice", "accuracy"),
        "multirc": ("classification", "f1a"),
        "wsc": ("classification", "accuracy"),
        "sanwen": ("classification", "macro_f1"),
        "sst2": ("classification", "accuracy"),
    }
    for name, (kind, metric) in expected.items():
        assert (by_name[name]["kind"], by_name[name]["metric"]) == (kind, metric), name
    entries = read_manifest(REAL_DATA)
    for name, entry in entries.items():
        spec, form = make_spec(entry)
        for split, info in entry["splits"].items():
            with open(REAL_DATA / info["file"], encoding="utf-8") as fh:
                lines = [next(fh) for _ in range(3)]
            for i, line in enumerate(lines, 1):
                for _, fields, label, _ in parse_record(json.loads(line), spec, form, f"{name}/{split}:{i}"):
                    ex = Example(f"{name}/{split}/{i}", name, fields, label)
                    assert spec.prompt(ex) and spec.answer_text(ex), (name, split)


@needs_real_data
def test_real_finre_keeps_one_example_per_triple():
    finre = load_tasks(REAL_DATA, ["finre"])["finre"]
    val = finre.splits["validation"]
    triples = {(ex.fields["text"], ex.fields["head"], ex.fields["tail"]) for ex in val}
    assert len(triples) == len(val) == 1353  # of 1489 lines
    assert sum(len(ex.answers) > 1 for ex in val) == 134  # triples listed with two relations


def test_tasks_counts_lines_where_the_manifest_has_no_counts_and_flags_an_empty_split(tmp_path, capsys):
    from talora.cli import main
    from talora.tasks import check_tasks

    folder = write_folder(tmp_path)
    manifest = json.loads((folder / "MANIFEST.json").read_text())
    for entry in manifest["tasks"]:
        for info in entry["splits"].values():
            del info["kept"]
    del manifest["tasks"][1]["splits"]  # dupes: the files are found, and counted
    (folder / "MANIFEST.json").write_text(json.dumps(manifest))
    train = folder / "en" / "reviews" / "train.jsonl"
    train.write_text(train.read_text() + "\n  \n" + train.read_text())  # blank lines are no records
    rows = {r["name"]: r for r in describe_tasks(folder)}
    assert rows["reviews"]["splits"] == {"train": 4, "validation": 1}
    assert rows["dupes"]["splits"] == {"train": 2, "validation": 1}
    assert all(r["supported"] for r in rows.values())
    assert main(["tasks", "--data-dir", str(folder)]) == 0
    out = capsys.readouterr().out
    assert "None" not in out and "train=4, validation=1" in out

    empty = folder / "en" / "dupes" / "validation.jsonl"
    empty.write_text("\n")
    row = {r["name"]: r for r in describe_tasks(folder)}["dupes"]
    checked = {r["name"]: r for r in check_tasks(folder)}["dupes"]
    assert row["splits"] == {"train": 2, "validation": 0}
    assert not row["supported"] and not checked["supported"]
    assert (
        row["problem"]
        == checked["problem"]
        == (
            f"{empty}, line 1: split file is empty (the inputs ['text_a', 'text_b'] and a label expected on every line)"
        )
    )
    assert main(["tasks", "--data-dir", str(folder)]) == 0
    listed = [line for line in capsys.readouterr().out.splitlines() if line.startswith("dupes")]
    assert "validation=0" in listed[0] and f"UNSUPPORTED: {empty}, line 1: split file is empty" in listed[0]
    assert main(["data", "check", str(folder)]) == 2
    assert f"dupes: {empty}, line 1: split file is empty" in capsys.readouterr().err

    gone = folder / "en" / "reviews" / "validation.jsonl"  # a split the manifest names
    gone.unlink()
    row = {r["name"]: r for r in describe_tasks(folder)}["reviews"]
    assert row["problem"] == f"{gone}: split file of task 'reviews' does not exist" and not row["supported"]
