"""``talora serve``: an HTTP service over an adapter store, gathering concurrent requests into mixed-task batches.

Routes (see docs/serving.md, "HTTP service"):

* ``POST /predict``: a JSON list of records ``{"task": ..., <fields>}`` (as ``talora predict`` reads);
  the results, in order.
* ``POST /v1/completions``: OpenAI-style; ``model`` names a task (its adapter, as multi-LoRA servers
  name theirs) and ``prompt`` fills that task's one text field.
* ``GET /tasks``, ``GET /v1/models``: the tasks served; ``GET /health`` (never needs the token).
* ``POST /admin/reload``: a new engine built from the store as it is now, swapped in between batches.
* ``POST /tasks``: teach the store a new task from a few labelled examples (a training job, answered 202);
  ``GET /jobs``, ``GET /jobs/{id}`` its progress and result, ``DELETE /jobs/{id}`` cancels it (talora.serving.jobs).

Why one worker thread owns the engine. An ``Engine`` runs one call at a time anyway (weight-changing
methods patch the shared model while they run), and a batch can only be gathered by whoever decides
when it starts. So request handlers never touch the model: they validate their records against the
engine's specs (so one bad request is refused alone, before it can join a batch) and put a job in a
bounded queue; the worker takes up to ``max_batch`` records, waiting at most ``max_wait_ms`` after the
first for more, runs ``engine.predict`` once on all of them, and hands each job its slice. A batch that
fails is rerun job by job, so a record that breaks the model fails its own request only. A reload is a
job in the same queue: requests queued before it are answered by the old engine, later ones by the new.
A training job shares the model with the worker one step at a time, and only while no request waits
(``Batcher.training_turn``); once its task is stored it asks for a reload, so the task is served next.

Shutdown: uvicorn's graceful shutdown (SIGTERM, SIGINT) stops accepting connections and waits for the
requests in flight; their jobs are in the queue, which the worker keeps serving until the app's lifespan
ends, when it finishes what is left and stops.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import errno
import hmac
import json
import socket
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..adapters.store import record_inputs
from ..errors import AdapterError, ConfigError, DataError, TaloraError
from .jobs import JobManager, Refused, Stopped

try:  # at module level: FastAPI resolves the handlers' (string) annotations in this module's globals
    from fastapi import FastAPI, Request
    from fastapi.responses import JSONResponse
except ImportError:  # `talora serve` says what to install
    FastAPI = Request = JSONResponse = None

if TYPE_CHECKING:
    from .engine import Engine

OPEN_PATHS = ("/health",)  # answered without the token: load balancers and orchestrators probe it
RETRY_AFTER_S = 1
POLL_S = 0.05  # how often a training job waiting for the model checks whether it was cancelled


class ApiError(Exception):
    """An error answered as ``{"error": {"message", "type", "code"}}`` with an HTTP status."""

    def __init__(self, status: int, message: str, kind: str = "invalid_request_error", headers=None, **extra):
        super().__init__(message)
        self.status, self.message, self.kind = status, message, kind
        self.headers = headers or {}
        self.extra = extra


class QueueFull(Exception):
    pass


class Closed(Exception):
    pass


@dataclass
class _Job:
    records: list
    future: Future


@dataclass
class _Reload:
    future: Future


_STOP = object()


def task_rows(engine: Engine) -> list[dict]:
    """What ``GET /tasks`` shows of each task the engine serves: its spec, and what the store's index
    recorded at training time (metric and score, method, k)."""
    try:
        recorded = {row["task"]: row for row in engine.store.summary()}
    except TaloraError:  # the store changed under the engine: its own snapshot still answers
        recorded = {}
    rows, damaged = [], engine.damaged
    for task in engine.tasks:
        spec, row = engine.specs[task], recorded.get(task, {})
        rows.append(
            {
                "name": task,
                "kind": spec.kind,
                "labels": list(spec.labels),
                "metric": spec.metric,
                "score": row.get("score"),
                "method": row.get("method"),
                "k": row.get("k"),
                "inputs": record_inputs(spec),
                "damaged": damaged.get(task),
            }
        )
    return rows


class Batcher:
    """The one thread that runs the engine, and the bounded queue feeding it (see the module docstring).

    ``queue_size`` bounds the requests waiting (not the batch being computed); reloads and the stop
    marker are never refused. ``engine`` and ``rows`` change only on the worker, between batches."""

    def __init__(self, engine: Engine, max_batch: int, max_wait_ms: float, queue_size: int):
        self.engine = engine
        self.rows = task_rows(engine)
        self.max_batch, self.max_wait, self.capacity = max_batch, max_wait_ms / 1000, queue_size
        self._items: deque = deque()
        lock = threading.Lock()
        self._cond = threading.Condition(lock)
        self._idle = threading.Condition(lock)  # notified when the worker has nothing to do
        self._busy = False  # the worker holds an item (gathering, predicting or reloading)
        # The frozen model runs one thing at a time: a batch of requests, a reload or one step of a
        # training job (talora.serving.jobs). Jobs take it only while no request waits (``training_turn``).
        self.model = threading.Lock()
        self._waiting = 0
        self._closed = False
        self._thread: threading.Thread | None = None
        self.batches = 0  # engine calls made for gathered batches (retries not counted)
        self.submitted = 0
        self.answered = 0  # requests answered or given up by their clients

    # ---------------------------------------------------------------- handlers' side
    def start(self) -> None:
        with self._cond:
            if self._thread is None and not self._closed:
                # A daemon: an app dropped without its lifespan ending must not keep the process alive.
                self._thread = threading.Thread(target=self._work, name="talora-batcher", daemon=True)
                self._thread.start()

    @property
    def pending(self) -> int:
        return self._waiting

    @property
    def in_flight(self) -> int:
        return self.submitted - self.answered

    @property
    def closing(self) -> bool:
        return self._closed

    def submit(self, records: list) -> Future:
        self.start()
        job = _Job(records, Future())
        with self._cond:
            if self._closed:
                raise Closed
            if self._waiting >= self.capacity:
                raise QueueFull
            self._items.append(job)
            self._waiting += 1
            self.submitted += 1
            self._cond.notify()
        return job.future

    def reload(self) -> Future:
        self.start()
        job = _Reload(Future())
        with self._cond:
            if self._closed:
                raise Closed
            self._items.append(job)
            self._cond.notify()
        return job.future

    def close(self, timeout: float | None = None) -> None:
        """Refuse new jobs, let the worker finish every queued one, and wait for it."""
        with self._cond:
            if not self._closed:
                self._closed = True
                self._items.append(_STOP)
                self._cond.notify()
            thread = self._thread
        if thread is not None:
            thread.join(timeout)

    # ---------------------------------------------------------------- training jobs' side
    @contextlib.contextmanager
    def training_turn(self, stopped: Callable[[], bool]) -> Iterator[Callable[[], None]]:
        """Hold the model for a training job, handing it to requests between steps.

        Time slicing with requests first: the job takes the model only when no request waits and no
        batch runs, and calls the function this yields between two training steps, which gives the
        model up for as long as requests keep coming. A request that arrives during a step waits for
        that step alone. ``stopped()`` is polled while waiting; when it turns true, ``Stopped`` is
        raised in the job."""
        self._take_model(stopped)
        try:
            yield lambda: self._between_steps(stopped)
        finally:
            self.model.release()

    def _between_steps(self, stopped: Callable[[], bool]) -> None:
        with self._cond:
            wanted = self._wanted()
        if wanted:
            self.model.release()
            self._take_model(stopped)

    def _take_model(self, stopped: Callable[[], bool]) -> None:
        while True:
            with self._cond:
                while self._wanted():
                    if stopped():
                        raise Stopped
                    self._idle.wait(POLL_S)
            if stopped():
                raise Stopped
            if self.model.acquire(timeout=POLL_S):
                with self._cond:
                    if not self._wanted():
                        return
                self.model.release()  # a request came in meanwhile: it goes first

    # ---------------------------------------------------------------- worker's side
    def _take(self, room: int | None, timeout: float | None):
        """The next item; with ``room``, only a job of at most that many records, else None at once
        (gathering stops at anything else, so jobs and reloads keep their order)."""
        with self._cond:
            deadline = None if timeout is None else time.monotonic() + timeout
            while not self._items:
                if deadline is None:
                    self._cond.wait()
                    continue
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self._cond.wait(left)
            head = self._items[0]
            if room is not None and not (isinstance(head, _Job) and len(head.records) <= room):
                return None
            self._items.popleft()
            if isinstance(head, _Job):
                self._waiting -= 1
            if head is not _STOP:
                self._busy = True
            return head

    def _done(self) -> None:
        with self._cond:
            if not self._queued():
                self._busy = False
                self._idle.notify_all()

    def _queued(self) -> bool:  # with the lock held
        return bool(self._items) and self._items[0] is not _STOP

    def _wanted(self) -> bool:  # with the lock held: the worker has or will have something to run
        return self._busy or self._queued()

    def _work(self) -> None:
        while True:
            item = self._take(None, None)
            if item is _STOP:
                return
            if isinstance(item, _Reload):
                self._reload(item)
                self._done()
                continue
            batch = [item] if self._claim(item) else []
            size = sum(len(job.records) for job in batch)
            deadline = time.monotonic() + self.max_wait
            while size < self.max_batch:
                job = self._take(self.max_batch - size, max(0.0, deadline - time.monotonic()))
                if job is None:
                    break
                if self._claim(job):
                    batch.append(job)
                    size += len(job.records)
            if batch:
                self._run(batch)
            self._done()

    def _claim(self, job: _Job) -> bool:
        """False when the job's client has gone (its handler was cancelled): nothing to compute."""
        if job.future.set_running_or_notify_cancel():
            return True
        self.answered += 1
        return False

    def _run(self, batch: list[_Job]) -> None:
        engine = self.engine
        records = [r for job in batch for r in job.records]
        self.batches += 1
        try:
            with self.model:
                results = engine.predict(records, batch_size=self.max_batch)
        except Exception as err:  # whatever the model raised, the other requests must live
            if len(batch) == 1:
                batch[0].future.set_exception(err)
            else:
                for job in batch:
                    try:
                        with self.model:
                            own_results = engine.predict(job.records, batch_size=self.max_batch)
                        job.future.set_result(own_results)
                    except Exception as own:
                        job.future.set_exception(own)
            self.answered += len(batch)
            return
        start = 0
        for job in batch:
            job.future.set_result(results[start : start + len(job.records)])
            start += len(job.records)
        self.answered += len(batch)

    def _reload(self, item: _Reload) -> None:
        from .engine import Engine

        wanted = item.future.set_running_or_notify_cancel()  # a reload asked for is done even if nobody waits
        old = self.engine
        try:
            with self.model:
                new = Engine(old.store, old.backbone, old.batch_size)
                new.preload()  # here, on the worker: a damaged file is reported now, and the old engine stays
            rows = task_rows(new)
        except Exception as err:
            if wanted:
                item.future.set_exception(err)
            return
        self.engine, self.rows = new, rows
        if wanted:
            before, after = set(old.tasks), set(new.tasks)
            item.future.set_result(
                {"tasks": new.tasks, "added": sorted(after - before), "removed": sorted(before - after)}
            )


