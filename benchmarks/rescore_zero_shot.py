"""Does this checkout score a sweep's frozen-model units as they were scored? A check to run before
finishing a table with code newer than its first units.

    .venv/bin/python benchmarks/rescore_zero_shot.py --config configs/sweeps/zh-gemma-table2.yaml \
        --output results/zh-gemma --tasks tnews ocnli finre

Each target task's zero-shot unit is scored again, from the sweep's config, into a temporary folder
(nothing in --output is written), and its predictions are compared line by line with the unit's
committed predictions.json. It prints, per task, the identical predictions out of the scored lines,
the old and new scores, and the process time; it exits 1 if any prediction differs.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

from talora.core.backbone import BackboneLoader
from talora.recipes.sweep import _backbone, load_sweep, zero_shot, zero_shot_unit


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", required=True, help="the sweep config the units ran from")
    parser.add_argument("--output", required=True, help="the sweep's folder, with its zero_shot/ units")
    parser.add_argument("--tasks", nargs="+", required=True, help="target tasks to score again")
    args = parser.parse_args(argv)
    _, runs = load_sweep(args.config)
    cfg = next(iter(runs.values()))[0]
    backbone = _backbone(BackboneLoader(), cfg)
    print("| task | identical predictions | committed score | new score | process seconds |")
    print("|---|---|---|---|---|")
    differ = False
    with tempfile.TemporaryDirectory(prefix="talora-rescore-") as tmp:
        for task in args.tasks:
            unit, folder = zero_shot_unit(cfg, "target", task, Path(args.output))
            old = json.loads((folder / "predictions.json").read_text())[task]
            before = json.loads((Path(args.output) / "manifest.json").read_text())[unit]["summary"]["score"]
            t0 = time.process_time()
            record = zero_shot(cfg, task, backbone, Path(tmp) / task)
            seconds = time.process_time() - t0
            new = json.loads((Path(tmp) / task / "predictions.json").read_text())[task]
            if new["uids"] != old["uids"]:
                print(f"{task}: scored other lines than the committed unit", file=sys.stderr)
                return 1
            same = sum(a == b for a, b in zip(new["predictions"], old["predictions"], strict=True))
            differ |= same != len(old["predictions"])
            lines = f"{same} of {len(old['predictions'])}"
            print(f"| {task} | {lines} | {before:.4f} | {record['score']:.4f} | {seconds:.0f} |")
    return 1 if differ else 0


if __name__ == "__main__":
    sys.exit(main())
