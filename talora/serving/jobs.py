"""Teaching a store a new task from a few labelled examples: ``POST /tasks`` in ``talora serve``, and
``talora store adapt`` without a server.

A job is ``talora transfer --k K --seed S`` followed by ``talora store add``, run on a model already
loaded. Its base is a trained source run held by the store (by default its TA-LoRA run): the run's
stored tasks are merged back into the run's method, in the run's task order, and written as an adapter
folder with the run's config beside it, so ``pipeline.run_transfer`` (the recipe ``talora transfer``
runs) starts from exactly what ``talora transfer --from RUN`` would. The examples are written as the
train split of a data folder without a manifest, so they are read as any such folder is: the kind and
labels inferred from them, and a seeded tenth of them (at least one, never a label's last example) held
out as the validation split the new task is scored on. Everything a job writes lives in the store's
``jobs/`` folder::

    DIR/jobs/<id>.json          the job's record: its request, state, progress and result
    DIR/jobs/<id>.lock          held (flock) by the process running the job, for as long as it runs
    DIR/jobs/<id>/base/         the base adapter and its run config
    DIR/jobs/<id>/data/<name>/  the examples, as train.jsonl
    DIR/jobs/<id>/adapter/      the transfer's output (adapter, metrics.json, config.yaml, log.jsonl)

Why the store stays as it was until a job succeeds. The store's index changes once, at the end, through
``AdapterStore.add`` (new files first, the index replaced atomically last). A job cancelled, failed or
stopped before that point deletes its folder; a process killed during it leaves the store as it was and
a record saying ``running``, which the next ``JobManager`` on the store finds (the record's lock is free:
a killed process holds no flock) and marks failed, deleting the folder, or succeeded when the index
already names the job's adapter (a kill after the index was written).

Why jobs yield to requests. A server has one frozen model; a training step and a batch of requests
cannot run on it at once (weight-changing methods patch it, and a fast tokenizer is not thread-safe).
The server's batcher owns the model (``Batcher.training_turn``): a job runs its steps only while no
request waits, and gives the model back between two steps whenever one does, so a request waits for
at most the step under way, or for the job's short set-up and held-out scoring.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import json
import os
import re
import shutil
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from ..atomic import atomic_write
from ..errors import TaloraError

if TYPE_CHECKING:
    from ..adapters.store import AdapterStore
    from ..config import TrainConfig
    from ..core.backbone import Backbone
    from ..methods.base import Method
    from ..tasks.base import Task, TaskSpec

JOBS = "jobs"
MIN_EXAMPLES = 4
MAX_EXAMPLES = 10_000
MAX_STEPS = 100_000
# Task names become file and folder names (entries, the job's data folder): letters, digits, _ and -.
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")
FORMS = {"single": ("text",), "pair": ("text_a", "text_b")}
FIELDS = ("name", "examples", "labels", "template", "from", "steps", "k", "seed")
LIVE = ("queued", "running", "cancelling")
DONE = ("succeeded", "failed", "cancelled")
RECORD_EVERY_S = 1.0  # progress reaches the record on disk at most this often (each write is synced)
RETRY_AFTER_S = 10


class Refused(TaloraError):
    """A request to teach a task that cannot be accepted, with the HTTP status that says why."""

    def __init__(self, status: int, message: str, headers: dict | None = None):
        super().__init__(message)
        self.status, self.headers = status, headers or {}


class Stopped(Exception):
    """Raised inside a job that was cancelled, or whose server is shutting down, at its next step."""


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


# ------------------------------------------------------------------ checking a request
@dataclass
class Request:
    name: str
    examples: list[dict]  # each {"text", "label"} or {"text_a", "text_b", "label"}, as given
    form: str
    labels: list[str] | None
    template: str | None
    source: str | None  # the request's "from": a stored task of the base run
    steps: int | None
    k: int | str
    seed: int

    def describe(self) -> dict:
        return {
            "name": self.name,
            "examples": len(self.examples),
            "labels": self.labels,
            "template": self.template,
            "from": self.source,
            "steps": self.steps,
            "k": self.k,
            "seed": self.seed,
        }


def parse_request(body, where: list[str] | None = None) -> Request:
    """The request of a ``POST /tasks`` body (or of ``talora store adapt``'s options and file), or a
    Refused naming the field or example; ``where`` names each example (default ``example <i>``)."""
    from ..tasks.sampling import K_ALL

    if not isinstance(body, dict):
        raise Refused(422, 'the body must be a JSON object {"name": ..., "examples": [...]}')
    unknown = [key for key in body if key not in FIELDS]
    if unknown:
        raise Refused(422, f"field {unknown[0]!r} is not known; a request has {', '.join(FIELDS)}")
    name = body.get("name")
    if not isinstance(name, str) or not NAME.fullmatch(name):
        raise Refused(
            422,
            f"field 'name' must be a task name of letters, digits, _ and - (at most 64, starting with a letter "
            f"or digit), got {name!r}",
        )
    examples = body.get("examples")
    if not isinstance(examples, list):
        raise Refused(422, 'field \'examples\' must be a list of examples {"text", "label"}')
    if len(examples) > MAX_EXAMPLES:
        raise Refused(413, f"{len(examples)} examples; at most {MAX_EXAMPLES}")
    if len(examples) < MIN_EXAMPLES:
        raise Refused(
            422,
            f"too few examples: {len(examples)}; a task needs at least {MIN_EXAMPLES} (a tenth of them, at "
            "least one, is held out to score it)",
        )
    form, checked = check_examples(examples, where)
    labels = body.get("labels")
    seen = list(dict.fromkeys(ex["label"] for ex in checked))
    if labels is not None:
        if (
            not isinstance(labels, list)
            or not all(isinstance(lab, str) and lab for lab in labels)
            or len(set(labels)) != len(labels)
        ):
            raise Refused(422, "field 'labels' must be a list of distinct non-empty strings")
        for i, ex in enumerate(checked):
            if ex["label"] not in labels:
                here = where[i] if where else f"example {i}"
                raise Refused(422, f"{here}: label {ex['label']!r} is not one of the labels given: {', '.join(labels)}")
        missing = [lab for lab in labels if lab not in seen]
        if missing:
            raise Refused(422, f"label(s) {', '.join(map(repr, missing))} have no example: give at least one of each")
    if len(seen) < 2:
        raise Refused(422, f"every example has the label {seen[0]!r}: a task needs at least two labels")
    template = body.get("template")
    if template is not None:
        from ..tasks.templates import template_fields

        if not isinstance(template, str) or not template.strip():
            raise Refused(422, "field 'template' must be a non-empty string such as \"Review: {text}\\nSentiment:\"")
        try:
            used = template_fields(template)
        except ValueError as err:
            raise Refused(422, f"field 'template' is not a format string ({err})") from None
        if used != set(FORMS[form]):
            braced = lambda names: ", ".join("{" + f + "}" for f in names) or "none"  # noqa: E731
            raise Refused(
                422,
                f"field 'template' must use exactly the examples' fields {braced(FORMS[form])}; "
                f"it uses {braced(sorted(used))}",
            )
    source = body.get("from")
    if source is not None and not isinstance(source, str):
        raise Refused(422, "field 'from' must be the name of a stored task whose run to transfer from")
    steps = body.get("steps")
    if steps is not None and (not _positive_int(steps) or steps > MAX_STEPS):
        raise Refused(422, f"field 'steps' must be a whole number from 1 to {MAX_STEPS}, got {steps!r}")
    k = body.get("k", K_ALL)
    if k != K_ALL and not _positive_int(k):
        raise Refused(422, f"field 'k' must be a positive number of examples per label, or {K_ALL!r}, got {k!r}")
    seed = body.get("seed", 0)
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise Refused(422, f"field 'seed' must be a whole number, got {seed!r}")
    return Request(name, checked, form, labels, template, source, steps, k, seed)


def _positive_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def check_examples(examples: list, where: list[str] | None = None) -> tuple[str, list[dict]]:
    """(form, examples): every example is ``{"text", "label"}`` or ``{"text_a", "text_b", "label"}`` of
    non-empty strings, all of one form; else a Refused naming the example and the field."""
    form = None
    checked = []
    for i, ex in enumerate(examples):
        here = where[i] if where else f"example {i}"
        if not isinstance(ex, dict):
            raise Refused(422, f'{here}: expected a JSON object {{"text", "label"}}, got {type(ex).__name__}')
        mine = "pair" if "text_a" in ex or "text_b" in ex else "single"
        inputs = FORMS[mine]
        for key in ex:
            if key not in (*inputs, "label"):
                raise Refused(
                    422,
                    f"{here}: field {key!r} is not known; an example has text and label, or text_a, text_b and label",
                )
        for key in (*inputs, "label"):
            if key not in ex:
                raise Refused(422, f"{here}: field {key!r} is missing")
            if not isinstance(ex[key], str) or not ex[key].strip():
                raise Refused(422, f"{here}: field {key!r} must be a non-empty string, got {ex[key]!r}")
        if form is None:
            form = mine
        elif mine != form:
            raise Refused(422, f"{here}: a {mine} example among {form} ones; give every example the same fields")
        checked.append({key: ex[key] for key in (*inputs, "label")})
    return form or "single", checked


# ------------------------------------------------------------------ the base a task transfers from
@dataclass
class Base:
    """Stored tasks of one trained run that a new task transfers from, in the run's order."""

    tasks: list[str]
    method: str
    source: str  # the folder the run was added from
    whole: bool  # stored as one unit (a method whose tasks cannot be split)
    entries: dict[str, dict]
    run_config: dict
    recipe: str  # where the run config came from

    def describe(self) -> dict:
        return {"tasks": self.tasks, "method": self.method, "source": self.source, "run_config": self.recipe}


def _transferred(entry: dict) -> bool:
    return bool(entry.get("source_adapter")) or bool((entry.get("state") or {}).get("transfer"))


def _run_key(entry: dict) -> tuple:
    return (entry.get("source"), entry["method"], json.dumps(entry.get("config"), sort_keys=True))


def find_base(store: AdapterStore, wanted: str | None) -> Base:
    """The run a new task transfers from: the run of stored task ``wanted``, else the store's one TA-LoRA
    source run; a Refused saying why there is none (no model is loaded)."""
    damaged: dict[str, str] = {}
    _, entries = store.entries(damaged=damaged)
    runs: dict[tuple, list[str]] = {}
    for task, entry in entries.items():
        if not _transferred(entry):
            runs.setdefault(_run_key(entry), []).append(task)
    if wanted is not None:
        if wanted in damaged:
            raise Refused(422, f"cannot transfer from {wanted!r}: its stored files are damaged ({damaged[wanted]})")
        if wanted not in entries:
            raise Refused(
                404, f"field 'from': the store has no task {wanted!r}; it has: {', '.join(entries) or 'none'}"
            )
        entry = entries[wanted]
        if _transferred(entry):
            sources = ", ".join(sorted(t for tasks in runs.values() for t in tasks)) or "none"
            raise Refused(
                422,
                f"cannot transfer from {wanted!r}: it was itself transferred from a source run "
                f"({entry.get('source_adapter') or 'a few-shot target'}); name a task of a trained source run "
                f"(in this store: {sources})",
            )
        key = _run_key(entry)
    else:
        talora = [key for key in runs if key[1] == "talora"]
        if len(talora) != 1:
            listed = "; ".join(f"{', '.join(tasks)} ({key[1]}, from {key[0]})" for key, tasks in runs.items())
            how = "holds no TA-LoRA source run" if not talora else f"holds {len(talora)} TA-LoRA source runs"
            raise Refused(
                422,
                f"the store {how} to transfer from by default; name the base with field 'from' (a task of "
                f"the run): {listed or 'the store holds no source run at all'}",
            )
        key = talora[0]
    first = entries[runs[key][0]]
    order = (first.get("training") or {}).get("tasks") or []
    rank = {t: i for i, t in enumerate(order)}
    tasks = sorted(runs[key], key=lambda t: (rank.get(t, len(rank)), t))
    whole = not first["unit"]["split"]
    if whole:
        tasks = [t for t in tasks if entries[t]["unit"]["id"] == first["unit"]["id"]]
    problems = store.verify(tasks)
    if problems:
        bad = "; ".join(f"{p['file']} {p['problem']}" for p in problems)
        raise Refused(422, f"cannot transfer from the run of {', '.join(tasks)}: its stored files are damaged ({bad})")
    run_config, recipe = _run_config(first)
    chosen = {t: entries[t] for t in tasks}
    return Base(tasks, first["method"], str(first.get("source")), whole, chosen, run_config, recipe)


def _run_config(entry: dict) -> tuple[dict, str]:
    """The base run's config, with what it came from: the store's copy, else the run folder's
    config.yaml, else the defaults with the recorded max_length."""
    from ..config import read_yaml

    if isinstance(entry.get("run_config"), dict):
        return dict(entry["run_config"]), "stored with the run"
    source = Path(str(entry.get("source")))
    if (source / "config.yaml").is_file():
        return read_yaml(source / "config.yaml", "run config"), f"{source / 'config.yaml'}"
    return (
        {"method": entry["method"], "max_length": entry.get("max_length", 256)},
        "defaults (the store records no run config for this run)",
    )


def load_base(store: AdapterStore, base: Base, backbone: Backbone) -> tuple[Method, dict[str, TaskSpec]]:
    """The base run's method, rebuilt from its stored tasks, and their specs."""
    from ..adapters.files import spec_from_dict
    from ..errors import AdapterError
    from ..methods import method_class

    cache: dict = {}
    if base.whole:
        method = store.load_unit(base.entries[base.tasks[0]], backbone, cache)
    else:
        pieces = [store.load_unit(base.entries[t], backbone, cache) for t in base.tasks]
        method = method_class(base.method).merge_tasks(pieces, backbone) if len(pieces) > 1 else pieces[0]
        if method is None:
            raise AdapterError(
                f"the stored tasks of run {base.source} ({', '.join(base.tasks)}) no longer share their tensors "
                "(some were added again from another run): name a base with field 'from'"
            )
    specs = {}
    for task in method.task_names:
        if task not in base.entries:
            raise AdapterError(f"run {base.source}: task {task!r} of its stored adapter is no longer in the store")
        specs[task] = spec_from_dict(base.entries[task]["spec"])
    return method, specs


# ------------------------------------------------------------------ the examples as a data folder
def write_examples(data_dir: Path, request: Request) -> None:
    lines = "".join(json.dumps(ex, ensure_ascii=False) + "\n" for ex in request.examples)
    atomic_write(Path(data_dir) / request.name / "train.jsonl", lines.encode())


def read_task(data_dir: Path, request: Request, where: list[str] | None = None) -> dict[str, Task]:
    """The new task as the data loader reads its folder (kind, labels and the held-out split inferred),
    with the request's template; a Refused naming the example when the loader cannot read it."""
    from ..errors import DataError
    from ..tasks import load_tasks
    from ..tasks.base import Task

    try:
        loaded = load_tasks(data_dir, [request.name])
    except DataError as err:

        def example(match: re.Match) -> str:
            i = int(match.group(1)) - 1
            return where[i] if where else f"example {i}"

        # The loader names the scratch file; the user knows their examples.
        message = re.sub(r"\S*train\.jsonl, line (\d+)", example, str(err)).replace(f"{data_dir}/", "")
        raise Refused(422, message) from None
    task = loaded[request.name]
    if not task.splits.get("validation"):
        raise Refused(
            422,
            "cannot hold an example out to score the task without losing a label's only example: give at "
            "least two examples of some label",
        )
    if request.template is not None:
        task = Task(dataclasses.replace(task.spec, template=request.template), task.splits)
    return {request.name: task}


# ------------------------------------------------------------------ a job
@dataclass
class Prepared:
    """A request checked against the store: everything a job needs but the model."""

    request: Request
    base: Base
    train_cfg: TrainConfig | None  # None: the run's own transfer budget
    steps: int
    train_examples: int
    held_out: int
    spec: dict


class NoTurns:
    """Where nothing else uses the model (``talora store adapt``): the job holds it throughout."""

    @contextlib.contextmanager
    def training_turn(self, stopped: Callable[[], bool]) -> Iterator[Callable[[], None]]:
        yield lambda: None

    reload = None


class Job:
    def __init__(self, job_id: str, prepared: Prepared, folder: Path):
        self.id, self.prepared, self.folder = job_id, prepared, folder
        self.lock = threading.Lock()
        self.state = "queued"
        self.phase = "waiting for the model"
        self.stop_reason: str | None = None  # "cancel" or "shutdown"
        self.committing = False
        self.created, self.started, self.finished = _now(), None, None
        self.step, self.loss, self.eta_s = 0, None, None
        self.result: dict | None = None
        self.error: str | None = None
        self.thread: threading.Thread | None = None
        self.lock_fd: int | None = None
        self._t_first: tuple[float, int] | None = None
        self._written = 0.0

    def stopped(self) -> bool:
        return self.stop_reason is not None

    def progress(self, step: int, loss: float) -> None:
        now = time.monotonic()
        if self._t_first is None:
            self._t_first = (now, step)
        t0, s0 = self._t_first
        steps = self.prepared.steps
        self.step, self.loss = step, loss
        self.eta_s = round((now - t0) / (step - s0) * (steps - step), 1) if step > s0 else None
        self.phase = "scoring the held-out examples" if step >= steps else "training"

    def record(self) -> dict:
        p = self.prepared
        return {
            "id": self.id,
            "name": p.request.name,
            "state": self.state,
            "phase": self.phase if self.state in LIVE else None,
            "created": self.created,
            "started": self.started,
            "finished": self.finished,
            "progress": {"step": self.step, "steps": p.steps, "loss": self.loss, "eta_s": self.eta_s},
            "examples": {
                "given": len(p.request.examples),
                "train": p.train_examples,
                "held_out": p.held_out,
            },
            "task": p.spec,
            "base": p.base.describe(),
            "request": p.request.describe(),
            "result": self.result,
            "error": self.error,
            "folder": f"{JOBS}/{self.id}",  # in the store, so the record holds wherever the store moves
        }


class JobManager:
    """The jobs teaching new tasks to one store on one loaded model (see the module docstring).

    ``turns`` shares the model with a server's requests (``serve.Batcher``; default: nothing else uses
    it), and its ``reload()`` makes a server serve a task once stored. ``served()`` names the tasks a
    server serves now (a name in use is refused). At most ``max_jobs`` jobs are queued or running.
    Creating a manager settles the records of jobs whose process died (see the module docstring)."""

    def __init__(
        self,
        store: AdapterStore,
        backbone: Backbone,
        turns=None,
        max_jobs: int = 1,
        served: Callable[[], list[str]] | None = None,
        log: Callable[[str], None] | None = None,
    ):
        if not isinstance(max_jobs, int) or max_jobs < 1:
            from ..errors import ConfigError

            raise ConfigError(f"max_jobs must be a positive integer, got {max_jobs!r}")
        self.store, self.backbone = store, backbone
        self.turns = turns or NoTurns()
        self.max_jobs = max_jobs
        self.served = served or (lambda: [])
        self.log = log or (lambda message: None)
        self.folder = store.folder / JOBS
        self._jobs: dict[str, Job] = {}
        self._lock = threading.Lock()
        self._closed = False
        self.recovered = self.recover()

    # ------------------------------------------------------------ accepting
    def prepare(self, body, where: list[str] | None = None) -> Prepared:
        """Check a request against the store (no model needed): a Refused with its status, or what the
        job will do."""
        from ..adapters.files import spec_to_dict
        from ..config import RunConfig, from_dict
        from ..errors import ConfigError, DataError
        from ..tasks import few_shot

        request = parse_request(body, where)
        self._check_name(request.name)
        base = find_base(self.store, request.source)
        try:
            cfg = from_dict(RunConfig, base.run_config, f"run config of {base.source}")
        except ConfigError as err:
            raise Refused(422, f"cannot transfer from run {base.source}: {err}") from None
        train_cfg = None
        if request.steps is not None:
            t = cfg.transfer
            train_cfg = dataclasses.replace(t, steps=request.steps, warmup_steps=min(t.warmup_steps, request.steps - 1))
        with tempfile.TemporaryDirectory(prefix="talora-teach-") as scratch:
            write_examples(Path(scratch), request)
            task = read_task(Path(scratch), request, where)[request.name]
        try:
            shots = few_shot(task, request.k, request.seed, cfg.shots)
        except DataError as err:
            raise Refused(422, str(err)) from None
        if request.k == "all" and cfg.train_examples:
            shots = shots[: cfg.train_examples]  # as run_transfer caps "all"
        return Prepared(
            request,
            base,
            train_cfg,
            (train_cfg or cfg.transfer).steps,
            len(shots),
            len(task.splits["validation"]),
            spec_to_dict(task.spec),
        )

    def _check_name(self, name: str) -> None:
        with self._lock:
            mine = next((j for j in self._jobs.values() if j.prepared.request.name == name and j.state in LIVE), None)
        if mine is not None:
            raise Refused(409, f"job {mine.id} is already teaching a task {name!r}: GET /jobs/{mine.id}")
        if name in self.store.tasks() or name in self.served():
            raise Refused(
                409, f"task {name!r} already exists in the store; choose another name (or `talora store remove` it)"
            )

    def submit(self, body) -> dict:
        """Accept a ``POST /tasks`` body and start its job in a thread: the job's record (state queued)."""
        prepared = self.prepare(body)
        job = self._start(prepared)
        job.thread = threading.Thread(target=self._run, args=(job,), name=f"talora-job-{job.id}", daemon=True)
        job.thread.start()
        return job.record()

    def run_here(self, prepared: Prepared) -> dict:
        """Run a prepared job in this thread (``talora store adapt``): its final record."""
        job = self._start(prepared)
        self._run(job)
        return job.record()

    def _start(self, prepared: Prepared) -> Job:
        with self._lock:
            if self._closed:
                raise Refused(503, "the server is shutting down", {"Retry-After": "1"})
            live = [j for j in self._jobs.values() if j.state in LIVE]
            if len(live) >= self.max_jobs:
                raise Refused(
                    429,
                    f"{len(live)} job(s) already teaching tasks, at most {self.max_jobs} at once (max_jobs); "
                    "retry when one has finished",
                    {"Retry-After": str(RETRY_AFTER_S)},
                )
            if any(j.prepared.request.name == prepared.request.name and j.state in LIVE for j in live):
                raise Refused(409, f"another job is already teaching a task {prepared.request.name!r}")
            job_id = f"{datetime.now(UTC):%Y%m%d-%H%M%S}-{uuid.uuid4().hex[:8]}"
            job = Job(job_id, prepared, self.folder / job_id)
            self.folder.mkdir(parents=True, exist_ok=True)
            # Held from before the first record until after the last: whoever finds a live record with a
            # free lock knows its process is gone.
            job.lock_fd = os.open(self.folder / f"{job_id}.lock", os.O_RDWR | os.O_CREAT, 0o644)
            fcntl.flock(job.lock_fd, fcntl.LOCK_EX)
            self._jobs[job_id] = job
        self._write(job, force=True)
        return job

    # ------------------------------------------------------------ running
    def _run(self, job: Job) -> None:
        request = job.prepared.request
        try:
            with self.turns.training_turn(job.stopped) as between_steps:
                with job.lock:
                    if job.stopped():  # cancelled while it waited for the model
                        raise Stopped
                    job.state, job.started, job.phase = "running", _now(), "preparing"
                self._write(job, force=True)

                def on_step(step: int, loss: float) -> None:
                    job.progress(step, loss)
                    self._write(job)
                    if job.stopped():
                        raise Stopped
                    between_steps()

                summary = teach(self.store, self.backbone, job.prepared, job.folder, on_step)
                with job.lock:
                    if job.stopped():
                        raise Stopped
                    job.committing = True  # from here on the job ends by storing its task
                job.phase = "storing the task"
                self._write(job, force=True)
                if request.name in self.store.tasks():
                    raise Refused(409, f"a task {request.name!r} was added to the store while the job ran")
                report = self.store.add(job.folder / "adapter", self.backbone)
            job.result = {
                "metric": summary["metric"],
                "score": summary["score"],
                "metrics": summary["metrics"],
                "held_out": summary["examples"],
                "train_examples": summary["train_examples"],
                "seconds": summary["seconds"],
                "new_blobs": report[0]["new_blobs"],
                "reused_blobs": report[0]["reused_blobs"],
                "served": False,
            }
            if self.turns.reload is not None:
                job.phase = "loading the task into the server"
                self._write(job, force=True)
                try:
                    self.turns.reload().result()
                except Exception as err:
                    raise _StoredButNotServed(err) from None
                job.result["served"] = True
            self._finish(job, "succeeded")
        except _StoredButNotServed as err:
            self._finish(
                job,
                "failed",
                f"the task is stored, but the server could not load it: {_message(err.cause)}; "
                "fix the store and POST /admin/reload",
            )
        except (Stopped, KeyboardInterrupt) as err:
            self._discard(job)
            if job.stop_reason == "cancel":
                self._finish(job, "cancelled", "cancelled; nothing was stored")
            else:
                why = "the server shut down" if job.stop_reason == "shutdown" else "interrupted"
                self._finish(job, "failed", f"{why} during the job; nothing was stored")
            if isinstance(err, KeyboardInterrupt):
                raise
        except Exception as err:
            self._discard(job)
            self._finish(job, "failed", _message(err) + "; nothing was stored")
            if not isinstance(err, TaloraError):
                self.log(f"talora: job {job.id} failed: {type(err).__name__}: {err}")

    def _discard(self, job: Job) -> None:
        shutil.rmtree(job.folder, ignore_errors=True)

    def _finish(self, job: Job, state: str, error: str | None = None) -> None:
        job.state, job.error, job.finished = state, error, _now()
        job.eta_s = None
        self._write(job, force=True)
        if job.lock_fd is not None:
            (self.folder / f"{job.id}.lock").unlink(missing_ok=True)
            os.close(job.lock_fd)
            job.lock_fd = None

    def _write(self, job: Job, force: bool = False) -> None:
        now = time.monotonic()
        if force or now - job._written >= RECORD_EVERY_S:
            job._written = now
            atomic_write(self.folder / f"{job.id}.json", json.dumps(job.record(), indent=1).encode())

    # ------------------------------------------------------------ reading and cancelling
    def get(self, job_id: str) -> dict:
        with self._lock:
            job = self._jobs.get(job_id)
        if job is not None:
            return job.record()
        path = self.folder / f"{job_id}.json"
        if not re.fullmatch(r"[0-9A-Za-z-]+", job_id) or not path.is_file():
            raise Refused(404, f"no job {job_id!r}")
        return _read_record(path)

    def list(self) -> list[dict]:
        records = {}
        if self.folder.is_dir():
            for path in sorted(self.folder.glob("*.json")):
                with contextlib.suppress(OSError, ValueError):
                    records[path.stem] = _read_record(path)
        with self._lock:
            live = {job_id: job.record() for job_id, job in self._jobs.items()}
        records.update(live)
        return sorted(records.values(), key=lambda r: (r.get("created") or "", r.get("id") or ""))

    def cancel(self, job_id: str) -> dict:
        """Stop a queued or running job at its next step: nothing of it is stored. A Refused when it has
        already ended (or is storing its task: too late)."""
        with self._lock:
            job = self._jobs.get(job_id)
        if job is None:
            record = self.get(job_id)
            if record["state"] == "cancelled":
                return record
            if record["state"] in LIVE:
                raise Refused(409, f"job {job_id} runs in another process on this store: cancel it there")
            raise Refused(409, f"job {job_id} has {record['state']}: nothing to cancel")
        with job.lock:
            if job.state == "cancelled" or job.stop_reason == "cancel":
                return job.record()
            if job.state in DONE:
                extra = " (the task is stored: `talora store remove` drops it)" if job.state == "succeeded" else ""
                raise Refused(409, f"job {job_id} has {job.state}: nothing to cancel{extra}")
            if job.committing:
                raise Refused(409, f"job {job_id} is storing its task: too late to cancel")
            job.stop_reason = "cancel"
            job.state = "cancelling"
        self._write(job, force=True)
        return job.record()

    def shutdown(self, timeout: float | None = None) -> None:
        """Refuse new jobs, stop the running ones at their next step (nothing of them is stored) and wait."""
        with self._lock:
            self._closed = True
            jobs = list(self._jobs.values())
        for job in jobs:
            with job.lock:
                if job.state in LIVE and not job.committing and job.stop_reason is None:
                    job.stop_reason = "shutdown"
        for job in jobs:
            if job.thread is not None:
                job.thread.join(timeout)

    # ------------------------------------------------------------ after a crash
    def recover(self) -> list[str]:
        """Settle the records of jobs whose process is gone; the ids settled."""
        settled = []
        if not self.folder.is_dir():
            return settled
        for path in sorted(self.folder.glob("*.json")):
            try:
                record = _read_record(path)
            except (OSError, ValueError):
                continue
            if record.get("state") not in LIVE:
                continue
            lock = self.folder / f"{path.stem}.lock"
            fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    continue  # its process is alive (another server on this store)
                record = _read_record(path)  # it may have ended between the two reads
                if record.get("state") not in LIVE:
                    continue
                folder = self.folder / path.stem
                adapter = str((folder / "adapter").resolve())
                try:
                    stored = {row["task"]: row.get("source") for row in self.store.summary()}
                except TaloraError:
                    stored = {}
                if stored.get(record["name"]) == adapter:
                    record.update(state="succeeded", error=None, phase=None)
                    record["result"] = {**(record.get("result") or {}), "served": False, "recovered": True}
                else:
                    shutil.rmtree(folder, ignore_errors=True)
                    record.update(
                        state="failed",
                        phase=None,
                        error="the process running the job stopped before it ended (killed or crashed); "
                        "nothing was stored",
                    )
                record["finished"] = record.get("finished") or _now()
                atomic_write(path, json.dumps(record, indent=1).encode())
                settled.append(path.stem)
            finally:
                lock.unlink(missing_ok=True)
                os.close(fd)
        return settled


class _StoredButNotServed(Exception):
    def __init__(self, cause: Exception):
        super().__init__(str(cause))
        self.cause = cause


def _message(err: BaseException) -> str:
    text = " ".join(str(err).split()) or "no message"
    return text if isinstance(err, TaloraError) else f"{type(err).__name__}: {text}"


def _read_record(path: Path) -> dict:
    record = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(record, dict):
        raise ValueError(f"{path}: not a job record")
    return record


def teach(
    store: AdapterStore, backbone: Backbone, prepared: Prepared, folder: Path, on_step: Callable[[int, float], None]
) -> dict:
    """Transfer the base run to the new task as ``talora transfer --from BASE --k K --seed S`` does; the
    transfer's summary, with the adapter in ``folder/adapter`` (``talora store add`` takes it from there)."""
    import yaml

    from ..adapters.files import save_adapter
    from ..recipes.pipeline import run_transfer

    request, base = prepared.request, prepared.base
    method, specs = load_base(store, base, backbone)
    base_dir, data_dir, out = folder / "base", folder / "data", folder / "adapter"
    save_adapter(base_dir, method, backbone, specs)
    del method  # run_transfer reads it back from the folder, as `talora transfer --from` does
    config = yaml.safe_dump(base.run_config, sort_keys=False, allow_unicode=True)
    atomic_write(base_dir / "config.yaml", config.encode())
    write_examples(data_dir, request)
    loaded = read_task(data_dir, request)
    summary = run_transfer(
        base_dir,
        request.name,
        request.k,
        request.seed,
        out,
        data_dir=str(data_dir),
        train_cfg=prepared.train_cfg,
        backbone=backbone,
        loaded=loaded,
        on_step=on_step,
    )
    shutil.rmtree(out / "checkpoint", ignore_errors=True)  # a finished transfer resumes nothing
    return summary
