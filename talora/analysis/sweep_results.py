"""Reading a sweep's results: does one method beat another on the target tasks, and by how much?

The unit a reader generalises over is the task, so the headline test pairs the two methods at the
task level: each target task gives one difference (the first method's mean over k and seeds minus
the second's; a deterministic row such as zero-shot has one score per task, never repeated per
seed), and an exact sign-flip test asks whether the mean of those differences could be zero
(every one of the 2^T sign patterns enumerated, through ``scipy.stats.permutation_test``). With T
targets no outcome can give a two-sided p below 2 / 2^T: with 4 targets nothing can reach 0.05,
and the result says so (``min_p``).

The 95 % interval of the mean difference comes from a hierarchical bootstrap that resamples what
varies in a replication: the targets, the seeds within a target (the same seeds for both methods:
seed s draws the same shots for every method) and the scored lines within a task (the same lines
for both methods: a sweep scores every method on one sample). Each resample recomputes every
unit's metric from its saved predictions (``predictions.json``), so Matthews correlation and
macro-F1 are resampled as the metrics they are, not as per-line averages. The smallest difference
the design can detect (two-sided 5 %, power 80 %) is 2.8 bootstrap standard errors.
"""

from __future__ import annotations

import functools
import json
import re
import statistics
from collections import Counter
from pathlib import Path

import numpy as np

from ..errors import ConfigError
from ..tasks.infer import guess_language
from ..tasks.metrics import span_f1, span_f1_lines

DRAWS = 2000
MDE_FACTOR = 2.8  # z(0.975) + z(0.80): two-sided 5 % test, 80 % power
_K_ROW = re.compile(r"^(?P<task>.+) \(k=(?P<k>\w+)\)$")


def _load(path: Path) -> dict:
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise ConfigError(f"results file not found: {path}") from None
    except json.JSONDecodeError as err:
        raise ConfigError(f"{path}: not a sweep's results JSON ({err})") from None


def load_results(path: str | Path) -> dict:
    results = _load(Path(path))
    results["_folder"] = str(Path(path).parent)
    return results


def _values(cell) -> list[float]:
    return [float(cell)] if isinstance(cell, (int, float)) else [float(v) for v in cell]


def _row_task(row: str) -> tuple[str, str | None]:
    match = _K_ROW.match(row)
    return (match["task"], match["k"]) if match else (row, None)


def task_means(results: dict, method: str, setting: str = "target") -> dict[str, float]:
    """A method's mean score per task: over its rows' k values and seeds (target), or its one score."""
    block = results.get(setting, {})
    if method not in block:
        raise ConfigError(f"no method {method!r} in the {setting} scores; there are: {', '.join(block) or 'none'}")
    by_task: dict[str, list[float]] = {}
    for row, cell in block[method].items():
        task, _ = _row_task(row)
        by_task.setdefault(task, []).append(statistics.mean(_values(cell)))
    return {t: statistics.mean(v) for t, v in by_task.items()}


def target_ks(results: dict) -> list[str]:
    """The k values of a sweep's target rows, in increasing order (``all`` last)."""
    ks = {m["k"] for rows in results.get("target", {}).values() for r in rows if (m := _K_ROW.match(r))}
    return sorted(ks, key=lambda k: (not k.isdigit(), int(k) if k.isdigit() else 0))


def at_k(results: dict, k: str | int) -> dict:
    """The results with only the target rows of ``k`` shots (and the deterministic rows, which have no
    k): a comparison at one k, where ``compare`` otherwise averages each task over every k."""
    k = str(k)
    have = target_ks(results)
    if k not in have:
        raise ConfigError(f"no target rows at k = {k}; the results have k = {', '.join(have) or 'none'}")

    def keep(rows: dict) -> dict:
        return {r: v for r, v in rows.items() if _row_task(r)[1] in (None, k)}

    out = {**results, "target": {m: keep(rows) for m, rows in results.get("target", {}).items()}}
    if "units" in results:
        out["units"] = {m: keep(rows) for m, rows in results["units"].items()}
    return out