# -------------------------------------------------------------------- request checking
def _validate(engine: Engine, records, max_records: int) -> None:
    if not isinstance(records, list):
        got = "null" if records is None else type(records).__name__.replace("dict", "object")
        raise ApiError(422, f'the body must be a JSON list of records {{"task": ..., <fields>}}, got {got}')
    if not records:
        raise ApiError(422, "the list of records is empty: send at least one")
    if len(records) > max_records:
        raise ApiError(413, f"{len(records)} records in one request; at most {max_records} (max_records)")
    specs, damaged = engine.specs, engine.damaged
    for i, record in enumerate(records):
        task = record.get("task") if isinstance(record, dict) else None
        if isinstance(task, str) and task not in specs and task not in damaged:
            raise ApiError(
                404,
                f"record {i}: task {task!r} is not served here; tasks: {', '.join(specs) or 'none'}",
                "not_found_error",
                tasks=list(specs),
            )
    try:
        engine.check(records)
    except DataError as err:
        raise ApiError(422, str(err)) from None
    except AdapterError as err:  # the task's stored files are damaged: the store's fault, not the request's
        raise ApiError(500, str(err), "server_error") from None


def _check_content_type(request) -> None:
    """Only ``application/json`` (UTF-8) is read. Browsers send text/plain and form bodies to any
    origin without asking it first, so accepting them would let any web page post to a local
    server; and a form body is not JSON anyway."""
    given = request.headers.get("content-type")
    media, *params = [part.strip() for part in (given or "").split(";")]
    charset = next((p.partition("=")[2].strip().strip('"') for p in params if p.lower().startswith("charset=")), None)
    if media.lower() != "application/json" or (charset is not None and charset.lower() not in ("utf-8", "utf8")):
        raise ApiError(
            415,
            f"Content-Type {given!r}: send the body as JSON with the header Content-Type: application/json"
            if given
            else "no Content-Type: send the body as JSON with the header Content-Type: application/json",
            "unsupported_media_type_error",
        )


