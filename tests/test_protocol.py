"""The evaluation protocol: shot counting, k = all, and selection kept apart from reporting."""

import json
from collections import Counter

import pytest
from real_data import needs_real_data, real_data  # noqa: F401 (real_data: the fixture)

from talora.config import RunConfig, TrainConfig
from talora.errors import DataError
from talora.recipes import pipeline
from talora.recipes.sweep import format_table
from talora.tasks import Example, Task, TaskSpec, few_shot, load_tasks, parse_k


def _task(train: int = 30, validation: int = 6, test: int = 6, labels=("a", "b", "c")) -> Task:
    def split(name, n):
        return [Example(f"{name}{i}", "t", {"text": f"{name} {i}"}, labels[i % len(labels)]) for i in range(n)]

    spec = TaskSpec("t", "en", "classification", labels, {lab: lab for lab in labels}, "{text}\nAnswer:", "accuracy")
    splits = {"train": split("train", train), "validation": split("val", validation)}
    if test:
        splits["test"] = split("test", test)
    return Task(spec, splits)


def test_shots_per_class_in_total_and_all():
    task = _task()
    per_class = few_shot(task, 4, seed=0, mode="per_class")
    assert Counter(ex.label for ex in per_class) == {"a": 4, "b": 4, "c": 4}
    total = few_shot(task, 4, seed=0, mode="total")
    assert len(total) == 4 and {ex.uid for ex in total} <= {ex.uid for ex in task.splits["train"]}
    everything = few_shot(task, "all", seed=0)
    assert sorted(ex.uid for ex in everything) == sorted(ex.uid for ex in task.splits["train"])
    assert [ex.uid for ex in everything] != [ex.uid for ex in task.splits["train"]]  # shuffled
    assert everything == few_shot(task, "all", seed=0) != few_shot(task, "all", seed=1)
    with pytest.raises(DataError, match="shot mode must be one of per_class, total, got 'each'"):
        few_shot(task, 4, seed=0, mode="each")


def test_k_all_leaves_out_training_lines_that_repeat_an_evaluation_input():
    task = _task()
    task.splits["train"].append(Example("dup", "t", {"text": "val 0"}, "a"))
    assert "dup" not in {ex.uid for ex in few_shot(task, "all", seed=0)}


@pytest.mark.parametrize("value, parsed", [("all", "all"), ("16", 16), (4, 4)])
def test_parse_k(value, parsed):
    assert parse_k(value) == parsed


@pytest.mark.parametrize("value", ["0", "-1", "some", 0, True, 2.5])
def test_parse_k_refuses(value):
    with pytest.raises(DataError, match="k must be a positive number of shots or 'all'"):
        parse_k(value)


def test_protocol_splits_never_report_on_what_selected():
    cfg = RunConfig(heldout_examples=4)
    with_test, without_test = _task(), _task(test=0)
    assert pipeline.protocol_splits(with_test, "auto") == ("validation", "test")
    assert pipeline.protocol_splits(without_test, "auto") == (pipeline.HELDOUT, "validation")
    assert pipeline.protocol_splits(without_test, "validation") == ("validation", "validation")

    parts = pipeline.source_examples(without_test, cfg)
    assert (
        parts["selection"] == without_test.splits["train"][-4:] and parts["train"] == without_test.splits["train"][:-4]
    )
    assert parts["report"] == without_test.splits["validation"]
    small = pipeline.source_examples(_task(train=10, test=0), cfg)
    assert len(small["selection"]) == 2 and len(small["train"]) == 8  # at most a fifth of train is held out
    with pytest.raises(DataError, match="too few to hold a selection slice"):
        pipeline.source_examples(_task(train=4, test=0), cfg)
    no_validation = _task(validation=0)
    with pytest.raises(DataError, match="no examples in split 'validation', where training selects"):
        pipeline.source_examples(no_validation, RunConfig(select_on="validation"))


def _folder_tasks(root):
    """Two manifest-free tasks: one with a labelled test split, one without."""
    for name, splits in (("with_test", ("train", "validation", "test")), ("no_test", ("train", "validation"))):
        (root / name).mkdir(parents=True)
        for split in splits:
            n = 40 if split == "train" else 8
            lines = [{"text": f"{name} {split} line {i}", "label": ["yes", "no"][i % 2]} for i in range(n)]
            (root / name / f"{split}.jsonl").write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    return str(root)


def test_run_train_selects_and_reports_where_the_protocol_says(tmp_path, tiny_models, monkeypatch):
    data = _folder_tasks(tmp_path / "data")
    cfg = RunConfig(
        method="prompt_tuning",
        model="tiny",
        data_dir=data,
        tasks=["with_test", "no_test"],
        max_length=48,
        heldout_examples=5,
        method_args={"length": 2},
        train=TrainConfig(steps=2, batch_size=4, warmup_steps=1, eval_every=1, eval_examples=0),
    )
    seen = {}
    real_train = pipeline.train

    def spy(backbone, method, train_items, eval_items, *args, **kwargs):
        seen["train"], seen["select"] = train_items, eval_items
        return real_train(backbone, method, train_items, eval_items, *args, **kwargs)

    monkeypatch.setattr(pipeline, "train", spy)
    summary = pipeline.run_train(cfg, tmp_path / "out")
    tasks = load_tasks(data)
    held_out = {ex.fields["text"] for ex in tasks["no_test"].splits["train"][-5:]}
    select_texts = {ex.uid for ex in seen["select"]}
    train_uids = {ex.uid for ex in seen["train"]}
    assert not select_texts & train_uids  # training never sees what chooses its best state
    assert {ex.uid for ex in seen["select"] if ex.task_id == 1} == {
        ex.uid for ex in tasks["no_test"].splits["train"][-5:]
    }
    assert {ex.uid for ex in seen["select"] if ex.task_id == 0} == {
        ex.uid for ex in tasks["with_test"].splits["validation"]
    }
    assert len(held_out) == 5
    assert summary["splits"] == {
        "with_test": {"selection": "validation", "report": "test"},
        "no_test": {"selection": pipeline.HELDOUT, "report": "validation"},
    }
    written = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert written["splits"] == summary["splits"] and written["split"] == "per task (splits)"


