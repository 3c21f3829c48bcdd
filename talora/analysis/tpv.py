"""The task-prompt-vector analyses of Belanec et al. and DTVG's grouping trajectory.

* ``init_transfer``: a TPV on its own initialisation vs on the other runs' initialisations
  (their Table 1, "Original" / "Mixed"), from ``tpv`` runs that differ only in init_seed;
  ``train_init_runs`` trains those runs from one config.
* ``similarity``: cosine similarity of task prompts and of TPVs between tasks, averaged
  over pairs of different initialisations (their Figure 2), beside DTVG's dot-product
  similarity (its eq. 2, Figure 10).
* ``grouping``: the source group DTVG chose at each logged step (its Figure 7).

Every analysis writes ``<name>.md``, ``<name>.png`` and ``<name>.json`` into its output folder.
"""

from __future__ import annotations

import dataclasses
import json
import statistics
from dataclasses import dataclass
from pathlib import Path

import torch

from .. import tasks as T
from ..adapters.files import TENSORS, load_adapter, read_sidecar
from ..atomic import atomic_write, read_tensors
from ..config import RunConfig, load_config
from ..core.backbone import Backbone, BackboneLoader, load_backbone
from ..core.batching import encode
from ..core.predict import Verbalizer, evaluate
from ..errors import AdapterError, ConfigError, DataError
from ..methods.tpv import TPV
from ..methods.tpv_math import cosine_matrix, pooled
from ..recipes.pipeline import run_train
from ..recipes.runs import RunManifest


# --- reading task prompt vectors --------------------------------------------------------------
@dataclass
class TaskVectors:
    """The shared initialisation (m, d) and the TPVs (T, m, d) one adapter holds."""

    folder: Path
    names: list[str]
    init: torch.Tensor
    tpvs: torch.Tensor
    base_model: str


def read_task_vectors(folder: Path) -> TaskVectors:
    """Read a ``tpv`` adapter (or a ``dtvg`` one: its stage-I source TPVs) without loading a model."""
    folder = Path(folder)
    sidecar = read_sidecar(folder)
    tensors = read_tensors(folder / TENSORS, AdapterError)
    if sidecar["method"] == "tpv":
        names, key = [t["name"] for t in sidecar["tasks"]], "tpv"
    elif sidecar["method"] == "dtvg":
        names, key = sidecar["config"].get("sources") or [t["name"] for t in sidecar["tasks"]], "source_tpvs"
    else:
        raise AdapterError(
            f"{folder}: a {sidecar['method']!r} adapter holds no task prompt vectors (give a tpv or dtvg run)"
        )
    if key not in tensors or "init" not in tensors:
        raise AdapterError(f"{folder / TENSORS}: tensors {key!r} and 'init' are missing")
    return TaskVectors(folder, names, tensors["init"].double(), tensors[key].double(), sidecar["base_model"]["id"])


def _common_tasks(runs: list[TaskVectors]) -> list[str]:
    names = runs[0].names
    for run in runs[1:]:
        if sorted(run.names) != sorted(names):
            raise ConfigError(
                f"runs {runs[0].folder} and {run.folder} hold different tasks "
                f"({', '.join(names)} vs {', '.join(run.names)})"
            )
        if run.base_model != runs[0].base_model:
            raise ConfigError(f"runs {runs[0].folder} and {run.folder} were trained on different base models")
    return names


def _init_pairs(count: int) -> list[tuple[int, int]]:
    """Ordered pairs of different runs; a single run is compared with itself."""
    pairs = [(a, b) for a in range(count) for b in range(count) if a != b]
    return pairs or [(0, 0)]


# --- similarity (TPV paper Fig. 2, DTVG Fig. 10) ------------------------------------------------
def similarity(folders: list[Path]) -> dict:
    """Task x task matrices averaged over runs: cosine of pooled prompts, cosine of pooled TPVs
    (over ordered pairs of different initialisations, so the diagonal compares a task with
    itself across initialisations) and DTVG's eq. 2 within each run."""
    runs = [read_task_vectors(f) for f in folders]
    names = _common_tasks(runs)
    order = [[run.names.index(n) for n in names] for run in runs]
    tpv = [pooled(run.tpvs[idx]) for run, idx in zip(runs, order)]  # (T, d) per run
    prompt = [pooled(run.init + run.tpvs[idx]) for run, idx in zip(runs, order)]
    pairs = _init_pairs(len(runs))
    prompt_cos = sum(cosine_matrix(prompt[a], prompt[b]) for a, b in pairs) / len(pairs)
    tpv_cos = sum(cosine_matrix(tpv[a], tpv[b]) for a, b in pairs) / len(pairs)
    dot = sum(v @ v.T for v in tpv) / len(tpv)
    return {
        "tasks": names,
        "runs": [str(f) for f in folders],
        "init_pairs": len(pairs),
        "prompt_cosine": prompt_cos.tolist(),
        "tpv_cosine": tpv_cos.tolist(),
        "tpv_dot": dot.tolist(),
    }


