"""``talora analyze``: a run's curves, TA-LoRA's interlayer similarity, sweep comparisons and curves,
the TPV and DTVG analyses (talora.analysis)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from ..errors import ConfigError
from .common import command, positive_int, shared


def add_analyze(sub) -> None:
    a = command(
        sub,
        "analyze",
        help="a run's curves, TA-LoRA's interlayer similarity, TPV and DTVG analyses (Markdown, PNG, JSON)",
    )
    analyses = a.add_subparsers(dest="analysis", required=True)
    ti = command(analyses, "tpv-inits", help="TPVs on their original vs other initialisations (TPV Table 1)")
    ti.add_argument("--runs", nargs="+", help="tpv runs that differ only in method_args.init_seed")
    ti.add_argument("--config", help="or: a tpv config to train once per --init-seeds into --output/init-<seed>")
    ti.add_argument("--init-seeds", type=int, nargs="+", default=[0, 1, 2])
    ti.add_argument("--split", help="evaluation split (default: test, else validation)")
    ti.add_argument("--examples", type=int, default=0, help="evaluation examples per task (0 = all)")
    shared(ti, "output", output={"required": True, "help": "folder for tpv-inits.md/.png/.json (and the runs)"})
    ti.set_defaults(func=cmd_analyze)
    si = command(analyses, "similarity", help="cosine heatmaps of task prompts vs TPVs (TPV Fig. 2)")
    si.add_argument("--runs", nargs="+", required=True, help="tpv (or dtvg) runs; several init seeds averaged")
    shared(si, "output", output={"required": True, "help": "folder for similarity.md/.png/.json"})
    si.set_defaults(func=cmd_analyze)
    gr = command(analyses, "grouping", help="DTVG's source group per step (DTVG Fig. 7)")
    gr.add_argument("--log", required=True, help="log.jsonl of a dtvg run or transfer")
    shared(gr, "output", output={"help": "folder for grouping.md/.png/.json (default: the log's folder)"})
    gr.set_defaults(func=cmd_analyze)
    ru = command(analyses, "run", help="a run's loss, gates per prompted layer and validation curves (a PNG)")
    ru.add_argument("dir", help="folder written by `talora train` or `talora transfer` (TA-LoRA: both stages)")
    shared(ru, "output", output={"help": "PNG file, or folder for run.png (default: DIR/run.png)"})
    ru.set_defaults(func=cmd_analyze)
    il = command(
        analyses,
        "interlayer",
        help="similarity of the source tasks' stage-1 prompts per layer over training (TA-LoRA App. A)",
    )
    il.add_argument("dir", help="a TA-LoRA run folder (reads stage1/log.jsonl) or a deep_prompt_tuning run")
    shared(il, "output", output={"help": "folder for interlayer.md/.png/.json (default: DIR)"})
    il.set_defaults(func=cmd_analyze)
    co = command(
        analyses,
        "compare",
        help="two methods of a sweep: a task-level exact sign-flip test and a hierarchical bootstrap interval",
    )
    co.add_argument("results", help="a sweep's results-<name>.json")
    co.add_argument("a", help="method label")
    co.add_argument("b", help="method label")
    co.add_argument("--setting", choices=("target", "source"), default="target", help="unseen task (target) or data")
    co.add_argument("--draws", type=positive_int, default=2000, help="bootstrap resamples")
    co.add_argument("--k", help="compare at this k only (default: each task's mean over every k)")
    co.add_argument(
        "--metric",
        choices=("accuracy", "macro_f1", "matthews"),
        help="recompute every target score as this metric from the saved predictions (default: each task's own)",
    )
    shared(co, "json")
    co.set_defaults(func=cmd_analyze)
    ch = command(
        analyses,
        "chance",
        help="each unit's accuracy (span F1 for a generated task) beside the label-blind chance of its own "
        "answers and the best constant answer",
    )
    ch.add_argument("results", help="a sweep's results-<name>.json")
    ch.add_argument("--setting", choices=("target", "source"), default="target", help="unseen task (target) or data")
    ch.add_argument("--k", help="units of this k only (default: every k)")
    shared(ch, "json")
    ch.set_defaults(func=cmd_analyze)
    cu = command(analyses, "curves", help="mean target score against k, one line per method (a PNG)")
    cu.add_argument("results", help="a sweep's results-<name>.json")
    shared(cu, "output", output={"required": True, "help": "PNG file"})
    cu.set_defaults(func=cmd_analyze)


def cmd_analyze(args) -> None:
    if args.analysis == "run":
        return cmd_analyze_run(args)
    if args.analysis in ("compare", "curves", "chance"):
        from ..analysis import sweep_results as R

        results = R.load_results(args.results)
        if getattr(args, "k", None) is not None:
            results = R.at_k(results, args.k)
        if getattr(args, "metric", None) is not None:
            results = R.with_metric(results, args.metric)
        if args.analysis == "chance":
            rows = R.chance_rows(results, args.setting)
            print(json.dumps(rows, indent=1) if args.json else R.format_chance(rows))
        elif args.analysis == "compare":
            comparison = R.compare(results, args.a, args.b, args.setting, draws=args.draws)
            print(json.dumps(comparison, indent=1) if args.json else R.compare_line(comparison))
        else:
            print(f"wrote {R.plot_curves(results, Path(args.output), Path(args.results).stem)}", file=sys.stderr)
        return None
    if args.analysis == "interlayer":
        from ..analysis.interlayer import interlayer, write_interlayer

        paths = write_interlayer(interlayer(Path(args.dir)), Path(args.output) if args.output else Path(args.dir))
        print(paths[0].read_text())
        print(f"wrote {', '.join(map(str, paths))}", file=sys.stderr)
        return None
    from ..analysis import tpv as A

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
    from ..analysis.run import run_curves, summary_lines, write_run_plot

    result = run_curves(Path(args.dir))
    output = Path(args.output) if args.output else Path(args.dir) / "run.png"
    if output.is_dir() or not output.suffix:  # a folder, existing or to be made
        output = output / "run.png"
    write_run_plot(result, output)
    print("\n".join(summary_lines(result)))
    print(f"wrote {output}", file=sys.stderr)