METRICS = ("accuracy", "macro_f1", "matthews")


def with_metric(results: dict, metric: str) -> dict:
    """The results with every target score recomputed as ``metric`` from the units' saved predictions
    (a secondary reading, e.g. macro-F1 where accuracy on imbalanced lines rewards one answer);
    the bootstrap then resamples that metric too."""
    if metric not in METRICS:
        raise ConfigError(f"metric must be one of {', '.join(METRICS)}, got {metric!r}")
    folder = Path(results.get("_folder", "."))

    def score(unit: str, task: str) -> float:
        path = folder / unit / "predictions.json"
        record = json.loads(path.read_text()).get(task) if path.is_file() else None
        if record is None:
            raise ConfigError(f"{path}: no saved predictions for {task}, so no {metric} can be computed")
        encoded, size = _encode_task({"methods": {"m": {"-": [(record["golds"], record["predictions"])]}}})
        pairs = encoded["m"]["-"][0]
        confusion = np.zeros((size, size))
        np.add.at(confusion, (pairs[:, 0], pairs[:, 1]), 1)
        return float(metric_from_confusion(confusion, metric))

    target: dict = {}
    for method in results.get("target", {}):
        for task, by_k in _units(results, method, "target").items():
            for k, folders in by_k.items():
                row = task if k == "-" else f"{task} (k={k})"
                values = [score(f, task) for f in folders]
                target.setdefault(method, {})[row] = values[0] if k == "-" else values
    tasks = {_row_task(r)[0] for rows in target.values() for r in rows}
    return {**results, "target": target, "metrics": {**results.get("metrics", {}), **dict.fromkeys(tasks, metric)}}


def sign_flip(diffs: list[float]) -> tuple[float, float]:
    """(two-sided p of a zero mean under random signs, enumerated exactly; the smallest p attainable)."""
    from scipy.stats import permutation_test

    n = len(diffs)
    if n == 0:
        raise ConfigError("no paired task to test")
    if not any(diffs) or n == 1:  # one task: +d and -d are equally extreme
        return 1.0, min(1.0, 2.0 / 2**n)
    test = permutation_test(
        (np.asarray(diffs, dtype=float),),
        np.mean,
        permutation_type="samples",
        n_resamples=np.inf,  # enumerate all 2^n sign patterns: exact, not Monte Carlo
        alternative="two-sided",
    )
    return float(test.pvalue), min(1.0, 2.0 / 2**n)


def compare(results: dict, a: str, b: str, setting: str = "target", draws: int = DRAWS, seed: int = 0) -> dict:
    """Method ``a`` against ``b`` on the tasks both have: the task-level test, the per-task differences,
    and (when the units' predictions are at hand) the bootstrap interval and smallest detectable difference."""
    ma, mb = task_means(results, a, setting), task_means(results, b, setting)
    tasks = [t for t in ma if t in mb]
    if not tasks:
        raise ConfigError(f"{a!r} and {b!r} share no {setting} task to compare")
    diffs = [ma[t] - mb[t] for t in tasks]
    p, min_p = sign_flip(diffs)
    out = {
        "a": a,
        "b": b,
        "setting": setting,
        "tasks": len(tasks),
        "per_task": {t: d for t, d in zip(tasks, diffs, strict=True)},
        "mean_a": statistics.mean(ma[t] for t in tasks),
        "mean_b": statistics.mean(mb[t] for t in tasks),
        "mean_difference": statistics.mean(diffs),
        "wins": sum(d > 0 for d in diffs),
        "losses": sum(d < 0 for d in diffs),
        "ties": sum(d == 0 for d in diffs),
        "p": p,
        "min_p": min_p,
    }
    lines = _line_records(results, [a, b], tasks, setting)
    if lines is not None:
        boot = hierarchical_bootstrap(lines, a, b, draws, seed)
        out.update(boot)
    return out


