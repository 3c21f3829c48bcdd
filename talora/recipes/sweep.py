"""``talora sweep``: several methods on one harness, one table.

A sweep config names a base run (model, data, lengths, step budgets), the methods to
compare (each may override its method arguments and budgets), the target tasks, the
k values and the seeds. Every method is trained once on the sources, then transferred
to every (target, k, seed); the table gives source scores on each task's report split
("unseen data": test, or validation when a task has no test; see pipeline.protocol_splits),
target test scores as mean ± std over seeds ("unseen task"), and each method's
trainable parameters (shared / per task). Units are recorded in a run manifest, so an
interrupted sweep re-runs only what is missing or damaged. The demo is a sweep.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from .. import tasks as T
from ..adapters.files import TENSORS
from ..atomic import atomic_write
from ..config import RunConfig, from_dict, read_yaml
from ..core.backbone import Backbone, BackboneLoader
from ..data_paths import shared_data_dir
from ..distributed import local_device, world
from ..errors import ConfigError
from ..methods import method_class
from ..methods.base import NoPrompt
from ..overrides import merge
from ..progress import progress
from .pipeline import (
    lower_caches,
    protocol_splits,
    run_train,
    run_transfer,
    score_examples,
    source_examples,
    source_task_names,
    verbalizers_for,
)
from .runs import RunManifest
from .scorecard import CONSTANT_SHARE, scored_examples
from .suites import SHARED, load_suite


@dataclass
class SweepConfig:
    run: dict = field(default_factory=dict)  # the base RunConfig (see configs/talora.yaml)
    methods: dict = field(default_factory=dict)  # label -> {method, method_args, stage1, train, transfer}
    suite: str | None = None  # a suite name or file (talora/configs/suites): its data_dir, sources (run.tasks),
    #                           targets, ks and seeds, each unless set here
    targets: list[str] | None = None  # few-shot target tasks
    ks: list[int | str] | None = None  # shots, counted as run.shots says, or `all` (whole train split); [16, 32]
    seeds: list[int] | None = None  # transfer seeds (k-shot sample + order); [0]
    zero_shot: bool = True  # a column for the frozen model with the same templates
    # false: a target unit keeps its predictions and metrics but not its adapter (the tables need
    # no more; 108 units of prompts are tens of MB). Source adapters, which targets start from, stay.
    target_adapters: bool = True


# The run fields a frozen model's zero-shot scores depend on.
ZERO_SHOT_KEYS = (
    "model",
    "dtype",
    "data_dir",
    "max_length",
    "select_on",
    "heldout_examples",
    "validation_examples",
    "test_examples",
    "sample_seed",
    "label_scoring",
)
OVERRIDABLE = ("method", "method_args", "stage1", "train", "transfer")
FLAGS = ("from_scratch",)  # true: no source training, the method starts fresh on each target's shots


def load_sweep(
    path: str | Path, data_dir: str | None = None, overrides: dict | None = None
) -> tuple[SweepConfig, dict[str, tuple[RunConfig, bool]]]:
    """The sweep and, per method label, its full RunConfig (the base run with the method's overrides)
    and whether it trains from scratch on the targets."""
    path = Path(path)
    sweep = from_dict(SweepConfig, merge(read_yaml(path, "sweep config"), overrides or {}), str(path))
    if not sweep.methods:
        raise ConfigError(f"{path}: `methods` is empty")
    base = dict(sweep.run)
    if sweep.suite is not None:
        suite = load_suite(sweep.suite, data_dir if data_dir is not None else base.get("data_dir"))
        base.setdefault("data_dir", suite.data_dir)
        base.setdefault("tasks", list(suite.sources))
        base.setdefault("shots", suite.shots)
        sweep.targets = sweep.targets if sweep.targets is not None else list(suite.targets)
        sweep.ks = sweep.ks or list(suite.ks)
        sweep.seeds = sweep.seeds or list(suite.seeds)
    sweep.targets, sweep.ks, sweep.seeds = sweep.targets or [], sweep.ks or [16, 32], sweep.seeds or [0]
    for k in sweep.ks:
        if not T.is_k(k):
            raise ConfigError(f"{path}: ks: {k!r} is neither a positive number of shots nor {T.K_ALL!r}")
    if data_dir is not None:
        base["data_dir"] = data_dir
    elif base.get("data_dir") == SHARED:  # as in suites: the shared data folder wherever it is found
        try:
            base["data_dir"] = str(shared_data_dir())
        except ConfigError as err:
            raise ConfigError(f"{path}: run.data_dir {SHARED}: {err}") from None
    runs = {}
    for label, spec in sweep.methods.items():
        spec = spec or {}
        where = f"{path}: methods.{label}"
        if not isinstance(spec, dict):
            raise ConfigError(f"{where}: expected a mapping")
        unknown = sorted(set(spec) - set(OVERRIDABLE) - set(FLAGS))
        if unknown:
            raise ConfigError(f"{where}: unknown key(s) {', '.join(unknown)}; known: {', '.join(OVERRIDABLE + FLAGS)}")
        if not isinstance(spec.get("from_scratch", False), bool):
            raise ConfigError(f"{where}.from_scratch: expected true or false")
        merged = copy.deepcopy(base)
        merged["method"] = spec.get("method", label)
        for key in OVERRIDABLE[1:]:
            if key in spec:
                merged[key] = {**merged.get(key, {}), **spec[key]}
        cfg = from_dict(RunConfig, merged, where)
        cfg.method_config()
        runs[label] = (cfg, spec.get("from_scratch", False))
    return sweep, runs


def run_sweep(
    config: str | Path,
    output: Path,
    data_dir: str | None = None,
    overrides: dict | None = None,
    loader: BackboneLoader | None = None,
) -> dict:
    """Run (or finish) the sweep into ``output``; models come from ``loader`` (default: a new one,
    so each model is loaded once for this sweep)."""
    output = Path(output)
    loader = loader or BackboneLoader()
    sweep, runs = load_sweep(config, data_dir, overrides)
    first = next(iter(runs.values()))[0]
    trains_on_sources = not all(scratch for _, scratch in runs.values())
    sources = (first.tasks or source_task_names(first.data_dir)) if trains_on_sources else []
    loaded = T.load_tasks(first.data_dir, sources + sweep.targets)  # bad task names fail before any work
    manifest = RunManifest(output)
    t0 = time.perf_counter()
    results: dict = {"source": {}, "target": {}, "parameters": {}, "config": str(config)}
    # Which split each number comes from (and, for sources, which one chose the best state), for the table.
    results["metrics"] = {t: loaded[t].spec.metric for t in sources + sweep.targets}
    results["languages"] = {t: loaded[t].spec.language for t in sources + sweep.targets}
    results["splits"] = {
        "source": {t: dict(zip(("selection", "report"), protocol_splits(loaded[t], first.select_on))) for t in sources},
        "target": {t: T.evaluation_split(loaded[t]) for t in sweep.targets},
        "shots": first.shots,
    }
    warned: set[str] = set()
    cells: dict[tuple, tuple[Path, dict]] = {}  # (label, task, k, seed) -> a finished transfer unit

    def frozen(role: str, task: str, wait: bool) -> bool:
        # One unit per task (keyed by what decides its score): a resumed sweep, or another sweep over
        # some of the same tasks in the same folder, does not redo it.
        unit, folder = zero_shot_unit(first, role, task, output)

        def frozen_model() -> dict:
            return zero_shot(first, task, _backbone(loader, first), folder, sources=role == "source")

        record = manifest.run(unit, folder, frozen_model, wait)
        if record is None:
            return False
        _add_time(results, record)
        # One score per task, never one per k and seed: a deterministic row is not replicated.
        results[role].setdefault("zero_shot", {})[task] = record["score"]
        results.setdefault("scored", {}).setdefault("zero_shot", {})[f"{role} {task}"] = _brief(record)
        results["parameters"]["zero_shot"] = {"shared": 0, "per_task": 0}
        _warn(results, warned)  # the zero-shot units score every task's lines: cut prompts show early
        return True

    def source(label: str, wait: bool) -> bool:
        cfg, scratch = runs[label]
        name, folder = source_unit(cfg, label, output)
        if scratch:
            summary = {"trainable_parameters": {"shared": 0, "per_task": 0}}
        else:
            summary = manifest.run(name, folder, train_unit(loader, cfg, folder), wait)
            if summary is None:
                return False
            _add_time(results, summary)
            results["source"][label] = {t: m[summary["headline"][t]] for t, m in summary["metrics"].items()}
            results.setdefault("scored", {})[label] = {
                f"source {t}": _brief({"scored": c, "metric": summary["headline"][t]})
                for t, c in summary.get("scored", {}).items()
            }
            results.setdefault("units", {}).setdefault(label, {})["source"] = str(folder.relative_to(output))
        results["parameters"][label] = dict(summary["trainable_parameters"])
        return True

    def transfer(label: str, task: str, k, seed: int, wait: bool) -> bool:
        cfg, scratch = runs[label]
        name, out = transfer_unit(cfg, scratch, label, task, k, seed, output)
        source = None if scratch else source_unit(cfg, label, output)[1]
        # This sweep's transfer settings, not those saved with a source run another sweep trained.
        unit = _unit(
            loader, cfg, run_transfer, source, task, k, seed, out, config=cfg, train_cfg=cfg.transfer, shots=cfg.shots
        )
        res = manifest.run(name, out, unit, wait)
        if res is None:
            return False
        _add_time(results, res)
        if not sweep.target_adapters and (out / TENSORS).is_file():
            (out / TENSORS).unlink()
            manifest.record(name, out, res)
        cells[label, task, k, seed] = (out, res)
        results["parameters"][label]["target"] = res["trainable_parameters"]["per_task"]
        _tabulate(results, cells, runs, sweep, output)
        return True

    # Units run in the config's order, but one that another process is running (it holds the unit's
    # folder) goes to the back of the queue; when every unit left is held elsewhere, this process waits
    # for the first of them. So several processes started on one sweep share its units, and each ends
    # with the whole table. A method's transfers join the queue once its source training is done.
    run_job = {"zero_shot": frozen, "source": source, "transfer": transfer}
    queue: list[tuple] = []
    if sweep.zero_shot:
        queue += [
            ("zero_shot", role, t) for role, names in (("source", sources), ("target", sweep.targets)) for t in names
        ]
    queue += [("source", label) for label in runs]
    held = 0  # jobs in a row found held by another process
    total = len(runs) * (1 + len(sweep.targets) * len(sweep.ks) * len(sweep.seeds))
    with progress(total=total, desc="sweep", leave=True) as bar:
        while queue:
            kind, *args = job = queue.pop(0)
            if not run_job[kind](*args, wait=held > len(queue)):
                queue.append(job)
                held += 1
                continue
            held = 0
            if kind == "zero_shot":
                continue
            bar.update()
            write_results(results, output, config, t0)
            if kind == "source":
                label = args[0]
                queue[:0] = [
                    ("transfer", label, t, k, seed) for t in sweep.targets for k in sweep.ks for seed in sweep.seeds
                ]
    results["comparisons"] = comparisons(results, output)
    write_results(results, output, config, t0)
    _warn(results, warned)
    return results


def _tabulate(results: dict, cells: dict, runs: dict, sweep: SweepConfig, output: Path) -> None:
    """The target rows from the finished transfer units, in the config's order of tasks, k and seeds
    (units may finish in any order when processes share a sweep)."""
    for label in runs:
        for task in sweep.targets:
            for k in sweep.ks:
                done = [cells[label, task, k, seed] for seed in sweep.seeds if (label, task, k, seed) in cells]
                if not done:
                    continue
                row = f"{task} (k={k})"
                results["target"].setdefault(label, {})[row] = [res["score"] for _, res in done]
                results.setdefault("units", {}).setdefault(label, {})[row] = [
                    str(o.relative_to(output)) for o, _ in done
                ]
                results.setdefault("scored", {}).setdefault(label, {})[row] = [_brief(res) for _, res in done]


# Unit names and folders. A name hashes what decides the unit's result (an edited config never
# reuses stale results); the folder is where its files go.
def zero_shot_unit(cfg: RunConfig, role: str, task: str, output: Path) -> tuple[str, Path]:
    """The frozen model on one task, keyed by what decides its score only: a resumed sweep, or another
    sweep over some of the same tasks in the same folder, does not redo it."""
    what = _portable({k: getattr(cfg, k) for k in ZERO_SHOT_KEYS})
    tag = hashlib.sha256(json.dumps(what, sort_keys=True).encode()).hexdigest()[:8]
    return f"{tag} zero-shot {role} {task}", output / "zero_shot" / f"{role}-{task}"


def source_unit(cfg: RunConfig, label: str, output: Path) -> tuple[str, Path]:
    """A method's source training. It does not read the transfer settings: sweeps that differ only
    there share it."""
    return f"{config_digest(cfg, ignore=('transfer',))} train {label}", output / label


def transfer_unit(cfg: RunConfig, scratch: bool, label: str, task: str, k, seed: int, output: Path) -> tuple[str, Path]:
    tag = config_digest(cfg, f"scratch={scratch}")
    return f"{tag} transfer {label} {task} k={k} seed={seed}", output / f"{label}-{task}-k{k}-s{seed}"


def sweep_status(
    config: str | Path, output: Path, data_dir: str | None = None, overrides: dict | None = None
) -> list[dict]:
    """Every unit the sweep has, in the order it runs them, and whether ``output`` holds it finished
    and intact (what a re-run would skip); runs nothing."""
    output = Path(output)
    sweep, runs = load_sweep(config, data_dir, overrides)
    first = next(iter(runs.values()))[0]
    trains_on_sources = not all(scratch for _, scratch in runs.values())
    sources = (first.tasks or source_task_names(first.data_dir)) if trains_on_sources else []
    units = []
    if sweep.zero_shot:
        units += [
            zero_shot_unit(first, role, t, output)
            for role, ts in (("source", sources), ("target", sweep.targets))
            for t in ts
        ]
    for label, (cfg, scratch) in runs.items():
        if not scratch:
            units.append(source_unit(cfg, label, output))
        units += [
            transfer_unit(cfg, scratch, label, task, k, seed, output)
            for task in sweep.targets
            for k in sweep.ks
            for seed in sweep.seeds
        ]
    manifest = RunManifest(output)
    return [
        {"unit": name, "folder": str(folder), "finished": manifest.finished(name, folder) is not None}
        for name, folder in units
    ]


def _flat(value, prefix: str = "") -> dict:
    if not isinstance(value, dict):
        return {prefix: value}
    return {k: v for key, item in value.items() for k, v in _flat(item, f"{prefix}{key}.").items()}


def _portable(fields: dict) -> dict:
    """``fields`` with a data_dir that is the shared data folder named as such, not by its path: unit
    names hash what decides a unit's result, and a committed sweep folder must resume on a machine
    where the shared data sits elsewhere."""
    data_dir = fields.get("data_dir")
    if data_dir is None:
        return fields
    try:
        shared = shared_data_dir(required=False)
    except ConfigError:  # a wrong $TALORA_DATA is reported where data is read, not here
        shared = None
    if shared is not None and Path(data_dir).resolve() == shared:
        return {**fields, "data_dir": SHARED}
    return fields


def config_digest(cfg: RunConfig, extra: str = "", ignore: tuple[str, ...] = ()) -> str:
    """A short digest of what ``cfg`` sets apart from the defaults (the top-level fields in ``ignore``
    left out): a new release that adds a field (with a default that keeps the old behaviour) leaves
    every finished unit's name as it was."""
    # method_args as the whole method config: {length: 20} and {} name the same default prompt.
    given = _flat({**_portable(dataclasses.asdict(cfg)), "method_args": dataclasses.asdict(cfg.method_config())})
    default_args = dataclasses.asdict(method_class(cfg.method).config_cls())
    defaults = _flat({**dataclasses.asdict(RunConfig()), "method_args": default_args})
    changed = {
        k: v for k, v in given.items() if (k not in defaults or defaults[k] != v) and k.split(".", 1)[0] not in ignore
    }
    return hashlib.sha256((json.dumps(changed, sort_keys=True) + extra).encode()).hexdigest()[:8]


def _backbone(loader: BackboneLoader, cfg: RunConfig) -> Backbone:
    return loader.get(cfg.model, cfg.dtype, local_device(cfg.device, world()))


def train_unit(loader: BackboneLoader, cfg: RunConfig, folder: Path):
    """A method's source training as a unit. When an interrupted run of the same training left its
    folder (same config but the transfer block), it resumes from that run's finished stage 1 and last
    checkpoint instead of starting over: a source training longer than a session still finishes.
    Whether to resume is read when the unit starts: a process sharing the sweep may have begun it
    and stopped meanwhile."""

    def run() -> dict:
        return _unit(loader, cfg, run_train, cfg, folder, resume=_same_training(Path(folder), cfg))()

    return run


def _same_training(folder: Path, cfg: RunConfig) -> bool:
    path = folder / "config.yaml"
    if not path.is_file():
        return False
    try:
        old = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError):
        return False
    if not isinstance(old, dict):
        return False
    old, new = _portable(old), _portable(dataclasses.asdict(cfg))
    return {k: v for k, v in old.items() if k != "transfer"} == {k: v for k, v in new.items() if k != "transfer"}


