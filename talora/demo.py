"""The main job on the embedded default: TA-LoRA end to end beside vanilla prompt tuning.

Sources (synthetic suite): TA-LoRA stage 1 + stage 2, and prompt tuning for the same
total number of steps. Targets: few-shot transfer for each k, from both. The table
reports source validation ("unseen data") and target test scores ("unseen tasks").
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from pathlib import Path

from tqdm.auto import tqdm

from . import tasks as T
from .checkpoint import atomic_write
from .config import dump_config, load_config
from .methods.base import NoPrompt
from .pipeline import backbone_for, encode_split, run_train, run_transfer, verbalizers_for
from .runs import RunManifest
from .train import evaluate

DEMO_CONFIG = Path(__file__).parent / "configs" / "demo.yaml"


def baseline_config(cfg):
    """Prompt tuning on the same tasks, prompt length, learning rate and total step budget.

    Its state is taken at the last step (no mid-run selection, like TA-LoRA's stage 1); its
    target prompts train at TA-LoRA's stage-1 rate, as in the paper's PT baseline.
    """
    talora = cfg.method_config()
    steps = cfg.stage1.steps + cfg.train.steps
    return dataclasses.replace(cfg, method="prompt_tuning",
                               method_args={"length": talora.length, "lr": talora.lr_fast,
                                            "init_seed": talora.init_seed},
                               train=dataclasses.replace(cfg.train, steps=steps, eval_every=0))


def run_demo(output: Path, config: Path = DEMO_CONFIG, ks: tuple[int, ...] = (16, 32),
             targets: list[str] | None = None) -> dict:
    output = Path(output)
    cfg = load_config(config)
    manifest = RunManifest(output)  # a re-run skips the units already finished and intact
    # Units are named with the config's digest, so an edited config never reuses stale results.
    tag = hashlib.sha256(dump_config(cfg).encode()).hexdigest()[:8]
    targets = targets or list(T.SYNTHETIC_TARGET_TASKS)
    t0 = time.perf_counter()
    runs = {"talora": cfg, "prompt_tuning": baseline_config(cfg)}
    units = len(runs) * (1 + len(targets) * len(ks))
    results: dict = {"source": {"zero_shot": zero_shot(cfg, names_of(cfg), "validation")},
                     "target": {"zero_shot": {f"{t} (k={k})": score
                                              for t, score in zero_shot(cfg, targets, "test").items() for k in ks}}}
    with tqdm(total=units, desc="demo", dynamic_ncols=True) as bar:
        for name, run_cfg in runs.items():
            summary = manifest.run(f"{tag} train {name}", output / name,
                                   lambda: run_train(run_cfg, output / name))
            results["source"][name] = {t: m[summary["headline"][t]] for t, m in summary["metrics"].items()}
            bar.update()
            for task in targets:
                for k in ks:
                    out = output / f"{name}-{task}-k{k}"
                    res = manifest.run(f"{tag} transfer {name} {task} k={k} seed={cfg.seed}", out,
                                       lambda: run_transfer(output / name, task, k, cfg.seed, out))
                    results["target"].setdefault(name, {})[f"{task} (k={k})"] = res["score"]
                    bar.update()
    results["seconds"] = round(time.perf_counter() - t0, 1)
    table = format_table(results)
    atomic_write(output / "results.json", json.dumps(results, indent=1).encode())
    atomic_write(output / "results.md", table.encode())
    print(table)
    return results


def names_of(cfg) -> list[str]:
    return cfg.tasks or list(T.SYNTHETIC_SOURCE_TASKS)


def zero_shot(cfg, names: list[str], split: str) -> dict[str, float]:
    """Headline score of the frozen model with each task's template and no prompt."""
    backbone = backbone_for(cfg.model, cfg.cache_lower_layers)
    tasks = T.load_tasks(cfg.data_dir, names)
    items = encode_split(backbone, tasks, names, split, cfg.max_length)
    scores = evaluate(backbone, NoPrompt(backbone, names), items,
                      verbalizers_for(backbone, [tasks[n].spec for n in names]))
    return {n: scores[n][tasks[n].spec.metric] for n in names}


def format_table(results: dict) -> str:
    methods = list(results["source"])
    header = "| setting | task | " + " | ".join(methods) + " |"
    lines = [header, "|" + "---|" * (len(methods) + 2)]
    for setting, block in (("unseen data", results["source"]), ("unseen task", results["target"])):
        rows = list(next(iter(block.values())))
        for row in rows:
            lines.append(f"| {setting} | {row} | " + " | ".join(f"{100 * block[m][row]:.1f}" for m in methods) + " |")
        avg = [100 * sum(block[m].values()) / len(block[m]) for m in methods]
        lines.append(f"| {setting} | **average** | " + " | ".join(f"**{a:.1f}**" for a in avg) + " |")
    lines.append(f"\nwall time: {results['seconds']:.0f} s")
    return "\n".join(lines)