# --- the hierarchical bootstrap ----------------------------------------------------------------


def _units(results: dict, method: str, setting: str) -> dict[str, dict[str, list[str]]]:
    """task -> k -> unit folders of a method (one per seed, in seed order); zero-shot: one folder."""
    if method == "zero_shot":
        role = "target" if setting == "target" else "source"
        return {t: {"-": [f"zero_shot/{role}-{t}"]} for t in results.get(setting, {}).get(method, {})}
    units = results.get("units", {}).get(method, {})
    out: dict[str, dict[str, list[str]]] = {}
    if setting == "source":
        source = units.get("source")
        return {t: {"-": [source]} for t in results.get("source", {}).get(method, {})} if source else {}
    for row, folders in units.items():
        task, k = _row_task(row)
        if k is not None:
            out.setdefault(task, {})[k] = folders
    return out


def _line_records(results: dict, methods: list[str], tasks: list[str], setting: str) -> dict | None:
    """Per task: the scored lines' gold/prediction codes of every unit of each method, or None when a
    unit's predictions.json is missing (a sweep run before they were saved): no interval then."""
    folder = Path(results.get("_folder", "."))
    metrics = results.get("metrics", {})
    out: dict = {}
    for task in tasks:
        metric = metrics.get(task, "accuracy")
        if metric not in CONFUSION_METRICS + LINE_MEANS:
            return None  # e.g. pearson: no per-line reading to resample, so no interval
        per_method = {}
        uids = None
        for m in methods:
            by_k = _units(results, m, setting).get(task)
            if not by_k:
                return None
            units = {}
            for k, folders in by_k.items():
                runs = []
                for f in folders:
                    path = folder / f / "predictions.json"
                    if not path.is_file():
                        return None
                    record = json.loads(path.read_text()).get(task)
                    if record is None:
                        return None
                    if uids is None:
                        uids = record["uids"]
                    elif record["uids"] != uids:
                        raise ConfigError(f"{task}: {m}'s unit {f} scored other lines than the rest: not paired")
                    runs.append((record["golds"], record["predictions"]))
                units[k] = runs
            per_method[m] = units
        language = results.get("languages", {}).get(task) or _golds_language(per_method)
        out[task] = {"metric": metric, "language": language, "methods": per_method}
    return out


def _golds_language(per_method: dict) -> str:
    """A results file written before sweeps recorded each task's language: read it off the answers."""
    golds = next(runs[0][0] for units in per_method.values() for runs in units.values())
    return guess_language([g if isinstance(g, str) else " ".join(map(str, g)) for g in golds])


# Task scores the bootstrap can recompute from resampled lines: those read off a confusion matrix
# (gold and prediction are classes), and those that are a mean of per-line scores (generated text).
CONFUSION_METRICS = ("accuracy", "macro_f1", "matthews", "f1a")
LINE_MEANS = ("span_f1",)
# f1a is the F1 of one answer (MultiRC's "true", as the task scorer reads it): the encoding gives that
# answer class 0, and metric_from_confusion reads f1a off class 0 alone.
F1A_POSITIVE = "true"


def _encode_task(record: dict) -> tuple[dict, int]:
    """Every unit's lines as (gold, prediction) class indices over one label set for the task, or,
    for a mean of per-line scores, as each line's score (and size 0)."""
    if record.get("metric") in LINE_MEANS:
        language = record["language"]
        return {
            m: {
                k: [np.asarray(span_f1_lines([str(p) for p in preds], golds, language)) for golds, preds in runs]
                for k, runs in units.items()
            }
            for m, units in record["methods"].items()
        }, 0
    labels: dict[str, int] = {F1A_POSITIVE: 0} if record.get("metric") == "f1a" else {}
    encoded: dict = {}
    for m, units in record["methods"].items():
        encoded[m] = {}
        for k, runs in units.items():
            encoded[m][k] = []
            for golds, preds in runs:
                pairs = []
                for gold, pred in zip(golds, preds, strict=True):
                    pred = str(pred)
                    g = pred if pred in gold else str(gold[0])
                    pairs.append((labels.setdefault(g, len(labels)), labels.setdefault(pred, len(labels))))
                encoded[m][k].append(np.asarray(pairs, dtype=np.int64))
    return encoded, len(labels)