def _matrix_md(title: str, names: list[str], matrix: list[list[float]], fmt: str) -> list[str]:
    lines = [f"### {title}", "", "| | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
    lines += [f"| {n} | " + " | ".join(format(v, fmt) for v in row) + " |" for n, row in zip(names, matrix)]
    return lines + [""]


def write_similarity(result: dict, output: Path) -> list[Path]:
    names = result["tasks"]
    panels = [
        ("Cosine similarity of task prompts", result["prompt_cosine"], ".2f"),
        ("Cosine similarity of task prompt vectors", result["tpv_cosine"], ".2f"),
        ("DTVG similarity (eq. 2: dot product of token-averaged TPVs)", result["tpv_dot"], ".3g"),
    ]
    lines = [
        "# Task prompts vs task prompt vectors",
        "",
        f"{len(result['runs'])} run(s); cosines averaged over {result['init_pairs']} ordered pair(s) of "
        "initialisations (different ones when there are several, so the diagonal compares a task "
        "with itself across initialisations); vectors are averaged over their m tokens first.",
        "",
    ]
    for title, matrix, fmt in panels:
        lines += _matrix_md(title, names, matrix, fmt)

    def draw(fig):
        axes = fig.subplots(1, 3)
        for ax, (title, matrix, fmt) in zip(axes, panels):
            _heatmap(ax, names, matrix, title, fmt)

    return _write(output, "similarity", result, lines, draw, (6 + 4.2 * 3, 5 + 0.25 * len(names)))


# --- original vs mixed initialisation (TPV paper Table 1) ---------------------------------------
def train_init_runs(config: Path, seeds: list[int], output: Path) -> list[Path]:
    """Train ``tpv`` once per init seed into ``output/init-<seed>``; finished, intact runs are kept."""
    cfg = load_config(config)
    if cfg.method != "tpv":
        raise ConfigError(f"{config}: method is {cfg.method!r}; the initialisation study trains 'tpv'")
    if len(set(seeds)) < 2:
        raise ConfigError(f"--init-seeds: give at least two different seeds, got {seeds}")
    manifest = RunManifest(output)
    loader = BackboneLoader()  # loads the model only if a run is left to train
    folders = []
    for seed in seeds:
        run_cfg = dataclasses.replace(cfg, method_args={**cfg.method_args, "init_seed": seed})
        folder = Path(output) / f"init-{seed}"

        def unit(c=run_cfg, f=folder):
            return run_train(c, f, backbone=loader.get(c.model, c.dtype, c.device))

        manifest.run(f"tpv init_seed={seed}", folder, unit)
        folders.append(folder)
    return folders


def _evaluation_items(backbone, cfg: RunConfig, names: list[str], split: str | None, examples: int):
    tasks = T.load_tasks(cfg.data_dir, names)
    items, splits = [], {}
    for task_id, name in enumerate(names):
        chosen = split or T.evaluation_split(tasks[name])
        exs = tasks[name].splits.get(chosen, [])
        if not exs:
            raise DataError(f"task {name!r} has no examples in split {chosen!r}")
        exs = exs[:examples] if examples else exs
        splits[name] = chosen
        items += [encode(tasks[name].spec, ex, backbone.tokenizer, cfg.max_length, task_id) for ex in exs]
    verbs = {i: Verbalizer.of(tasks[n].spec, backbone.tokenizer) for i, n in enumerate(names)}
    metrics = {n: tasks[n].spec.metric for n in names}
    return items, verbs, metrics, splits


def init_transfer(
    folders: list[Path], split: str | None = None, examples: int = 0, backbone: Backbone | None = None
) -> dict:
    """Score every run's TPVs (lambda = 1) on every run's initialisation: scores[task][a][b] is
    task's headline metric with init_b + T_a; a == b is the trained prompt ("Original")."""
    folders = [Path(f) for f in folders]
    if len(folders) < 2:
        raise ConfigError("the initialisation study needs at least two tpv runs (different init_seed)")
    cfg = load_config(folders[0] / "config.yaml")
    backbone = backbone or load_backbone(cfg.model, cfg.dtype, cfg.device)
    methods = [load_adapter(f, backbone, expect_method="tpv")[0] for f in folders]
    names = methods[0].task_names
    for f, m in zip(folders, methods):
        if m.task_names != names:
            raise ConfigError(
                f"runs {folders[0]} and {f} hold different tasks ({', '.join(names)} vs {', '.join(m.task_names)})"
            )
    for a in range(len(methods)):
        for b in range(a):
            if torch.equal(methods[a].init, methods[b].init):
                raise ConfigError(
                    f"runs {folders[b]} and {folders[a]} share one initialisation; "
                    "train them with different method_args.init_seed"
                )
    items, verbs, metrics, splits = _evaluation_items(backbone, cfg, names, split, examples)
    scores = {n: [[0.0] * len(methods) for _ in methods] for n in names}
    for a, source in enumerate(methods):
        for b, base in enumerate(methods):
            mixed = TPV(base.config, backbone, names)
            with torch.no_grad():
                mixed.init.copy_(base.init)
                mixed.tpv.copy_(source.tpv)
            result = evaluate(backbone, mixed, items, verbs)
            for n in names:
                scores[n][a][b] = result[n][metrics[n]]
    return {
        "tasks": names,
        "runs": [str(f) for f in folders],
        "splits": splits,
        "metrics": metrics,
        "init_seeds": [m.config.init_seed for m in methods],
        "scores": scores,
    }


def _mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), statistics.pstdev(values) if len(values) > 1 else 0.0


