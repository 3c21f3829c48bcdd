"""``talora budget``: where each method of a sweep stands as the transfer budget grows.

For each method of a sweep config (trained on its sources once: the same units, in the same
output folder, as ``talora sweep``), each target, k and seed, and each step count of the grid:

1. the learning rate is chosen on the shots alone: for each scale of the grid (``lr_scale``,
   multiplying the method's own transfer learning rates) the method trains on one half of the
   k-shot set and is scored on the other half; the best scale wins (ties: the first in the grid);
2. the method trains on all the shots with that scale for that many steps and is scored on the
   target's evaluation split, as a sweep's transfer is.

The table gives, per step count and method, the mean score over targets and seeds (± the
standard deviation over seeds of the per-seed mean) and the scales chosen; a PNG draws the
curves. Every run is a manifest unit: an interrupted budget run resumes where it stopped.
"""

from __future__ import annotations

import dataclasses
import json
import statistics
import time
from pathlib import Path

from ..atomic import atomic_write
from ..config import RunConfig, TrainConfig
from ..core.backbone import BackboneLoader
from ..progress import progress
from .pipeline import run_transfer
from .runs import RunManifest
from .sweep import _unit, config_digest, load_sweep, source_unit, train_unit

STEPS = (12, 25, 50, 100, 200)
LR_SCALES = (0.3, 1.0, 3.0)


def run_budget(
    config: str | Path,
    output: Path,
    steps_grid: tuple[int, ...] = STEPS,
    lr_scales: tuple[float, ...] = LR_SCALES,
    data_dir: str | None = None,
    overrides: dict | None = None,
    loader: BackboneLoader | None = None,
) -> dict:
    output = Path(output)
    loader = loader or BackboneLoader()
    sweep, runs = load_sweep(config, data_dir, overrides)
    manifest = RunManifest(output)
    t0 = time.perf_counter()
    results: dict = {"config": str(config), "steps": list(steps_grid), "lr_scales": list(lr_scales), "methods": {}}
    grid = [(t, k, s) for t in sweep.targets for k in sweep.ks for s in sweep.seeds]
    units = len(runs) * len(grid) * len(steps_grid) * (len(lr_scales) + 1)
    with progress(total=units, desc="budget", leave=True) as bar:
        for label, (cfg, scratch) in runs.items():
            tag = config_digest(cfg, f"scratch={scratch}")
            source = None
            if not scratch:
                name, source = source_unit(cfg, label, output)  # as talora sweep names it: shared
                manifest.run(name, source, train_unit(loader, cfg, source))
            rows = results["methods"].setdefault(label, {})
            for steps in steps_grid:
                base = dataclasses.replace(
                    cfg.transfer, steps=steps, warmup_steps=min(cfg.transfer.warmup_steps, steps - 1)
                )
                row = rows.setdefault(str(steps), {"scores": {}, "scales": {}})
                for task, k, seed in grid:
                    point = f"{task} k={k} seed={seed}"
                    name = f"{label}-{task}-k{k}-s{seed}-n{steps}"
                    run = _Transfer(loader, manifest, cfg, source, task, k, seed, base, output / "budget", name, tag)
                    on_half = [run(scale, on_shots=True) for scale in lr_scales]
                    bar.update(len(lr_scales))
                    best = lr_scales[max(range(len(lr_scales)), key=on_half.__getitem__)]
                    row["scores"][point], row["scales"][point] = run(best, on_shots=False), best
                    bar.update()
                    write_budget(results, output, config, t0)
    write_budget(results, output, config, t0)
    plot_budget(results, output / f"budget-{Path(config).stem}.png")
    return results


@dataclasses.dataclass
class _Transfer:
    """One (method, target, k, seed, steps) point: a transfer at a learning-rate scale, as a manifest unit."""

    loader: BackboneLoader
    manifest: RunManifest
    cfg: RunConfig
    source: Path | None
    task: str
    k: int | str
    seed: int
    train_cfg: TrainConfig
    folder: Path
    name: str
    tag: str

    def __call__(self, scale: float, on_shots: bool) -> float:
        folder = self.folder / (f"{self.name}-x{scale:g}" + ("-half" if on_shots else ""))
        train_cfg = dataclasses.replace(self.train_cfg, lr_scale=self.train_cfg.lr_scale * scale)
        unit = _unit(
            self.loader,
            self.cfg,
            run_transfer,
            self.source,
            self.task,
            self.k,
            self.seed,
            folder,
            train_cfg=train_cfg,
            config=self.cfg,
            shots=self.cfg.shots,
            on_shots=on_shots,
        )
        return self.manifest.run(f"{self.tag} budget {self.name} scale={scale:g} half={on_shots}", folder, unit)[
            "score"
        ]


def _per_seed_means(scores: dict[str, float]) -> list[float]:
    by_seed: dict[str, list[float]] = {}
    for key, value in scores.items():
        by_seed.setdefault(key.rsplit("seed=", 1)[1], []).append(value)
    return [statistics.mean(v) for v in by_seed.values()]


def format_budget(results: dict) -> str:
    methods = list(results["methods"])
    lines = [
        "| transfer steps | " + " | ".join(methods) + " |",
        "|---|" + "---|" * len(methods),
    ]
    for steps in map(str, results["steps"]):
        cells = []
        for m in methods:
            row = results["methods"][m].get(steps)
            if not row or not row["scores"]:
                cells.append("-")
                continue
            means = _per_seed_means(row["scores"])
            spread = f" ± {100 * statistics.stdev(means):.1f}" if len(means) > 1 else ""
            scales = "/".join(f"{s:g}" for s in sorted(set(row["scales"].values())))
            cells.append(f"{100 * statistics.mean(means):.1f}{spread} (lr × {scales})")
        lines.append(f"| {steps} | " + " | ".join(cells) + " |")
    lines.append(
        "\nmean score × 100 over targets and seeds on each target's evaluation split; ± the standard deviation "
        "over seeds; lr × the learning-rate scales chosen on the shots alone (train on one half, score on the "
        f"other; grid {', '.join(f'{s:g}' for s in results['lr_scales'])}); wall time of the last invocation "
        f"{results['seconds']:.0f} s (units an earlier invocation finished are read back, not timed again)"
    )
    return "\n".join(lines)


def write_budget(results: dict, output: Path, config: str | Path, t0: float) -> None:
    results["seconds"] = round(time.perf_counter() - t0, 1)
    stem = f"budget-{Path(config).stem}"
    atomic_write(output / f"results-{stem}.json", json.dumps(results, indent=1).encode())
    atomic_write(output / f"results-{stem}.md", format_budget(results).encode())


def plot_budget(results: dict, path: Path) -> None:
    """Mean score against transfer steps (log scale), one line per method."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for method, rows in results["methods"].items():
        points = [(int(s), 100 * statistics.mean(_per_seed_means(r["scores"]))) for s, r in rows.items() if r["scores"]]
        if points:
            ax.plot(*zip(*points, strict=True), marker="o", label=method)
    ax.set_xscale("log")
    ax.set_xticks(results["steps"], [str(s) for s in results["steps"]])
    ax.set_xlabel("transfer steps")
    ax.set_ylabel("mean target score × 100")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
