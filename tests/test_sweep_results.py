"""Reading sweep results: the task-level sign-flip test, the hierarchical bootstrap and the few-shot curves."""

import itertools
import json

import numpy as np
import pytest

from talora.analysis import sweep_results as R
from talora.cli import main
from talora.errors import ConfigError

RESULTS = {
    "source": {"a": {"s1": 0.8}, "b": {"s1": 0.7}},
    "target": {
        "zero_shot": {"t": 0.5, "u": 0.4},  # deterministic: one score per task
        "a": {"t (k=16)": [0.6, 0.7, 0.8], "t (k=32)": [0.7, 0.8, 0.9], "u (k=16)": [0.5, 0.5, 0.5]},
        "b": {"t (k=16)": [0.5, 0.7, 0.6], "t (k=32)": [0.6, 0.7, 0.6], "u (k=16)": [0.6, 0.6, 0.6]},
    },
}


def _brute_force_p(diffs):
    observed = abs(sum(diffs))
    flips = [abs(sum(s * d for s, d in zip(signs, diffs))) for signs in itertools.product((1, -1), repeat=len(diffs))]
    return sum(f >= observed - 1e-12 for f in flips) / len(flips)


def test_compare_pairs_methods_at_the_task_level():
    c = R.compare(RESULTS, "a", "b")
    # t: a's mean over k and seeds 0.75, b's 0.6167; u: 0.5 against 0.6
    assert c["tasks"] == 2 and c["per_task"] == {"t": pytest.approx(0.75 - 0.6166667), "u": pytest.approx(-0.1)}
    assert (c["wins"], c["losses"]) == (1, 1)
    assert c["min_p"] == pytest.approx(0.5)  # 2 tasks: no outcome can go below 2 / 2^2
    assert c["p"] == pytest.approx(_brute_force_p(list(c["per_task"].values())))
    zero = R.compare(RESULTS, "a", "zero_shot")  # the zero-shot row is one number per task, never per seed
    assert zero["tasks"] == 2 and zero["mean_b"] == pytest.approx(0.45)