def init_transfer_rows(result: dict) -> list[dict]:
    """Per task (and the average): Original = a TPV on its own init; Mixed = on the others' inits."""
    rows = []
    for n in result["tasks"]:
        s = result["scores"][n]
        original = [s[a][a] for a in range(len(s))]
        mixed = [s[a][b] for a in range(len(s)) for b in range(len(s)) if a != b]
        (o, o_sd), (x, x_sd) = _mean_std(original), _mean_std(mixed)
        rows.append({"task": n, "original": o, "original_std": o_sd, "mixed": x, "mixed_std": x_sd})
    (o, o_sd), (x, x_sd) = _mean_std([r["original"] for r in rows]), _mean_std([r["mixed"] for r in rows])
    rows.append({"task": "average", "original": o, "original_std": o_sd, "mixed": x, "mixed_std": x_sd})
    return rows


def write_init_transfer(result: dict, output: Path) -> list[Path]:
    rows = init_transfer_rows(result)
    lines = [
        "# Task prompt vectors on their original vs other initialisations",
        "",
        f"Runs (init_seed): {', '.join(f'{r} ({s})' for r, s in zip(result['runs'], result['init_seeds']))}. "
        "Original = init_i + T_i (the trained prompt), mean over runs; Mixed = init_j + T_i for j != i "
        "(lambda = 1), mean over ordered pairs; ± = population standard deviation (the average row: across "
        "tasks). "
        "Metric (split) per task: "
        + ", ".join(f"{n}: {result['metrics'][n]} ({result['splits'][n]})" for n in result["tasks"])
        + ".",
        "",
        "| task | original | mixed | Δ |",
        "|---|---|---|---|",
    ]
    for r in rows:
        bold = "**" if r["task"] == "average" else ""
        delta = 100 * (r["mixed"] - r["original"])
        lines.append(
            f"| {bold}{r['task']}{bold} | {100 * r['original']:.1f} ± {100 * r['original_std']:.1f} | "
            f"{100 * r['mixed']:.1f} ± {100 * r['mixed_std']:.1f} | {delta:+.1f} |"
        )

    def draw(fig):
        ax = fig.subplots()
        xs = range(len(rows))
        ax.bar(
            [x - 0.2 for x in xs],
            [100 * r["original"] for r in rows],
            0.4,
            yerr=[100 * r["original_std"] for r in rows],
            label="original init",
            capsize=3,
        )
        ax.bar(
            [x + 0.2 for x in xs],
            [100 * r["mixed"] for r in rows],
            0.4,
            yerr=[100 * r["mixed_std"] for r in rows],
            label="mixed init",
            capsize=3,
        )
        ax.set_xticks(list(xs), [r["task"] for r in rows], rotation=30, ha="right")
        ax.set_ylabel("score (%)")
        ax.set_title("Task prompt vectors on original vs other initialisations")
        ax.legend()

    return _write(output, "tpv-inits", {**result, "rows": rows}, lines, draw, (2 + 1.1 * len(rows), 4.5))


