"""Hub loaders, offline: a hub-style row built from a local line converts back to that line's record, and
``download`` (with a stand-in ``datasets`` module) writes a folder the loader reads."""

from __future__ import annotations

import json
import sys
import types

import pytest
from real_data import REAL_DATA, needs_real_data, real_data  # noqa: F401 (real_data: the fixture)

from talora.errors import ConfigError
from talora.tasks import hub, load_tasks

NLI3 = ["entailment", "neutral", "contradiction"]
CLUE_NLI3 = ["neutral", "entailment", "contradiction"]
TREC = ["ABBR", "ENTY", "DESC", "HUM", "LOC", "NUM"]
DBPEDIA = [
    "Company",
    "EducationalInstitution",
    "Artist",
    "Athlete",
    "OfficeHolder",
    "MeanOfTransportation",
    "Building",
    "NaturalPlace",
    "Village",
    "Animal",
    "Plant",
    "Album",
    "Film",
    "WrittenWork",
]
TNEWS = {
    "news_story": 0,
    "news_culture": 1,
    "news_entertainment": 2,
    "news_sports": 3,
    "news_finance": 4,
    "news_house": 5,
    "news_car": 6,
    "news_edu": 7,
    "news_tech": 8,
    "news_military": 9,
    "news_travel": 10,
    "news_world": 11,
    "news_stock": 12,
    "news_agriculture": 13,
    "news_game": 14,
}


def renamed(rec: dict, names: dict[str, str], labels: list | None) -> dict:
    """Hub row from a local record: local field -> hub field, label name -> class index."""
    row = {hub_name: rec[local] for local, hub_name in names.items()}
    row["label"] = labels.index(rec["label"]) if labels is not None else rec["label"]
    return {**row, "idx": 0}


PAIR = {"text_a": "sentence1", "text_b": "sentence2"}
PREMISE = {"text_a": "premise", "text_b": "hypothesis"}


def squad_row(rec: dict) -> dict:
    return {
        "id": rec["id"],
        "context": rec["context"],
        "question": rec["question"],
        "answers": {
            "text": [a["text"] for a in rec["answers"]],
            "answer_start": [a["answer_start"] for a in rec["answers"]],
        },
    }


def multirc_rows(rec: dict) -> list[dict]:
    return [
        {
            "paragraph": rec["context"],
            "question": rec["question"],
            "answer": a["text"],
            "idx": {"paragraph": rec["paragraph_idx"], "question": rec["question_idx"], "answer": a["answer_idx"]},
            "label": ["false", "true"].index(a["label"]),
        }
        for a in rec["answers"]
    ]


# task -> hub-style row(s) built from a local record, written independently of talora/tasks/hub.py
TO_HUB = {
    "sst2": lambda r: renamed(r, {"text": "sentence"}, ["negative", "positive"]),
    "cola": lambda r: renamed(r, {"text": "sentence"}, ["unacceptable", "acceptable"]),
    "mnli": lambda r: renamed(r, PREMISE, NLI3),
    "qnli": lambda r: renamed(r, {"text_a": "question", "text_b": "sentence"}, ["entailment", "not_entailment"]),
    "qqp": lambda r: renamed(r, {"text_a": "question1", "text_b": "question2"}, ["not_duplicate", "duplicate"]),
    "mrpc": lambda r: renamed(r, PAIR, ["not_equivalent", "equivalent"]),
    "stsb": lambda r: renamed(r, PAIR, None),
    "rte": lambda r: renamed(r, PREMISE, ["entailment", "not_entailment"]),
    "cb": lambda r: renamed(r, PREMISE, ["entailment", "contradiction", "neutral"]),
    "boolq": lambda r: renamed(r, {"question": "question", "context": "passage"}, ["false", "true"]),
    "wic": lambda r: renamed(
        r,
        {
            "word": "word",
            "text_a": "sentence1",
            "text_b": "sentence2",
            "start1": "start1",
            "end1": "end1",
            "start2": "start2",
            "end2": "end2",
        },
        ["false", "true"],
    ),
    "wsc": lambda r: renamed(
        r, {k: k for k in ("text", "span1_text", "span1_index", "span2_text", "span2_index")}, ["false", "true"]
    ),
    "multirc": multirc_rows,
    "snli": lambda r: renamed(r, PREMISE, NLI3),
    "scitail": lambda r: {
        "premise": r["text_a"],
        "hypothesis": r["text_b"],
        "label": {"entailment": "entails", "not_entailment": "neutral"}[r["label"]],
    },
    "trec": lambda r: {"text": r["text"], "coarse_label": TREC.index(r["label"]), "fine_label": 0},
    "dbpedia": lambda r: {"title": "", "content": " " + r["text"], "label": DBPEDIA.index(r["label"])},
    "afqmc": lambda r: {"sentence1": r["text_a"], "sentence2": r["text_b"], "label": int(r["label"]), "idx": 0},
    "cmnli": lambda r: renamed(r, PAIR, CLUE_NLI3),
    "ocnli": lambda r: renamed(r, PAIR, CLUE_NLI3),
    "tnews": lambda r: {"sentence": r["text"], "label": TNEWS[r["label"]], "idx": 0, "keywords": ""},
    "c3": lambda r: {
        "id": 0,
        "context": r["context"].split("\n"),
        "question": r["question"],
        "choice": r["choices"],
        "answer": r["choices"][r["label"]],
    },
    "cmrc2018": squad_row,
    "drcd": squad_row,
}


