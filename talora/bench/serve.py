"""``talora bench serve``: what serving many tasks from one frozen model costs, mixed in a batch or not, and
against the PEFT way of doing it.

Three configurations answer the same requests (batches of ``batch_size`` records) on the same model:

* ``mixed_tasks``: every batch mixes the tasks (round robin); ``Engine.predict`` runs it as one forward
  pass, each example gathering its own task's prompt;
* ``single_task``: the same records regrouped so that each batch holds one task;
* ``peft_switching``: the mixed batches answered the PEFT way: one ``PromptTuning`` adapter per task
  loaded into one ``PeftModel`` (``PeftModel.from_pretrained`` + ``load_adapter``), and per batch, for
  each task in it, ``set_adapter(task)`` and a forward pass over that task's examples.

The engine is called directly, not over HTTP, so the figures measure batching rather than a web stack;
``talora serve`` adds its own per-request cost on top of ``mixed_tasks``. The store holds one prompt-tuning
task per benchmark task, randomly initialised (``save_adapter`` then ``AdapterStore.add``): a speed figure
needs no training, and prompt tuning is the fair match for PEFT's ``PromptTuning``, with the same prompt
length on the same model. PEFT's adapters carry the very same prompts, so both ways compute the same
thing; the share of equal predictions is reported as a check (PEFT pads on the left, so a row's
positions shift by its padding, which can move a near tie).

A fourth measurement, ``job_rows``, asks what teaching a task costs the requests being served (``POST /tasks``,
talora.serving.jobs): the same batches go one at a time through the server's batcher (its queue and worker, no HTTP),
first with nothing else running, then while a training job transfers a randomly initialised TA-LoRA source run
to a new task from 32 examples; the job also runs alone. Reported: request latency percentiles with and
without the job, and the job's wall time alone and while requests keep coming (the job gives the model to
every queued request between two of its steps, so it takes longer when requests keep coming).

Timing: one warm-up batch each, then whole passes interleaved (A B C A B C ...) so drift in the machine's
speed hits every configuration alike; examples/s is the median over the repetitions of the pass's
records over its time, latencies the percentiles of single batches over all repetitions. Each PEFT
forward keeps only the last position's logits (``logits_to_keep=1``), as the engine does; a label word of
several tokens is ranked by its first token on that path (the embedded model's label words are one token
each; on other models the agreement line shows whether that mattered).
"""

from __future__ import annotations

import copy
import json
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from ..adapters.store import AdapterStore
    from ..core.backbone import Backbone
    from ..methods.prompt_tuning import PromptTuning
    from ..serving.engine import Engine
    from ..tasks.base import TaskSpec

ROWS = ("mixed_tasks", "single_task", "peft_switching")
JOB_ROWS = ("no_training_job", "during_training_job")
JOB_EXAMPLES = 32


@dataclass
class ServeRow:
    name: str
    forwards_per_batch: float
    examples_per_s: float
    p50_ms: float
    p95_ms: float
    ratio_to_mixed: float | None = None


@dataclass
class JobRow:
    name: str
    requests: int
    p50_ms: float
    p95_ms: float


def add_random_prompts(
    store: AdapterStore,
    adapter_dir: Path,
    backbone: Backbone,
    specs: dict[str, TaskSpec],
    length: int = 20,
    init_seed: int = 0,
) -> PromptTuning:
    """A randomly initialised prompt-tuning adapter for ``specs``' tasks, saved to ``adapter_dir`` and
    added to ``store``: one task entry each, merged back into one unit by an engine."""
    from ..adapters.files import save_adapter
    from ..methods.prompt_tuning import PromptTuning, PromptTuningConfig

    method = PromptTuning(PromptTuningConfig(length=length, init_seed=init_seed), backbone, list(specs))
    save_adapter(Path(adapter_dir), method, backbone, specs)
    store.add(Path(adapter_dir), backbone)
    return method