def _unit(loader: BackboneLoader, cfg: RunConfig, recipe, *args, **kwargs):
    """A recipe call for the manifest to run, or to skip when its unit is finished: the model is
    loaded only when a unit actually runs. Its summary gains the unit's wall time, beside the
    compute (training steps + scoring) the recipe reports, so the overhead between them shows."""

    def run() -> dict:
        backbone = _backbone(loader, cfg)  # loading, once per sweep, is not the unit's time
        t0 = time.perf_counter()
        summary = recipe(*args, **kwargs, backbone=backbone)
        summary["wall_seconds"] = round(time.perf_counter() - t0, 1)
        return summary

    return run


def _add_time(results: dict, summary: dict) -> None:
    """Sum the wall time of every unit in the table, run now or read back: a resumed sweep's own
    wall time says little about what the table cost."""
    seconds = summary.get("wall_seconds", summary.get("scoring_seconds", 0.0))
    results["unit_seconds"] = round(results.get("unit_seconds", 0.0) + (seconds or 0.0), 1)


def _brief(summary: dict) -> dict | None:
    """What a table needs of a unit's scorecard (the full one is in its metrics.json)."""
    card = summary.get("scored")
    if not card:
        return None
    brief = {k: card[k] for k in ("lines", "sample", "truncated", "top_share") if k in card}
    if "majority" in card:
        brief["majority"] = card["majority"]["metrics"].get(summary["metric"])
    compute = summary.get("seconds", 0) + summary.get("scoring_seconds", 0)
    brief["seconds"] = {"wall": summary.get("wall_seconds"), "compute": round(compute, 1)}
    return brief