def test_transfer_k_all_takes_the_whole_train_split_within_the_cap(tmp_path, tiny_models):
    data = _folder_tasks(tmp_path / "data")
    cfg = RunConfig(
        method="prompt_tuning",
        model="tiny",
        data_dir=data,
        max_length=48,
        method_args={"length": 2},
        transfer=TrainConfig(steps=1, batch_size=4, warmup_steps=0, eval_every=0),
    )
    full = pipeline.run_transfer(None, "no_test", "all", 0, tmp_path / "all", config=cfg)
    assert full["k"] == "all" and full["train_examples"] == 40
    capped = RunConfig(**{**cfg.__dict__, "train_examples": 12})
    assert pipeline.run_transfer(None, "no_test", "all", 0, tmp_path / "cap", config=capped)["train_examples"] == 12
    total = pipeline.run_transfer(None, "no_test", 3, 0, tmp_path / "t3", config=cfg, shots="total")
    per_class = pipeline.run_transfer(None, "no_test", 3, 0, tmp_path / "c3", config=cfg)
    assert (total["train_examples"], total["shots"], per_class["train_examples"]) == (3, "total", 6)


def test_the_table_says_where_each_number_comes_from():
    results = {
        "source": {"m": {"a": 0.5, "b": 0.6}},
        "target": {"m": {"c (k=4)": [0.4, 0.6]}},
        "parameters": {},
        "seconds": 1.0,
        "splits": {
            "source": {
                "a": {"selection": "validation", "report": "test"},
                "b": {"selection": pipeline.HELDOUT, "report": "validation"},
            },
            "target": {"c": "validation"},
            "shots": "total",
        },
    }
    table = format_table(results)
    assert "- unseen data, a: best state selected on validation, scored on test" in table
    assert f"- unseen data, b: best state selected on {pipeline.HELDOUT}, scored on validation" in table
    assert "- unseen task, c: last training step, scored on validation" in table
    assert "- k counts shots in all" in table
    results["splits"]["source"]["a"] = {"selection": "validation", "report": "validation"}
    assert "scored on validation (the same examples: an optimistic score)" in format_table(results)


@needs_real_data
def test_suites_count_shots_as_their_papers_do(tmp_path):
    from talora.recipes.suites import load_suite
    from talora.recipes.sweep import load_sweep

    assert (load_suite("en-dtvg").shots, load_suite("en-dtvg").ks) == ("total", (4, 16, 32, 64))
    assert load_suite("en-tpv").shots == "total" and load_suite("zh-talora").shots == "per_class"
    path = tmp_path / "s.yaml"
    path.write_text("suite: en-dtvg\nmethods: {prompt_tuning: {}}\n")
    _, runs = load_sweep(path)
    assert runs["prompt_tuning"][0].shots == "total"
    path.write_text("suite: en-dtvg\nrun: {shots: per_class}\nmethods: {prompt_tuning: {}}\n")
    assert load_sweep(path)[1]["prompt_tuning"][0].shots == "per_class"  # the sweep's own setting wins


def test_eval_scores_by_default_the_split_train_reports(tmp_path, tiny_models, capsys):
    from test_tasks_loader import write_folder

    from talora.adapters.files import save_adapter
    from talora.cli import main
    from talora.config import dump_config
    from talora.methods.prompt_tuning import PromptTuning, PromptTuningConfig

    backbone = tiny_models["tiny"]
    data = str(write_folder(tmp_path / "data"))  # train and validation only
    cases = [
        ("has-test", None, "movie_sentiment", "auto", None, "test"),
        ("no-test", data, "reviews", "auto", None, "validation"),
        ("selects-on-validation", None, "movie_sentiment", "validation", None, "validation"),
        ("transfer", None, "movie_sentiment", "validation", {"source_adapter": "runs/src"}, "test"),
    ]
    for name, data_dir, task, select_on, extra, want in cases:
        spec = load_tasks(data_dir, [task])[task].spec
        folder = tmp_path / name
        method = PromptTuning(PromptTuningConfig(length=2), backbone, [task])
        save_adapter(folder, method, backbone, {task: spec}, extra=extra)
        cfg = RunConfig(method="prompt_tuning", model="tiny", data_dir=data_dir, tasks=[task], select_on=select_on)
        (folder / "config.yaml").write_text(dump_config(cfg))
        assert pipeline.protocol_splits(load_tasks(data_dir, [task])[task], select_on)[1] == want or extra
        assert main(["eval", "--adapter", str(folder), "--task", task]) == 0
        out, err = capsys.readouterr()
        assert out.startswith(f"{task} ({want} split, "), (name, out)
        assert f"scoring the {want} split of {task}, the one train reports" in err, name
    assert main(["eval", "--adapter", str(folder), "--task", task, "--split", "train", "--json"]) == 0
    out, err = capsys.readouterr()
    assert json.loads(out)["split"] == "train" and "scoring" not in err