def metric_from_confusion(confusion: np.ndarray, metric: str) -> np.ndarray:
    """A metric from confusion matrices (..., gold, prediction), vectorised over leading axes; for
    f1a, class 0 is the positive answer (as ``_encode_task`` encodes it)."""
    n = confusion.sum(axis=(-1, -2))
    correct = np.trace(confusion, axis1=-2, axis2=-1)
    if metric == "matthews":
        p_tot, g_tot = confusion.sum(-2), confusion.sum(-1)
        cov_pg = correct * n - (g_tot * p_tot).sum(-1)
        cov_pp = n * n - (p_tot * p_tot).sum(-1)
        cov_gg = n * n - (g_tot * g_tot).sum(-1)
        denom = np.sqrt(cov_pp * cov_gg)
        return np.where(denom > 0, cov_pg / np.where(denom > 0, denom, 1), 0.0)
    if metric in ("macro_f1", "f1a"):
        tp = np.diagonal(confusion, axis1=-2, axis2=-1)
        predicted, gold = confusion.sum(-2), confusion.sum(-1)
        if metric == "f1a":
            tp, predicted, gold = tp[..., :1], predicted[..., :1], gold[..., :1]
        present = (predicted + gold) > 0
        f1 = np.where(present, 2 * tp / np.where(present, predicted + gold, 1), 0.0)
        return f1.sum(-1) / np.maximum(present.sum(-1), 1)
    return correct / np.maximum(n, 1)


def _unit_metric(lines: np.ndarray, weights: np.ndarray, size: int, metric: str) -> np.ndarray:
    """The metric of one unit for each row of line ``weights`` (draws x lines); ``lines`` as
    ``_encode_task`` gives them: (gold, prediction) indices, or each line's score."""
    if metric in LINE_MEANS:
        return weights @ lines / weights.sum(1)
    onehot = np.zeros((len(lines), size * size))
    onehot[np.arange(len(lines)), lines[:, 0] * size + lines[:, 1]] = 1
    return metric_from_confusion((weights @ onehot).reshape(-1, size, size), metric)


def hierarchical_bootstrap(lines: dict, a: str, b: str, draws: int = DRAWS, seed: int = 0) -> dict:
    """The 95 % interval and standard error of the mean task-level difference a - b, resampling
    targets, then seeds within a target (paired across methods), then scored lines within a task
    (paired across methods and units), ``draws`` times."""
    rng = np.random.default_rng(seed)
    tasks = list(lines)
    encoded = {t: _encode_task(lines[t]) for t in tasks}
    n_lines = {t: len(lines[t]["methods"][a][next(iter(lines[t]["methods"][a]))][0][0]) for t in tasks}
    stats = np.zeros(draws)
    # Per task, the draws in which it is picked, how often: each pick gets its own seeds and lines.
    picks = rng.integers(0, len(tasks), size=(draws, len(tasks)))
    for t_index, task in enumerate(tasks):
        units, size = encoded[task]
        metric = lines[task]["metric"]
        count = (picks == t_index).sum(1)  # times this task is picked in each draw
        total = int(count.sum())
        if total == 0:
            continue
        weights = rng.multinomial(n_lines[task], np.full(n_lines[task], 1 / n_lines[task]), size=total)
        diff = np.zeros(total)
        ks = _paired_ks(set(units[a]), set(units[b]))
        for k in ks:
            ua, ub = units[a].get(k) or units[a]["-"], units[b].get(k) or units[b]["-"]
            seeds = max(len(ua), len(ub))
            # Seeds resampled once per pick, shared by both methods (a deterministic row has one "seed").
            chosen = rng.integers(0, seeds, size=(total, seeds))
            sa = np.stack([_unit_metric(u, weights, size, metric) for u in ua], 1)  # picks x seeds
            sb = np.stack([_unit_metric(u, weights, size, metric) for u in ub], 1)
            ga = np.take_along_axis(sa, np.minimum(chosen, len(ua) - 1), 1).mean(1)
            gb = np.take_along_axis(sb, np.minimum(chosen, len(ub) - 1), 1).mean(1)
            diff += (ga - gb) / len(ks)
        owner = np.repeat(np.arange(draws), count)
        np.add.at(stats, owner, diff)
    stats /= len(tasks)
    low, high = np.percentile(stats, [2.5, 97.5])
    se = float(stats.std(ddof=1))
    return {"interval": [float(low), float(high)], "se": se, "detectable": MDE_FACTOR * se, "draws": draws}


