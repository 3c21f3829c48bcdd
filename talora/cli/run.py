"""``talora train``, ``talora transfer`` and ``talora eval``: one run trained, transferred or scored."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from ..errors import ConfigError
from ..overrides import HELP as OVERRIDES_HELP
from ..tasks.sampling import SHOT_MODES
from .common import (
    check_output,
    command,
    config_flags,
    k_shots,
    metrics_line,
    placement,
    shared,
    with_overrides,
)


def add_train(sub) -> None:
    t = command(
        sub,
        "train",
        overrides=True,
        help="train a method on the source tasks (TA-LoRA: stage 1 + stage 2)",
        epilog=OVERRIDES_HELP,
    )
    t.add_argument("--config", required=True, help="run config YAML (see configs/)")
    shared(
        t, "output", output={"required": True, "help": "output folder: adapter, metrics.json, config.yaml, log.jsonl"}
    )
    t.add_argument("--resume", action="store_true", help="continue from the last checkpoint in --output")
    shared(t, "seed", "data_dir", "method", "json", "device", "dtype", json={"help": "print metrics as JSON"})
    t.set_defaults(func=cmd_train)


def add_transfer(sub) -> None:
    x = command(
        sub,
        "transfer",
        overrides=True,
        help="few-shot transfer of a trained adapter to a new task",
        epilog="With --config: " + OVERRIDES_HELP,
    )
    x.add_argument(
        "--from", dest="source", help="folder written by `talora train`, or a hub model repo owner/name[@revision]"
    )
    x.add_argument("--config", help="instead of --from: train the config's method from scratch on the k shots")
    shared(x, "method", method={"help": "with --config: override its method"})
    x.add_argument(
        "--task",
        required=True,
        nargs="+",
        help="target task name (see `talora tasks`); several names: transferred together in one run (TA-LoRA)",
    )
    x.add_argument(
        "--k",
        type=k_shots,
        required=True,
        help="shots from the target's train split: a number (per class or in all, see --shots) or `all`",
    )
    shared(x, "shots", shots={"choices": SHOT_MODES})
    # Not the config's `seed`: with --from there is no config to set it in.
    x.add_argument("--seed", type=int, default=0, help="seed of the k-shot sample and the training order")
    shared(
        x,
        "output",
        "data_dir",
        "json",
        "device",
        "dtype",
        output={"required": True, "help": "output folder for the target adapter and metrics.json"},
        data_dir={"help": "data folder (default: the one the source was trained on)"},
    )
    x.set_defaults(func=cmd_transfer)


def add_eval(sub) -> None:
    e = command(sub, "eval", help="score an adapter on one task")
    e.add_argument("--adapter", required=True, help="adapter folder, or a hub model repo owner/name[@revision]")
    e.add_argument("--task", required=True)
    e.add_argument(
        "--split",
        help="train | validation | test (default: the split train reports: test where the task has a labelled "
        "test split, else validation)",
    )
    shared(
        e,
        "data_dir",
        "json",
        "device",
        "dtype",
        data_dir={"help": "data folder (default: the one the adapter was trained on)"},
    )
    e.set_defaults(func=cmd_eval)


def cmd_train(args) -> None:
    from ..config import load_config
    from ..recipes.pipeline import run_train

    check_output(args.output)
    cfg = load_config(
        args.config,
        with_overrides(config_flags(args, "seed", "data_dir", "method", "device", "dtype"), args.overrides),
    )
    summary = run_train(cfg, Path(args.output), resume=args.resume)
    if args.json:
        print(json.dumps(summary, indent=1, ensure_ascii=False))
    else:
        for task, metrics in summary["metrics"].items():
            print(f"{task:24s} {metrics_line(metrics)}")
    print(f"average {summary['average']:.4f}; adapter and metrics.json in {args.output}", file=sys.stderr)


def cmd_transfer(args) -> None:
    from ..config import load_config
    from ..recipes.pipeline import run_joint_transfer, run_transfer

    check_output(args.output)
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
            placement=placement(args),
            shots=args.shots,
        )
        if args.json:
            print(json.dumps(summary, indent=1, ensure_ascii=False))
        else:
            for task, metrics in summary["metrics"].items():
                split = summary["splits"][task]
                print(f"{task} k={args.k} seed={args.seed} ({split}): {metrics_line(metrics)}")
        return
    args.task = args.task[0]
    flags = config_flags(args, "method", "device", "dtype")
    config = load_config(args.config, with_overrides(flags, args.overrides)) if args.config else None
    summary = run_transfer(
        Path(args.source) if args.source else None,
        args.task,
        args.k,
        args.seed,
        Path(args.output),
        args.data_dir,
        config=config,
        placement=placement(args),
        shots=args.shots,
    )
    if args.json:
        print(json.dumps(summary, indent=1, ensure_ascii=False))
    else:
        print(f"{args.task} k={args.k} seed={args.seed} ({summary['split']}): {metrics_line(summary['metrics'])}")


def _reported_split(adapter: Path, task: str, data_dir: str | None) -> str | None:
    """The split ``talora train`` (or ``transfer``) reports ``task`` on, which ``eval`` scores unless
    told otherwise: test where the task has a labelled test split, else validation, as
    ``pipeline.protocol_splits`` decides (a run with ``select_on: validation`` reports validation;
    a transfer reports test, else validation, whatever its source selected on). None when the
    adapter does not hold the task: ``run_eval`` says so."""
    from ..adapters.files import read_sidecar
    from ..config import load_config
    from ..recipes.pipeline import protocol_splits
    from ..tasks import evaluation_split, load_tasks

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
    from ..adapters.files import resolve_adapter
    from ..recipes.pipeline import run_eval

    adapter = resolve_adapter(args.adapter)
    split = args.split or _reported_split(adapter, args.task, args.data_dir)
    if args.split is None and split is not None:
        print(f"scoring the {split} split of {args.task}, the one train reports (--split to choose)", file=sys.stderr)
    result = run_eval(adapter, args.task, split or "validation", args.data_dir, placement=placement(args))
    if args.json:
        print(json.dumps(result, indent=1, ensure_ascii=False))
        return
    print(
        f"{result['task']} ({result['split']} split, {result['examples']} examples): {metrics_line(result['metrics'])}"
    )
    if result["majority_baseline"]:
        print(f"majority-class baseline: {metrics_line(result['majority_baseline'])}")