def bench_batches(
    tasks: list[str], batch_size: int, requests: int
) -> tuple[list[list[dict]], list[list[dict]], dict[str, TaskSpec]]:
    """(mixed batches, single-task batches, specs): ``requests`` batches each way holding the same records
    from the synthetic suite's test splits; single-task batch i is task i mod T, mixed ones go round robin."""
    from ..adapters.store import record_inputs
    from ..tasks import load_tasks

    loaded = load_tasks(None, tasks)
    specs = {t: loaded[t].spec for t in tasks}
    pools = {
        t: [{"task": t, **{k: ex.fields[k] for k in record_inputs(specs[t])}} for ex in loaded[t].splits["test"]]
        for t in tasks
    }
    used = dict.fromkeys(tasks, 0)
    single = []
    for i in range(requests):
        task = tasks[i % len(tasks)]
        pool = pools[task]
        single.append([pool[(used[task] + j) % len(pool)] for j in range(batch_size)])
        used[task] += batch_size
    by_task = {t: [r for batch in single for r in batch if r["task"] == t] for t in tasks}
    longest = max(len(v) for v in by_task.values())
    flat = [by_task[t][j] for j in range(longest) for t in tasks if j < len(by_task[t])]
    mixed = [flat[i : i + batch_size] for i in range(0, len(flat), batch_size)]
    return mixed, single, specs


class PeftSwitching:
    """The PEFT way: one ``PeftModel`` holding a ``PromptTuning`` adapter per task (the prompts of
    ``method``), switched with ``set_adapter`` for each task group of a batch."""

    def __init__(self, engine: Engine, method: PromptTuning, folder: Path):
        import peft

        from ..core.predict import Verbalizer

        self.engine, backbone = engine, engine.backbone
        self.tokenizer = backbone.tokenizer
        tasks = list(method.task_names)
        config = peft.PromptTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=method.config.length)
        base = copy.deepcopy(backbone.model)
        base.config._attn_implementation = "sdpa"  # PEFT runs the stock attention
        scratch = peft.get_peft_model(copy.deepcopy(base), config)
        for i, task in enumerate(tasks):
            with torch.no_grad():
                scratch.prompt_encoder["default"].embedding.weight.copy_(method.prompt[i])
            scratch.save_pretrained(folder / task)
        del scratch
        self.model = peft.PeftModel.from_pretrained(base, folder / tasks[0], adapter_name=tasks[0])
        for task in tasks[1:]:
            self.model.load_adapter(folder / task, adapter_name=task)
        self.model.eval()
        self.verbs = {t: Verbalizer.of(engine.specs[t], self.tokenizer) for t in tasks}
        self.max_length = {t: engine.store.entry(t)["max_length"] for t in tasks}
        self.forwards = 0

    @torch.no_grad()
    def predict(self, records: list[dict]) -> list[dict]:
        from ..core.batching import encode

        examples = self.engine.check(records)
        groups: dict[str, list[int]] = {}
        for i, ex in enumerate(examples):
            groups.setdefault(ex.task, []).append(i)
        pad = self.tokenizer.pad_token_id
        out: list[dict] = [{} for _ in records]
        for task, rows in groups.items():
            spec, verb = self.engine.specs[task], self.verbs[task]
            prompts = [encode(spec, examples[i], self.tokenizer, self.max_length[task], 0).prompt for i in rows]
            width = max(len(p) for p in prompts)
            ids = torch.tensor([[pad] * (width - len(p)) + list(p) for p in prompts])
            mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
            self.model.set_adapter(task)
            logits = self.model(input_ids=ids, attention_mask=mask, logits_to_keep=1).logits[:, -1]
            self.forwards += 1
            probabilities = logits[:, [w[0] for w in verb.words]].float().softmax(-1)
            for i, p in zip(rows, probabilities):
                out[i] = {
                    "task": task,
                    "prediction": verb.labels[int(p.argmax())],
                    "probabilities": dict(zip(verb.labels, p.tolist())),
                }
        return out