def comparisons(results: dict, output: Path) -> list[dict]:
    """The first method against every other row of the table (zero-shot included), at the task level
    (analysis.sweep_results.compare): what the finished table states under it. With several k, over
    every k and then at each k alone."""
    from ..analysis.sweep_results import at_k, compare, target_ks

    methods = [m for m in results["target"] if m != "zero_shot"]
    if not methods:
        return []
    first, others = methods[0], [m for m in results["target"] if m != methods[0]]
    ks = target_ks(results)
    views = [(None, results)] + ([(k, at_k(results, k)) for k in ks] if len(ks) > 1 else [])
    out = []
    for k, view in views:
        for other in others:
            try:
                c = compare({**view, "_folder": str(output)}, first, other)
            except ConfigError as err:  # no shared task (a partial table): say so rather than stop
                c = {"a": first, "b": other, "error": str(err)}
            out.append(c if k is None else {**c, "k": k})
    return out


def write_results(results: dict, output: Path, config: str | Path, t0: float) -> None:
    """The table so far; written after every unit, so an interrupted sweep still shows what finished.
    Named after the config, so sweeps sharing an output folder (and its finished units) keep their tables."""
    results["seconds"] = round(time.perf_counter() - t0, 1)
    stem = Path(config).stem
    atomic_write(output / f"results-{stem}.json", json.dumps(results, indent=1).encode())
    atomic_write(output / f"results-{stem}.md", format_table(results).encode())


