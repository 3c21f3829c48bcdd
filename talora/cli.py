"""The ``talora`` command line: train, transfer, eval, demo, tasks, methods, store, predict.

Every error a user can act on ends the command with one ``talora: error: ...`` line on
stderr and exit status 2, usage errors included; a traceback means a bug in talora.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from .errors import ConfigError, TaloraError
from .overrides import HELP as OVERRIDES_HELP
from .overrides import parse_overrides
from .tasks.sampling import K_ALL, SHOT_MODES

# Commands whose unknown `--dotted.key VALUE` arguments override config fields (talora.overrides).
OVERRIDE_COMMANDS = ("train", "transfer", "sweep", "budget", "plan")


def _with_overrides(flags: dict, overrides: dict) -> dict:
    """The named options that were given, plus the dotted overrides; a field set both ways is refused."""
    flags = {k: v for k, v in flags.items() if v is not None}
    if both := sorted(set(flags) & set(overrides)):
        raise ConfigError(f"{', '.join(both)} given both as an option and as an override (--{both[0]} ...)")
    return {**flags, **overrides}


def _check_output(path: str | None) -> None:
    """Refuse an --output that cannot become a folder before anything is loaded or written."""
    if path is not None and Path(path).exists() and not Path(path).is_dir():
        raise ConfigError(f"--output {path} is a file, not a folder")


def _add_placement(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", help="auto | cpu | cuda | cuda:N | mps (default: the config's, else auto)")
    parser.add_argument(
        "--dtype", help="frozen model's dtype: auto | float32 | bfloat16 | float16 (default: the config's, else auto)"
    )


def _placement(args) -> dict:
    return {k: v for k, v in (("device", args.device), ("dtype", args.dtype)) if v is not None}


def _metrics_line(metrics: dict) -> str:
    return "  ".join(f"{k}={v:.4f}" for k, v in metrics.items())


def cmd_train(args) -> None:
    from .config import load_config
    from .recipes.pipeline import run_train

    _check_output(args.output)
    cfg = load_config(
        args.config,
        _with_overrides(
            {"seed": args.seed, "data_dir": args.data_dir, "method": args.method, **_placement(args)}, args.overrides
        ),
    )
    summary = run_train(cfg, Path(args.output), resume=args.resume)
    if args.json:
        print(json.dumps(summary, indent=1, ensure_ascii=False))
    else:
        for task, metrics in summary["metrics"].items():
            print(f"{task:24s} {_metrics_line(metrics)}")
    print(f"average {summary['average']:.4f}; adapter and metrics.json in {args.output}", file=sys.stderr)


def cmd_transfer(args) -> None:
    from .config import load_config
    from .recipes.pipeline import run_joint_transfer, run_transfer

    _check_output(args.output)
    if bool(args.source) == bool(args.config):
        raise ConfigError("transfer: give --from (a trained source adapter) or --config (train from scratch)")
    if args.source and args.overrides:
        given = ", ".join(
            f"--{key}..." if isinstance(value, dict) else f"--{key}" for key, value in args.overrides.items()
        )
        raise ConfigError(
            f"transfer: config overrides ({given}) need --config; "
            f"with --from the source adapter's config is used as it is"
        )
    if len(args.task) > 1:
        if not args.source:
            raise ConfigError("transfer: several --task names are transferred together from a source: give --from")
        summary = run_joint_transfer(
            Path(args.source),
            args.task,
            args.k,
            args.seed,
            Path(args.output),
            args.data_dir,
            placement=_placement(args),
            shots=args.shots,
        )
        if args.json:
            print(json.dumps(summary, indent=1, ensure_ascii=False))
        else:
            for task, metrics in summary["metrics"].items():
                split = summary["splits"][task]
                print(f"{task} k={args.k} seed={args.seed} ({split}): {_metrics_line(metrics)}")
        return
    args.task = args.task[0]
    flags = {"method": args.method, **_placement(args)}
    config = load_config(args.config, _with_overrides(flags, args.overrides)) if args.config else None
    summary = run_transfer(
        Path(args.source) if args.source else None,
        args.task,
        args.k,
        args.seed,
        Path(args.output),
        args.data_dir,
        config=config,
        placement=_placement(args),
        shots=args.shots,
    )
    if args.json:
        print(json.dumps(summary, indent=1, ensure_ascii=False))
    else:
        print(f"{args.task} k={args.k} seed={args.seed} ({summary['split']}): {_metrics_line(summary['metrics'])}")


def _reported_split(adapter: Path, task: str, data_dir: str | None) -> str | None:
    """The split ``talora train`` (or ``transfer``) reports ``task`` on, which ``eval`` scores unless
    told otherwise: test where the task has a labelled test split, else validation, as
    ``pipeline.protocol_splits`` decides (a run with ``select_on: validation`` reports validation;
    a transfer reports test, else validation, whatever its source selected on). None when the
    adapter does not hold the task: ``run_eval`` says so."""
    from .adapters.files import read_sidecar
    from .config import load_config
    from .recipes.pipeline import protocol_splits
    from .tasks import evaluation_split, load_tasks

    sidecar = read_sidecar(adapter)
    if task not in [d["name"] for d in sidecar["tasks"]]:
        return None
    config = adapter / "config.yaml"
    cfg = load_config(config if config.is_file() else None)
    loaded = load_tasks(data_dir if data_dir is not None else cfg.data_dir, [task])[task]
    if "source_adapter" in sidecar:  # written by transfer
        return evaluation_split(loaded)
    return protocol_splits(loaded, cfg.select_on)[1]


def cmd_eval(args) -> None:
    from .adapters.files import resolve_adapter
    from .recipes.pipeline import run_eval

    adapter = resolve_adapter(args.adapter)
    split = args.split or _reported_split(adapter, args.task, args.data_dir)
    if args.split is None and split is not None:
        print(f"scoring the {split} split of {args.task}, the one train reports (--split to choose)", file=sys.stderr)
    result = run_eval(adapter, args.task, split or "validation", args.data_dir, placement=_placement(args))
    if args.json:
        print(json.dumps(result, indent=1, ensure_ascii=False))
        return
    print(
        f"{result['task']} ({result['split']} split, {result['examples']} examples): {_metrics_line(result['metrics'])}"
    )
    if result["majority_baseline"]:
        print(f"majority-class baseline: {_metrics_line(result['majority_baseline'])}")


def cmd_demo(args) -> None:
    from .recipes.demo import DEMO_CONFIG, run_demo

    _check_output(args.output)
    run_demo(Path(args.output), Path(args.config) if args.config else DEMO_CONFIG, placement=_placement(args))


def cmd_sweep(args) -> None:
    from .recipes.sweep import format_table, run_sweep

    _check_output(args.output)
    placement = _placement(args)
    if placement and set(placement) & set(args.overrides.get("run", {})):
        raise ConfigError("sweep: --device/--dtype given both as options and as --run.* overrides")
    overrides = {**args.overrides, "run": {**args.overrides.get("run", {}), **placement}}
    results = run_sweep(Path(args.config), Path(args.output), args.data_dir, overrides=overrides)
    print(format_table(results))


def cmd_budget(args) -> None:
    from .recipes.budget import LR_SCALES, STEPS, format_budget, run_budget

    _check_output(args.output)
    overrides = {**args.overrides, "run": {**args.overrides.get("run", {}), **_placement(args)}}
    results = run_budget(
        Path(args.config),
        Path(args.output),
        args.steps or STEPS,
        args.lr_scales or LR_SCALES,
        args.data_dir,
        overrides=overrides,
    )
    print(format_budget(results))


def _numbers(kind):
    def parse(text: str) -> tuple:
        try:
            values = tuple(kind(v) for v in text.split(","))
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None
        if not values or min(values) <= 0:
            raise argparse.ArgumentTypeError(f"expected positive numbers, got {text!r}")
        return values

    return parse


def cmd_tasks(args) -> None:
    import dataclasses

    from .recipes.suites import load_suite
    from .tasks import describe_tasks

    suite = load_suite(args.suite, args.data_dir) if args.suite else None
    rows = describe_tasks(suite.data_dir if suite else args.data_dir)
    if suite:
        by_name = {r["name"]: r for r in rows}
        rows = [
            {**by_name[t], "suite_role": role}
            for role, names in (("source", suite.sources), ("target", suite.targets))
            for t in names
        ]
    if args.json:
        out = {**dataclasses.asdict(suite), "tasks": rows} if suite else rows
        print(json.dumps(out, indent=1, ensure_ascii=False))
        return
    if suite:
        print(
            f"suite {suite.name}: {suite.description}\n  data: {suite.data_dir or 'embedded synthetic tasks'}; "
            f"k in {list(suite.ks)}, seeds {list(suite.seeds)}"
        )
    for r in rows:
        sizes = ", ".join(f"{k}={v}" for k, v in (r.get("splits") or {}).items())
        labels = r.get("labels") or []
        shown = ", ".join(labels[:6]) + (f", ... ({len(labels)})" if len(labels) > 6 else "")
        shown = shown or {"multiple_choice": "choices per example", "extraction": "generated span"}.get(r["kind"], "")
        role = r.get("suite_role") or r.get("role", "")
        note = "" if r.get("supported", True) else f"  UNSUPPORTED: {r.get('problem', '')}"
        print(
            f"{r['name']:18s} {r.get('language', ''):3s} {r.get('kind', ''):16s} {role:8s} "
            f"{r.get('metric', ''):9s} [{shown}]  {sizes}{note}"
        )
        if r.get("inferred"):
            print(f"{'':18s} inferred: {r['inferred']}")
    if args.model:
        _print_lengths(args, [r["name"] for r in rows if r.get("supported", True)], suite)


def _print_lengths(args, names: list[str], suite) -> None:
    """Token-length percentiles of prompt + answer on each task's scored lines (its evaluation split's
    sample, as a sweep draws it), so max_length can be chosen to keep most prompts whole."""
    from .core.backbone import load_backbone
    from .core.batching import full_length
    from .recipes.scorecard import scored_examples
    from .tasks import evaluation_split, load_tasks

    tokenizer = load_backbone(args.model).tokenizer
    tasks = load_tasks(suite.data_dir if suite else args.data_dir, names)
    print(f"\ntokens of prompt + answer on {args.lines or 'all'} sampled lines of each task's evaluation split")
    cut = f"  > {args.max_length}" if args.max_length else ""
    print(f"{'task':18s} {'split':10s} {'p50':>5s} {'p90':>5s} {'p95':>5s} {'max':>5s}{cut}")
    for name, task in tasks.items():
        split = evaluation_split(task)
        if not task.splits.get(split):
            continue
        _, examples = scored_examples(task.spec, task.splits[split], args.lines, 0)
        lengths = sorted(full_length(task.spec, ex, tokenizer) for ex in examples)
        pct = [lengths[min(len(lengths) - 1, int(q * len(lengths)))] for q in (0.5, 0.9, 0.95)]
        over = f"  {sum(n > args.max_length for n in lengths) / len(lengths):5.1%}" if args.max_length else ""
        print(f"{name:18s} {split:10s} {pct[0]:5d} {pct[1]:5d} {pct[2]:5d} {lengths[-1]:5d}{over}")


def cmd_data(args) -> None:
    from .errors import DataError
    from .tasks import check_tasks, describe_tasks

    if args.action == "pull":
        from .tasks.hub import download

        _check_output(args.output)
        folder = download(args.tasks, Path(args.output), cache_dir=args.cache_dir)
        rows = {r["name"]: r for r in describe_tasks(folder)}
        for task in args.tasks:
            r = rows[task]
            sizes = ", ".join(f"{k}={v}" for k, v in r["splits"].items())
            print(f"{task:18s} {r['language']:3s} {r['kind']:16s} {r['metric']:9s} {sizes}")
        print(f"wrote {len(args.tasks)} task(s) to {folder}; `talora data check {folder}` reads them", file=sys.stderr)
        return
    rows = check_tasks(args.path)
    if args.json:
        print(json.dumps(rows, indent=1, ensure_ascii=False))
    for r in [] if args.json else rows:
        if not r["supported"]:
            print(f"{r['name']:18s} cannot be read: {r['problem']}")
            continue
        labels = r["labels"]
        shown = ", ".join(labels[:6]) + (f", ... ({len(labels)})" if len(labels) > 6 else "")
        shown = shown or {"multiple_choice": "choices per example", "extraction": "generated span"}.get(r["kind"], "")
        sizes = ", ".join(f"{k}={v}" for k, v in r["splits"].items())
        print(f"{r['name']:18s} {r['language']:3s} {r['kind']:16s} {r['metric']:9s} [{shown}]  {sizes}")
        print(f"{'':18s} {'inferred: ' + r['inferred'] if r['inferred'] else 'declared by the manifest'}")
    bad = [r for r in rows if not r["supported"]]
    if bad:
        raise DataError(
            f"data check: {len(bad)} of {len(rows)} task(s) in {args.path} cannot be read; "
            f"{bad[0]['name']}: {bad[0]['problem']}"
        )
    print(f"{len(rows)} task(s) in {args.path}, every record readable", file=sys.stderr)


def cmd_push(args) -> None:
    from .adapters.hub import model_card, push_adapter

    if args.dry_run:
        print(model_card(Path(args.adapter), args.repo), end="")
        return
    result = push_adapter(Path(args.adapter), args.repo, private=args.private, message=args.message)
    print(f"pushed {', '.join(result['files'])} to {result['url']} (model card: {result['card']})")


def cmd_methods(args) -> None:
    from .methods import METHODS

    for name, cls in sorted(METHODS.items()):
        doc = (cls.__module__ and sys.modules[cls.__module__].__doc__ or "").strip().splitlines()[0]
        print(f"{name:20s} {cls.parameter_formula():75s} {doc}")


def cmd_config(args) -> None:
    from .config import reference_yaml

    print(reference_yaml(), end="")


def _is_sweep(path: str) -> bool:
    """A sweep config (``talora sweep``'s), told from a run config by its ``methods`` or ``run`` block."""
    from .config import read_yaml

    return bool({"methods", "run"} & set(read_yaml(path)))


def _plan_sweep(args) -> None:
    """One plan per method label of a sweep, each on that label's own run config. A method trained
    from scratch on each target is planned as the sweep runs it: one target, the transfer budget."""
    import dataclasses

    from .recipes.plan import format_plan, make_plan
    from .recipes.sweep import load_sweep

    sweep, runs = load_sweep(args.config, overrides=args.overrides)
    plans, texts = {}, []
    for label, (cfg, from_scratch) in runs.items():
        if from_scratch:
            cfg = dataclasses.replace(cfg, tasks=list(sweep.targets[:1]) or cfg.tasks, train=cfg.transfer)
        plan = make_plan(
            cfg,
            model=args.model,
            dtype=args.dtype,
            checkpointing=args.gradient_checkpointing,
            all_methods=args.all_methods,
            answer_tokens=args.answer_tokens,
        )
        plans[label] = plan.to_json()
        how = (
            f"trained from scratch on each target ({', '.join(cfg.tasks)} planned, transfer budget)"
            if from_scratch
            else "trained on the sources"
        )
        texts.append(f"## {label}: method {cfg.method}, {how}\n\n{format_plan(plan, cfg)}")
    if args.json:
        print(json.dumps(plans, indent=1, ensure_ascii=False))
    else:
        print(f"sweep {args.config}: {len(runs)} method(s), one plan each\n\n" + "\n\n".join(texts))


def cmd_plan(args) -> None:
    from .config import load_config
    from .recipes.plan import make_plan

    if _is_sweep(args.config):
        return _plan_sweep(args)
    cfg = load_config(args.config, args.overrides)
    plan = make_plan(
        cfg,
        model=args.model,
        dtype=args.dtype,
        checkpointing=args.gradient_checkpointing,
        all_methods=args.all_methods,
        answer_tokens=args.answer_tokens,
    )
    if args.json:
        print(json.dumps(plan.to_json(), indent=1, ensure_ascii=False))
    else:
        from .recipes.plan import format_plan

        print(format_plan(plan, cfg))


def cmd_bench(args) -> None:
    import torch

    from .bench.speed import ROWS, Shape, format_rows, format_scoring, run_scoring, run_speed, write_json
    from .core.backbone import load_backbone

    rows = tuple(args.rows.split(",")) if args.rows else ROWS
    unknown = sorted(set(rows) - set(ROWS))
    if unknown:
        raise ConfigError(f"unknown bench row(s) {', '.join(unknown)}; known: {', '.join(ROWS)}")
    shape = Shape(args.batch_size, args.seq_len, args.prompt_length, args.layers)
    backbone = load_backbone(args.model, args.dtype or "auto", args.device or "auto")
    table = run_speed(
        backbone,
        args.model,
        shape,
        args.repeats,
        rows,
        memory=not args.no_memory,
        progress=lambda msg: print(msg, file=sys.stderr),
    )
    print(
        format_rows(table, shape, "cuda" if torch.cuda.is_available() else f"cpu ({torch.get_num_threads()} threads)")
    )
    if args.json:
        write_json(table, Path(args.json))
    if args.scoring_lines:
        scoring = run_scoring(backbone, lines=args.scoring_lines, repeats=args.repeats)
        print("\n" + format_scoring(scoring, args.scoring_lines, "product_sentiment"))


def cmd_analyze(args) -> None:
    if args.analysis == "run":
        return cmd_analyze_run(args)
    if args.analysis in ("compare", "curves"):
        from .analysis import sweep_results as R

        results = R.load_results(args.results)
        if args.analysis == "compare":
            comparison = R.compare(results, args.a, args.b, args.setting, draws=args.draws)
            print(json.dumps(comparison, indent=1) if args.json else R.compare_line(comparison))
        else:
            print(f"wrote {R.plot_curves(results, Path(args.output), Path(args.results).stem)}", file=sys.stderr)
        return None
    if args.analysis == "interlayer":
        from .analysis.interlayer import interlayer, write_interlayer

        paths = write_interlayer(interlayer(Path(args.dir)), Path(args.output) if args.output else Path(args.dir))
        print(paths[0].read_text())
        print(f"wrote {', '.join(map(str, paths))}", file=sys.stderr)
        return None
    from .analysis import tpv as A

    if args.analysis == "tpv-inits":
        if bool(args.runs) == bool(args.config):
            raise ConfigError("analyze tpv-inits: give either --runs (trained tpv runs) or --config (train them)")
        runs = args.runs or A.train_init_runs(Path(args.config), args.init_seeds, Path(args.output))
        paths = A.write_init_transfer(
            A.init_transfer([Path(r) for r in runs], args.split, args.examples), Path(args.output)
        )
    elif args.analysis == "similarity":
        paths = A.write_similarity(A.similarity([Path(r) for r in args.runs]), Path(args.output))
    else:
        log = Path(args.log)
        paths = A.write_grouping(A.grouping(log), Path(args.output) if args.output else log.parent)
    print(paths[0].read_text())
    print(f"wrote {', '.join(map(str, paths))}", file=sys.stderr)


def cmd_analyze_run(args) -> None:
    from .analysis.run import run_curves, summary_lines, write_run_plot

    result = run_curves(Path(args.dir))
    output = Path(args.output) if args.output else Path(args.dir) / "run.png"
    if output.is_dir() or not output.suffix:  # a folder, existing or to be made
        output = output / "run.png"
    write_run_plot(result, output)
    print("\n".join(summary_lines(result)))
    print(f"wrote {output}", file=sys.stderr)


def cmd_store(args) -> None:
    from .adapters.store import AdapterStore

    store = AdapterStore(Path(args.store))
    if args.action == "adapt":
        return _store_adapt(args, store)
    if args.action == "add":
        for r in store.add(Path(args.adapter), model=args.model):
            what = f"replaced {r['task']} (was from {r['replaced_source']})" if r["replaced"] else f"added {r['task']}"
            print(f"{what}: {r['method']}, {r['new_blobs']} new tensor file(s), {r['reused_blobs']} already stored")
    elif args.action == "list":
        rows = store.summary()
        damaged = _damaged_tasks(store.verify())
        if args.json:
            rows = [{**r, "damaged": damaged.get(r["task"])} for r in rows]
            print(json.dumps(rows, indent=1, ensure_ascii=False))
        for r in [] if args.json else rows:
            score = "-" if r["score"] is None else f"{r['metric']}={r['score']:.4f}"
            k = "" if r["k"] is None else f" k={r['k']}"
            flag = f"  DAMAGED: {'; '.join(damaged[r['task']])}" if r["task"] in damaged else ""
            print(f"{r['task']:24s} {r['method']:18s} {r['kind']:15s} {score:20s}{k}  {r['source']}{flag}")
        _refuse_damage(store, damaged)
    elif args.action == "show":
        entry = store.entry(args.task)
        print(json.dumps(entry, indent=1, ensure_ascii=False))
        _refuse_damage(store, _damaged_tasks(store.verify([args.task])))
    elif args.action == "verify":
        problems = store.verify()
        for p in problems:
            users = f"task{'s' if len(p['tasks']) > 1 else ''} {', '.join(p['tasks'])}"
            print(f"{store.folder / p['file']}: {p['problem']}, {p['detail']} ({users})")
        _refuse_damage(store, _damaged_tasks(problems))
        print(f"{len(store.tasks())} task(s) in {args.store}: every entry and blob matches its sha256")
    else:
        store.remove(args.task)
        print(f"removed {args.task} from {args.store}")


def _store_adapt(args, store) -> None:
    """``talora store adapt``: a POST /tasks job run here, in the foreground, with the training's
    progress bar. Everything is checked before the model is loaded."""
    from .core.backbone import load_backbone
    from .serving.jobs import JobManager
    from .tasks.infer import read_records

    path = Path(args.examples)
    if path.suffix.lower() not in (".jsonl", ".json", ".csv", ".tsv"):
        raise ConfigError(f"--examples {path}: expected a .jsonl or .csv file (also .json or .tsv)")
    if not path.is_file():
        raise ConfigError(f"--examples {path}: file not found")
    records = read_records(path)
    body = {"name": args.task, "examples": [obj for _, _, obj in records], "k": args.k, "seed": args.seed}
    for key, value in (("from", args.source), ("steps", args.steps), ("template", args.template)):
        if value is not None:
            body[key] = value
    if args.labels is not None:
        body["labels"] = [lab.strip() for lab in args.labels.split(",")]
    manager = JobManager(store, None)  # the model is not needed to check the request
    prepared = manager.prepare(body, [where for _, where, _ in records])
    spec = args.model or store.base_model().get("load")
    if spec is None:
        raise ConfigError(f"store {store.folder} does not record how to load its base model; give --model")
    placement = _placement(args)
    manager.backbone = load_backbone(spec, placement.get("dtype", "auto"), placement.get("device", "auto"))
    record = manager.run_here(prepared)
    if args.json:
        print(json.dumps(record, indent=1, ensure_ascii=False))
    if record["state"] != "succeeded":
        raise TaloraError(f"store adapt: {record['error']} (job record: {store.folder / 'jobs' / record['id']}.json)")
    if not args.json:
        r, base = record["result"], record["base"]
        print(
            f"added {args.task}: {r['metric']}={r['score']:.4f} on {r['held_out']} held-out example(s); trained on "
            f"{r['train_examples']} for {record['progress']['steps']} steps ({r['seconds']} s) from the "
            f"{base['method']} run of {', '.join(base['tasks'])}; {r['new_blobs']} new tensor file(s), "
            f"{r['reused_blobs']} already stored; job {record['id']}"
        )


def _damaged_tasks(problems: list[dict]) -> dict[str, list[str]]:
    """Task -> what is wrong with each of its damaged files, from ``AdapterStore.verify``."""
    out: dict[str, list[str]] = {}
    for p in problems:
        for task in p["tasks"]:
            out.setdefault(task, []).append(f"{p['file']} {p['problem']}")
    return out


def _refuse_damage(store, damaged: dict[str, list[str]]) -> None:
    from .errors import AdapterError

    if damaged:
        raise AdapterError(
            f"store {store.folder}: damaged files in {len(damaged)} task(s): {', '.join(damaged)}; "
            f"`talora store verify --store {store.folder}` lists them, `talora store add` of a task's adapter "
            "again repairs them"
        )


def cmd_predict(args) -> None:
    from .serving.engine import run_predict

    count = run_predict(args.store, args.input, args.output, args.batch_size, args.model)
    if args.output != "-":
        print(f"{count} prediction(s) in {args.output}", file=sys.stderr)


def cmd_serve(args) -> None:
    from .serving.http import run_server

    run_server(
        args.store,
        host=args.host,
        port=args.port,
        max_batch=args.max_batch,
        max_wait_ms=args.max_wait_ms,
        queue_size=args.queue_size,
        api_key=args.api_key or os.environ.get("TALORA_API_KEY") or None,
        model=args.model,
        max_records=args.max_records,
        placement=_placement(args),
        max_jobs=args.max_jobs,
        log=lambda msg: print(msg, file=sys.stderr),
    )


def cmd_bench_serve(args) -> None:
    from .bench.serve import format_job_table, format_table, run_job_bench, run_serve_bench, write_json
    from .core.backbone import load_backbone
    from .tasks import describe_tasks

    known = [r["name"] for r in describe_tasks(None)]
    if args.tasks > len(known):
        raise ConfigError(f"bench serve: --tasks {args.tasks}, but the synthetic suite has {len(known)} tasks")
    backbone = load_backbone(args.model, args.dtype or "auto", args.device or "auto")
    rows, setup = run_serve_bench(
        backbone,
        known[: args.tasks],
        args.batch_size,
        args.requests,
        args.repeats,
        args.prompt_length,
        progress=lambda msg: print(msg, file=sys.stderr),
    )
    print(format_table(rows, setup))
    job_rows = job = None
    if args.job_steps:
        job_rows, job = run_job_bench(
            backbone,
            known[: args.tasks],
            args.batch_size,
            args.requests,
            args.repeats,
            args.prompt_length,
            args.job_steps,
            progress=lambda msg: print(msg, file=sys.stderr),
        )
        print("\n" + format_job_table(job_rows, job, args.batch_size))
    if args.json:
        write_json(rows, setup, Path(args.json), job_rows, job)


class _Parser(argparse.ArgumentParser):
    """Usage errors end in one ``talora: error: <command>: ...`` line, like every other error."""

    def error(self, message: str):
        self.print_usage(sys.stderr)
        command = self.prog.partition(" ")[2]
        self.exit(2, f"talora: error: {command + ': ' if command else ''}{message}\n")


def _k(text: str) -> int | str:
    return K_ALL if text == K_ALL else _positive_int(text)


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 0, got {text!r}")
    return value


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"expected a TCP port from 0 to 65535, got {text!r}")
    return value