def run_serve_bench(
    backbone: Backbone,
    tasks: list[str],
    batch_size: int = 16,
    requests: int = 16,
    repeats: int = 3,
    length: int = 20,
    progress: Callable[[str], None] = print,
) -> tuple[list[ServeRow], dict]:
    """The benchmark table and a summary of its set-up (see the module docstring)."""
    from ..adapters.store import AdapterStore
    from ..serving.engine import Engine

    mixed, single, specs = bench_batches(tasks, batch_size, requests)
    with tempfile.TemporaryDirectory(prefix="talora-bench-serve-") as tmp:
        root = Path(tmp)
        progress(f"building a store of {len(tasks)} random prompt-tuning tasks (prompt length {length})")
        store = AdapterStore(root / "store")
        method = add_random_prompts(store, root / "adapter", backbone, specs, length)
        engine = Engine(store, backbone, batch_size)
        engine.preload()
        units = engine.units()
        progress("loading the same prompts as PEFT adapters")
        peft_way = PeftSwitching(engine, method, root / "peft")
        runs = {
            "mixed_tasks": (engine.predict, mixed),
            "single_task": (engine.predict, single),
            "peft_switching": (peft_way.predict, mixed),
        }
        with torch.no_grad():
            for run, batches in runs.values():
                run(batches[0])  # warm-up
            peft_way.forwards = 0
            latencies: dict[str, list[list[float]]] = {name: [] for name in ROWS}
            answers: dict[str, list[dict]] = {name: [] for name in ROWS}
            for rep in range(repeats):
                for name in ROWS:
                    run, batches = runs[name]
                    times = []
                    for batch in batches:
                        start = time.perf_counter()
                        out = run(batch)
                        times.append(time.perf_counter() - start)
                        if rep == 0:  # the agreement check costs no extra pass
                            answers[name] += out
                    latencies[name].append(times)
                progress(
                    f"repetition {rep + 1}/{repeats}: " + ", ".join(f"{n} {sum(latencies[n][-1]):.2f}s" for n in ROWS)
                )
    records = sum(len(b) for b in mixed)
    forwards = {
        "mixed_tasks": sum(1 for b in mixed for u in units if any(r["task"] in u for r in b)) / len(mixed),
        "single_task": 1.0,
        "peft_switching": peft_way.forwards / (repeats * len(mixed)),
    }
    rows = []
    for name in ROWS:
        pooled = sorted(t for rep in latencies[name] for t in rep)
        rows.append(
            ServeRow(
                name,
                forwards[name],
                statistics.median(records / sum(rep) for rep in latencies[name]),
                1000 * _percentile(pooled, 50),
                1000 * _percentile(pooled, 95),
            )
        )
    for row in rows:
        row.ratio_to_mixed = row.examples_per_s / rows[0].examples_per_s
    setup = {
        "model": backbone.model_id,
        "tasks": list(tasks),
        "batch_size": batch_size,
        "requests": requests,
        "records_per_pass": records,
        "repeats": repeats,
        "prompt_length": length,
        "device": str(backbone.device),
        "threads": torch.get_num_threads(),
        "engine_units": len(units),
        "peft_agreement": _agreement(answers["mixed_tasks"], answers["peft_switching"]),
    }
    return rows, setup


def run_job_bench(
    backbone: Backbone,
    tasks: list[str],
    batch_size: int = 16,
    requests: int = 16,
    repeats: int = 3,
    length: int = 20,
    steps: int = 30,
    progress: Callable[[str], None] = print,
) -> tuple[list[JobRow], dict]:
    """Request latency with and without a training job, and the job's wall time (module docstring)."""
    from ..adapters.files import save_adapter
    from ..adapters.store import AdapterStore
    from ..atomic import atomic_write
    from ..config import RunConfig, TrainConfig, dump_config
    from ..methods.talora import TALoRA, TALoRAConfig
    from ..serving.engine import Engine
    from ..serving.http import Batcher
    from ..serving.jobs import JobManager
    from ..tasks import SYNTHETIC_TARGET_TASKS, load_tasks

    mixed, _, specs = bench_batches(tasks, batch_size, requests)
    new_task = next((t for t in SYNTHETIC_TARGET_TASKS if t not in tasks), SYNTHETIC_TARGET_TASKS[0])
    pool = load_tasks(None, [new_task])[new_task].splits["train"][:JOB_EXAMPLES]
    # The task may read one text or a pair (text_a, text_b): a job takes the example's own fields.
    examples = [{**ex.fields, "label": ex.label} for ex in pool]
    with tempfile.TemporaryDirectory(prefix="talora-bench-job-") as tmp:
        root = Path(tmp)
        progress(f"building a store of {len(tasks)} random TA-LoRA source tasks (prompt length {length})")
        store = AdapterStore(root / "store")
        source = TALoRA(TALoRAConfig(length=length), backbone, list(specs))
        save_adapter(root / "src", source, backbone, specs)
        transfer = TrainConfig(steps=steps, batch_size=8, warmup_steps=min(10, steps - 1), eval_every=0)
        cfg = RunConfig(method="talora", tasks=list(tasks), method_args={"length": length}, transfer=transfer)
        atomic_write(root / "src" / "config.yaml", dump_config(cfg).encode())
        store.add(root / "src", backbone)
        engine = Engine(store, backbone, batch_size)
        engine.preload()
        batcher = Batcher(engine, batch_size, 0, 10 * len(mixed))
        jobs = JobManager(store, backbone, batcher, served=lambda: batcher.engine.tasks)
        taught = 0

        def job() -> str:
            nonlocal taught
            taught += 1
            return jobs.submit({"name": f"bench-{taught}", "examples": examples, "seed": 0})["id"]

        def finished(job_id: str) -> bool:
            record = jobs.get(job_id)
            if record["state"] in ("failed", "cancelled"):
                raise RuntimeError(f"bench serve: the training job {record['state']}: {record['error']}")
            return record["state"] == "succeeded"

        def ask(batch: list[dict]) -> float:
            start = time.perf_counter()
            batcher.submit(batch).result()
            return time.perf_counter() - start

        latencies: dict[str, list[float]] = {name: [] for name in JOB_ROWS}
        alone, busy = [], []
        try:
            ask(mixed[0])  # warm-up
            for rep in range(repeats):
                latencies["no_training_job"] += [ask(batch) for batch in mixed]
                start = time.perf_counter()
                job_id = job()
                while not finished(job_id):
                    time.sleep(0.01)
                alone.append(time.perf_counter() - start)
                start = time.perf_counter()
                job_id, i = job(), 0
                while not finished(job_id) or i < len(mixed):  # at least one whole pass, until the job is done
                    latencies["during_training_job"].append(ask(mixed[i % len(mixed)]))
                    i += 1
                busy.append(time.perf_counter() - start)
                progress(
                    f"repetition {rep + 1}/{repeats}: job alone {alone[-1]:.2f}s, "
                    f"with requests {busy[-1]:.2f}s ({i} requests answered meanwhile)"
                )
        finally:
            jobs.shutdown()
            batcher.close()
    rows = []
    for name in JOB_ROWS:
        pooled = sorted(latencies[name])
        rows.append(JobRow(name, len(pooled), 1000 * _percentile(pooled, 50), 1000 * _percentile(pooled, 95)))
    setup = {
        "job_steps": steps,
        "job_examples": len(examples),
        "job_task": new_task,
        "job_alone_s": statistics.median(alone),
        "job_with_requests_s": statistics.median(busy),
    }
    return rows, setup


