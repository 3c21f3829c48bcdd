"""``talora sweep``, ``talora budget`` and ``talora demo``: many runs on one harness, one table."""

from __future__ import annotations

from pathlib import Path

from ..errors import ConfigError
from .common import check_output, command, numbers, placement, shared


def add_demo(sub) -> None:
    d = command(sub, "demo", help="TA-LoRA vs prompt tuning on the embedded model and synthetic suite")
    shared(d, "output", output={"default": "runs/demo"})
    d.add_argument("--config", help="run config YAML (default: the packaged demo config)")
    shared(d, "device", "dtype")
    d.set_defaults(func=cmd_demo)


def add_sweep(sub) -> None:
    w = command(
        sub,
        "sweep",
        overrides=True,
        help="several methods, targets, k values and seeds on one harness: one table",
        epilog="Any sweep config field can be overridden besides the named options: --dotted.key VALUE "
        "or --dotted.key=VALUE, e.g. --run.train.steps 5 --ks [16] --targets '[rte]'. Values "
        "are read as YAML; a method's own settings (methods.<label>.train ...) still win over "
        "run.*, so override those as --methods.<label>.train.steps 5.",
    )
    w.add_argument("--config", required=True, help="sweep config YAML (see configs/sweeps/)")
    shared(
        w,
        "output",
        "data_dir",
        "device",
        "dtype",
        output={"required": True, "help": "output folder (finished units are skipped on a re-run)"},
        data_dir={"help": "override the config's data folder"},
    )
    w.add_argument(
        "--status", action="store_true", help="list the units, finished or still to run in --output; run nothing"
    )
    w.set_defaults(func=cmd_sweep)


def add_budget(sub) -> None:
    g = command(
        sub,
        "budget",
        overrides=True,
        help="each method of a sweep at growing transfer budgets, the learning rate chosen on the shots alone",
        epilog="Overrides as for `talora sweep` (--run.test_examples 50 ...). Runs resume like a sweep's; "
        "with the sweep's --output folder the trained sources are shared.",
    )
    g.add_argument("--config", required=True, help="sweep config YAML: methods, sources, targets, ks, seeds")
    shared(g, "output", output={"required": True, "help": "output folder (finished units are skipped on a re-run)"})
    g.add_argument("--steps", type=numbers(int), help="transfer step counts, e.g. 12,50 (default 12,25,50,100,200)")
    g.add_argument("--lr-scales", type=numbers(float), help="learning-rate scales to choose from (default 0.3,1,3)")
    shared(g, "data_dir", "device", "dtype", data_dir={"help": "override the config's data folder"})
    g.set_defaults(func=cmd_budget)


def cmd_demo(args) -> None:
    from ..recipes.demo import DEMO_CONFIG, run_demo

    check_output(args.output)
    run_demo(Path(args.output), Path(args.config) if args.config else DEMO_CONFIG, placement=placement(args))


def cmd_sweep(args) -> None:
    from ..recipes.sweep import format_table, run_sweep, sweep_status

    chosen = placement(args)
    if chosen and set(chosen) & set(args.overrides.get("run", {})):
        raise ConfigError("sweep: --device/--dtype given both as options and as --run.* overrides")
    overrides = {**args.overrides, "run": {**args.overrides.get("run", {}), **chosen}}
    if args.status:
        units = sweep_status(Path(args.config), Path(args.output), args.data_dir, overrides=overrides)
        left = [u for u in units if not u["finished"]]
        print(f"{args.output}: {len(units)} units, {len(units) - len(left)} finished, {len(left)} to run")
        for u in left:
            print(f"  to run: {u['unit']}  ({u['folder']})")
        return
    check_output(args.output)
    results = run_sweep(Path(args.config), Path(args.output), args.data_dir, overrides=overrides)
    print(format_table(results))


def cmd_budget(args) -> None:
    from ..recipes.budget import LR_SCALES, STEPS, format_budget, run_budget

    check_output(args.output)
    overrides = {**args.overrides, "run": {**args.overrides.get("run", {}), **placement(args)}}
    results = run_budget(
        Path(args.config),
        Path(args.output),
        args.steps or STEPS,
        args.lr_scales or LR_SCALES,
        args.data_dir,
        overrides=overrides,
    )
    print(format_budget(results))
