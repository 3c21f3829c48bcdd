"""``talora tasks``, ``talora methods``, ``talora config`` and ``talora plan``: what there is, and what a
run would take, without training anything."""

from __future__ import annotations

import json
import sys

from ..overrides import HELP as OVERRIDES_HELP
from ..tasks.kinds import find_kind
from .common import command, positive_int, shared


def add_tasks(sub) -> None:
    k = command(sub, "tasks", help="list the tasks a data folder (or the synthetic suite) holds")
    shared(k, "data_dir", data_dir={"help": "data folder (with --suite: replaces the suite's data_dir)"})
    k.add_argument(
        "--suite",
        help="list only a suite's sources and targets: a name (zh-talora, en-dtvg, en-tpv, "
        "synthetic) or a suite YAML file",
    )
    shared(k, "json")
    k.add_argument("--model", help="also print token-length percentiles per task on this model's tokenizer")
    k.add_argument("--max-length", type=positive_int, help="with --model: the share of lines longer than this")
    k.add_argument("--lines", type=int, default=500, help="with --model: sampled lines per task (0 = all)")
    k.set_defaults(func=cmd_tasks)


def add_methods(sub) -> None:
    command(sub, "methods", help="list methods and their trainable-parameter formulas").set_defaults(func=cmd_methods)


def add_config(sub) -> None:
    c = command(sub, "config", help="print every config field with its default and help (configs/talora.yaml)")
    c.set_defaults(func=cmd_config)


def add_plan(sub) -> None:
    pl = command(
        sub,
        "plan",
        overrides=True,
        help="trainable parameters and estimated GPU memory of a config, no weights read (docs/paper-scale.md)",
        epilog=OVERRIDES_HELP,
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
    shared(
        pl,
        "dtype",
        dtype={
            "choices": ("bfloat16", "float16", "float32"),
            "help": "the frozen model's dtype (default: the config's; auto is planned as bfloat16)",
        },
    )
    pl.add_argument(
        "--gradient-checkpointing", action="store_true", help="plan every stage with gradient checkpointing on"
    )
    pl.add_argument("--all-methods", action="store_true", help="every registered method, at the config's m and L")
    pl.add_argument(
        "--answer-tokens", type=positive_int, default=16, help="answer tokens per example (sizes the logits)"
    )
    shared(pl, "json", json={"help": "print the plan as JSON"})
    pl.set_defaults(func=cmd_plan)


def cmd_tasks(args) -> None:
    import dataclasses

    from ..recipes.suites import load_suite
    from ..tasks import describe_tasks

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
        shown = shown or getattr(find_kind(r["kind"]), "shown", "")
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
    from ..core.backbone import load_backbone
    from ..core.batching import full_length
    from ..recipes.scorecard import scored_examples
    from ..tasks import evaluation_split, load_tasks

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


def cmd_methods(args) -> None:
    from ..methods import METHODS

    for name, cls in sorted(METHODS.items()):
        doc = (cls.__module__ and sys.modules[cls.__module__].__doc__ or "").strip().splitlines()[0]
        print(f"{name:20s} {cls.parameter_formula():75s} {doc}")


def cmd_config(args) -> None:
    from ..config import reference_yaml

    print(reference_yaml(), end="")


def _is_sweep(path: str) -> bool:
    """A sweep config (``talora sweep``'s), told from a run config by its ``methods`` or ``run`` block."""
    from ..config import read_yaml

    return bool({"methods", "run"} & set(read_yaml(path)))


def _plan_sweep(args) -> None:
    """One plan per method label of a sweep, each on that label's own run config. A method trained
    from scratch on each target is planned as the sweep runs it: one target, the transfer budget."""
    import dataclasses

    from ..recipes.plan import format_plan
    from ..recipes.sweep import load_sweep

    sweep, runs = load_sweep(args.config, overrides=args.overrides)
    plans, texts = {}, []
    for label, (cfg, from_scratch) in runs.items():
        if from_scratch:
            cfg = dataclasses.replace(cfg, tasks=list(sweep.targets[:1]) or cfg.tasks, train=cfg.transfer)
        plan = _plan(cfg, args)
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


def _plan(cfg, args):
    """``make_plan`` of one run config, as the command's options ask."""
    from ..recipes.plan import make_plan

    return make_plan(
        cfg,
        model=args.model,
        dtype=args.dtype,
        checkpointing=args.gradient_checkpointing,
        all_methods=args.all_methods,
        answer_tokens=args.answer_tokens,
    )


def cmd_plan(args) -> None:
    from ..config import load_config

    if _is_sweep(args.config):
        return _plan_sweep(args)
    cfg = load_config(args.config, args.overrides)
    plan = _plan(cfg, args)
    if args.json:
        print(json.dumps(plan.to_json(), indent=1, ensure_ascii=False))
    else:
        from ..recipes.plan import format_plan

        print(format_plan(plan, cfg))
