"""Where one TA-LoRA training step spends its time: torch.profiler over `talora bench speed`'s step.

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/profile_step.py [--row talora_cached] [--model embedded]

Prints the operators sorted by self CPU time (the summary quoted in README "Speed").
"""

import argparse

import torch

from talora.bench.speed import ROWS, Shape, make_step
from talora.core.backbone import load_backbone


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="embedded")
    ap.add_argument("--row", default="talora_cached", choices=ROWS)
    ap.add_argument("--limit", type=int, default=25, help="operators to print")
    args = ap.parse_args()
    step = make_step(load_backbone(args.model), args.row, Shape())
    step()  # warm-up (fills the lower-layer cache for the cached rows)
    step()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        step()
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=args.limit))


if __name__ == "__main__":
    main()