# --- DTVG grouping trajectory (Fig. 7) ----------------------------------------------------------
def grouping(log: Path) -> dict:
    """Per task: the logged steps with the group (ranked) and each source's similarity to the target."""
    log = Path(log)
    if not log.is_file():
        raise DataError(f"{log}: no such training log")
    by_step: dict[int, dict] = {}
    for number, line in enumerate(log.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            raise DataError(f"{log}:{number}: not valid JSON ({err})") from None
        if "group" in record:
            by_step[record["step"]] = record  # a resumed run logs some steps again: the last one stands
    if not by_step:
        raise DataError(
            f"{log}: no DTVG grouping records (the log.jsonl of a dtvg run or transfer, ideally with log_every: 1)"
        )
    steps = sorted(by_step)
    tasks = list(by_step[steps[0]]["group"])
    result = {"log": str(log), "tasks": {}}
    for task in tasks:
        sources = list(by_step[steps[0]]["sim"][task])
        result["tasks"][task] = {
            "sources": sources,
            "steps": steps,
            "group": [by_step[s]["group"][task] for s in steps],
            "sim": [[by_step[s]["sim"][task][src] for src in sources] for s in steps],
            "loss": [by_step[s].get("loss") for s in steps],
        }
    return result


def grouping_segments(steps: list[int], groups: list[list[str]]) -> list[tuple[int, int, list[str]]]:
    """Runs of consecutive logged steps with the same group: (first step, last step, group)."""
    segments: list[tuple[int, int, list[str]]] = []
    for step, group in zip(steps, groups):
        if segments and segments[-1][2] == group:
            segments[-1] = (segments[-1][0], step, group)
        else:
            segments.append((step, step, group))
    return segments


def write_grouping(result: dict, output: Path) -> list[Path]:
    lines = [
        "# DTVG source-task grouping during training",
        "",
        f"From {result['log']}. Groups are ranked by "
        "similarity to the target (highest first); a change counts when consecutive logged steps differ.",
        "",
    ]
    for task, data in result["tasks"].items():
        segments = grouping_segments(data["steps"], data["group"])
        lines += [
            f"## {task}: {len(segments) - 1} change(s) over {len(data['steps'])} logged steps",
            "",
            "| steps | group |",
            "|---|---|",
        ]
        lines += [f"| {a}–{b} | {', '.join(g) or '(target only)'} |" for a, b, g in segments]
        lines.append("")

    count = len(result["tasks"])
    cols = min(count, 3)
    rows = -(-count // cols)

    def draw(fig):
        axes = fig.subplots(2 * rows, cols, squeeze=False)
        for k in range(count, rows * cols):  # the last row's empty places
            axes[2 * (k // cols)][k % cols].set_visible(False)
            axes[2 * (k // cols) + 1][k % cols].set_visible(False)
        for k, (task, data) in enumerate(result["tasks"].items()):
            sources, steps = data["sources"], data["steps"]
            member = [[1.0 if src in group else 0.0 for group in data["group"]] for src in sources]
            top, bottom = axes[2 * (k // cols)][k % cols], axes[2 * (k // cols) + 1][k % cols]
            top.imshow(
                member,
                aspect="auto",
                interpolation="nearest",
                cmap="Greens",
                vmin=0,
                vmax=1,
                extent=(steps[0] - 0.5, steps[-1] + 0.5, len(sources) - 0.5, -0.5),
            )
            top.set_yticks(range(len(sources)), sources)
            top.set_title(f"{task}: source group per step")
            for i, src in enumerate(sources):
                bottom.plot(steps, [row[i] for row in data["sim"]], label=src)
            bottom.axhline(0.0, color="grey", linewidth=0.8)
            bottom.set_xlim(steps[0] - 0.5, steps[-1] + 0.5)  # aligned with the raster above
            bottom.set_xlabel("step")
            bottom.set_ylabel("sim(target, source)")
            bottom.legend(fontsize="small")

    height = rows * (5 + 0.3 * max(len(d["sources"]) for d in result["tasks"].values()))
    return _write(output, "grouping", result, lines, draw, (2 + 5.5 * cols, height))


# --- output -------------------------------------------------------------------------------------
def _heatmap(ax, names: list[str], matrix: list[list[float]], title: str, fmt: str) -> None:
    image = ax.imshow(matrix, cmap="viridis")
    ax.set_xticks(range(len(names)), names, rotation=45, ha="right")
    ax.set_yticks(range(len(names)), names)
    ax.set_title(title, fontsize="medium")
    if len(names) <= 12:
        for i, row in enumerate(matrix):
            for j, v in enumerate(row):
                ax.text(j, i, format(v, fmt), ha="center", va="center", color="white", fontsize="small")
    ax.figure.colorbar(image, ax=ax, fraction=0.046)


def _write(output: Path, name: str, result: dict, lines: list[str], draw, size: tuple[float, float]) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")  # files only, never a display
    from matplotlib.figure import Figure

    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    paths = [output / f"{name}.md", output / f"{name}.png", output / f"{name}.json"]
    atomic_write(paths[0], ("\n".join(lines) + "\n").encode())
    fig = Figure(figsize=size, layout="constrained")
    draw(fig)
    fig.savefig(paths[1], dpi=120)
    atomic_write(paths[2], json.dumps(result, indent=1).encode())
    return paths