async def _read_json(request, limit: int):
    _check_content_type(request)
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise ApiError(400, f"bad Content-Length header {declared!r}")
        if int(declared) > limit:
            raise ApiError(413, f"body of {declared} bytes; at most {limit} (max_body_bytes)")
    body = bytearray()
    async for chunk in request.stream():  # a chunked body declares no length: counted as it comes
        body += chunk
        if len(body) > limit:
            raise ApiError(413, f"body over {limit} bytes (max_body_bytes)")
    if not body:
        raise ApiError(400, "empty body: expected JSON")
    try:
        # Decoded here, strictly: json.loads(bytes) would also take UTF-16 and UTF-32, which JSON
        # over HTTP is not (RFC 8259), and report other encodings as malformed JSON.
        text = bytes(body).decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise ApiError(400, f"body is not UTF-8 text (byte {err.start}: {err.reason})") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise ApiError(400, f"malformed JSON body: {err.msg} at line {err.lineno}, column {err.colno}") from None
    except RecursionError:  # the parser recurses once per level of nesting
        raise ApiError(
            400, "JSON body nested too deeply to read: a record is one object of its task's fields"
        ) from None


class _FinishReason:
    """``length`` when a generated span used all of its task's new tokens, else ``stop``. Counting takes a
    copy of the tokenizer made on first use: a fast tokenizer used by two threads at once can fail
    ("Already borrowed"), and the worker is tokenizing all the time."""

    def __init__(self):
        self._tokenizer = None

    def __call__(self, engine: Engine, task: str, text: str) -> str:
        spec = engine.specs[task]
        if spec.task_kind.ranks or not spec.max_new_tokens:
            return "stop"
        if self._tokenizer is None:
            self._tokenizer = copy.deepcopy(engine.backbone.tokenizer)
        used = len(self._tokenizer(text, add_special_tokens=False)["input_ids"])
        return "length" if used >= spec.max_new_tokens else "stop"