def local_records(task: str, n: int = 3) -> list[dict]:
    entry = next(t for t in json.loads((REAL_DATA / "MANIFEST.json").read_text())["tasks"] if t["task"] == task)
    with open(REAL_DATA / entry["splits"]["validation"]["file"], encoding="utf-8") as fh:
        return [json.loads(next(fh)) for _ in range(n)]


def hub_rows(task: str, records: list[dict]) -> list[dict]:
    rows = []
    for rec in records:
        made = TO_HUB[task](rec)
        rows += made if isinstance(made, list) else [made]
    return rows


def test_every_hub_task_has_a_round_trip_here():
    assert set(TO_HUB) == set(hub.HUB)


@needs_real_data
@pytest.mark.parametrize("task", sorted(hub.HUB))
def test_a_hub_row_converts_back_to_the_local_record(task):
    records = local_records(task)
    converted = list(hub.records(task, hub_rows(task, records)))
    assert len(converted) == len(records)
    for got, want in zip(converted, records):
        assert got == {k: want[k] for k in got}, task
        assert {"label", "answers"} & set(got), task  # the gold travels


def test_rows_without_a_gold_label_are_skipped():
    rows = [{"sentence": "x", "label": -1, "idx": 0}, {"sentence": "y", "label": 1, "idx": 1}]
    assert list(hub.records("sst2", rows)) == [{"text": "y", "label": "positive"}]
    assert list(hub.records("stsb", [{"sentence1": "a", "sentence2": "b", "label": -1.0, "idx": 0}])) == []


def test_unknown_task_and_missing_package(monkeypatch):
    with pytest.raises(ConfigError, match=r"no hub dataset is known for task 'finre'"):
        hub.download(["finre"], "unused")
    monkeypatch.setitem(sys.modules, "datasets", None)  # import fails as if it were not installed
    with pytest.raises(ConfigError, match=r"needs the 'datasets' package: pip install datasets"):
        hub.download(["sst2"], "unused")


@needs_real_data
def test_download_writes_a_folder_the_loader_reads(tmp_path, monkeypatch):
    tasks = ["sst2", "stsb", "multirc", "c3", "cmrc2018", "tnews"]
    rows = {hub.HUB[t].dataset + str(hub.HUB[t].config): hub_rows(t, local_records(t)) for t in tasks}
    fake = types.ModuleType("datasets")
    fake.load_dataset = lambda dataset, config, split, cache_dir=None: rows[dataset + str(config)]
    monkeypatch.setitem(sys.modules, "datasets", fake)
    folder = hub.download(tasks, tmp_path / "hubdata")
    loaded = load_tasks(folder)
    local = load_tasks(REAL_DATA, tasks)
    for t in tasks:
        assert loaded[t].spec.kind == local[t].spec.kind and loaded[t].spec.metric == local[t].spec.metric, t
        got = loaded[t].splits["validation"]
        want = local[t].splits["validation"][: len(got)]
        assert [(e.fields, e.label, e.answers) for e in got] == [(e.fields, e.label, e.answers) for e in want], t