def format_job_table(rows: list[JobRow], setup: dict, batch_size: int) -> str:
    lines = [
        f"One request of {batch_size} records at a time through the server's batcher (no HTTP), with and without "
        f"a training job ({setup['job_examples']} examples of {setup['job_task']}, {setup['job_steps']} steps, "
        "random TA-LoRA base)",
        "",
        "| requests | answered | p50 latency (ms) | p95 latency (ms) |",
        "|---|---|---|---|",
    ]
    for r in rows:
        lines.append(f"| {r.name} | {r.requests} | {r.p50_ms:.1f} | {r.p95_ms:.1f} |")
    lines.append("")
    lines.append(
        f"Training job wall time: {setup['job_alone_s']:.2f} s alone, {setup['job_with_requests_s']:.2f} s while "
        "answering requests (medians)."
    )
    return "\n".join(lines)


def _agreement(ours: list[dict], theirs: list[dict]) -> float:
    return sum(a["prediction"] == b["prediction"] for a, b in zip(ours, theirs)) / len(ours)


def _percentile(ordered: list[float], q: float) -> float:
    """Linear interpolation between the closest ranks (numpy's default)."""
    pos = (len(ordered) - 1) * q / 100
    low = int(pos)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


def format_table(rows: list[ServeRow], setup: dict) -> str:
    lines = [
        f"{setup['model']}, {len(setup['tasks'])} prompt-tuning tasks (prompt length {setup['prompt_length']}), "
        f"batch {setup['batch_size']}, {setup['requests']} batches per pass, median of {setup['repeats']}, "
        f"device {setup['device']} ({setup['threads']} threads); engine called directly, no HTTP",
        "",
        "| configuration | forwards per batch | examples/s | p50 latency (ms) | p95 latency (ms) | × mixed |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r.name} | {r.forwards_per_batch:.1f} | {r.examples_per_s:.1f} | {r.p50_ms:.1f} | {r.p95_ms:.1f} "
            f"| {r.ratio_to_mixed:.2f} |"
        )
    lines.append("")
    lines.append(f"PEFT and the engine agree on {100 * setup['peft_agreement']:.1f}% of the predictions.")
    return "\n".join(lines)


def write_json(
    rows: list[ServeRow], setup: dict, path: Path, job_rows: list[JobRow] | None = None, job: dict | None = None
) -> None:
    report = {"setup": setup, "rows": [asdict(r) for r in rows]}
    if job_rows is not None:
        report["job_rows"] = [asdict(r) for r in job_rows]
        report["job"] = job
    Path(path).write_text(json.dumps(report, indent=1))
