"""`talora serve` on a tiny model: the HTTP routes give what Engine.predict and offline prediction give; bad
input, a missing token, a full queue and a faulty record each get their status and message and hurt no other
request; concurrent clients are gathered into batches and lose nothing; a reload picks up an edited store;
the command drains its requests on SIGTERM.

The store holds randomly initialised prompt-tuning adapters (what is served, not how well, is tested here):
four synthetic classification tasks, and every kind of task (extraction included) of a small data folder,
at another prompt length, so batches mix two units."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
import uvicorn
from fastapi.testclient import TestClient
from test_tasks_end_to_end import folder as kinds_folder

from talora.adapters.files import load_adapter
from talora.adapters.store import AdapterStore, record_inputs
from talora.bench.serve import add_random_prompts
from talora.cli import main
from talora.core import predict as predict_mod
from talora.core.batching import encode
from talora.core.predict import Verbalizer
from talora.errors import AdapterError
from talora.serving.engine import Engine
from talora.serving.http import create_app, uvicorn_config
from talora.tasks import load_tasks

SYNTHETIC = ["movie_sentiment", "news_topic", "emotion", "question_match"]
KINDS = ["cls", "mc", "sts", "qa", "ote"]
MAX_LENGTH = 256  # what a store records for an adapter saved without a run config
TOKEN = "s3cret-token"
JSON = {"Content-Type": "application/json"}


@pytest.fixture
def setup(tmp_path, tiny_models):
    """(backbone, store, {task: records}, {task: (adapter folder, examples)}), in a folder where `tiny` loads."""
    backbone = tiny_models["tiny"]
    store = AdapterStore(tmp_path / "store")
    data = kinds_folder(tmp_path / "data")
    records, sources = {}, {}
    for name, tasks, data_dir, length in (("synthetic", SYNTHETIC, None, 4), ("kinds", KINDS, data, 3)):
        loaded = load_tasks(data_dir, tasks)
        specs = {t: loaded[t].spec for t in tasks}
        add_random_prompts(store, tmp_path / name, backbone, specs, length=length, init_seed=len(name))
        for t in tasks:
            exs = loaded[t].splits["test"][:3]
            records[t] = [{"task": t, **{k: ex.fields[k] for k in record_inputs(specs[t])}} for ex in exs]
            sources[t] = (tmp_path / name, exs)
    return backbone, store, records, sources


def offline(backbone, adapter: Path, task: str, exs) -> list:
    """The adapter's own predictions (talora.core.predict.predict, as `talora eval` makes them)."""
    method, specs = load_adapter(adapter, backbone)
    task_id = method.task_names.index(task)
    items = [encode(specs[task], ex, backbone.tokenizer, MAX_LENGTH, task_id) for ex in exs]
    with method.applied(backbone):
        return predict_mod.predict(backbone, method, items, {task_id: Verbalizer.of(specs[task], backbone.tokenizer)})


def same(result: dict, expected: dict) -> bool:
    if result["task"] != expected["task"]:
        return False
    if isinstance(expected["prediction"], float):
        return result["prediction"] == pytest.approx(expected["prediction"], abs=1e-4)
    if result["prediction"] != expected["prediction"]:
        return False
    probs, want = result.get("probabilities"), expected.get("probabilities")
    return probs == pytest.approx(want, abs=1e-4) if want is not None else probs is None


def counted(monkeypatch, engine: Engine, gate: threading.Event | None = None, fail_on: str | None = None):
    """Record the records of each engine.predict call; optionally hold the first call until ``gate`` is
    set, and fail any call holding a record whose text contains ``fail_on``."""
    calls: list[list[dict]] = []
    entered = threading.Event()
    real = engine.predict

    def predict(records, where=None, batch_size=None):
        calls.append(list(records))
        if gate is not None and len(calls) == 1:
            entered.set()
            assert gate.wait(30)
        if fail_on is not None and any(fail_on in str(r.get("text", "")) for r in records):
            raise RuntimeError("boom: the model cannot embed this record")
        return real(records, where, batch_size)

    monkeypatch.setattr(engine, "predict", predict)
    return calls, entered