# -------------------------------------------------------------------- the routes
# Each route reads what it serves from ``request.app.state`` (set by ``create_app``): ``batcher`` (the
# worker owning the engine), ``jobs`` (the training jobs), ``limits`` (max_records, max_body_bytes),
# ``finish_reason``, ``api_key``.


def _error(status: int, message: str, kind: str, headers=None, **extra) -> JSONResponse:
    body = {"error": {"message": message, "type": kind, "code": status, **extra}}
    return JSONResponse(body, status_code=status, headers=headers)


async def api_error(request, err: ApiError):
    return _error(err.status, err.message, err.kind, err.headers, **err.extra)


async def http_error(request, err):
    return _error(err.status_code, str(err.detail), "invalid_request_error", getattr(err, "headers", None))


async def unexpected(request, err: Exception):
    # A bug of ours still answers in the format clients parse; Starlette re-raises it for the log.
    message = " ".join(str(err).split()) or "no message"
    return _error(500, f"internal error: {type(err).__name__}: {message}", "server_error")


async def bearer_token(request: Request, call_next):
    api_key = request.app.state.api_key
    if api_key is not None and request.url.path not in OPEN_PATHS:
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), api_key.encode()):
            return _error(
                401,
                "missing or wrong bearer token: send the header Authorization: Bearer <key>",
                "authentication_error",
                {"WWW-Authenticate": "Bearer"},
            )
    return await call_next(request)