def _warn(results: dict, warned: set[str]) -> None:
    for note in truncation_notes(results):
        if note not in warned:
            warned.add(note)
            print(f"talora: {note}", file=sys.stderr)


def zero_shot(cfg: RunConfig, name: str, backbone: Backbone, output: Path, sources: bool = False) -> dict:
    """The frozen model with the task's template and no prompt, scored on the lines the trained methods
    are scored on: a source's report split (``source_examples``, sampled to ``validation_examples``)
    or a target's evaluation split (sampled to ``test_examples``). Its summary: headline score and
    scorecard; every line's prediction goes to ``output``."""
    tasks = T.load_tasks(cfg.data_dir, [name])
    spec = tasks[name].spec
    lower = lower_caches(cfg, backbone)
    if sources:
        split = protocol_splits(tasks[name], cfg.select_on)[1]
        index, examples = scored_examples(
            spec, source_examples(tasks[name], cfg)["report"], cfg.validation_examples, cfg.sample_seed
        )
    else:
        split = T.evaluation_split(tasks[name])
        index, examples = scored_examples(spec, tasks[name].splits[split], cfg.test_examples, cfg.sample_seed)
    t0 = time.perf_counter()
    metrics, cards = score_examples(
        backbone,
        NoPrompt(backbone, [name]),
        tasks,
        [name],
        {name: (split, index, examples)},
        verbalizers_for(backbone, [spec], cfg),
        cfg,
        cfg.transfer.eval_batch_size,
        lower,
        output,
    )
    seconds = round(time.perf_counter() - t0, 1)
    return {
        "score": metrics[name][spec.metric],
        "metric": spec.metric,
        "scored": cards[name],
        "scoring_seconds": seconds,
    }