@contextlib.contextmanager
def running(app):
    """A real uvicorn server on a free loopback port, in a thread; stopped as on SIGTERM when done."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn_config(app, log_level="warning"))  # as `talora serve` runs it
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "the server did not start"
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(30)
        sock.close()


def in_thread(fn, *args) -> tuple[threading.Thread, list]:
    out: list = []
    thread = threading.Thread(target=lambda: out.append(fn(*args)), daemon=True)
    thread.start()
    return thread, out


def wait_until(condition, timeout=30):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.005)


def test_a_served_mixed_batch_equals_the_engine_per_task_and_offline_prediction(setup):
    backbone, store, records, sources = setup
    engine = Engine(store, backbone)
    mixed = [dict(records[t][i], id=f"{t}-{i}") for i in range(3) for t in records]  # round robin over 9 tasks
    with TestClient(create_app(engine, max_batch=64)) as client:
        response = client.post("/predict", json=mixed)
        assert response.status_code == 200, response.text
        served = response.json()
        assert [r["id"] for r in served] == [r["id"] for r in mixed]
        assert len(engine.units()) == 2  # both adapters in every batch
        for task, recs in records.items():
            mine = [r for r in served if r["task"] == task]
            alone = Engine(store, backbone).predict(recs)
            assert all(same(a, b) for a, b in zip(mine, alone)), task
            adapter, exs = sources[task]
            want = offline(backbone, adapter, task, exs)
            got = [str(r["prediction"]) if task == "mc" else r["prediction"] for r in mine]
            assert got == (pytest.approx(want, abs=1e-4) if task == "sts" else want), task

        assert client.get("/health").json() == {"status": "ok", "tasks": 9, "queued": 0, "in_flight": 0}
        rows = {r["name"]: r for r in client.get("/tasks").json()["tasks"]}
        assert set(rows) == set(records)
        assert rows["news_topic"]["labels"] == ["sports", "politics", "science", "business"]
        assert rows["news_topic"]["kind"] == "classification" and rows["news_topic"]["metric"] == "accuracy"
        assert rows["qa"]["kind"] == "extraction"
        assert rows["qa"]["inputs"] == {"context": "string", "question": "string"}
        assert rows["qa"]["score"] is None and rows["qa"]["method"] == "prompt_tuning"  # untrained: no score
        assert [m["id"] for m in client.get("/v1/models").json()["data"]] == list(rows)


def test_v1_completions_on_an_extraction_task(setup):
    backbone, store, records, _ = setup
    engine = Engine(store, backbone)
    with TestClient(create_app(engine)) as client:
        texts = [r["text"] for r in records["ote"]]
        expected = Engine(store, backbone).predict(records["ote"])
        response = client.post("/v1/completions", json={"model": "ote", "prompt": texts[0], "max_tokens": 16})
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["object"] == "text_completion" and body["model"] == "ote" and body["id"].startswith("cmpl-")
        [choice] = body["choices"]
        assert choice["text"] == expected[0]["prediction"] and choice["index"] == 0
        assert choice["finish_reason"] in ("stop", "length")
        several = client.post("/v1/completions", json={"model": "ote", "prompt": texts}).json()["choices"]
        assert [c["text"] for c in several] == [e["prediction"] for e in expected]
        assert [c["index"] for c in several] == [0, 1, 2]
        label = client.post("/v1/completions", json={"model": "movie_sentiment", "prompt": "great"}).json()
        assert label["choices"][0]["text"] in ("positive", "negative")


def test_bad_input_gets_its_status_and_a_message_naming_what_is_wrong(setup, monkeypatch):
    backbone, store, records, _ = setup
    engine = Engine(store, backbone)
    calls, _ = counted(monkeypatch, engine)
    good = records["emotion"][0]
    app = create_app(engine, max_body_bytes=4000, max_records=5)
    cases = [
        ("/predict", [good, {"task": "nope", "text": "x"}], 404, "record 1: task 'nope' is not served here; tasks: "),
        ("/predict", [good, {"task": "emotion"}], 422, "record 1: field 'text' is missing"),
        ("/predict", [good, {**good, "label": "joy"}], 422, "record 1: field 'label' is not an input of task"),
        ("/predict", [{"task": "emotion", "text": 3}], 422, "record 0: field 'text' must be a string, got int"),
        ("/predict", [{"task": 7, "text": "x"}], 422, "record 0: field 'task' must be a string"),
        ("/predict", [{"text": "x"}], 422, "record 0: field 'task' is missing"),
        ("/predict", [good, "emotion"], 422, "record 1: expected a JSON object, got str"),
        ("/predict", [], 422, "the list of records is empty"),
        ("/predict", {"task": "emotion", "text": "x"}, 422, "must be a JSON list of records"),
        ("/predict", [good] * 6, 413, "6 records in one request; at most 5 (max_records)"),
        ("/predict", [{**good, "text": "x" * 5000}], 413, "at most 4000 (max_body_bytes)"),
        ("/v1/completions", {"model": "nope", "prompt": "x"}, 404, "model 'nope' is not a task served here"),
        ("/v1/completions", {"model": "qa", "prompt": "x"}, 422, "takes the fields context, question"),
        ("/v1/completions", {"model": "ote"}, 422, "field 'prompt' is missing"),
        ("/v1/completions", {"model": "ote", "prompt": [1, 2]}, 422, "string or a non-empty list of strings"),
        ("/v1/completions", {"model": "ote", "prompt": "x", "stream": True}, 422, "streaming is not supported"),
    ]
    with TestClient(app) as client:
        for path, body, status, message in cases:
            response = client.post(path, json=body)
            assert response.status_code == status, (body, response.text)
            assert message in response.json()["error"]["message"], (body, response.text)
        unknown = client.post("/predict", json=[{"task": "nope", "text": "x"}]).json()["error"]
        assert set(unknown["tasks"]) == set(records) and "emotion" in unknown["message"]
        malformed = client.post("/predict", content=b'[{"task": ', headers=JSON)
        assert malformed.status_code == 400 and "malformed JSON" in malformed.json()["error"]["message"]
        chunked = client.post("/predict", content=iter([b"[", b" " * 5000, b"]"]), headers=JSON)  # no Content-Length
        assert chunked.status_code == 413 and "max_body_bytes" in chunked.json()["error"]["message"]
        assert client.get("/predict").status_code == 405
        assert calls == []  # none reached the model
        assert client.post("/predict", json=[good]).status_code == 200


def test_a_token_guards_every_route_but_health(setup):
    backbone, store, records, _ = setup
    app = create_app(Engine(store, backbone), api_key=TOKEN)
    routes = [
        ("GET", "/tasks", None),
        ("GET", "/v1/models", None),
        ("POST", "/predict", records["emotion"][:1]),
        ("POST", "/v1/completions", {"model": "ote", "prompt": "杜甫草堂很美"}),
        ("POST", "/admin/reload", None),
    ]
    with TestClient(app) as client:
        assert client.get("/health").status_code == 200
        for method, path, body in routes:
            for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}):
                response = client.request(method, path, json=body, headers=headers)
                assert response.status_code == 401, (path, headers)
                assert response.headers["www-authenticate"] == "Bearer"
                assert "bearer token" in response.json()["error"]["message"]
            ok = client.request(method, path, json=body, headers={"Authorization": f"Bearer {TOKEN}"})
            assert ok.status_code == 200, (path, ok.text)


def test_32_concurrent_clients_are_batched_and_lose_nothing(setup, monkeypatch):
    backbone, store, records, _ = setup
    pool = [r for t in ("movie_sentiment", "news_topic", "emotion", "question_match", "cls", "ote") for r in records[t]]
    expected = Engine(store, backbone).predict(pool)
    engine = Engine(store, backbone)
    calls, _ = counted(monkeypatch, engine)
    clients, each = 32, 20
    app = create_app(engine, max_batch=32, max_wait_ms=5, queue_size=256)
    failures: list[str] = []

    def client_loop(c: int, url: str) -> None:
        with httpx.Client(base_url=url, timeout=60) as http:
            for i in range(each):
                picks = [(c * each + i + j) % len(pool) for j in range(1 + (c + i) % 2)]
                response = http.post("/predict", json=[dict(pool[k], id=f"{c}/{i}/{j}") for j, k in enumerate(picks)])
                if response.status_code != 200:
                    failures.append(f"{c}/{i}: {response.status_code} {response.text}")
                    continue
                got = response.json()
                if [r["id"] for r in got] != [f"{c}/{i}/{j}" for j in range(len(picks))]:
                    failures.append(f"{c}/{i}: ids {[r['id'] for r in got]}")
                if not all(same(r, expected[k]) for r, k in zip(got, picks)):
                    failures.append(f"{c}/{i}: {got} != {[expected[k] for k in picks]}")

    with running(app) as url:
        threads = [threading.Thread(target=client_loop, args=(c, url)) for c in range(clients)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        batcher = app.state.batcher
        assert failures == []
        assert batcher.answered == clients * each
        served = sum(len(call) for call in calls)
        assert served == sum(1 + (c + i) % 2 for c in range(clients) for i in range(each))
        assert len(calls) < clients * each  # requests were gathered
        assert max(len(call) for call in calls) > 2


def test_a_full_queue_answers_503_with_retry_after(setup, monkeypatch):
    backbone, store, records, _ = setup
    engine = Engine(store, backbone)
    gate = threading.Event()
    calls, entered = counted(monkeypatch, engine, gate)
    app = create_app(engine, max_batch=1, max_wait_ms=0, queue_size=1)
    body = records["emotion"][:1]
    with running(app) as url:
        post = lambda: httpx.post(f"{url}/predict", json=body, timeout=60)  # noqa: E731
        first, first_out = in_thread(post)
        assert entered.wait(30)  # the worker is busy with the first request
        second, second_out = in_thread(post)
        wait_until(lambda: app.state.batcher.pending == 1)  # the second waits in the queue: now it is full
        third = post()
        assert third.status_code == 503 and third.headers["retry-after"] == "1"
        assert "1 requests already queued (queue_size)" in third.json()["error"]["message"]
        gate.set()
        first.join(30)
        second.join(30)
        assert first_out[0].status_code == 200 and second_out[0].status_code == 200
        assert len(calls) == 2


def test_a_faulty_record_in_a_gathered_batch_fails_only_its_request(setup, monkeypatch):
    backbone, store, records, _ = setup
    engine = Engine(store, backbone)
    expected = Engine(store, backbone).predict(records["news_topic"])
    gate = threading.Event()
    calls, entered = counted(monkeypatch, engine, gate, fail_on="BOOM")
    app = create_app(engine, max_batch=32, max_wait_ms=0, queue_size=8)
    bodies = [records["news_topic"][:1], [{"task": "news_topic", "text": "BOOM goes the game"}], records["news_topic"]]
    with running(app) as url:
        post = lambda body: httpx.post(f"{url}/predict", json=body, timeout=60)  # noqa: E731
        blocker, _ = in_thread(post, records["emotion"][:1])
        assert entered.wait(30)
        started = []
        for n, body in enumerate(bodies, 1):  # one at a time, so the queue holds them in this order
            started.append(in_thread(post, body))
            wait_until(lambda n=n: app.state.batcher.pending == n)
        gate.set()
        for thread, _ in started:
            thread.join(30)
        good, bad, good_too = (out[0] for _, out in started)
        assert good.status_code == 200 and good_too.status_code == 200
        assert all(same(a, b) for a, b in zip(good.json() + good_too.json(), expected[:1] + expected))
        assert bad.status_code == 500
        assert "prediction failed: RuntimeError: boom: the model cannot embed this record" in bad.text
        assert [len(c) for c in calls] == [1, 5, 1, 1, 3]  # the gathered batch, then request by request
        assert post(records["emotion"][:1]).status_code == 200  # the worker lives on
        blocker.join(30)


def test_a_reload_picks_up_an_edited_store_between_batches(tmp_path, tiny_models):
    backbone = tiny_models["tiny"]
    store = AdapterStore(tmp_path / "store")
    loaded = load_tasks(None, SYNTHETIC)
    add_random_prompts(store, tmp_path / "a", backbone, {t: loaded[t].spec for t in SYNTHETIC[:2]}, length=4)
    app = create_app(Engine(store, backbone), api_key=TOKEN)
    auth = {"Authorization": f"Bearer {TOKEN}"}
    record = {"task": "emotion", "text": "Anna felt scared."}
    with TestClient(app, headers=auth) as client:
        add_random_prompts(store, tmp_path / "b", backbone, {t: loaded[t].spec for t in SYNTHETIC[2:]}, length=4)
        assert client.post("/predict", json=[record]).status_code == 404  # a snapshot until reloaded
        assert client.post("/admin/reload", headers={"Authorization": "Bearer no"}).status_code == 401
        reloaded = client.post("/admin/reload")
        assert reloaded.status_code == 200, reloaded.text
        assert reloaded.json() == {"tasks": sorted(SYNTHETIC), "added": sorted(SYNTHETIC[2:]), "removed": []}
        assert client.post("/predict", json=[record]).status_code == 200
        assert {r["name"] for r in client.get("/tasks").json()["tasks"]} == set(SYNTHETIC)

        store.remove("emotion")
        assert client.post("/admin/reload").json()["removed"] == ["emotion"]
        gone = client.post("/predict", json=[record])
        assert gone.status_code == 404 and "'emotion' is not served" in gone.json()["error"]["message"]

        (store.folder / "index.json").write_text("{broken")
        failed = client.post("/admin/reload")
        assert failed.status_code == 409 and "reload failed, still serving the previous tasks" in failed.text
        assert client.post("/predict", json=[{"task": "news_topic", "text": "a goal"}]).status_code == 200


def test_talora_serve_drains_its_requests_on_sigterm(setup, tmp_path):
    _, store, records, _ = setup
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "TALORA_API_KEY": TOKEN, "TALORA_QUIET": "1"}
    command = [sys.executable, "-m", "talora", "serve", "--store", str(store.folder), "--port", str(port)]
    # A long gathering window keeps the requests in flight when SIGTERM comes.
    command += ["--max-wait-ms", "6000", "--max-batch", "64"]
    server = subprocess.Popen(command, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 300  # a loaded machine can take minutes to import torch
        while True:
            assert server.poll() is None, server.stdout.read().decode()
            assert time.monotonic() < deadline, "talora serve did not come up"
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"{url}/health", timeout=5).status_code == 200:
                    break
            time.sleep(0.2)
        assert httpx.get(f"{url}/tasks", timeout=5).status_code == 401  # the token came from TALORA_API_KEY
        auth = {"Authorization": f"Bearer {TOKEN}"}
        post = lambda body: httpx.post(f"{url}/predict", json=body, headers=auth, timeout=60)  # noqa: E731
        flights = [in_thread(post, records[t]) for t in ("emotion", "news_topic", "ote")]
        wait_until(lambda: httpx.get(f"{url}/health", timeout=5).json()["in_flight"] == 3)
        server.send_signal(signal.SIGTERM)

        def refused() -> bool:  # soon no new connection is accepted, while the three are still being answered
            try:
                httpx.get(f"{url}/health", timeout=5)
            except httpx.TransportError:
                return True
            return False

        wait_until(refused)
        for thread, _ in flights:
            thread.join(60)
        assert [out[0].status_code for _, out in flights] == [200, 200, 200]
        assert [len(out[0].json()) for _, out in flights] == [3, 3, 3]
        # uvicorn re-raises the signal it caught once its graceful shutdown is over.
        assert server.wait(60) in (0, -signal.SIGTERM)
        log = server.stdout.read().decode()
        assert "Application shutdown complete" in log and "Finished server process" in log
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()


# With 8 of the synthetic suite's tasks in the store, the job's new task is a sentence-pair task.
@pytest.mark.parametrize("tasks", ["2", "8"])
def test_talora_bench_serve_on_a_tiny_model(tmp_path, tiny_models, capsys, tasks):
    out = tmp_path / "bench.json"
    argv = ["bench", "serve", "--model", "tiny", "--tasks", tasks, "--batch-size", "2", "--requests", "2"]
    assert main(argv + ["--repeats", "1", "--prompt-length", "2", "--job-steps", "2", "--json", str(out)]) == 0
    table = capsys.readouterr().out
    assert "| mixed_tasks | 1.0 |" in table and "| single_task | 1.0 |" in table
    assert "| peft_switching | 2.0 |" in table  # one adapter switch and forward per task in a mixed batch
    assert "| no_training_job | 2 |" in table  # one pass of the two batches
    assert "| during_training_job |" in table and "Training job wall time: " in table
    report = json.loads(out.read_text())
    assert [r["name"] for r in report["rows"]] == ["mixed_tasks", "single_task", "peft_switching"]
    assert report["setup"]["engine_units"] == 1 and report["setup"]["records_per_pass"] == 4
    assert [r["name"] for r in report["job_rows"]] == ["no_training_job", "during_training_job"]
    assert report["job_rows"][1]["requests"] >= 2  # at least one whole pass while the job ran
    assert report["job"]["job_steps"] == 2 and report["job"]["job_examples"] == 32
    assert report["job"]["job_alone_s"] > 0 and report["job"]["job_with_requests_s"] > 0


def test_command_line_errors_are_one_line(tmp_path, tiny_models, capsys):
    assert main(["serve", "--store", str(tmp_path / "none")]) == 2
    assert "talora: error: no adapter store at" in capsys.readouterr().err
    assert main(["bench", "serve", "--tasks", "99"]) == 2
    assert "talora: error: bench serve: --tasks 99, but the synthetic suite has 10 tasks" in capsys.readouterr().err


NESTED = ("[" * 200_000 + "]" * 200_000, '{"a": ' * 200_000 + "1" + "}" * 200_000)


def test_a_deeply_nested_body_is_a_400_in_the_json_format(setup, monkeypatch):
    backbone, store, records, _ = setup
    engine = Engine(store, backbone)
    calls, _ = counted(monkeypatch, engine)
    with TestClient(create_app(engine, max_body_bytes=2_000_000)) as client:
        for body in NESTED:
            for path in ("/predict", "/v1/completions"):
                response = client.post(path, content=body.encode(), headers=JSON)
                assert response.status_code == 400, (path, response.text[:200])
                error = response.json()["error"]
                assert error["code"] == 400 and error["type"] == "invalid_request_error"
                assert "nested too deeply" in error["message"]
        assert calls == []
        assert client.post("/predict", json=records["emotion"][:1]).status_code == 200  # the server lives on


def test_talora_predict_names_the_line_of_a_deeply_nested_record(setup, tmp_path, capsys):
    _, store, records, _ = setup
    good = dict(records["emotion"][0], text="one line\u2028still the same line")  # not a line break in JSONL
    for nested in NESTED:
        source = tmp_path / "in.jsonl"
        source.write_text(json.dumps(good, ensure_ascii=False) + "\n" + nested + "\n", encoding="utf-8")
        out = tmp_path / "out.jsonl"
        assert main(["predict", "--store", str(store.folder), "--input", str(source), "--output", str(out)]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"talora: error: {source}, line 2: JSON nested too deeply") and err.count("\n") == 1
        assert not out.exists()
    source.write_bytes(b'{"task": "emotion", "text": "caf\xe9"}\n')
    assert main(["predict", "--store", str(store.folder), "--input", str(source)]) == 2
    assert f"talora: error: {source}: not UTF-8 text" in capsys.readouterr().err


def test_predict_takes_only_utf8_json(setup, monkeypatch):
    backbone, store, records, _ = setup
    engine = Engine(store, backbone)
    calls, _ = counted(monkeypatch, engine)
    body = json.dumps(records["emotion"][:1]).encode()
    with TestClient(create_app(engine)) as client:
        for headers, content in (
            ({"Content-Type": "text/plain"}, body),
            ({"Content-Type": "application/x-www-form-urlencoded"}, b"task=emotion&text=hello"),
            ({"Content-Type": "multipart/form-data; boundary=x"}, b"--x--"),
            ({"Content-Type": "application/json; charset=latin-1"}, body),
            ({}, body),
        ):
            response = client.post("/predict", content=content, headers=headers)
            assert response.status_code == 415, (headers, response.text)
            error = response.json()["error"]
            assert error["code"] == 415 and "Content-Type: application/json" in error["message"]
        for path in ("/predict", "/v1/completions"):  # JSON in UTF-16 or Latin-1 is not read as something else
            for content in (body.decode().encode("utf-16"), '[{"task": "emotion", "text": "café"}]'.encode("latin-1")):
                response = client.post(path, content=content, headers=JSON)
                assert response.status_code == 400, response.text
                assert "body is not UTF-8 text" in response.json()["error"]["message"]
        assert calls == []
        for headers in (JSON, {"Content-Type": "Application/JSON; charset=UTF-8"}):
            assert client.post("/predict", content=body, headers=headers).status_code == 200


def test_a_bad_content_length_gets_the_json_error_format(setup):
    """The app answers a Content-Length that is not a number in its own format; so does `talora serve`'s
    uvicorn, which refuses such a request (and any it cannot parse) before the app sees it."""
    backbone, store, records, _ = setup
    app = create_app(Engine(store, backbone))
    body = json.dumps(records["emotion"][:1]).encode()
    with TestClient(app) as client:
        for length in ("abc", "-5", "1e3"):
            response = client.post("/predict", content=body, headers={**JSON, "Content-Length": length})
            assert response.status_code == 400, (length, response.text)
            assert response.json()["error"]["message"] == f"bad Content-Length header {length!r}"
    with running(create_app(Engine(store, backbone))) as url:  # the first app's lifespan is over
        port = int(url.rsplit(":", 1)[1])
        for head in (b"Content-Length: abc\r\n", b"Content-Length: 5\r\nContent-Length: 7\r\n", b"Bad Header\r\n"):
            with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
                sock.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n" + head)
                sock.sendall(b"\r\n" + body)
                answer = b""
                while chunk := sock.recv(65536):
                    answer += chunk
            status, _, rest = answer.partition(b"\r\n")
            headers, _, content = rest.partition(b"\r\n\r\n")
            assert status.startswith(b"HTTP/1.1 400 ") and b"content-type: application/json" in headers.lower()
            error = json.loads(content)["error"]
            assert error["code"] == 400 and error["message"].startswith("malformed HTTP request"), head
        assert httpx.post(f"{url}/predict", json=records["emotion"][:1], timeout=60).status_code == 200


def test_serve_port_errors_are_one_line(setup, capsys):
    _, store, _, _ = setup
    for port in ("99999", "-1", "http"):
        with pytest.raises(SystemExit) as ended:
            main(["serve", "--store", str(store.folder), "--port", port])
        assert ended.value.code == 2
        assert f"talora: error: serve: argument --port: expected a TCP port from 0 to 65535, got '{port}'" in (
            capsys.readouterr().err
        )
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert main(["serve", "--store", str(store.folder), "--port", str(port)]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"talora: error: cannot listen on 127.0.0.1:{port} (Address already in use")
        assert err.count("\n") == 1
    assert main(["serve", "--store", str(store.folder), "--host", "no-such-host.invalid"]) == 2
    assert "talora: error: --host 'no-such-host.invalid': not an address" in capsys.readouterr().err


def test_a_damaged_task_fails_alone_and_its_unit_keeps_serving(setup, tmp_path, capsys):
    backbone, store, records, _ = setup
    healthy = ["movie_sentiment", "news_topic", "question_match"]  # the rest of emotion's unit
    before = Engine(store, backbone)
    expected = before.predict([r for t in healthy for r in records[t]])
    blob = store.folder / "blobs" / f"{store.entry('emotion')['tensors']['prompt']['sha256']}.safetensors"
    blob.write_bytes(blob.read_bytes()[:-8] + b"garbage!")
    index = json.loads((store.folder / "index.json").read_text())
    entry = store.folder / index["tasks"]["cls"]["entry"]
    entry.write_text(entry.read_text().replace('"cls"', '"clz"', 1))

    engine = Engine(store, backbone)
    with pytest.raises(AdapterError, match="task 'emotion' cannot be served, its stored files are damaged"):
        engine.preload()
    assert set(engine.preload(strict=False)) == {"emotion", "cls"}
    assert sorted(map(sorted, engine.units())) == [sorted(KINDS[1:]), sorted(healthy)]
    with TestClient(create_app(engine)) as client:
        mixed = client.post("/predict", json=[r for t in healthy for r in records[t]])
        assert mixed.status_code == 200 and all(same(a, b) for a, b in zip(mixed.json(), expected))
        for task in ("emotion", "cls"):
            failed = client.post("/predict", json=[records["news_topic"][0], records[task][0]])
            assert failed.status_code == 500, failed.text
            error = failed.json()["error"]
            assert error["type"] == "server_error"
            assert f"record 1: task {task!r} cannot be served, its stored files are damaged" in error["message"]
        assert "is corrupt" in client.post("/predict", json=records["emotion"][:1]).json()["error"]["message"]
        rows = {r["name"]: r for r in client.get("/tasks").json()["tasks"]}
        assert "is corrupt" in rows["emotion"]["damaged"] and rows["news_topic"]["damaged"] is None
    with TestClient(create_app(before)) as client:  # a reload onto the damaged store keeps the intact engine
        failed = client.post("/admin/reload")
        assert failed.status_code == 409 and "task 'emotion' cannot be served" in failed.json()["error"]["message"]
        assert client.post("/predict", json=records["emotion"][:1]).status_code == 200
    # A lazily loading engine finds the damage on the first request for the unit, and fails that task alone.
    lazy = Engine(store, backbone)
    assert same(lazy.predict(records["news_topic"])[0], expected[len(records["movie_sentiment"])])
    with pytest.raises(AdapterError, match="record 0: task 'emotion' cannot be served"):
        lazy.predict(records["emotion"])
    assert main(["predict", "--store", str(store.folder), "--input", str(_jsonl(tmp_path, records["cls"]))]) == 2
    assert (
        "requests.jsonl, line 1: task 'cls' cannot be served, its stored files are damaged" in capsys.readouterr().err
    )


def _jsonl(folder: Path, records: list[dict]) -> Path:
    path = folder / "requests.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path
