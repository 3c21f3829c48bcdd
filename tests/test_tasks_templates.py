"""Templates: one per task of the shared folder in its language, and the generic fallback that lets a new
folder in the same layout train without any entry in templates.yaml."""

from __future__ import annotations

import json
import re
from pathlib import Path

from real_data import REAL_DATA, needs_real_data, real_data  # noqa: F401 (real_data: the fixture)

from talora.tasks import load_tasks
from talora.tasks.jsonl import make_spec, read_manifest
from talora.tasks.templates import prompting_for, regression_bins, score_range

CJK = re.compile(r"[\u4e00-\u9fff]")

# A new folder: task names templates.yaml has never heard of, one per kind and form.
NEW = {
    "zh_topic": (
        "zh",
        "single-sentence classification (topic)",
        ["体育", "财经"],
        None,
        {"text": "球赛", "label": "体育"},
    ),
    "en_pair": (
        "en",
        "sentence-pair classification (paraphrase)",
        ["0", "1"],
        {"0": "different", "1": "same"},
        {"text_a": "a", "text_b": "b", "label": "1"},
    ),
    "en_score": (
        "en",
        "sentence-pair regression (relatedness 1-5)",
        None,
        None,
        {"text_a": "a", "text_b": "b", "label": 3.6},
    ),
    "zh_choice": (
        "zh",
        "multiple-choice reading comprehension",
        None,
        None,
        {"context": "文", "question": "问", "choices": ["甲", "乙"], "label": 0},
    ),
    "zh_qa": (
        "zh",
        "extractive QA (span)",
        None,
        None,
        {"context": "北京是首都", "question": "首都？", "answers": [{"text": "北京", "answer_start": 0}]},
    ),
    "en_target": (
        "en",
        "aspect extraction",
        None,
        None,
        {"text": "the battery is great", "target": "battery", "target_start": 4},
    ),
    "en_candidates": (
        "en",
        "multi-answer reading comprehension",
        None,
        None,
        {"context": "p", "question": "q", "answers": [{"text": "x", "label": "true"}]},
    ),
}


def new_folder(root: Path) -> Path:
    entries = []
    for name, (lang, kind, labels, desc, row) in NEW.items():
        (root / lang / name).mkdir(parents=True)
        for split in ("train", "validation"):
            (root / lang / name / f"{split}.jsonl").write_text(json.dumps(row, ensure_ascii=False) + "\n", "utf-8")
        entry = {
            "task": name,
            "language": lang,
            "type": kind,
            "metric": "whatever",
            "label_list": labels,
            "format": ", ".join(k for k in row),
        }
        if desc:
            entry["label_desc"] = desc
        entries.append(entry)
    (root / "MANIFEST.json").write_text(json.dumps({"tasks": entries}), "utf-8")
    return root


def test_a_new_folder_loads_with_generic_templates(tmp_path):
    tasks = load_tasks(new_folder(tmp_path))
    assert set(tasks) == set(NEW)
    kinds = {n: (t.spec.kind, t.spec.metric) for n, t in tasks.items()}
    assert kinds == {
        "zh_topic": ("classification", "accuracy"),
        "en_pair": ("classification", "accuracy"),
        "en_score": ("regression", "pearson"),
        "zh_choice": ("multiple_choice", "accuracy"),
        "zh_qa": ("extraction", "span_f1"),
        "en_target": ("extraction", "span_f1"),
        "en_candidates": ("classification", "f1a"),
    }
    for name, task in tasks.items():
        spec, ex = task.spec, task.splits["train"][0]
        prompt = spec.prompt(ex)
        assert bool(CJK.search(spec.template)) == (spec.language == "zh"), name  # the task's language
        assert prompt and spec.answer_text(ex), name
    assert tasks["en_pair"].spec.label_words == {"0": " different", "1": " same"}  # from label_desc
    assert tasks["zh_topic"].spec.label_words == {"体育": "体育", "财经": "财经"}  # Chinese words: no space
    assert tasks["en_score"].spec.labels == ("1", "2", "3", "4", "5")  # bins of the type's range
    assert tasks["en_score"].spec.answer_text(tasks["en_score"].splits["train"][0]) == " 4"
    assert tasks["en_target"].spec.span_field == "text"  # the format's target_start told the kind
    assert tasks["zh_qa"].spec.prompt(tasks["zh_qa"].splits["train"][0]) == "段落：北京是首都\n问题：首都？\n答案："
    assert tasks["zh_qa"].spec.max_new_tokens == 32  # the generic generation budget


def test_score_ranges_and_bins():
    assert score_range("sentence-pair regression (similarity 0-5)") == (0.0, 5.0)
    assert score_range("regression (rating 1 to 10)") == (1.0, 10.0)
    assert score_range("regression") == (0.0, 5.0)
    assert regression_bins(0.0, 5.0) == ["0", "1", "2", "3", "4", "5"]
    assert regression_bins(0.0, 1.0) == ["0", "0.1", "0.2", "0.3", "0.4", "0.5", "0.6", "0.7", "0.8", "0.9", "1"]


def test_a_task_entry_wins_label_by_label():
    p = prompting_for("sst2", "en", "single", ["negative", "positive", "mixed"])
    assert p.template == "Review: {text}\nSentiment:"
    assert p.label_words == {"negative": " negative", "positive": " positive", "mixed": " mixed"}
    assert prompting_for("brand_new", "fr", "single", ["a"]).template == "Text: {text}\nLabel:"  # English generic


@needs_real_data
def test_each_real_task_type_has_its_template():
    entries = read_manifest(REAL_DATA)
    specs = {name: make_spec(entry)[0] for name, entry in entries.items()}
    assert specs["cmrc2018"].template.endswith("问题：{question}\n答案：") and specs["cmrc2018"].max_new_tokens == 48
    assert "問題" in specs["drcd"].template  # DRCD stays in traditional characters, so does its template
    assert "{options}" in specs["c3"].template
    assert specs["cote_bd"].template == specs["cote_mfw"].template and specs["cote_bd"].max_new_tokens == 24
    assert specs["stsb"].label_words["3"] == " 3"
    assert "{span2_text}" in specs["wsc"].template and "{answer}" in specs["multirc"].template
    assert specs["finre"].label_words["被拟收购"] == "被拟收购"  # multi-token words, ranked by summed log-prob