def test_compare_at_one_k_keeps_that_k_and_the_deterministic_rows(capsys, tmp_path):
    c = R.compare(R.at_k(RESULTS, 32), "a", "b")
    assert c["tasks"] == 1 and c["per_task"] == {"t": pytest.approx(0.8 - 0.6333333)}  # u has no k = 32 row
    zero = R.compare(R.at_k(RESULTS, "16"), "a", "zero_shot")
    assert zero["per_task"] == {"t": pytest.approx(0.7 - 0.5), "u": pytest.approx(0.5 - 0.4)}
    with pytest.raises(ConfigError, match="no target rows at k = 64; the results have k = 16, 32"):
        R.at_k(RESULTS, 64)
    path = tmp_path / "r.json"
    path.write_text(json.dumps(RESULTS))
    assert main(["analyze", "compare", str(path), "a", "b", "--k", "32", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["tasks"] == 1


def test_a_sweep_with_several_k_compares_over_all_and_at_each(tmp_path):
    from talora.recipes.sweep import comparisons

    cs = comparisons(RESULTS, tmp_path)
    assert [(c["b"], c.get("k")) for c in cs] == [
        ("zero_shot", None),
        ("b", None),
        ("zero_shot", "16"),
        ("b", "16"),
        ("zero_shot", "32"),
        ("b", "32"),
    ]
    assert cs[-1]["tasks"] == 1 and cs[-1]["mean_difference"] == pytest.approx(0.8 - 0.6333333)
    assert "a vs b (target, k = 32, 1 task)" in R.compare_line(cs[-1])
    assert "(target, 2 tasks)" in R.compare_line(cs[1])
    table = R.comparison_table(cs + [{"a": "a", "b": "c", "error": "no shared task"}]).splitlines()
    # k = 16: t 0.7 - 0.6, u 0.5 - 0.6, mean 0.0; no predictions, so no interval
    assert "| a - b | 16 | 2 | +0.0 | - | - | 1 / 1 | 1.000 (0.500) |" in table
    assert "| a - c | all | - | - | - | - | - | no shared task |" in table
    assert table[-1] == "With 1 or 2 tasks: too few tasks for any outcome to reach p < 0.05."


def test_sign_flip_is_exact_with_a_known_p():
    # six positive differences: only the all-plus and all-minus patterns are as extreme, p = 2 / 64
    p, floor = R.sign_flip([0.01, 0.02, 0.03, 0.04, 0.05, 0.06])
    assert p == pytest.approx(2 / 64) and floor == pytest.approx(2 / 64)
    diffs = [0.3, -0.1, 0.2, 0.05, -0.02]
    assert R.sign_flip(diffs)[0] == pytest.approx(_brute_force_p(diffs))
    assert R.sign_flip([0.1, -0.1])[0] == pytest.approx(1.0)
    assert R.sign_flip([0.0, 0.0])[0] == 1.0


def test_compare_refuses_unknown_methods():
    with pytest.raises(ConfigError, match="no method 'c' in the target scores; there are: zero_shot, a, b"):
        R.compare(RESULTS, "a", "c")


def test_metrics_from_confusion_match_the_task_metrics():
    from talora.tasks.metrics import classification_metrics, matthews

    rng = np.random.default_rng(1)
    golds, preds = rng.integers(0, 3, 200), rng.integers(0, 3, 200)
    confusion = np.zeros((3, 3))
    np.add.at(confusion, (golds, preds), 1)
    labels = ["x", "y", "z"]
    g, p = [labels[i] for i in golds], [labels[i] for i in preds]
    assert R.metric_from_confusion(confusion, "accuracy") == pytest.approx(
        classification_metrics(p, g, labels)["accuracy"]
    )
    assert R.metric_from_confusion(confusion, "macro_f1") == pytest.approx(
        classification_metrics(p, g, labels)["macro_f1"]
    )
    assert R.metric_from_confusion(confusion, "matthews") == pytest.approx(matthews(p, g, labels))


def test_f1a_is_resampled_as_the_f1_of_the_positive_answer():
    from talora.tasks.metrics import f1a_metrics

    rng = np.random.default_rng(2)
    # "false" comes first and is the commoner answer: macro-F1 over both answers would differ from f1a.
    golds = ["false"] + [("true", "false", "false")[i] for i in rng.integers(0, 3, 199)]
    preds = [g if rng.random() < 0.7 else ("true" if g == "false" else "false") for g in golds]
    record = {"metric": "f1a", "methods": {"m": {"-": [([[g] for g in golds], preds)]}}}
    encoded, size = R._encode_task(record)
    (pairs,) = encoded["m"]["-"]
    confusion = np.zeros((size, size))
    np.add.at(confusion, (pairs[:, 0], pairs[:, 1]), 1)
    expected = f1a_metrics(preds, golds, [str(i) for i in range(len(golds))])["f1a"]
    assert R.metric_from_confusion(confusion, "f1a") == pytest.approx(expected)
    assert R.metric_from_confusion(confusion, "macro_f1") != pytest.approx(expected)


def _unit(folder, task, golds, preds):
    folder.mkdir(parents=True, exist_ok=True)
    uids = [f"{task}/{i}" for i in range(len(golds))]
    record = {
        task: {"index": list(range(len(golds))), "golds": [[g] for g in golds], "predictions": preds, "uids": uids}
    }
    (folder / "predictions.json").write_text(json.dumps(record))


def _constructed(tmp_path, gap_lines: int, n: int = 400, tasks=("t1", "t2", "t3", "t4")):
    """Two methods on each task, 2 seeds: b right on half the lines, a right on ``gap_lines`` more."""
    results = {"source": {}, "target": {"a": {}, "b": {}}, "units": {"a": {}, "b": {}}, "metrics": {}}
    golds = ["x", "y"] * (n // 2)
    for task in tasks:
        results["metrics"][task] = "accuracy"
        for m, right in (("a", n // 2 + gap_lines), ("b", n // 2)):
            row = f"{task} (k=16)"
            results["target"][m][row], results["units"][m][row] = [], []
            for seed in range(2):
                preds = [g if i < right else ("y" if g == "x" else "x") for i, g in enumerate(golds)]
                folder = f"{m}-{task}-s{seed}"
                _unit(tmp_path / folder, task, golds, preds)
                results["target"][m][row].append(right / n)
                results["units"][m][row].append(folder)
    path = tmp_path / "results.json"
    path.write_text(json.dumps(results))
    return R.load_results(path)


def test_bootstrap_interval_on_a_constructed_case(tmp_path):
    # a is right on 40 more of 400 lines on every task and seed: the difference is 0.10 everywhere.
    # Targets and seeds do not vary, so the interval comes from the lines alone: a and b differ on exactly
    # 40 lines (a right, b wrong) and agree on the rest, so a resample's difference is Binomial(400, 0.1) / 400,
    # with standard error sqrt(0.1 * 0.9 / 400) / sqrt(4 tasks) = 0.0075.
    c = R.compare(_constructed(tmp_path, 40), "a", "b", draws=4000)
    assert c["mean_difference"] == pytest.approx(0.10)
    low, high = c["interval"]
    assert low < 0.10 < high
    assert c["se"] == pytest.approx(0.0075, rel=0.1)
    assert c["detectable"] == pytest.approx(2.8 * c["se"])
    assert high - low == pytest.approx(2 * 1.96 * 0.0075, rel=0.15)
    assert c["p"] == pytest.approx(2 / 16) and c["min_p"] == pytest.approx(2 / 16)


def test_a_secondary_metric_is_recomputed_from_the_predictions(tmp_path):
    # One task, one seed per method: gold x x x y; a answers x x x x (accuracy 0.75, macro-F1
    # (6/7 + 0) / 2 = 3/7), b answers x y x y (accuracy 0.75, macro-F1 (0.8 + 2/3) / 2).
    golds = ["x", "x", "x", "y"]
    for m, preds in (("a", ["x", "x", "x", "x"]), ("b", ["x", "y", "x", "y"])):
        _unit(tmp_path / m, "t", golds, preds)
    results = {
        "target": {"a": {"t (k=16)": [0.75]}, "b": {"t (k=16)": [0.75]}},
        "units": {"a": {"t (k=16)": ["a"]}, "b": {"t (k=16)": ["b"]}},
        "metrics": {"t": "accuracy"},
        "_folder": str(tmp_path),
    }
    f1 = R.with_metric(results, "macro_f1")
    assert f1["target"]["a"]["t (k=16)"] == pytest.approx([3 / 7])
    assert f1["target"]["b"]["t (k=16)"] == pytest.approx([(0.8 + 2 / 3) / 2])
    assert f1["metrics"] == {"t": "macro_f1"}
    assert R.with_metric(results, "accuracy")["target"] == results["target"]
    assert R.compare(f1, "b", "a", draws=50)["mean_difference"] == pytest.approx((0.8 + 2 / 3) / 2 - 3 / 7)
    with pytest.raises(ConfigError, match="metric must be one of"):
        R.with_metric(results, "bleu")


def _span_results(tmp_path, metric="span_f1"):
    # a extracts each reference with one extra character (span F1 2 * 4 / (5 + 4) on every line, exact
    # match 0); b extracts nothing (F1 0). A bootstrap of exact match would see no difference at all.
    golds = ["世界之窗"] * 40
    results = {"target": {}, "units": {}, "metrics": {"t": metric}, "languages": {"t": "zh"}}
    for m, pred in (("a", "世界之窗的"), ("b", "")):
        _unit(tmp_path / m, "t", golds, [pred] * len(golds))
        results["target"][m] = {"t (k=16)": [8 / 9 if m == "a" else 0.0]}
        results["units"][m] = {"t (k=16)": [m]}
    path = tmp_path / "results.json"
    path.write_text(json.dumps(results))
    return R.load_results(path)


def test_bootstrap_of_a_generated_task_resamples_its_span_f1(tmp_path):
    c = R.compare(_span_results(tmp_path), "a", "b", draws=100)
    assert c["interval"] == pytest.approx([8 / 9, 8 / 9])  # every line scores 8/9 against 0
    results = _span_results(tmp_path)
    del results["languages"]  # a results file from before languages were recorded: read off the answers
    assert R.compare(results, "a", "b", draws=20)["interval"] == pytest.approx([8 / 9, 8 / 9])


def test_no_interval_for_a_metric_without_a_per_line_reading(tmp_path):
    c = R.compare(_span_results(tmp_path, metric="pearson"), "a", "b", draws=20)
    assert "interval" not in c and c["mean_difference"] == pytest.approx(8 / 9)


def test_bootstrap_of_equal_methods_is_zero(tmp_path):
    c = R.compare(_constructed(tmp_path, 0), "a", "b", draws=200)
    assert c["interval"] == [0.0, 0.0] and c["p"] == 1.0


def test_bootstrap_refuses_units_scored_on_other_lines(tmp_path):
    results = _constructed(tmp_path, 10, tasks=("t1",))
    record = json.loads((tmp_path / "a-t1-s0" / "predictions.json").read_text())
    record["t1"]["uids"][0] = "t1/other"
    (tmp_path / "a-t1-s0" / "predictions.json").write_text(json.dumps(record))
    with pytest.raises(ConfigError, match="scored other lines"):
        R.compare(results, "a", "b", draws=10)


def test_curves_average_tasks_and_seeds_per_k(tmp_path):
    curves = R.few_shot_curves(RESULTS)
    assert curves["a"] == {"16": pytest.approx(0.6), "32": pytest.approx(0.8)}
    # seed s's mean over tasks: k = 16 (0.6 + 0.5) / 2, (0.7 + 0.5) / 2, (0.8 + 0.5) / 2
    assert R.seed_means(RESULTS)["a"]["16"] == pytest.approx([0.55, 0.6, 0.65])
    assert R.seed_means(RESULTS)["b"]["32"] == pytest.approx([0.6, 0.7, 0.6])
    scored = {"zero_shot": {"target t": {"majority": 0.55}}, "a": {"u (k=16)": [{"majority": 0.7}, None]}}
    assert R.target_majority({**RESULTS, "scored": scored}, "t") == 0.55
    assert R.target_majority({**RESULTS, "scored": scored}, "u") == 0.7
    assert R.target_majority(RESULTS, "t") is None
    path = tmp_path / "r.json"
    path.write_text(json.dumps(RESULTS))
    out = tmp_path / "curves.png"
    assert main(["analyze", "curves", str(path), "--output", str(out)]) == 0
    assert out.read_bytes()[:4] == b"\x89PNG"
    assert main(["analyze", "compare", str(path), "a", "b", "--json"]) == 0
    path.write_text("{not json")
    assert main(["analyze", "compare", str(path), "a", "b"]) == 2


def test_label_blind_accuracy_by_hand():
    # 10 lines, gold 7 "yes" / 3 "no"; answers 5 "yes" / 5 "no", whatever the input:
    # 0.7 * 0.5 + 0.3 * 0.5 = 0.5, below the majority's 0.7.
    golds = [["yes"]] * 7 + [["no"]] * 3
    preds = ["yes", "no"] * 5
    assert R.label_blind_accuracy(golds, preds) == pytest.approx(0.5)
    # A constant answer's label-blind chance is its own accuracy.
    assert R.label_blind_accuracy(golds, ["yes"] * 10) == pytest.approx(0.7)
    with pytest.raises(ConfigError, match="one length"):
        R.label_blind_accuracy(golds, preds[:3])


def test_chance_rows_read_every_unit(tmp_path, capsys):
    results = _constructed(tmp_path, 40, tasks=("t1",))
    rows = R.chance_rows(results)
    assert [(r["method"], r["seed"]) for r in rows] == [("a", 0), ("a", 1), ("b", 0), ("b", 1)]
    # Golds alternate x/y; a is right on 240 of 400 lines (0.6), b on 200 (0.5); both answer 200 x and
    # 200 y (the wrong answers flip the gold), so the label-blind chance is 0.5 for both.
    assert [r["score"] for r in rows] == pytest.approx([0.6, 0.6, 0.5, 0.5])
    assert all(r["label_blind"] == pytest.approx(0.5) and r["majority"] == pytest.approx(0.5) for r in rows)
    main(["analyze", "chance", str(tmp_path / "results.json")])
    assert "| a | t1 | 16 | a-t1-s0 | accuracy | 60.0 | 50.0 | +10.0 | 50.0 |" in capsys.readouterr().out


def test_chance_of_a_generated_task_is_read_in_span_f1(tmp_path):
    # Four zh lines, two each of the references 苹果 and 香蕉. The unit answers 苹果汁 (F1 0.8 against
    # 苹果: 2 of 3 characters, all of 2) on the 苹果 lines and 香蕉 on the others: span F1 0.9.
    # Paired at random, each answer meets each reference half the time: (0.8 + 0 + 0 + 1) / 4 = 0.45.
    # The best constant answer, 苹果 or 香蕉, is right on half the lines: 0.5.
    results = {"target": {"a": {"t (k=16)": [0.9]}}, "units": {"a": {"t (k=16)": ["a-t"]}}}
    results |= {"metrics": {"t": "span_f1"}, "languages": {"t": "zh"}}
    _unit(tmp_path / "a-t", "t", ["苹果", "苹果", "香蕉", "香蕉"], ["苹果汁", "苹果汁", "香蕉", "香蕉"])
    (tmp_path / "results.json").write_text(json.dumps(results))
    (row,) = R.chance_rows(R.load_results(tmp_path / "results.json"))
    assert row["metric"] == "span_f1"
    assert (row["score"], row["label_blind"], row["majority"]) == pytest.approx((0.9, 0.45, 0.5))