def _cell(values, scale: float = 100.0) -> str:
    if isinstance(values, (int, float)):
        return f"{scale * values:.1f}"
    if len(values) == 1:
        return f"{scale * values[0]:.1f}"
    return f"{scale * statistics.mean(values):.1f} ± {scale * statistics.stdev(values):.1f}"


def _mean(values) -> float:
    return float(values) if isinstance(values, (int, float)) else statistics.mean(values)


def _count(n: int) -> str:
    return f"{n / 1e6:.2f}M" if n >= 1e6 else f"{n / 1e3:.1f}k" if n >= 1e3 else str(n)


def _split_notes(splits: dict) -> list[str]:
    """One line per protocol choice: where source scores come from and what picked their best state."""
    notes = []
    by_protocol: dict[tuple[str, str], list[str]] = {}
    for task, s in splits.get("source", {}).items():
        by_protocol.setdefault((s["selection"], s["report"]), []).append(task)
    for (selection, report), tasks in by_protocol.items():
        caveat = " (the same examples: an optimistic score)" if selection == report else ""
        notes.append(f"unseen data, {', '.join(tasks)}: best state selected on {selection}, scored on {report}{caveat}")
    by_split: dict[str, list[str]] = {}
    for task, split in splits.get("target", {}).items():
        by_split.setdefault(split, []).append(task)
    for split, tasks in by_split.items():
        notes.append(f"unseen task, {', '.join(tasks)}: last training step, scored on {split}")
    if "shots" in splits:
        notes.append(
            "k counts shots per class of a classification task (in all for other kinds)"
            if splits["shots"] == "per_class"
            else "k counts shots in all"
        )
    return notes


