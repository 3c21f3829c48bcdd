"""``talora analyze interlayer DIR``: how alike the source tasks' base prompts grow, per layer.

TA-LoRA (arXiv:2505.00009, Appendix A) measures the similarity between its single-source
base models at the first, middle and last layer over training, and reads the rise in the
later layers as the place where task-specific structure lives, which is why the low-rank
heterogeneity sits on the last layers. Stage 1 (deep prompt tuning) logs the mean pairwise
cosine similarity of the tasks' prompts at its first, middle and last prompted layer at
every log step (``base_similarity`` in ``log.jsonl``); this reads it back as a table and a
plot. To cover the whole depth as the paper does, train stage 1 with
``method_args.layers`` equal to the model's layer count.
"""

from __future__ import annotations

import json
from pathlib import Path

from ..errors import DataError
from .run import read_log

LOGS = ("stage1/log.jsonl", "log.jsonl")


def interlayer(folder: Path) -> dict:
    """{"log", "steps", "layers": {layer: [similarity per step]}} from a run folder's stage-1 log."""
    folder = Path(folder)
    for name in LOGS:
        log = folder / name
        if not log.is_file():
            continue
        train = [r for r in read_log(log)["train"] if r.get("base_similarity")]
        if not train:
            continue
        layers = sorted({layer for r in train for layer in r["base_similarity"]}, key=int)
        return {
            "log": str(log),
            "steps": [r["step"] for r in train],
            "layers": {layer: [r["base_similarity"].get(layer) for r in train] for layer in layers},
        }
    raise DataError(
        f"{folder}: no log with base_similarity (give a TA-LoRA run folder, or a deep_prompt_tuning run of 2+ tasks)"
    )


def table(result: dict) -> str:
    steps = result["steps"]
    shown = sorted({0, len(steps) // 2, len(steps) - 1})
    head = "| layer | " + " | ".join(f"step {steps[i]}" for i in shown) + " |"
    rows = [head, "|" + "---|" * (len(shown) + 1)]
    for layer, values in result["layers"].items():
        rows.append(f"| {layer} | " + " | ".join(f"{values[i]:.4f}" for i in shown) + " |")
    return "\n".join(rows) + "\n"


def write_interlayer(result: dict, output: Path) -> list[Path]:
    """interlayer.md, interlayer.json and interlayer.png in ``output``."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    output.mkdir(parents=True, exist_ok=True)
    paths = [output / "interlayer.md", output / "interlayer.json", output / "interlayer.png"]
    paths[0].write_text(
        "Mean pairwise cosine similarity of the source tasks' base prompts per layer\n\n" + table(result),
        encoding="utf-8",
    )
    paths[1].write_text(json.dumps(result, indent=1), encoding="utf-8")
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for layer, values in result["layers"].items():
        ax.plot(result["steps"], values, label=f"layer {layer}")
    ax.set_xlabel("step")
    ax.set_ylabel("mean cosine similarity between tasks")
    ax.set_title("base prompts per layer over stage-1 training")
    ax.legend()
    fig.tight_layout()
    fig.savefig(paths[2], dpi=120)
    plt.close(fig)
    return paths
