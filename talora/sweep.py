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
import time
from dataclasses import dataclass, field
from pathlib import Path

from . import tasks as T
from .atomic import atomic_write
from .backbone import Backbone, BackboneLoader
from .config import RunConfig, from_dict, read_yaml
from .distributed import local_device, world
from .errors import ConfigError
from .methods import method_class
from .methods.base import NoPrompt
from .overrides import merge
from .pipeline import (
    encode_split,
    lower_caches,
    protocol_splits,
    run_train,
    run_transfer,
    source_examples,
    source_task_names,
    verbalizers_for,
)
from .predict import evaluate
from .progress import progress
from .runs import RunManifest
from .suites import load_suite


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
    results["splits"] = {
        "source": {t: dict(zip(("selection", "report"), protocol_splits(loaded[t], first.select_on))) for t in sources},
        "target": {t: T.evaluation_split(loaded[t]) for t in sweep.targets},
        "shots": first.shots,
    }
    if sweep.zero_shot:
        # One unit per task (keyed by what decides its score): a resumed sweep, or another sweep over
        # some of the same tasks in the same folder, does not redo it.
        what = {k: getattr(first, k) for k in ZERO_SHOT_KEYS}
        tag = hashlib.sha256(json.dumps(what, sort_keys=True).encode()).hexdigest()[:8]
        scores: dict[str, dict[str, float]] = {"source": {}, "target": {}}
        for role, names in (("source", sources), ("target", sweep.targets)):
            for task in names:

                def frozen_model(task=task, role=role) -> dict:
                    backbone = _backbone(loader, first)
                    return {"score": zero_shot(first, [task], backbone, sources=role == "source")[task]}

                unit = f"{tag} zero-shot {role} {task}"
                scores[role][task] = manifest.run(unit, output / "zero_shot" / f"{role}-{task}", frozen_model)["score"]
        if sources:
            results["source"]["zero_shot"] = scores["source"]
        results["target"]["zero_shot"] = {f"{t} (k={k})": [s] for t, s in scores["target"].items() for k in sweep.ks}
        results["parameters"]["zero_shot"] = {"shared": 0, "per_task": 0}
    units = len(runs) * (1 + len(sweep.targets) * len(sweep.ks) * len(sweep.seeds))
    with progress(total=units, desc="sweep", leave=True) as bar:
        for label, (cfg, scratch) in runs.items():
            # Units are named with the method's config digest: an edited config never reuses stale results.
            tag = config_digest(cfg, f"scratch={scratch}")
            # Source training does not read the transfer settings: sweeps that differ only there share it.
            train_tag = config_digest(cfg, ignore=("transfer",))
            folder = output / label
            if scratch:
                summary = {"trainable_parameters": {"shared": 0, "per_task": 0}}
            else:
                summary = manifest.run(f"{train_tag} train {label}", folder, _unit(loader, cfg, run_train, cfg, folder))
                results["source"][label] = {t: m[summary["headline"][t]] for t, m in summary["metrics"].items()}
            results["parameters"][label] = dict(summary["trainable_parameters"])
            bar.update()
            write_results(results, output, config, t0)
            for task in sweep.targets:
                for k in sweep.ks:
                    for seed in sweep.seeds:
                        out = output / f"{label}-{task}-k{k}-s{seed}"
                        source = None if scratch else folder
                        # This sweep's transfer settings, not those saved with a source run another sweep trained.
                        unit = _unit(
                            loader,
                            cfg,
                            run_transfer,
                            source,
                            task,
                            k,
                            seed,
                            out,
                            config=cfg,
                            train_cfg=cfg.transfer,
                            shots=cfg.shots,
                        )
                        res = manifest.run(f"{tag} transfer {label} {task} k={k} seed={seed}", out, unit)
                        results["target"].setdefault(label, {}).setdefault(f"{task} (k={k})", []).append(res["score"])
                        results["parameters"][label]["target"] = res["trainable_parameters"]["per_task"]
                        bar.update()
                        write_results(results, output, config, t0)
    write_results(results, output, config, t0)
    return results


def _flat(value, prefix: str = "") -> dict:
    if not isinstance(value, dict):
        return {prefix: value}
    return {k: v for key, item in value.items() for k, v in _flat(item, f"{prefix}{key}.").items()}


