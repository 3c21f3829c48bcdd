"""Recipes behind the CLI: train (TA-LoRA's two stages, or any single-stage method), transfer, eval.

Each recipe is a plain function of its arguments and writes a self-describing
output folder: adapter files, ``metrics.json``, ``config.yaml`` and ``log.jsonl``.
A recipe takes the backbone it runs on (or loads the config's model itself), and
creates the lower-layer caches its run asks for: nothing is kept between calls.
"""

from __future__ import annotations

import dataclasses
import json
import tempfile
import time
from pathlib import Path

from .. import tasks as T
from ..adapters.files import load_adapter, read_sidecar, resolve_adapter, save_adapter
from ..atomic import atomic_write
from ..config import RunConfig, TrainConfig, dump_config, load_config
from ..core.backbone import Backbone, load_backbone
from ..core.batching import Encoded, encode
from ..core.lower_cache import LowerLayerCaches
from ..core.predict import Verbalizer, headline, predictions, task_metrics
from ..distributed import local_device, world
from ..errors import ConfigError, DataError
from ..methods import Method, method_class
from ..methods.base import TargetContext
from ..tasks.balance import balance, read_synonyms
from ..training.trainer import train
from .runs import RunManifest
from .scorecard import scorecard, scored_examples, write_lines


def _on_main(write, *args, **kwargs) -> None:
    """Under a data-parallel launch rank 0 alone writes a run's files (talora.distributed)."""
    if world().is_main:
        write(*args, **kwargs)


def lower_caches(cfg: RunConfig, backbone: Backbone) -> LowerLayerCaches | None:
    """The run's lower-layer caches when its config asks for them (``cache_lower_layers``)."""
    return LowerLayerCaches(backbone) if cfg.cache_lower_layers else None


def source_task_names(data_dir: str | None) -> list[str]:
    if data_dir is None:
        return list(T.SYNTHETIC_SOURCE_TASKS)
    return [
        d["name"]
        for d in T.describe_tasks(data_dir)
        if d.get("role", "").startswith("source") and d.get("supported", True)
    ]


def encode_split(
    backbone: Backbone,
    tasks: dict[str, T.Task],
    names: list[str],
    split: str,
    max_length: int,
    cap: int = 0,
    examples: dict[str, list[T.Example]] | None = None,
) -> list[Encoded]:
    """Encode ``split`` of each task (or the given examples); the task id is the position in ``names``.
    Examples of the train split are encoded for training (extraction keeps the answer in the window)."""
    items = []
    for task_id, name in enumerate(names):
        exs = examples[name] if examples is not None else tasks[name].splits.get(split, [])
        if not exs:
            raise DataError(f"task {name!r} has no examples in split {split!r}")
        exs = exs[:cap] if cap else exs
        items += [
            encode(tasks[name].spec, ex, backbone.tokenizer, max_length, task_id, training=split == "train")
            for ex in exs
        ]
    return items


def verbalizers_for(backbone: Backbone, specs: list[T.TaskSpec], cfg: RunConfig) -> dict[int, Verbalizer]:
    """Each task's verbalizer, comparing labels as the run's ``label_scoring`` says."""
    return {i: Verbalizer.of(s, backbone.tokenizer, cfg.label_scoring, cfg.max_length) for i, s in enumerate(specs)}


