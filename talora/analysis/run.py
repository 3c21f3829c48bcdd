"""``talora analyze run DIR``: a run folder's training log as one figure.

One row per training phase found in the folder (TA-LoRA's ``stage1/log.jsonl`` first, then
``log.jsonl``; a transfer folder has one): the loss (and the regulariser, where the method
has one) over steps, the gate of each prompted layer over steps, and each task's
validation metric at every evaluation. Reads only the JSONL logs (and ``metrics.json`` for
each task's headline metric), so it works on a run that is still going or was cut short.
"""

from __future__ import annotations

import json
from pathlib import Path

from ..errors import DataError

PHASES = (("stage 1", "stage1"), ("training", "."))


def read_log(path: Path) -> dict:
    """The training and evaluation points of one log.jsonl; a resumed run's replayed steps keep their latest line."""
    train: dict[int, dict] = {}
    evals: dict[int, dict] = {}
    for no, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            raise DataError(f"{path}:{no}: not a JSON line ({err.msg})") from None
        if not isinstance(record, dict) or not isinstance(record.get("step"), int):
            raise DataError(f"{path}:{no}: expected a record with an integer step")
        if "eval" in record:
            evals[record["step"]] = record
        elif "loss" in record:
            train[record["step"]] = record
    return {"train": [train[s] for s in sorted(train)], "eval": [evals[s] for s in sorted(evals)]}


def _headlines(folder: Path) -> dict[str, str]:
    path = folder / "metrics.json"
    try:
        return dict(json.loads(path.read_text(encoding="utf-8")).get("headline") or {})
    except (OSError, ValueError, AttributeError):
        return {}  # a run still going has no metrics.json: each task's first metric is shown instead


def run_curves(folder: Path) -> dict:
    """Per phase: steps with loss, regulariser and gates; per task the headline metric at each evaluation."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"{folder}: no such run folder")
    phases = []
    for title, sub in PHASES:
        log = folder / sub / "log.jsonl"
        if not log.is_file():
            continue
        points = read_log(log)
        headline = _headlines(log.parent)
        tasks: dict[str, dict] = {}
        for record in points["eval"]:
            for task, metrics in record["eval"].items():
                metric = headline.get(task) or next(iter(metrics), None)
                if metric in metrics:
                    curve = tasks.setdefault(task, {"metric": metric, "steps": [], "values": []})
                    curve["steps"].append(record["step"])
                    curve["values"].append(metrics[metric])
        train = points["train"]
        phases.append(
            {
                "title": title,
                "log": str(log),
                "steps": [r["step"] for r in train],
                "loss": [r["loss"] for r in train],
                "reg": [r.get("reg") for r in train],
                "gates": [r.get("gates") or [] for r in train],
                "score": {"steps": [r["step"] for r in points["eval"]], "values": [r["score"] for r in points["eval"]]},
                "tasks": tasks,
            }
        )
    if not phases:
        raise DataError(f"{folder}: no log.jsonl (give a folder written by `talora train` or `talora transfer`)")
    return {"folder": str(folder), "phases": phases}


def summary_lines(result: dict) -> list[str]:
    lines = []
    for p in result["phases"]:
        text = f"{p['title']}: {p['log']}"
        if p["loss"]:
            text += f"; {p['steps'][-1]} steps, loss {p['loss'][0]:.4f} -> {p['loss'][-1]:.4f}"
        if p["score"]["values"]:
            best = max(range(len(p["score"]["values"])), key=p["score"]["values"].__getitem__)
            text += f"; best score {p['score']['values'][best]:.4f} at step {p['score']['steps'][best]}"
        lines.append(text)
    return lines


def _draw_phase(axes, phase: dict) -> None:
    from matplotlib import colormaps
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize
    from matplotlib.ticker import MaxNLocator

    loss_ax, gate_ax, eval_ax = axes
    loss_ax.plot(phase["steps"], phase["loss"], label="loss")
    regs = [(s, r) for s, r in zip(phase["steps"], phase["reg"]) if r is not None]
    if regs:
        twin = loss_ax.twinx()
        twin.plot(*zip(*regs), color="tab:orange", label="regulariser")
        twin.set_ylabel("regulariser", color="tab:orange")
    loss_ax.set_title(f"{phase['title']}: loss")
    loss_ax.set_ylabel("loss", color="tab:blue")
    loss_ax.set_xlabel("step")

    layers = max((len(g) for g in phase["gates"]), default=0)
    gate_ax.set_title(f"{phase['title']}: tanh(gate) per prompted layer")
    gate_ax.set_xlabel("step")
    if layers:
        cmap, norm = colormaps["viridis"], Normalize(0, max(layers - 1, 1))
        for layer in range(layers):
            points = [(s, g[layer]) for s, g in zip(phase["steps"], phase["gates"]) if len(g) > layer]
            gate_ax.plot(*zip(*points), color=cmap(norm(layer)), linewidth=1, label=f"layer {layer}")
        if layers <= 8:
            gate_ax.legend(fontsize="x-small", title="prompted layer", title_fontsize="x-small")
        else:  # a legend of 14-28 entries hides the curves: a colour scale instead
            bar = gate_ax.figure.colorbar(ScalarMappable(norm, cmap), ax=gate_ax, fraction=0.046)
            bar.locator = MaxNLocator(integer=True)
            bar.update_ticks()
            bar.set_label("prompted layer (0 = lowest)")
    else:
        gate_ax.text(0.5, 0.5, "this method has no gates", ha="center", va="center", transform=gate_ax.transAxes)

    eval_ax.set_title(f"{phase['title']}: validation")
    eval_ax.set_xlabel("step")
    for task, curve in sorted(phase["tasks"].items()):
        eval_ax.plot(curve["steps"], curve["values"], marker="o", markersize=3, label=f"{task} ({curve['metric']})")
    if phase["tasks"]:
        eval_ax.legend(fontsize="x-small", ncol=1 + len(phase["tasks"]) // 8)
    else:
        eval_ax.text(0.5, 0.5, "no evaluations logged", ha="center", va="center", transform=eval_ax.transAxes)


def write_run_plot(result: dict, output: Path) -> Path:
    """Draw ``result`` (``run_curves``) into the PNG ``output``."""
    import matplotlib

    matplotlib.use("Agg")  # files only, never a display
    from matplotlib.figure import Figure

    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    rows = len(result["phases"])
    fig = Figure(figsize=(16, 4 * rows), layout="constrained")
    grid = fig.subplots(rows, 3, squeeze=False)
    for phase, axes in zip(result["phases"], grid):
        _draw_phase(axes, phase)
    fig.suptitle(result["folder"])
    fig.savefig(output, dpi=100)
    return output
