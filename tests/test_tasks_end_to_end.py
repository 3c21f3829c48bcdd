"""Every kind of task through the recipes on a tiny model: multi-task training on a data folder that mixes
classification, multiple choice, regression and extraction, few-shot transfer to an extraction task, eval."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from talora.config import RunConfig, TrainConfig
from talora.recipes import pipeline

ROWS = {
    "cls": (
        "en",
        "single-sentence classification (sentiment)",
        ["bad", "good"],
        lambda i: {
            "text": f"the movie was {'awful' if i % 2 else 'wonderful'} " * (1 + i % 4),
            "label": "bad" if i % 2 else "good",
        },
    ),
    "mc": (
        "zh",
        "multiple-choice reading comprehension",
        None,
        lambda i: {
            "context": f"男：第{i}个？",
            "question": "问什么？",
            "choices": ["甲", "乙", "丙"][: 2 + i % 2],
            "label": i % 2,
        },
    ),
    "sts": (
        "en",
        "sentence-pair regression (similarity 0-5)",
        None,
        lambda i: {"text_a": f"a{i}", "text_b": f"b{i}", "label": (i % 6) * 0.9},
    ),
    "qa": (
        "zh",
        "extractive QA (span)",
        None,
        lambda i: {
            "id": str(i),
            "context": "很长的文章" * (i % 5) + f"答案是北京{i}。",
            "question": "答案是什么？",
            "answers": [{"text": f"北京{i}", "answer_start": -1}],
        },
    ),
    "ote": (
        "zh",
        "opinion target extraction (one span per text)",
        None,
        lambda i: {"text": f"杜甫草堂{i}很美", "target": f"杜甫草堂{i}", "target_start": 0},
    ),
}


def folder(root: Path) -> Path:
    entries = []
    for name, (lang, kind, labels, row) in ROWS.items():
        entry = {
            "task": name,
            "language": lang,
            "type": kind,
            "metric": "F1",
            "label_list": labels,
            "role": "target" if name == "ote" else "source",
            "path": f"{lang}/{name}",
            "splits": {},
        }
        for split, (start, n) in {"train": (0, 24), "validation": (100, 6), "test": (200, 6)}.items():
            path = root / lang / name / f"{split}.jsonl"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text("".join(json.dumps(row(start + i), ensure_ascii=False) + "\n" for i in range(n)), "utf-8")
            entry["splits"][split] = {"kept": n, "file": f"{lang}/{name}/{split}.jsonl"}
        entries.append(entry)
    (root / "MANIFEST.json").write_text(json.dumps({"tasks": entries}, ensure_ascii=False), "utf-8")
    return root


@pytest.fixture(autouse=True)
def tiny(tiny_models):
    return tiny_models["tiny"]


def test_train_transfer_and_eval_on_every_kind(tmp_path):
    data = folder(tmp_path / "data")
    short = TrainConfig(steps=3, batch_size=4, warmup_steps=1, eval_every=3, eval_examples=4, log_every=1)
    cfg = RunConfig(
        method="talora",
        model="tiny",
        data_dir=str(data),
        tasks=None,
        max_length=96,
        method_args={"length": 2, "layers": 2, "rank": 2},
        stage1=short,
        train=short,
        transfer=TrainConfig(steps=2, batch_size=2, warmup_steps=1, eval_every=0),
    )
    summary = pipeline.run_train(cfg, tmp_path / "src")
    assert set(summary["metrics"]) == {"cls", "mc", "sts", "qa"}  # every source, whatever its kind
    assert summary["headline"] == {"cls": "macro_f1", "mc": "accuracy", "sts": "pearson", "qa": "span_f1"}
    assert summary["truncated_examples"] > 0  # the long QA contexts
    assert all(summary["headline"][t] in m for t, m in summary["metrics"].items())

    res = pipeline.run_transfer(tmp_path / "src", "ote", 3, 0, tmp_path / "tgt")
    assert res["metric"] == "span_f1" and res["split"] == "test" and 0.0 <= res["score"] <= 1.0
    assert set(res["metrics"]) == {"span_f1", "exact_match"}
    again = pipeline.run_eval(tmp_path / "tgt", "ote", "test")
    assert again["metrics"] == res["metrics"] and again["majority_baseline"] is None
    reg = pipeline.run_eval(tmp_path / "src", "sts", "validation")
    assert reg["majority_baseline"] == {"pearson": 0.0, "spearman": 0.0}