def _version() -> str:
    """talora's version and those of the libraries a bug report needs, read without importing them."""
    from importlib.metadata import PackageNotFoundError, version

    from . import __version__

    found = []
    for name in ("torch", "transformers", "peft"):
        try:
            found.append(f"{name} {version(name)}")
        except PackageNotFoundError:
            found.append(f"{name} missing")
    return f"talora {__version__} ({', '.join(found)}, python {sys.version.split()[0]})"


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="talora", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--version", action="version", version=_version(), help="print the versions and exit")
    p.add_argument("--quiet", action="store_true", help="no progress bars (TALORA_QUIET=1); results still go to stdout")
    sub = p.add_subparsers(dest="command", required=True)
    # Commands taking overrides match options exactly: `--data 5` is then an override (refused as an
    # unknown key), never silently read as `--data-dir 5`.
    overridable = dict(epilog=OVERRIDES_HELP, allow_abbrev=False)

    t = sub.add_parser("train", help="train a method on the source tasks (TA-LoRA: stage 1 + stage 2)", **overridable)
    t.add_argument("--config", required=True, help="run config YAML (see configs/)")
    t.add_argument("--output", required=True, help="output folder: adapter, metrics.json, config.yaml, log.jsonl")
    t.add_argument("--resume", action="store_true", help="continue from the last checkpoint in --output")
    t.add_argument("--seed", type=int, help="override the config's seed")
    t.add_argument("--data-dir", help="a folder in the shared-data layout (default: the synthetic suite)")
    t.add_argument("--method", help="override the config's method")
    t.add_argument("--json", action="store_true", help="print metrics as JSON")
    _add_placement(t)
    t.set_defaults(func=cmd_train)

    x = sub.add_parser(
        "transfer",
        help="few-shot transfer of a trained adapter to a new task",
        epilog="With --config: " + OVERRIDES_HELP,
        allow_abbrev=False,
    )
    x.add_argument(
        "--from", dest="source", help="folder written by `talora train`, or a hub model repo owner/name[@revision]"
    )
    x.add_argument("--config", help="instead of --from: train the config's method from scratch on the k shots")
    x.add_argument("--method", help="with --config: override its method")
    x.add_argument(
        "--task",
        required=True,
        nargs="+",
        help="target task name (see `talora tasks`); several names: transferred together in one run (TA-LoRA)",
    )
    x.add_argument(
        "--k",
        type=_k,
        required=True,
        help="shots from the target's train split: a number (per class or in all, see --shots) or `all`",
    )
    x.add_argument(
        "--shots",
        choices=SHOT_MODES,
        help="count k per class of a classification task (per_class) or in all (total); default: the config's",
    )
    x.add_argument("--seed", type=int, default=0, help="seed of the k-shot sample and the training order")
    x.add_argument("--output", required=True, help="output folder for the target adapter and metrics.json")
    x.add_argument("--data-dir", help="data folder (default: the one the source was trained on)")
    x.add_argument("--json", action="store_true")
    _add_placement(x)
    x.set_defaults(func=cmd_transfer)

    e = sub.add_parser("eval", help="score an adapter on one task")
    e.add_argument("--adapter", required=True, help="adapter folder, or a hub model repo owner/name[@revision]")
    e.add_argument("--task", required=True)
    e.add_argument(
        "--split",
        help="train | validation | test (default: the split train reports: test where the task has a labelled "
        "test split, else validation)",
    )
    e.add_argument("--data-dir")
    e.add_argument("--json", action="store_true")
    _add_placement(e)
    e.set_defaults(func=cmd_eval)

    d = sub.add_parser("demo", help="TA-LoRA vs prompt tuning on the embedded model and synthetic suite")
    d.add_argument("--output", default="runs/demo")
    d.add_argument("--config", help="run config YAML (default: the packaged demo config)")
    _add_placement(d)
    d.set_defaults(func=cmd_demo)

    k = sub.add_parser("tasks", help="list the tasks a data folder (or the synthetic suite) holds")
    k.add_argument("--data-dir", help="data folder (with --suite: replaces the suite's data_dir)")
    k.add_argument(
        "--suite",
        help="list only a suite's sources and targets: a name (zh-talora, en-dtvg, en-tpv, "
        "synthetic) or a suite YAML file",
    )
    k.add_argument("--json", action="store_true")
    k.add_argument("--model", help="also print token-length percentiles per task on this model's tokenizer")
    k.add_argument("--max-length", type=_positive_int, help="with --model: the share of lines longer than this")
    k.add_argument("--lines", type=int, default=500, help="with --model: sampled lines per task (0 = all)")
    k.set_defaults(func=cmd_tasks)

    dt = sub.add_parser("data", help="fetch tasks from the Hugging Face hub, or check a data folder (docs/data.md)")
    data = dt.add_subparsers(dest="action", required=True)
    dp = data.add_parser("pull", help="write tasks from the hub as a data folder (MANIFEST.json + JSONL)")
    dp.add_argument("tasks", nargs="+", metavar="TASK", help="task names (sst2, rte, cmrc2018, ...)")
    dp.add_argument("--output", required=True, help="data folder to write (tasks already in it stay)")
    dp.add_argument("--cache-dir", help="the datasets package's download cache")
    dp.set_defaults(func=cmd_data)
    dc = data.add_parser(
        "check", help="read every record of a data folder or file; per task: kind, labels, metric, sizes"
    )
    dc.add_argument("path", help="a data folder (with or without MANIFEST.json) or one .jsonl/.csv/... file")
    dc.add_argument("--json", action="store_true")
    dc.set_defaults(func=cmd_data)

    pu = sub.add_parser("push", help="upload an adapter folder to the Hugging Face hub with a model card")
    pu.add_argument("--adapter", required=True, help="adapter folder (written by train or transfer)")
    pu.add_argument("--repo", required=True, help="hub model repo owner/name (created when missing)")
    pu.add_argument("--private", action="store_true", help="create the repo private")
    pu.add_argument("--message", help="commit message")
    pu.add_argument("--dry-run", action="store_true", help="print the model card; upload nothing")
    pu.set_defaults(func=cmd_push)

    w = sub.add_parser(
        "sweep",
        help="several methods, targets, k values and seeds on one harness: one table",
        allow_abbrev=False,
        epilog="Any sweep config field can be overridden besides the named options: --dotted.key VALUE "
        "or --dotted.key=VALUE, e.g. --run.train.steps 5 --ks [16] --targets '[rte]'. Values "
        "are read as YAML; a method's own settings (methods.<label>.train ...) still win over "
        "run.*, so override those as --methods.<label>.train.steps 5.",
    )
    w.add_argument("--config", required=True, help="sweep config YAML (see configs/sweeps/)")
    w.add_argument("--output", required=True, help="output folder (finished units are skipped on a re-run)")
    w.add_argument("--data-dir", help="override the config's data folder")
    _add_placement(w)
    w.set_defaults(func=cmd_sweep)

    g = sub.add_parser(
        "budget",
        help="each method of a sweep at growing transfer budgets, the learning rate chosen on the shots alone",
        allow_abbrev=False,
        epilog="Overrides as for `talora sweep` (--run.test_examples 50 ...). Runs resume like a sweep's; "
        "with the sweep's --output folder the trained sources are shared.",
    )
    g.add_argument("--config", required=True, help="sweep config YAML: methods, sources, targets, ks, seeds")
    g.add_argument("--output", required=True, help="output folder (finished units are skipped on a re-run)")
    g.add_argument("--steps", type=_numbers(int), help="transfer step counts, e.g. 12,50 (default 12,25,50,100,200)")
    g.add_argument("--lr-scales", type=_numbers(float), help="learning-rate scales to choose from (default 0.3,1,3)")
    g.add_argument("--data-dir", help="override the config's data folder")
    _add_placement(g)
    g.set_defaults(func=cmd_budget)

    m = sub.add_parser("methods", help="list methods and their trainable-parameter formulas")
    m.set_defaults(func=cmd_methods)

    c = sub.add_parser("config", help="print every config field with its default and help (configs/talora.yaml)")
    c.set_defaults(func=cmd_config)

    pl = sub.add_parser(
        "plan",
        help="trainable parameters and estimated GPU memory of a config, no weights read (docs/paper-scale.md)",
        **overridable,
    )
    pl.add_argument(
        "--config",
        required=True,
        help="run config YAML (e.g. configs/paper/talora-zh-qwen2.5-7b.yaml), or a sweep config: one plan per method",
    )
    pl.add_argument(
        "--model",
        help="instead of the config's model: a shipped name (qwen2.5-7b-instruct, ...), a model folder, "
        "a config.json, a .gguf file or a hub id",
    )
    pl.add_argument(
        "--dtype",
        choices=("bfloat16", "float16", "float32"),
        help="the frozen model's dtype (default: the config's; auto is planned as bfloat16)",
    )
    pl.add_argument(
        "--gradient-checkpointing", action="store_true", help="plan every stage with gradient checkpointing on"
    )
    pl.add_argument("--all-methods", action="store_true", help="every registered method, at the config's m and L")
    pl.add_argument(
        "--answer-tokens", type=_positive_int, default=16, help="answer tokens per example (sizes the logits)"
    )
    pl.add_argument("--json", action="store_true", help="print the plan as JSON")
    pl.set_defaults(func=cmd_plan)

    a = sub.add_parser(
        "analyze", help="a run's curves, TA-LoRA's interlayer similarity, TPV and DTVG analyses (Markdown, PNG, JSON)"
    )
    analyses = a.add_subparsers(dest="analysis", required=True)
    ti = analyses.add_parser("tpv-inits", help="TPVs on their original vs other initialisations (TPV Table 1)")
    ti.add_argument("--runs", nargs="+", help="tpv runs that differ only in method_args.init_seed")
    ti.add_argument("--config", help="or: a tpv config to train once per --init-seeds into --output/init-<seed>")
    ti.add_argument("--init-seeds", type=int, nargs="+", default=[0, 1, 2])
    ti.add_argument("--split", help="evaluation split (default: test, else validation)")
    ti.add_argument("--examples", type=int, default=0, help="evaluation examples per task (0 = all)")
    ti.add_argument("--output", required=True, help="folder for tpv-inits.md/.png/.json (and the runs)")
    ti.set_defaults(func=cmd_analyze)
    si = analyses.add_parser("similarity", help="cosine heatmaps of task prompts vs TPVs (TPV Fig. 2)")
    si.add_argument("--runs", nargs="+", required=True, help="tpv (or dtvg) runs; several init seeds averaged")
    si.add_argument("--output", required=True, help="folder for similarity.md/.png/.json")
    si.set_defaults(func=cmd_analyze)
    gr = analyses.add_parser("grouping", help="DTVG's source group per step (DTVG Fig. 7)")
    gr.add_argument("--log", required=True, help="log.jsonl of a dtvg run or transfer")
    gr.add_argument("--output", help="folder for grouping.md/.png/.json (default: the log's folder)")
    gr.set_defaults(func=cmd_analyze)
    ru = analyses.add_parser("run", help="a run's loss, gates per prompted layer and validation curves (a PNG)")
    ru.add_argument("dir", help="folder written by `talora train` or `talora transfer` (TA-LoRA: both stages)")
    ru.add_argument("--output", help="PNG file, or folder for run.png (default: DIR/run.png)")
    ru.set_defaults(func=cmd_analyze)
    il = analyses.add_parser(
        "interlayer", help="similarity of the source tasks' stage-1 prompts per layer over training (TA-LoRA App. A)"
    )
    il.add_argument("dir", help="a TA-LoRA run folder (reads stage1/log.jsonl) or a deep_prompt_tuning run")
    il.add_argument("--output", help="folder for interlayer.md/.png/.json (default: DIR)")
    il.set_defaults(func=cmd_analyze)
    co = analyses.add_parser(
        "compare",
        help="two methods of a sweep: a task-level exact sign-flip test and a hierarchical bootstrap interval",
    )
    co.add_argument("results", help="a sweep's results-<name>.json")
    co.add_argument("a", help="method label")
    co.add_argument("b", help="method label")
    co.add_argument("--setting", choices=("target", "source"), default="target", help="unseen task (target) or data")
    co.add_argument("--draws", type=_positive_int, default=2000, help="bootstrap resamples")
    co.add_argument("--json", action="store_true")
    co.set_defaults(func=cmd_analyze)
    cu = analyses.add_parser("curves", help="mean target score against k, one line per method (a PNG)")
    cu.add_argument("results", help="a sweep's results-<name>.json")
    cu.add_argument("--output", required=True, help="PNG file")
    cu.set_defaults(func=cmd_analyze)

    b = sub.add_parser("bench", help="benchmarks")
    bench = b.add_subparsers(dest="bench", required=True)
    s = bench.add_parser("speed", help="one training step: TA-LoRA (with/without the lower-layer cache) vs PEFT")
    s.add_argument("--model", default="embedded")
    s.add_argument("--batch-size", type=int, default=8)
    s.add_argument("--seq-len", type=int, default=128)
    s.add_argument("--prompt-length", type=int, default=20)
    s.add_argument("--layers", type=int, help="prompted layers L (default: half)")
    s.add_argument("--repeats", type=int, default=3, help="interleaved repetitions; the median is reported")
    s.add_argument("--rows", help="comma-separated subset of configurations")
    s.add_argument("--no-memory", action="store_true", help="skip the per-row memory subprocesses")
    s.add_argument("--json", help="also write the table as JSON to this path")
    s.add_argument(
        "--scoring-lines",
        type=int,
        default=500,
        help="also time scoring this many lines (label ranking) against a plain forward over them (0 = skip)",
    )
    _add_placement(s)
    s.set_defaults(func=cmd_bench)
    bs = bench.add_parser(
        "serve", help="serving throughput and latency: mixed-task vs single-task batches vs PEFT adapter switching"
    )
    bs.add_argument("--model", default="embedded")
    bs.add_argument("--batch-size", type=_positive_int, default=16, help="records per batch (one request)")
    bs.add_argument("--requests", type=_positive_int, default=16, help="batches per configuration and repetition")
    bs.add_argument("--repeats", type=_positive_int, default=3, help="interleaved repetitions; the median is reported")
    bs.add_argument("--tasks", type=_positive_int, default=8, help="tasks of the synthetic suite in the store")
    bs.add_argument("--prompt-length", type=_positive_int, default=20, help="soft-prompt length m of every task")
    bs.add_argument(
        "--job-steps",
        type=_count,
        default=30,
        help="steps of the training job whose cost to requests is measured (0: no job rows)",
    )
    bs.add_argument("--json", help="also write the table as JSON to this path")
    _add_placement(bs)
    bs.set_defaults(func=cmd_bench_serve)

    st = sub.add_parser("store", help="an adapter store: per-task adapters of one base model (docs/serving.md)")
    actions = st.add_subparsers(dest="action", required=True)
    sa = actions.add_parser("add", help="add every task of a trained run or transfer output (same names: replaced)")
    sa.add_argument("--store", required=True, help="store folder (created on the first add)")
    sa.add_argument("--adapter", required=True, help="folder with adapter.safetensors + adapter.json")
    sa.add_argument("--model", help="load the base model from here (default: the run's config.yaml `model`)")
    sl = actions.add_parser("list", help="the store's tasks with method, kind, score and source")
    sl.add_argument("--store", required=True)
    sl.add_argument("--json", action="store_true")
    ss = actions.add_parser("show", help="one task's entry as JSON (inputs, spec, tensors, metrics, training data)")
    ss.add_argument("--store", required=True)
    ss.add_argument("--task", required=True)
    sr = actions.add_parser("remove", help="remove a task (tensors other tasks use stay)")
    sr.add_argument("--store", required=True)
    sr.add_argument("--task", required=True)
    sk = actions.add_parser("verify", help="check every entry and blob against its sha256 (exit 2 if one is damaged)")
    sk.add_argument("--store", required=True)
    sd = actions.add_parser(
        "adapt", help="teach the store a new task from a few labelled examples (what POST /tasks does, here)"
    )
    sd.add_argument("--store", required=True)
    sd.add_argument("--task", required=True, help="the new task's name (letters, digits, _ and -)")
    sd.add_argument(
        "--examples", required=True, help="JSONL or CSV file: text (or text_a and text_b) and label per line"
    )
    sd.add_argument(
        "--from", dest="source", help="a stored task whose trained run to transfer from (default: its TA-LoRA run)"
    )
    sd.add_argument("--k", type=_k, default=K_ALL, help="examples per label to train on (default: all)")
    sd.add_argument("--steps", type=_positive_int, help="training steps (default: the base run's transfer budget)")
    sd.add_argument("--seed", type=int, default=0, help="seed of the training order (and of a k-shot draw)")
    sd.add_argument("--labels", help="the label set, comma-separated: an example with another label is refused")
    sd.add_argument("--template", help='the prompt with its fields in braces, e.g. "Review: {text} Sentiment:"')
    sd.add_argument("--model", help="base model to load (default: the one the store was built for)")
    sd.add_argument("--json", action="store_true", help="print the job's record as JSON")
    _add_placement(sd)
    for action in (sa, sl, ss, sr, sk, sd):
        action.set_defaults(func=cmd_store)

    pr = sub.add_parser("predict", help="JSONL records {task, fields...} in, one JSONL prediction per record out")
    pr.add_argument("--store", required=True, help="adapter store folder (`talora store add`)")
    pr.add_argument("--input", default="-", help="JSONL file, or - for stdin (default)")
    pr.add_argument("--output", default="-", help="JSONL file (written only when every record succeeded), or -")
    pr.add_argument("--batch-size", type=_positive_int, default=16, help="records per forward pass, tasks mixed")
    pr.add_argument("--model", help="base model to load (default: the one the store was built for)")
    pr.set_defaults(func=cmd_predict)

    sv = sub.add_parser("serve", help="HTTP service over an adapter store, batching concurrent requests (uvicorn)")
    sv.add_argument("--store", required=True, help="adapter store folder (`talora store add`)")
    sv.add_argument("--host", default="127.0.0.1", help="address to bind (default: loopback only)")
    sv.add_argument("--port", type=_port, default=8000, help="TCP port (default 8000; 0: any free one)")
    sv.add_argument("--max-batch", type=_positive_int, default=32, help="records gathered into one batch")
    sv.add_argument(
        "--max-wait-ms", type=float, default=5, help="how long a batch waits for more requests after its first"
    )
    sv.add_argument("--queue-size", type=_positive_int, default=256, help="requests waiting before 503s")
    sv.add_argument("--max-records", type=_positive_int, default=256, help="records per request")
    sv.add_argument("--api-key", help="bearer token required on every route but /health (default: $TALORA_API_KEY)")
    sv.add_argument("--model", help="base model to load (default: the one the store was built for)")
    sv.add_argument(
        "--max-jobs", type=_positive_int, default=1, help="training jobs (POST /tasks) at once; more get 429"
    )
    _add_placement(sv)
    sv.set_defaults(func=cmd_serve)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extras = parser.parse_known_args(argv)
    if extras and args.command not in OVERRIDE_COMMANDS:
        parser.error(f"{args.command}: unrecognized arguments: {' '.join(extras)}")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if args.quiet:
        os.environ["TALORA_QUIET"] = "1"
    if os.environ.get("RANK", "0") != "0":  # a data-parallel launch: rank 0 alone shows progress
        os.environ["TALORA_QUIET"] = "1"
    from .progress import library_bars

    library_bars()  # before any command imports transformers: it reads the settings once
    try:
        args.overrides = parse_overrides(extras) if args.command in OVERRIDE_COMMANDS else {}
        args.func(args)
    except TaloraError as err:
        message = " ".join(line.strip() for line in str(err).splitlines() if line.strip())
        print(f"talora: error: {message}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # `talora tasks | head`
        sys.stderr.close()
        return 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