def score_examples(
    backbone: Backbone,
    method: Method,
    tasks: dict[str, T.Task],
    names: list[str],
    scored: dict[str, tuple[str, list[int], list[T.Example]]],
    verbs: dict[int, Verbalizer],
    cfg: RunConfig,
    batch_size: int,
    lower: LowerLayerCaches | None,
    output: Path | None,
) -> tuple[dict[str, dict[str, float]], dict[str, dict]]:
    """Score each task of ``names`` on its sampled lines (``scored``: task -> (split, positions, examples));
    the per-task metrics and scorecards, and every line's prediction in ``output``/predictions.json."""
    items = [
        encode(tasks[n].spec, ex, backbone.tokenizer, cfg.max_length, i)
        for i, n in enumerate(names)
        for ex in scored[n][2]
    ]
    preds = predictions(backbone, method, items, verbs, batch_size, lower)
    metrics = task_metrics(items, preds, verbs, names)
    cards = {}
    for i, n in enumerate(names):
        split, index, _ = scored[n]
        rows = [j for j, e in enumerate(items) if e.task_id == i]
        mine, mine_preds = [items[j] for j in rows], [preds[j] for j in rows]
        of = len(tasks[n].splits.get(split) or []) or len(index)
        cards[n] = scorecard(tasks[n].spec, split, index, of, mine, mine_preds, metrics[n])
        if output is not None:
            _on_main(write_lines, output, n, index, mine, mine_preds)
    return metrics, cards


def protocol_splits(task: T.Task, select_on: str) -> tuple[str, str]:
    """(where training selects its best state, where the final scores come from) for a source task.

    ``auto`` never reports on the examples it selected on: a task with a labelled test split
    selects on validation and reports on test; one without selects on ``HELDOUT`` (a slice of
    its train split that training never sees) and reports on validation. ``validation`` selects
    and reports on validation (the first round's protocol, flagged in every table)."""
    if select_on == "validation":
        return "validation", "validation"
    if task.splits.get("test"):
        return ("validation" if task.splits.get("validation") else HELDOUT), "test"
    return HELDOUT, "validation"


HELDOUT = "train-heldout"