def _paired_ks(ka: set[str], kb: set[str]) -> list[str]:
    """The k values two methods are paired on; a deterministic row ("-": one score per task) pairs with every k."""
    if ka == {"-"}:
        return sorted(kb)
    if kb == {"-"}:
        return sorted(ka)
    return sorted(ka & kb)


def compare_line(c: dict) -> str:
    at = f", k = {c['k']}" if "k" in c else ""
    tasks = f"{c['tasks']} task{'s' if c['tasks'] != 1 else ''}"
    text = (
        f"{c['a']} vs {c['b']} ({c['setting']}{at}, {tasks}): {100 * c['mean_a']:.1f} vs "
        f"{100 * c['mean_b']:.1f}, difference {100 * c['mean_difference']:+.1f}"
    )
    if "interval" in c:
        low, high = c["interval"]
        text += f" (95 % interval {100 * low:+.1f} to {100 * high:+.1f}; detectable: {100 * c['detectable']:.1f})"
    text += (
        f"; better on {c['wins']} of {tasks}, worse on {c['losses']}, tied on {c['ties']}; "
        f"exact sign-flip p = {c['p']:.3f} "
        f"(smallest attainable with {tasks}: {c['min_p']:.3f})"
    )
    if c["min_p"] > 0.05:
        text += "; too few tasks for any outcome to reach p < 0.05"
    return text