async def _answer(request: Request, records: list) -> list[dict]:
    batcher = request.app.state.batcher
    try:
        future = batcher.submit(records)
    except QueueFull:
        raise ApiError(
            503,
            f"server busy: {batcher.capacity} requests already queued (queue_size); retry shortly",
            "overloaded_error",
            {"Retry-After": str(RETRY_AFTER_S)},
        ) from None
    except Closed:
        raise ApiError(503, "server shutting down", "overloaded_error", {"Retry-After": str(RETRY_AFTER_S)}) from None
    try:
        return await asyncio.wrap_future(future)
    except DataError as err:
        # Checked against the engine a reload has since replaced: say what the engine now serving thinks.
        _validate(batcher.engine, records, request.app.state.limits.max_records)
        raise ApiError(422, str(err)) from None
    except Exception as err:
        message = " ".join(str(err).split()) or "no message"
        raise ApiError(500, f"prediction failed: {type(err).__name__}: {message}", "server_error") from None


async def health(request: Request):
    batcher = request.app.state.batcher
    return {
        "status": "draining" if batcher.closing else "ok",
        "tasks": len(batcher.engine.tasks),
        "queued": batcher.pending,
        "in_flight": batcher.in_flight,
    }


async def list_tasks(request: Request):
    return {"tasks": request.app.state.batcher.rows}


async def list_models(request: Request):
    return {
        "object": "list",
        "data": [{"id": t["name"], "object": "model", "owned_by": "talora"} for t in request.app.state.batcher.rows],
    }


async def predict(request: Request):
    limits = request.app.state.limits
    records = await _read_json(request, limits.max_body_bytes)
    _validate(request.app.state.batcher.engine, records, limits.max_records)
    return JSONResponse(await _answer(request, records))