def source_examples(task: T.Task, cfg: RunConfig) -> dict[str, list[T.Example]]:
    """The train, selection and report examples of a source task under ``cfg.select_on``; the
    held-out slice is the end of train (the files are shuffled), at most a fifth of it. The
    training examples are then balanced as ``cfg.balance`` says (talora.tasks.balance)."""
    selection, report = protocol_splits(task, cfg.select_on)
    train = task.splits.get("train", [])
    out = {"train": train}
    if HELDOUT in (selection, report):
        n = min(cfg.heldout_examples, len(train) // 5)
        if n < 1:
            raise DataError(
                f"task {task.spec.name!r} has {len(train)} training examples: too few to hold a selection slice "
                "out of (select_on: validation selects on its validation split instead)"
            )
        out["train"], out[HELDOUT] = train[:-n], train[-n:]
    b = cfg.balance
    if b.min_examples or b.max_examples:  # after the held-out slice is set aside: copies never reach it
        synonyms = read_synonyms(b.synonyms) if b.augment and b.synonyms else None
        out["train"] = balance(
            out["train"], task.spec, b.min_examples, b.max_examples, cfg.seed, b.augment, synonyms, b.edit_rate
        )
    for role, split in (("selects", selection), ("reports", report)):
        out.setdefault(split, task.splits.get(split, []))
        if not out[split]:
            raise DataError(
                f"task {task.spec.name!r} has no examples in split {split!r}, where training {role} "
                f"(select_on: {cfg.select_on})"
            )
    out["selection"], out["report"] = out[selection], out[report]
    return out


def _fit(
    backbone: Backbone,
    method: Method,
    tasks,
    names,
    cfg: RunConfig,
    train_cfg: TrainConfig,
    out: Path,
    resume: bool,
    desc: str,
    lower: LowerLayerCaches | None,
    report: bool = True,
) -> dict:
    """Train ``method`` and save it to ``out``; ``report``: also score the report split (a stage whose
    result only initialises the next one records its selection score instead)."""
    specs = [tasks[n].spec for n in names]
    parts = {n: source_examples(tasks[n], cfg) for n in names}

    def encoded(role: str, cap: int) -> list[Encoded]:
        examples = {n: parts[n][role] for n in names}
        return encode_split(backbone, tasks, names, "train" if role == "train" else role, cfg.max_length, cap, examples)

    train_items = encoded("train", cfg.train_examples)
    selection = {
        n: scored_examples(tasks[n].spec, parts[n]["selection"], train_cfg.eval_examples, cfg.sample_seed)[1]
        for n in names
    }
    select_items = encode_split(backbone, tasks, names, "selection", cfg.max_length, examples=selection)
    split_of = dict(zip(names, (protocol_splits(tasks[n], cfg.select_on)[1] for n in names), strict=True))
    reported_lines = {
        n: (split_of[n], *scored_examples(tasks[n].spec, parts[n]["report"], cfg.validation_examples, cfg.sample_seed))
        for n in names
    }
    verbs = verbalizers_for(backbone, specs, cfg)
    metrics = {s.name: s.metric for s in specs}
    result = train(
        backbone, method, train_items, select_items, verbs, metrics, train_cfg, out, cfg.seed, resume, desc, lower
    )
    _on_main(save_adapter, out, method, backbone, {s.name: s for s in specs})
    if not report:
        summary = {
            "method": method.name,
            "selection_average": result.best_score,
            "best_step": result.best_step,
            "steps": train_cfg.steps,
            "seconds": round(result.seconds, 1),
        }
        _on_main(atomic_write, out / "metrics.json", json.dumps(summary, indent=1).encode())
        return summary
    t_score = time.perf_counter()
    final, cards = score_examples(
        backbone, method, tasks, names, reported_lines, verbs, cfg, train_cfg.eval_batch_size, lower, out
    )
    scoring_seconds = time.perf_counter() - t_score
    splits = {
        n: dict(zip(("selection", "report"), protocol_splits(tasks[n], cfg.select_on), strict=True)) for n in names
    }
    reported = {s["report"] for s in splits.values()}
    summary = {
        "method": method.name,
        "split": reported.pop() if len(reported) == 1 else "per task (splits)",
        "splits": splits,
        "metrics": final,
        "headline": metrics,
        "average": headline(final, metrics),
        "best_step": result.best_step,
        "steps": train_cfg.steps,
        "seconds": round(result.seconds, 1),
        "scoring_seconds": round(scoring_seconds, 1),
        "scored": cards,
        "truncated_examples": sum(e.truncated for e in train_items),
        "trainable_parameters": method.trainable_parameters(),
    }
    _on_main(atomic_write, out / "metrics.json", json.dumps(summary, indent=1).encode())
    return summary


def run_train(cfg: RunConfig, output: Path, resume: bool = False, backbone: Backbone | None = None) -> dict:
    """Train ``cfg.method`` on the source tasks (TA-LoRA: stage 1 then stage 2) on ``backbone``
    (default: ``cfg.model``, loaded here)."""
    output = Path(output)
    names = cfg.tasks or source_task_names(cfg.data_dir)
    tasks = T.load_tasks(cfg.data_dir, names)  # bad input fails here, before anything is written
    backbone = backbone or load_backbone(cfg.model, cfg.dtype, local_device(cfg.device, world()))
    lower = lower_caches(cfg, backbone)
    method_cfg = cfg.method_config()
    method = method_class(cfg.method)(method_cfg, backbone, names).placed(backbone)
    output.mkdir(parents=True, exist_ok=True)
    _on_main(atomic_write, output / "config.yaml", dump_config(cfg).encode())
    t0 = time.perf_counter()
    stage1_summary = None
    if (stage1 := method.stage1(backbone)) is not None:
        stage1 = stage1.placed(backbone)
        stage1_dir = output / "stage1"
        manifest = RunManifest(output)
        stage1_summary = manifest.finished("stage1", stage1_dir) if resume else None
        if stage1_summary is not None:
            stage1, _ = load_adapter(stage1_dir, backbone, expect_method=stage1.name)
        else:
            # Stage 1 only initialises stage 2: its report split is not scored (stage 2's is).
            stage1_summary = _fit(
                backbone, stage1, tasks, names, cfg, cfg.stage1, stage1_dir, resume, "stage 1", lower, report=False
            )
            manifest.record("stage1", stage1_dir, stage1_summary)
        method.init_from_stage1(stage1)
    summary = _fit(
        backbone,
        method,
        tasks,
        names,
        cfg,
        cfg.train,
        output,
        resume,
        "stage 2" if stage1_summary else cfg.method,
        lower,
    )
    summary["seconds_total"] = round(time.perf_counter() - t0, 1)
    if stage1_summary:
        summary["stage1"] = {k: stage1_summary.get(k) for k in ("selection_average", "best_step", "seconds")}
    _on_main(atomic_write, output / "metrics.json", json.dumps(summary, indent=1).encode())
    world().barrier()  # rank 0's files are complete before any rank reads them
    return summary


def run_transfer(
    source: Path | None,
    task: str,
    k: int | str,
    seed: int,
    output: Path,
    data_dir: str | None = None,
    train_cfg: TrainConfig | None = None,
    config: RunConfig | None = None,
    backbone: Backbone | None = None,
    placement: dict | None = None,
    shots: str | None = None,
    on_shots: bool = False,
    loaded: dict[str, T.Task] | None = None,
    on_step=None,
) -> dict:
    """Few-shot transfer to ``task``: k examples (per class or in all, as ``shots`` or the config's
    ``shots`` counts them; ``k="all"``: its whole train split) scored on test (or validation).

    ``loaded``: the task already read from ``data_dir`` (a server adapting its template before
    training); ``on_step``: called between training steps (``talora.training.trainer.train``).

    ``on_shots``: train on one half of the shots and score on the other half, for choosing a
    setting (a learning rate, a budget) without looking at evaluation data.

    With ``source=None`` the method of ``config`` starts from scratch on the target (no source
    knowledge): the plain few-shot baseline, e.g. prompt tuning on the k shots alone.
    ``placement`` (``device``/``dtype``) replaces the source config's: an adapter trained on a GPU
    in bfloat16 transfers on a CPU in float32, and the reverse.
    """
    output = Path(output)
    if source is None:
        if config is None:
            raise ConfigError("few-shot training from scratch needs a run config (--config)")
        cfg, method = config, None
    else:
        source_spec, source = str(source), resolve_adapter(source)  # the spec (a hub id) is what gets recorded
        source_method = read_sidecar(source)["method"]  # not an adapter folder: say so before loading a model
        cfg = load_config(source / "config.yaml", placement)
    data_dir = data_dir if data_dir is not None else cfg.data_dir
    tasks = loaded if loaded is not None else T.load_tasks(data_dir, [task])
    spec = tasks[task].spec
    shots = shots or cfg.shots
    examples = _shots(tasks[task], k, seed, shots, cfg)  # bad input fails here, before a model is loaded
    held: list[T.Example] = []
    if on_shots:
        if len(examples) < 2:
            raise DataError(f"task {task!r}: {len(examples)} shot(s) cannot be split into a train and a score half")
        examples, held = examples[::2], examples[1::2]  # the draw is shuffled: two random halves
    backbone = backbone or load_backbone(cfg.model, cfg.dtype, local_device(cfg.device, world()))
    lower = lower_caches(cfg, backbone)
    if source is not None:
        method, _ = load_adapter(source, backbone, expect_method=source_method)
    output.mkdir(parents=True, exist_ok=True)
    train_cfg = train_cfg or cfg.transfer
    run_cfg = dataclasses.replace(cfg, seed=seed, data_dir=data_dir, tasks=[task], transfer=train_cfg, shots=shots)
    _on_main(atomic_write, output / "config.yaml", dump_config(run_cfg).encode())
    verbs = verbalizers_for(backbone, [spec], cfg)
    train_items = encode_split(backbone, tasks, [task], "train", cfg.max_length, examples={task: examples})

    def tune(m: Method, steps: int) -> None:  # a brief, throw-away run on the shots (e.g. SPoT-retrieval)
        short = dataclasses.replace(
            train_cfg, steps=steps, warmup_steps=min(train_cfg.warmup_steps, steps - 1), eval_every=0
        )
        with tempfile.TemporaryDirectory() as scratch:
            train(
                backbone,
                m.placed(backbone),
                train_items,
                [],
                verbs,
                {task: spec.metric},
                short,
                Path(scratch),
                seed,
                desc="tune",
                lower=lower,
            )

    def score(m: Method) -> float:
        preds = predictions(backbone, m, train_items, verbs, train_cfg.eval_batch_size, lower)
        return task_metrics(train_items, preds, verbs, [task])[task][spec.metric]

    if method is None:
        target = method_class(cfg.method)(cfg.method_config(), backbone, [task]).placed(backbone)
    else:
        target = method.for_target(TargetContext(task, backbone, tune, score)).placed(backbone)
    # Few-shot protocol: no validation set to select on; the last step's state is the result.
    result = train(
        backbone,
        target,
        train_items,
        [],
        verbs,
        {task: spec.metric},
        train_cfg,
        output,
        seed,
        desc=f"{task} k={k}",
        lower=lower,
        on_step=on_step,
    )
    split = "shots (held-out half)" if on_shots else T.evaluation_split(tasks[task])
    if on_shots:
        scored = (split, list(range(len(held))), held)
    else:
        scored = (split, *scored_examples(spec, tasks[task].splits[split], cfg.test_examples, cfg.sample_seed))
    t_score = time.perf_counter()
    metrics, cards = score_examples(
        backbone, target, tasks, [task], {task: scored}, verbs, cfg, train_cfg.eval_batch_size, lower, output
    )
    scores, scoring_seconds = metrics[task], time.perf_counter() - t_score
    _on_main(
        save_adapter, output, target, backbone, {task: spec}, extra={"source_adapter": source_spec if source else None}
    )
    summary = {
        "method": target.name,
        "task": task,
        "k": k,
        "shots": shots,
        "train_examples": len(train_items),
        "seed": seed,
        "split": split,
        "examples": len(scored[1]),
        "metrics": scores,
        "score": scores[spec.metric],
        "metric": spec.metric,
        "label_scoring": cfg.label_scoring,
        "scored": cards[task],
        "seconds": round(result.seconds, 1),
        "scoring_seconds": round(scoring_seconds, 1),
        "trainable_parameters": target.trainable_parameters(),
    }
    _on_main(atomic_write, output / "metrics.json", json.dumps(summary, indent=1).encode())
    world().barrier()  # rank 0's files are complete before any rank reads them
    return summary


def _shots(task: T.Task, k: int | str, seed: int, shots: str, cfg: RunConfig) -> list[T.Example]:
    examples = T.few_shot(task, k, seed, shots)
    if k == T.K_ALL and cfg.train_examples:
        examples = examples[: cfg.train_examples]  # "all" within the run's cap on training examples per task
    return examples


def run_joint_transfer(
    source: Path,
    names: list[str],
    k: int | str,
    seed: int,
    output: Path,
    data_dir: str | None = None,
    train_cfg: TrainConfig | None = None,
    backbone: Backbone | None = None,
    placement: dict | None = None,
    shots: str | None = None,
) -> dict:
    """Several target tasks transferred together from ``source`` (TA-LoRA §III-E): their k-shot sets
    mixed in one run (batches mix tasks as in source training), each scored on its own test (or
    validation) split. What learns besides the targets' own weights is the method's choice
    (``Method.for_targets``; TA-LoRA: its shared weights, at stage 2's rates)."""
    output = Path(output)
    if len(set(names)) != len(names) or len(names) < 2:
        raise ConfigError(f"a joint transfer takes two or more different target tasks, got {names}")
    source_spec, source = str(source), resolve_adapter(source)
    source_method = read_sidecar(source)["method"]
    cfg = load_config(source / "config.yaml", placement)
    if method_class(source_method).for_targets is Method.for_targets:
        raise ConfigError(
            f"method {source_method!r} transfers one target task at a time; several targets together is a TA-LoRA mode"
        )
    data_dir = data_dir if data_dir is not None else cfg.data_dir
    tasks = T.load_tasks(data_dir, names)
    shots = shots or cfg.shots
    examples = {n: _shots(tasks[n], k, seed, shots, cfg) for n in names}  # bad input fails before a model loads
    backbone = backbone or load_backbone(cfg.model, cfg.dtype, local_device(cfg.device, world()))
    lower = lower_caches(cfg, backbone)
    method, _ = load_adapter(source, backbone, expect_method=source_method)
    output.mkdir(parents=True, exist_ok=True)
    train_cfg = train_cfg or cfg.transfer
    run_cfg = dataclasses.replace(cfg, seed=seed, data_dir=data_dir, tasks=names, transfer=train_cfg, shots=shots)
    _on_main(atomic_write, output / "config.yaml", dump_config(run_cfg).encode())
    specs = [tasks[n].spec for n in names]
    verbs = verbalizers_for(backbone, specs, cfg)
    metric = {s.name: s.metric for s in specs}
    train_items = encode_split(backbone, tasks, names, "train", cfg.max_length, examples=examples)
    target = method.for_targets(names, backbone).placed(backbone)
    result = train(
        backbone, target, train_items, [], verbs, metric, train_cfg, output, seed, desc=f"joint k={k}", lower=lower
    )
    splits = {n: T.evaluation_split(tasks[n]) for n in names}
    scored = {
        n: (splits[n], *scored_examples(tasks[n].spec, tasks[n].splits[splits[n]], cfg.test_examples, cfg.sample_seed))
        for n in names
    }
    scores, cards = score_examples(
        backbone, target, tasks, names, scored, verbs, cfg, train_cfg.eval_batch_size, lower, output
    )
    _on_main(save_adapter, output, target, backbone, {s.name: s for s in specs}, extra={"source_adapter": source_spec})
    summary = {
        "method": target.name,
        "tasks": names,
        "k": k,
        "shots": shots,
        "train_examples": len(train_items),
        "seed": seed,
        "splits": splits,
        "metrics": scores,
        "scores": {n: scores[n][metric[n]] for n in names},
        "scored": cards,
        "headline": metric,
        "average": headline(scores, metric),
        "seconds": round(result.seconds, 1),
        "trainable_parameters": target.trainable_parameters(),
    }
    _on_main(atomic_write, output / "metrics.json", json.dumps(summary, indent=1).encode())
    world().barrier()
    return summary


def run_eval(
    adapter: Path,
    task: str,
    split: str = "validation",
    data_dir: str | None = None,
    model: str | None = None,
    backbone: Backbone | None = None,
    placement: dict | None = None,
) -> dict:
    """Score an adapter on one task's split; ``placement`` (``device``/``dtype``) replaces its config's."""
    adapter = resolve_adapter(adapter)
    config_path = adapter / "config.yaml"
    cfg = load_config(config_path if config_path.is_file() else None, placement)
    held = [d["name"] for d in read_sidecar(adapter)["tasks"]]  # checked before a model is loaded
    if task not in held:
        raise ConfigError(f"adapter {adapter} has no task {task!r}; it has: {', '.join(held)}")
    backbone = backbone or load_backbone(model or cfg.model, cfg.dtype, local_device(cfg.device, world()))
    method, specs = load_adapter(adapter, backbone)
    tasks = T.load_tasks(data_dir if data_dir is not None else cfg.data_dir, [task])
    names = method.task_names
    items = [
        encode(specs[task], ex, backbone.tokenizer, cfg.max_length, names.index(task))
        for ex in tasks[task].splits.get(split, [])
    ]
    if not items:
        raise DataError(f"task {task!r} has no examples in split {split!r}")
    verbs = {names.index(task): Verbalizer.of(specs[task], backbone.tokenizer, cfg.label_scoring, cfg.max_length)}
    preds = predictions(backbone, method, items, verbs, lower=lower_caches(cfg, backbone))
    scores = task_metrics(items, preds, verbs, names)[task]
    majority = (
        T.majority_baseline(specs[task], tasks[task].splits["train"], tasks[task].splits[split])
        if tasks[task].splits.get("train")
        else None
    )
    return {"task": task, "split": split, "examples": len(items), "metrics": scores, "majority_baseline": majority}
