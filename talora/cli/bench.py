"""``talora bench speed`` and ``talora bench serve``: the speed benchmarks (talora.bench)."""

from __future__ import annotations

import sys
from pathlib import Path

from ..errors import ConfigError
from .common import command, count, positive_int, shared


def add_bench(sub) -> None:
    b = command(sub, "bench", help="benchmarks")
    bench = b.add_subparsers(dest="bench", required=True)
    s = command(bench, "speed", help="one training step: TA-LoRA (with/without the lower-layer cache) vs PEFT")
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
    shared(s, "device", "dtype")
    s.set_defaults(func=cmd_bench)
    bs = command(
        bench,
        "serve",
        help="serving throughput and latency: mixed-task vs single-task batches vs PEFT adapter switching",
    )
    bs.add_argument("--model", default="embedded")
    bs.add_argument("--batch-size", type=positive_int, default=16, help="records per batch (one request)")
    bs.add_argument("--requests", type=positive_int, default=16, help="batches per configuration and repetition")
    bs.add_argument("--repeats", type=positive_int, default=3, help="interleaved repetitions; the median is reported")
    bs.add_argument("--tasks", type=positive_int, default=8, help="tasks of the synthetic suite in the store")
    bs.add_argument("--prompt-length", type=positive_int, default=20, help="soft-prompt length m of every task")
    bs.add_argument(
        "--job-steps",
        type=count,
        default=30,
        help="steps of the training job whose cost to requests is measured (0: no job rows)",
    )
    bs.add_argument("--json", help="also write the table as JSON to this path")
    shared(bs, "device", "dtype")
    bs.set_defaults(func=cmd_bench_serve)


def cmd_bench(args) -> None:
    import torch

    from ..bench.speed import ROWS, Shape, format_rows, format_scoring, run_scoring, run_speed, write_json
    from ..core.backbone import load_backbone

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


def cmd_bench_serve(args) -> None:
    from ..bench.serve import format_job_table, format_table, run_job_bench, run_serve_bench, write_json
    from ..core.backbone import load_backbone
    from ..tasks import describe_tasks

    known = [r["name"] for r in describe_tasks(None)]
    if args.tasks > len(known):
        raise ConfigError(f"bench serve: --tasks {args.tasks}, but the synthetic suite has {len(known)} tasks")
    backbone = load_backbone(args.model, args.dtype or "auto", args.device or "auto")
    # What both benchmarks run on: the model, the store's tasks, the batch size, requests and repeats, m.
    shared = (backbone, known[: args.tasks], args.batch_size, args.requests, args.repeats, args.prompt_length)
    rows, setup = run_serve_bench(*shared, progress=lambda msg: print(msg, file=sys.stderr))
    print(format_table(rows, setup))
    job_rows = job = None
    if args.job_steps:
        job_rows, job = run_job_bench(*shared, args.job_steps, progress=lambda msg: print(msg, file=sys.stderr))
        print("\n" + format_job_table(job_rows, job, args.batch_size))
    if args.json:
        write_json(rows, setup, Path(args.json), job_rows, job)