async def completions(request: Request):
    limits = request.app.state.limits
    body = await _read_json(request, limits.max_body_bytes)
    if not isinstance(body, dict):
        raise ApiError(422, 'the body must be a JSON object {"model": TASK, "prompt": TEXT}')
    for key in ("model", "prompt"):
        if key not in body:
            raise ApiError(422, f"field {key!r} is missing", param=key)
    task, prompt = body["model"], body["prompt"]
    if not isinstance(task, str):
        raise ApiError(422, "field 'model' must be a string: the task whose adapter answers", param="model")
    prompts = [prompt] if isinstance(prompt, str) else prompt
    if not isinstance(prompts, list) or not prompts or not all(isinstance(p, str) for p in prompts):
        raise ApiError(422, "field 'prompt' must be a string or a non-empty list of strings", param="prompt")
    if len(prompts) > limits.max_records:
        raise ApiError(413, f"{len(prompts)} prompts in one request; at most {limits.max_records} (max_records)")
    if body.get("stream"):
        raise ApiError(422, "streaming is not supported: send stream=false", param="stream")
    if body.get("n", 1) != 1 or body.get("best_of", 1) != 1:
        raise ApiError(422, "only one completion per prompt (n=1): decoding is greedy", param="n")
    engine = request.app.state.batcher.engine
    if task in engine.damaged:
        from .engine import unservable

        raise ApiError(500, unservable(task, engine.damaged[task]), "server_error", param="model")
    if task not in engine.specs:
        raise ApiError(
            404,
            f"model {task!r} is not a task served here; models (tasks): {', '.join(engine.specs) or 'none'}",
            "not_found_error",
            param="model",
        )
    spec = engine.specs[task]
    inputs = record_inputs(spec)
    if not spec.task_kind.text_answer or list(inputs.values()) != ["string"]:
        raise ApiError(
            422,
            f"task {task!r} ({spec.kind}) takes the fields {', '.join(inputs)}; /v1/completions fills one "
            f"text field of an extraction or classification task from `prompt`: use POST /predict",
            param="model",
        )
    field = next(iter(inputs))
    records = [{"task": task, field: p} for p in prompts]
    _validate(engine, records, limits.max_records)
    results = await _answer(request, records)
    finish_reason = request.app.state.finish_reason
    choices = [
        {
            "text": str(r["prediction"]),
            "index": i,
            "logprobs": None,
            "finish_reason": finish_reason(engine, task, str(r["prediction"])),
        }
        for i, r in enumerate(results)
    ]
    return {
        "id": f"cmpl-{uuid.uuid4().hex}",
        "object": "text_completion",
        "created": int(time.time()),
        "model": task,
        "choices": choices,
    }


def _refused(err: Refused) -> ApiError:
    kinds = {404: "not_found_error", 409: "conflict_error", 429: "rate_limit_error", 503: "overloaded_error"}
    return ApiError(err.status, str(err), kinds.get(err.status, "invalid_request_error"), err.headers)


async def teach(request: Request):
    body = await _read_json(request, request.app.state.limits.max_body_bytes)
    try:
        # The store is read and the examples written to a scratch folder: off the event loop.
        record = await asyncio.to_thread(request.app.state.jobs.submit, body)
    except Refused as err:
        raise _refused(err) from None
    return JSONResponse(record, status_code=202, headers={"Location": f"/jobs/{record['id']}"})


async def list_jobs(request: Request):
    return {"jobs": await asyncio.to_thread(request.app.state.jobs.list)}


async def get_job(request: Request, job_id: str):
    try:
        return request.app.state.jobs.get(job_id)
    except Refused as err:
        raise _refused(err) from None


async def cancel_job(request: Request, job_id: str):
    try:
        record = request.app.state.jobs.cancel(job_id)
    except Refused as err:
        raise _refused(err) from None
    return JSONResponse(record, status_code=200 if record["state"] == "cancelled" else 202)


async def reload(request: Request):
    try:
        future = request.app.state.batcher.reload()
    except Closed:
        raise ApiError(503, "server shutting down", "overloaded_error") from None
    try:
        return await asyncio.wrap_future(future)
    except Exception as err:
        message = " ".join(str(err).split())
        raise ApiError(409, f"reload failed, still serving the previous tasks: {message}", "reload_error") from None


# (HTTP method, path, handler): a new route is a function above and a line here.
ROUTES = (
    ("GET", "/health", health),
    ("GET", "/tasks", list_tasks),
    ("GET", "/v1/models", list_models),
    ("POST", "/predict", predict),
    ("POST", "/v1/completions", completions),
    ("POST", "/tasks", teach),
    ("GET", "/jobs", list_jobs),
    ("GET", "/jobs/{job_id}", get_job),
    ("DELETE", "/jobs/{job_id}", cancel_job),
    ("POST", "/admin/reload", reload),
)


@dataclass(frozen=True)
class Limits:
    max_records: int
    max_body_bytes: int