# A sweep warns when more than this share of a task's scored prompts are cut.
TRUNCATION_WARNING = 0.1


def _task_of(row: str) -> str:
    return row.rsplit(" (k=", 1)[0]


def _lookup(block: dict, method: str, row: str):
    """A method's cell of a row; a deterministic row (one score per task, e.g. zero-shot) serves every k."""
    cells = block.get(method, {})
    return cells.get(row, cells.get(_task_of(row)))


def _flagged(results: dict, method: str, setting: str, row: str) -> bool:
    """Whether any unit of the cell gave one answer to >= CONSTANT_SHARE of its lines."""
    scored = results.get("scored", {}).get(method, {})
    cards = scored.get(row) if setting == "unseen task" else scored.get(f"source {row}")
    if method == "zero_shot":
        cards = scored.get(f"{'target' if setting == 'unseen task' else 'source'} {_task_of(row)}")
    cards = cards if isinstance(cards, list) else [cards]
    return any(c and c.get("top_share", 0) >= CONSTANT_SHARE for c in cards)


def _majority(results: dict, setting: str, row: str) -> float | None:
    """The best constant answer's score on the row's lines (the same lines for every method)."""
    for method, scored in results.get("scored", {}).items():
        key = row if setting == "unseen task" else f"source {row}"
        if method == "zero_shot":
            key = f"{'target' if setting == 'unseen task' else 'source'} {_task_of(row)}"
        cards = scored.get(key)
        for card in cards if isinstance(cards, list) else [cards]:
            if card and card.get("majority") is not None:
                value = card["majority"]
                return value if isinstance(value, (int, float)) else None
    return None