def config_digest(cfg: RunConfig, extra: str = "", ignore: tuple[str, ...] = ()) -> str:
    """A short digest of what ``cfg`` sets apart from the defaults (the top-level fields in ``ignore``
    left out): a new release that adds a field (with a default that keeps the old behaviour) leaves
    every finished unit's name as it was."""
    # method_args as the whole method config: {length: 20} and {} name the same default prompt.
    given = _flat({**dataclasses.asdict(cfg), "method_args": dataclasses.asdict(cfg.method_config())})
    default_args = dataclasses.asdict(method_class(cfg.method).config_cls())
    defaults = _flat({**dataclasses.asdict(RunConfig()), "method_args": default_args})
    changed = {
        k: v for k, v in given.items() if (k not in defaults or defaults[k] != v) and k.split(".", 1)[0] not in ignore
    }
    return hashlib.sha256((json.dumps(changed, sort_keys=True) + extra).encode()).hexdigest()[:8]


def _backbone(loader: BackboneLoader, cfg: RunConfig) -> Backbone:
    return loader.get(cfg.model, cfg.dtype, local_device(cfg.device, world()))


def _unit(loader: BackboneLoader, cfg: RunConfig, recipe, *args, **kwargs):
    """A recipe call for the manifest to run, or to skip when its unit is finished: the model is
    loaded only when a unit actually runs."""
    return lambda: recipe(*args, **kwargs, backbone=_backbone(loader, cfg))


def write_results(results: dict, output: Path, config: str | Path, t0: float) -> None:
    """The table so far; written after every unit, so an interrupted sweep still shows what finished.
    Named after the config, so sweeps sharing an output folder (and its finished units) keep their tables."""
    results["seconds"] = round(time.perf_counter() - t0, 1)
    stem = Path(config).stem
    atomic_write(output / f"results-{stem}.json", json.dumps(results, indent=1).encode())
    atomic_write(output / f"results-{stem}.md", format_table(results).encode())


def zero_shot(cfg: RunConfig, names: list[str], backbone: Backbone, sources: bool = False) -> dict[str, float]:
    """Headline score of the frozen model with each task's template and no prompt, on the examples
    the trained methods are scored on: a source's report split (``source_examples``, capped at
    ``validation_examples``) or a target's evaluation split (capped at ``test_examples``)."""
    tasks = T.load_tasks(cfg.data_dir, names)
    lower = lower_caches(cfg, backbone)
    scores = {}
    for name in progress(names, desc="zero-shot"):
        if sources:
            examples, cap = source_examples(tasks[name], cfg)["report"], cfg.validation_examples
        else:
            examples, cap = tasks[name].splits[T.evaluation_split(tasks[name])], cfg.test_examples
        items = encode_split(backbone, tasks, [name], "test", cfg.max_length, cap, {name: examples})
        result = evaluate(
            backbone, NoPrompt(backbone, [name]), items, verbalizers_for(backbone, [tasks[name].spec]), lower=lower
        )
        scores[name] = result[name][tasks[name].spec.metric]
    return scores


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


def format_table(results: dict) -> str:
    methods = list(dict.fromkeys([*results["source"], *results["target"]]))
    lines = ["| setting | task | " + " | ".join(methods) + " |", "|" + "---|" * (len(methods) + 2)]
    for setting, block in (("unseen data", results["source"]), ("unseen task", results["target"])):
        if not block:
            continue
        rows = list(dict.fromkeys(row for scores in block.values() for row in scores))
        for row in rows:
            lines.append(
                f"| {setting} | {row} | "
                + " | ".join(_cell(block[m][row]) if row in block.get(m, {}) else "-" for m in methods)
                + " |"
            )
        # An average only over complete rows: an interrupted sweep shows "-" rather than a biased mean.
        averages = [
            f"**{100 * statistics.mean(_mean(block[m][r]) for r in rows):.1f}**"
            if all(r in block.get(m, {}) for r in rows)
            else "-"
            for m in methods
        ]
        lines.append(f"| {setting} | **average** | " + " | ".join(averages) + " |")
    params = results.get("parameters", {})
    if params:
        cells = []
        for m in methods:
            p = params.get(m, {})
            cells.append(
                f"{_count(p.get('shared', 0))} / {_count(p.get('per_task', 0))}"
                + (f" / {_count(p['target'])}" if "target" in p else "")
            )
        lines.append("| parameters | shared / per source task / per target | " + " | ".join(cells) + " |")
    lines.append(f"\nscores × 100; ± is the standard deviation over seeds; wall time {results['seconds']:.0f} s")
    lines += [f"- {note}" for note in _split_notes(results.get("splits", {}))]
    return "\n".join(lines)