# -------------------------------------------------------------------- the app
def create_app(
    engine: Engine,
    *,
    max_batch: int = 32,
    max_wait_ms: float = 5,
    queue_size: int = 256,
    api_key: str | None = None,
    max_body_bytes: int = 1_000_000,
    max_records: int = 256,
    max_jobs: int = 1,
    log=None,
) -> FastAPI:
    """The FastAPI app serving ``engine``'s tasks (routes and behaviour: the module docstring).

    The engine's worker thread starts with the app's lifespan (or on the first request) and, when the
    lifespan ends, stops the training jobs (nothing of them is stored) and finishes every queued request
    before it stops. ``app.state.batcher`` is the worker, ``app.state.jobs`` the training jobs (at most
    ``max_jobs`` at once: talora.serving.jobs); jobs a killed process left running are marked failed here."""
    if FastAPI is None:
        raise ConfigError("talora serve needs fastapi and uvicorn: pip install fastapi uvicorn")
    from starlette.exceptions import HTTPException

    for name, value in (
        ("max_batch", max_batch),
        ("queue_size", queue_size),
        ("max_body_bytes", max_body_bytes),
        ("max_records", max_records),
    ):
        if not isinstance(value, int) or value < 1:
            raise ConfigError(f"{name} must be a positive integer, got {value!r}")
    if max_wait_ms < 0:
        raise ConfigError(f"max_wait_ms must be >= 0, got {max_wait_ms!r}")
    if api_key is not None and not api_key.strip():
        raise ConfigError("api_key is empty: give a token, or None to serve without one")
    batcher = Batcher(engine, max_batch, max_wait_ms, queue_size)
    jobs = JobManager(engine.store, engine.backbone, batcher, max_jobs, lambda: batcher.engine.tasks, log)

    @contextlib.asynccontextmanager
    async def lifespan(app):
        batcher.start()
        try:
            yield
        finally:
            await asyncio.to_thread(jobs.shutdown)  # jobs first: a job ending may still ask for a reload
            await asyncio.to_thread(batcher.close)

    app = FastAPI(title="talora", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.batcher = batcher
    app.state.jobs = jobs
    app.state.limits = Limits(max_records, max_body_bytes)
    app.state.finish_reason = _FinishReason()  # used on the event loop's thread only
    app.state.api_key = api_key
    app.add_exception_handler(ApiError, api_error)
    app.add_exception_handler(HTTPException, http_error)
    app.add_exception_handler(Exception, unexpected)
    app.middleware("http")(bearer_token)
    for method, path, handler in ROUTES:
        app.add_api_route(path, handler, methods=[method])
    return app


def uvicorn_config(app, **kwargs):
    """The uvicorn configuration ``talora serve`` runs ``app`` with (``kwargs``: uvicorn.Config's)."""
    import uvicorn

    return uvicorn.Config(app, http=_json_errors_h11(), **kwargs)


def _json_errors_h11():
    """uvicorn's h11 protocol, except that a request it cannot parse (a Content-Length that is not a
    number, a malformed request line or header) is answered in the service's JSON error format: such a
    request never reaches the app, and uvicorn would answer it in plain text. Named explicitly, it also
    keeps uvicorn from switching to httptools, whose answer to those is plain text too."""
    import h11
    from uvicorn.protocols.http.h11_impl import H11Protocol

    class JsonErrorsH11(H11Protocol):
        def send_400_response(self, msg: str) -> None:
            message = f"malformed HTTP request (a bad Content-Length, request line or header): {msg}"
            body = json.dumps({"error": {"message": message, "type": "invalid_request_error", "code": 400}})
            headers = [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
            ]
            for event in (h11.Response(status_code=400, headers=headers), h11.Data(data=body.encode())):
                self.transport.write(self.conn.send(event))
            self.transport.write(self.conn.send(h11.EndOfMessage()))
            self.transport.close()

    return JsonErrorsH11


def bind(host: str, port: int) -> list[socket.socket]:
    """Sockets bound to every address ``host`` resolves to (as asyncio would bind them), or a
    ConfigError saying why not. Bound here, before the model loads, so a port in use or out of
    range is one error line at once rather than a uvicorn log line (or an OverflowError) after it."""
    if not isinstance(port, int) or isinstance(port, bool) or not 0 <= port <= 65535:
        raise ConfigError(f"--port {port!r}: a TCP port is a number from 0 to 65535")
    try:
        infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except (socket.gaierror, UnicodeError) as err:
        raise ConfigError(f"--host {host!r}: not an address this machine can listen on ({err})") from None
    sockets: list[socket.socket] = []
    try:
        for family, kind, proto, _, address in dict.fromkeys(infos):
            sock = socket.socket(family, kind, proto)
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # a restart need not wait out TIME_WAIT
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)  # the IPv4 address has its own socket
            if port == 0 and len(sockets) > 1:  # one free port for every address
                address = (address[0], sockets[0].getsockname()[1], *address[2:])
            sock.bind(address)
    except OSError as err:
        for sock in sockets:
            sock.close()
        why = err.strerror or str(err)
        if err.errno == errno.EADDRINUSE:
            why += ": another process listens there; stop it or choose another --port"
        elif err.errno == errno.EACCES:
            why += ": ports below 1024 need privileges; choose another --port"
        raise ConfigError(f"cannot listen on {host}:{port} ({why})") from None
    return sockets


