"""The data-folder loader on tiny folders written here, and on the real shared data when present."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from talora.errors import DataError
from talora.tasks import describe_tasks, load_tasks
from talora.tasks.templates import _table

REAL_DATA = Path("/work/shared/data")

GOOD = {
    "reviews": ("en", "single-sentence classification (sentiment)", ["bad", "good"], None,
                [{"text": "fine film", "label": "good"}, {"text": "dull film", "label": "bad"}]),
    "dupes": ("en", "sentence-pair classification (paraphrase)", ["0", "1"], {"0": "not_duplicate", "1": "duplicate"},
              [{"text_a": "a", "text_b": "b", "label": "0"}, {"text_a": "c", "text_b": "c", "label": 1}]),
    "zh_rel": ("zh", "relation classification", ["unknown", "Family"], None,
               [{"text": "母亲和姥姥", "head": "母亲", "tail": "姥姥", "label": "Family"}]),
    "spans": ("zh", "extractive QA (span)", None, None, [{"context": "c", "question": "q", "answers": []}]),
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
        entry = {"task": name, "language": lang, "role": "target (A), source (B)", "type": kind,
                 "metric": "Accuracy", "label_list": labels, "path": f"{lang}/{name}",
                 "splits": {s: {"kept": len(rows) if s == "train" else 1, "file": f"{lang}/{name}/{s}.jsonl"}
                            for s in ("train", "validation")}}
        if desc:
            entry["label_desc"] = desc
        entries.append(entry)
    (root / "MANIFEST.json").write_text(json.dumps({"tasks": entries}), encoding="utf-8")
    return root


def test_loads_each_form_with_generic_templates(tmp_path):
    tasks = load_tasks(write_folder(tmp_path))
    assert set(tasks) == {"reviews", "dupes", "zh_rel"}  # the QA task is listed but not loadable
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
    assert rows["spans"]["kind"] == "qa" and not rows["spans"]["supported"]
    assert rows["dupes"]["labels"] == ["0", "1"] and rows["dupes"]["role"] == "target"


def test_loading_is_lazy_per_task(tmp_path):
    folder = write_folder(tmp_path)
    (folder / "en" / "reviews" / "train.jsonl").write_text("not json\n")
    assert list(load_tasks(folder, ["dupes"])) == ["dupes"]
    assert list(load_tasks(folder, ["en/dupes"])) == ["dupes"]  # a task's folder path also names it


def test_unknown_and_unsupported_tasks(tmp_path):
    folder = write_folder(tmp_path)
    with pytest.raises(DataError, match=r"no task 'nope'.*reviews, dupes, zh_rel, spans"):
        load_tasks(folder, ["nope"])
    with pytest.raises(DataError, match=r"task 'spans' of type 'extractive QA \(span\)' is not supported yet"):
        load_tasks(folder, ["spans"])


@pytest.mark.parametrize("line, line_no, field, what", [
    ('{"text": "ok", "label": "good"}\n{"text": "oops", "label": ', 2, None, "malformed JSON"),
    ('{"text": "ok", "label": "good"}\n{"label": "good"}', 2, "'text'", "is missing"),
    ('{"text": "ok"}', 1, "'label'", "is missing"),
    ('{"text": "ok", "label": "good"}\n\n{"text": "x", "label": "meh"}', 3, "'label'", "'meh', not one of"),
    ('{"text": 5, "label": "good"}', 1, "'text'", "must be a string"),
    ('["text", "label"]', 1, None, "expected a JSON object"),
])
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


@pytest.mark.skipif(not REAL_DATA.is_dir(), reason="shared data folder not present")
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


@pytest.mark.skipif(not REAL_DATA.is_dir(), reason="shared data folder not present")
def test_every_templates_entry_fits_the_real_manifest():
    manifest = {t["task"]: t for t in json.loads((REAL_DATA / "MANIFEST.json").read_text())["tasks"]}
    rows = {r["name"]: r for r in describe_tasks(REAL_DATA)}
    for name, entry in _table()["tasks"].items():
        assert rows[name]["supported"], name
        assert set(entry["label_words"]) <= set(manifest[name]["label_list"]), name
        words = entry["label_words"].values()
        assert all(w.startswith(" ") == (manifest[name]["language"] == "en") for w in words), name


def test_manifest_without_splits_finds_the_files(tmp_path):
    folder = write_folder(tmp_path)
    manifest = json.loads((folder / "MANIFEST.json").read_text())
    for entry in manifest["tasks"]:
        del entry["splits"]
    (folder / "MANIFEST.json").write_text(json.dumps(manifest))
    assert sorted(load_tasks(folder, ["reviews"])["reviews"].splits) == ["train", "validation"]