def format_table(results: dict) -> str:
    methods = list(dict.fromkeys([*results["source"], *results["target"]]))
    lines = ["| setting | task | majority | " + " | ".join(methods) + " |", "|" + "---|" * (len(methods) + 3)]
    flagged = False
    for setting, block in (("unseen data", results["source"]), ("unseen task", results["target"])):
        if not block:
            continue
        rows = list(dict.fromkeys(row for m, scores in block.items() if m != "zero_shot" for row in scores))
        rows = rows or list(dict.fromkeys(row for scores in block.values() for row in scores))
        for row in rows:
            cells = []
            for m in methods:
                cell = _lookup(block, m, row)
                mark = "†" if cell is not None and _flagged(results, m, setting, row) else ""
                flagged |= bool(mark)
                cells.append("-" if cell is None else _cell(cell) + mark)
            base = _majority(results, setting, row)
            lines.append(f"| {setting} | {row} | {'-' if base is None else _cell(base)} | " + " | ".join(cells) + " |")
        # An average only over complete rows: an interrupted sweep shows "-" rather than a biased mean.
        averages = [
            f"**{100 * statistics.mean(_mean(_lookup(block, m, r)) for r in rows):.1f}**"
            if all(_lookup(block, m, r) is not None for r in rows)
            else "-"
            for m in methods
        ]
        bases = [_majority(results, setting, r) for r in rows]
        base_avg = f"{100 * statistics.mean(bases):.1f}" if bases and None not in bases else "-"
        lines.append(f"| {setting} | **average** | {base_avg} | " + " | ".join(averages) + " |")
    params = results.get("parameters", {})
    if params:
        cells = []
        for m in methods:
            p = params.get(m, {})
            cells.append(
                f"{_count(p.get('shared', 0))} / {_count(p.get('per_task', 0))}"
                + (f" / {_count(p['target'])}" if "target" in p else "")
            )
        lines.append("| parameters | shared / per source task / per target | - | " + " | ".join(cells) + " |")
    lines.append(
        f"\nscores × 100; ± is the standard deviation over seeds; wall time {results['seconds']:.0f} s "
        f"(this invocation), {results.get('unit_seconds', 0):.0f} s the table's units took when they ran"
    )
    lines.append(
        "- majority: the best constant answer on the same scored lines; zero_shot: the frozen model, "
        "one deterministic score per task (never repeated per seed)"
    )
    if flagged:
        lines.append(
            f"- †: {CONSTANT_SHARE:.0%} or more of a unit's predictions are one answer (a near-constant output)"
        )
    lines += [f"- {note}" for note in _split_notes(results.get("splits", {}))]
    lines += [f"- {note}" for note in truncation_notes(results)]
    if results.get("comparisons"):
        from ..analysis.sweep_results import comparison_table

        lines += [
            "",
            "Task-level comparisons (talora analyze compare): one difference per target (each method's mean "
            "over seeds, and over k where k is all), an exact sign-flip test over them, a 95 % interval from "
            "a bootstrap over targets, seeds and scored lines, and the smallest difference the design detects "
            "(80 % power, 5 %):",
            "",
            comparison_table(results["comparisons"]),
        ]
    return "\n".join(lines)


def truncation_notes(results: dict) -> list[str]:
    """A warning per task where more than TRUNCATION_WARNING of the scored prompts lost text."""
    worst: dict[str, float] = {}
    for scored in results.get("scored", {}).values():
        for key, cards in scored.items():
            for card in cards if isinstance(cards, list) else [cards]:
                if card and card.get("truncated", 0) > TRUNCATION_WARNING:
                    task = _task_of(key.removeprefix("source ").removeprefix("target "))
                    worst[task] = max(worst.get(task, 0.0), card["truncated"])
    return [
        f"warning: {share:.0%} of {task}'s scored prompts were cut to max_length (talora tasks --model shows lengths)"
        for task, share in sorted(worst.items())
    ]