def run_server(
    store_dir: str,
    host: str = "127.0.0.1",
    port: int = 8000,
    max_batch: int = 32,
    max_wait_ms: float = 5,
    queue_size: int = 256,
    api_key: str | None = None,
    model: str | None = None,
    max_records: int = 256,
    placement: dict | None = None,
    max_jobs: int = 1,
    log=print,
) -> None:
    """``talora serve``: load the store's base model, preload every task, serve until SIGTERM/SIGINT."""
    try:
        import uvicorn
    except ImportError:
        uvicorn = None
    if uvicorn is None or FastAPI is None:
        raise ConfigError("talora serve needs fastapi and uvicorn: pip install fastapi uvicorn")
    from ..adapters.store import AdapterStore
    from ..core.backbone import load_backbone
    from .engine import Engine

    store = AdapterStore(store_dir)
    base = store.base_model()
    spec = model or base.get("load")
    if spec is None:
        raise ConfigError(f"store {store_dir} does not record how to load base model {base.get('id')!r}; give --model")
    sockets = bind(host, port)
    try:
        placement = placement or {}
        backbone = load_backbone(spec, placement.get("dtype", "auto"), placement.get("device", "auto"))
        engine = Engine(store, backbone, max_batch)
        # Damage is found now, not on some request later; a damaged task fails its own requests only.
        for task, problem in engine.preload(strict=False).items():
            log(f"talora serve: warning: not serving task {task!r}: {problem}")
        app = create_app(
            engine,
            max_batch=max_batch,
            max_wait_ms=max_wait_ms,
            queue_size=queue_size,
            api_key=api_key,
            max_records=max_records,
            max_jobs=max_jobs,
            log=log,
        )
        for job_id in app.state.jobs.recovered:
            log(f"talora serve: job {job_id} was left unfinished by a stopped process: marked as such")
        if api_key is None and host not in ("127.0.0.1", "localhost", "::1"):
            log(f"talora serve: warning: listening on {host} without a token (--api-key or TALORA_API_KEY)")
        port = sockets[0].getsockname()[1]
        log(f"talora serve: {len(engine.tasks)} task(s) of {store_dir} on http://{host}:{port}")
        # No graceful-shutdown timeout: the queue is bounded, so draining it ends.
        config = uvicorn_config(app, log_level="info", timeout_graceful_shutdown=None)
        uvicorn.Server(config).run(sockets=sockets)
    finally:
        for sock in sockets:
            sock.close()