def comparison_table(comparisons: list[dict]) -> str:
    """Comparisons (``compare``'s results) as a Markdown table, differences × 100. The p column gives
    the smallest p the number of tasks allows beside it: with few tasks no outcome reaches 0.05."""
    lines = [
        "| comparison | k | tasks | difference | 95 % interval | detectable | better / worse | p (smallest possible) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for c in comparisons:
        name = f"{c['a']} - {c['b']}"
        if "error" in c:
            lines.append(f"| {name} | {c.get('k', 'all')} | - | - | - | - | - | {c['error']} |")
            continue
        interval = "{:+.1f} to {:+.1f}".format(*(100 * v for v in c["interval"])) if "interval" in c else "-"
        detectable = f"{100 * c['detectable']:.1f}" if "detectable" in c else "-"
        lines.append(
            f"| {name} | {c.get('k', 'all')} | {c['tasks']} | {100 * c['mean_difference']:+.1f} | {interval} | "
            f"{detectable} | {c['wins']} / {c['losses']} | {c['p']:.3f} ({c['min_p']:.3f}) |"
        )
    few = sorted({c["tasks"] for c in comparisons if "error" not in c and c["min_p"] > 0.05})
    if few:
        lines += ["", f"With {' or '.join(map(str, few))} tasks: too few tasks for any outcome to reach p < 0.05."]
    return "\n".join(lines)


def label_blind_accuracy(golds: list, preds: list) -> float:
    """Expected accuracy of a predictor that never reads its input but answers with the histogram of
    ``preds``: the sum over answers a of P(gold = a) * P(prediction = a). It is the chance level of a
    unit whose answers are spread over the labels (balanced shots teach that), where the majority
    class is the chance level only of a constant answer: on imbalanced lines a method can sit below
    the majority score and still above this."""
    if not golds or len(golds) != len(preds):
        raise ConfigError("label_blind_accuracy: golds and predictions must be non-empty and of one length")
    first = [g[0] if isinstance(g, (list, tuple)) else g for g in golds]
    n = len(first)
    gold_counts: dict = {}
    pred_counts: dict = {}
    for g, p in zip(first, preds):
        gold_counts[g] = gold_counts.get(g, 0) + 1
        pred_counts[p] = pred_counts.get(p, 0) + 1
    return sum(c * pred_counts.get(a, 0) for a, c in gold_counts.items()) / (n * n)


def _span_chance(golds: list, preds: list, language: str) -> tuple[float, float, float]:
    """A generated task's span F1, its label-blind chance (each answer scored against a line drawn at
    random: the mean over every answer-line pairing, as label_blind_accuracy is for classes) and its
    best constant answer's span F1 (over every distinct answer and reference seen)."""
    lines = [tuple(g) if isinstance(g, (list, tuple)) else (g,) for g in golds]
    answers, distinct = Counter(str(p) for p in preds), Counter(lines)
    # The answers' pairs with every reference are scored twice (chance, then constants): once is enough.
    f1 = functools.cache(lambda answer, reference: span_f1(answer, reference, language))

    def mean_f1(answer: str) -> float:
        return sum(c * max(f1(answer, r) for r in g) for g, c in distinct.items()) / len(lines)

    constants = set(answers) | {r for g in distinct for r in g}
    score = float(np.mean(span_f1_lines([str(p) for p in preds], lines, language)))
    blind = sum(c * mean_f1(a) for a, c in answers.items()) / len(preds)
    return score, blind, max(mean_f1(a) for a in constants)


def chance_rows(results: dict, setting: str = "target") -> list[dict]:
    """One row per scored unit of a sweep (every method, zero-shot included): its score on the scored
    lines beside the label-blind chance of its own answers and the best constant answer's score,
    read from each unit's predictions.json (units without one are skipped). The score is accuracy,
    or span F1 for a generated task."""
    folder = Path(results.get("_folder", "."))
    rows = []
    for method in results.get(setting, {}):
        for task, by_k in _units(results, method, setting).items():
            spans = results.get("metrics", {}).get(task) in LINE_MEANS
            for k, folders in by_k.items():
                for seed, f in enumerate(folders):
                    path = folder / f / "predictions.json"
                    record = json.loads(path.read_text()).get(task) if path.is_file() else None
                    if record is None:
                        continue
                    preds = record["predictions"]
                    if spans:
                        language = results.get("languages", {}).get(task) or _golds_language(
                            {"m": {"-": [(record["golds"], preds)]}}
                        )
                        score, blind, majority = _span_chance(record["golds"], preds, language)
                    else:
                        golds = [g[0] if isinstance(g, (list, tuple)) else g for g in record["golds"]]
                        counts = {g: golds.count(g) for g in set(golds)}
                        score = sum(g == p for g, p in zip(golds, preds)) / len(golds)
                        blind, majority = label_blind_accuracy(golds, preds), max(counts.values()) / len(golds)
                    rows.append(
                        {
                            "method": method,
                            "task": task,
                            "k": k,
                            "unit": f,
                            "seed": None if k == "-" else seed,
                            "lines": len(preds),
                            "metric": "span_f1" if spans else "accuracy",
                            "score": score,
                            "label_blind": blind,
                            "majority": majority,
                        }
                    )
    return rows


def format_chance(rows: list[dict]) -> str:
    lines = [
        "| method | task | k | unit | metric | score | label-blind chance | score - chance | majority |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['method']} | {r['task']} | {r['k']} | {r['unit']} | {r['metric']} | {100 * r['score']:.1f} | "
            f"{100 * r['label_blind']:.1f} | {100 * (r['score'] - r['label_blind']):+.1f} | "
            f"{100 * r['majority']:.1f} |"
        )
    lines.append(
        "\nscore on each unit's scored lines (accuracy; span F1 for a generated task); label-blind chance: "
        "the expected score of the unit's own answers, each paired with a line drawn at random; "
        "majority: the best constant answer"
    )
    return "\n".join(lines)


def _cells_by_k(results: dict) -> dict[str, dict[str, list[list[float]]]]:
    """method -> k -> one list of seed scores per task (the target rows named "task (k=K)")."""
    cells: dict[str, dict[str, list[list[float]]]] = {}
    for method, rows in results.get("target", {}).items():
        for row, cell in rows.items():
            if match := _K_ROW.match(row):
                cells.setdefault(method, {}).setdefault(match["k"], []).append(_values(cell))
    return cells


def few_shot_curves(results: dict) -> dict[str, dict[str, float]]:
    """method -> k -> mean target score over tasks (each task's mean over its seeds)."""
    return {
        m: {k: statistics.mean(statistics.mean(v) for v in per_task) for k, per_task in by_k.items()}
        for m, by_k in _cells_by_k(results).items()
    }


def seed_means(results: dict) -> dict[str, dict[str, list[float]]]:
    """method -> k -> one mean target score per seed (over the tasks), for the spread a curve carries;
    seeds count only where every task has them."""
    out: dict[str, dict[str, list[float]]] = {}
    for method, by_k in _cells_by_k(results).items():
        for k, per_task in by_k.items():
            seeds = min(len(v) for v in per_task)
            out.setdefault(method, {})[k] = [statistics.mean(v[s] for v in per_task) for s in range(seeds)]
    return out


def target_majority(results: dict, task: str) -> float | None:
    """The best constant answer's score on a target's scored lines (the same for every unit), from any
    unit's scorecard in the results."""
    for cards in results.get("scored", {}).values():
        for key, card in cards.items():
            if key == f"target {task}" or (_row_task(key)[0] == task and _row_task(key)[1] is not None):
                for c in card if isinstance(card, list) else [card]:
                    if c and isinstance(c.get("majority"), (int, float)):
                        return c["majority"]
    return None


def plot_curves(results: dict, path: Path, title: str = "") -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curves = few_shot_curves(results)
    if not curves:
        raise ConfigError("no few-shot rows (named 'task (k=K)') in the results")
    fig, ax = plt.subplots(figsize=(6, 4))
    ks = target_ks(results)
    spread = seed_means(results)
    for i, (method, points) in enumerate(curves.items()):
        xs = [k for k in ks if k in points]
        sd = [100 * statistics.stdev(spread[method][k]) if len(spread[method][k]) > 1 else 0.0 for k in xs]
        dodge = 0.06 * (i - (len(curves) - 1) / 2)  # side by side at each k, so the bars do not hide each other
        at = [ks.index(k) + dodge for k in xs]
        ax.errorbar(at, [100 * points[k] for k in xs], yerr=sd, marker="o", capsize=3, label=method)
    ax.set_xticks(range(len(ks)), ks)
    ax.set_xlim(-0.5, len(ks) - 0.5)
    # A deterministic row (the frozen model) has no k: a level line over the tasks the curves cover.
    tasks = {_row_task(r)[0] for rows in results.get("target", {}).values() for r in rows if _row_task(r)[1]}
    for method, rows in results.get("target", {}).items():
        flat = [statistics.mean(_values(v)) for r, v in rows.items() if _row_task(r)[1] is None and r in tasks]
        if flat:
            ax.axhline(100 * statistics.mean(flat), linestyle="--", color="grey", label=f"{method} (no k)")
    majority = [m for t in tasks if (m := target_majority(results, t)) is not None]
    if tasks and len(majority) == len(tasks):
        ax.axhline(100 * statistics.mean(majority), linestyle=":", color="black", label="majority class")
    ax.set_xlabel("k (shots)")
    ax.set_ylabel("mean target score × 100 (bars: SD over seeds)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
