"""Teaching a running server a new task from a few examples (`POST /tasks`, talora.serving.jobs) on a tiny model: the
taught task is served beside the others with the predictions `talora transfer` + `talora store add` give on the
same examples and seed, and so is one taught by `talora store adapt`; bad requests get their status before
anything is written; requests are answered while a job trains, a queued request before the job's next step; a
cancelled job, a server shut down mid-job and a server killed mid-job leave the store as it was, and the job
is listed as cancelled or failed."""

from __future__ import annotations

import contextlib
import csv
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time

import httpx
import pytest
import torch
from fastapi.testclient import TestClient
from test_serve import in_thread, running, same, wait_until

from talora.adapters.store import AdapterStore
from talora.atomic import read_tensors
from talora.bench.serve import add_random_prompts
from talora.cli import main
from talora.config import RunConfig, TrainConfig
from talora.core.backbone import load_backbone
from talora.recipes import pipeline
from talora.serving.engine import Engine
from talora.serving.http import Batcher, create_app
from talora.serving.jobs import JobManager
from talora.tasks import load_tasks

SOURCES = ["movie_sentiment", "news_topic", "emotion"]
NAME = "reviews"
TOKEN = "teach-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
JSON = {"Content-Type": "application/json"}
LONG = 100_000  # steps of a job that is still training when the test acts on it


def short_config() -> RunConfig:
    short = TrainConfig(steps=4, batch_size=4, warmup_steps=1, eval_every=2, eval_examples=6, log_every=2)
    return RunConfig(
        method="talora",
        model="tiny",
        tasks=list(SOURCES),
        max_length=128,
        train_examples=16,
        validation_examples=8,
        test_examples=8,
        method_args={"length": 4, "layers": 2},
        stage1=short,
        train=short,
        transfer=TrainConfig(steps=3, batch_size=4, warmup_steps=1, eval_every=0),
    )


@pytest.fixture(scope="module")
def world(tmp_path_factory, saved_tiny_models) -> dict:
    """A TA-LoRA run on SOURCES and a target transferred from it, both in a store; the new task's examples
    (20 product reviews) as a data folder; and the reference: `talora transfer --k all --seed 0` of the run
    on that folder, added by `talora store add` to a copy of the store."""
    root = tmp_path_factory.mktemp("teach")
    (root / "tiny").symlink_to(saved_tiny_models["llama"])
    old = os.getcwd()
    os.chdir(root)
    try:
        backbone = load_backbone("tiny")
        pipeline.run_train(short_config(), root / "src", backbone=backbone)
        pipeline.run_transfer(root / "src", "tweet_emotion", 4, 0, root / "target", backbone=backbone)
        store = AdapterStore(root / "store")
        store.add(root / "src", backbone)
        store.add(root / "target", backbone)
        loaded = load_tasks(None, ["product_sentiment"])["product_sentiment"]
        examples = [{"text": ex.fields["text"], "label": ex.label} for ex in loaded.splits["train"][:20]]
        (root / "data" / NAME).mkdir(parents=True)
        (root / "data" / NAME / "train.jsonl").write_text("".join(json.dumps(ex) + "\n" for ex in examples))
        argv = ["transfer", "--from", str(root / "src"), "--task", NAME, "--k", "all", "--seed", "0"]
        assert main(argv + ["--data-dir", str(root / "data"), "--output", str(root / "ref")]) == 0
        shutil.copytree(root / "store", root / "ref-store")
        assert main(["store", "add", "--store", str(root / "ref-store"), "--adapter", str(root / "ref")]) == 0
    finally:
        os.chdir(old)
    records = [{"task": NAME, "text": ex.fields["text"]} for ex in loaded.splits["test"][:8]]
    records += [{"task": t, "text": "the plot was dull and the acting wooden"} for t in (*SOURCES, "tweet_emotion")]
    return {"root": root, "examples": examples, "records": records}


@pytest.fixture
def store(world, tmp_path, tiny_models) -> AdapterStore:
    """A copy of the world's store, in a folder where `tiny` loads."""
    shutil.copytree(world["root"] / "store", tmp_path / "store")
    return AdapterStore(tmp_path / "store")


def job_state(get, job_id: str) -> dict:
    response = get(f"/jobs/{job_id}")
    assert response.status_code == 200, response.text
    return response.json()


def wait_for(get, job_id: str, condition, timeout: float = 120) -> dict:
    seen: list[dict] = []
    wait_until(lambda: seen.append(job_state(get, job_id)) or condition(seen[-1]), timeout)
    return seen[-1]


def files_of(store: AdapterStore) -> dict[str, bytes]:
    return {
        str(p.relative_to(store.folder)): p.read_bytes()
        for p in sorted(store.folder.rglob("*"))
        if p.is_file() and p.parts[len(store.folder.parts)] != "jobs"
    }


def test_a_task_taught_over_http_is_served_as_transfer_and_store_add_make_it(world, store, tiny_models, capsys):
    backbone = tiny_models["tiny"]
    expected = Engine(world["root"] / "ref-store", backbone).predict(world["records"])
    reference = json.loads((world["root"] / "ref" / "metrics.json").read_text())
    app = create_app(Engine(store, backbone), api_key=TOKEN)
    with TestClient(app, headers=AUTH) as client:
        assert client.post("/predict", json=world["records"][:1]).status_code == 404  # not yet a task
        response = client.post("/tasks", json={"name": NAME, "examples": world["examples"], "seed": 0})
        assert response.status_code == 202, response.text
        job_id = response.json()["id"]
        assert response.headers["location"] == f"/jobs/{job_id}"
        assert response.json()["state"] in ("queued", "running", "succeeded")
        record = wait_for(client.get, job_id, lambda r: r["state"] not in ("queued", "running"))
        assert record["state"] == "succeeded", record["error"]
        assert record["progress"]["step"] == record["progress"]["steps"] == 3  # the run's own transfer budget
        assert record["examples"] == {"given": 20, "train": 16, "held_out": 2}  # the run caps training at 16
        assert record["base"]["tasks"] == SOURCES and record["base"]["method"] == "talora"
        assert record["base"]["run_config"] == "stored with the run"
        result = record["result"]
        assert result["served"] is True and result["held_out"] == 2
        assert result["score"] == reference["score"] and result["metrics"] == reference["metrics"]
        assert result["new_blobs"] == 2 and result["reused_blobs"] == 3  # u, v; theta0, B and gates shared

        served = client.post("/predict", json=world["records"])
        assert served.status_code == 200, served.text
        assert all(same(a, b) for a, b in zip(served.json(), expected)), (served.json(), expected)
        rows = {r["name"]: r for r in client.get("/tasks").json()["tasks"]}
        assert rows[NAME]["labels"] == ["bad", "good"] and rows[NAME]["score"] == reference["score"]
        assert [j["id"] for j in client.get("/jobs").json()["jobs"]] == [job_id]
        done = client.delete(f"/jobs/{job_id}")
        assert done.status_code == 409 and "has succeeded: nothing to cancel" in done.json()["error"]["message"]
        again = client.post("/tasks", json={"name": NAME, "examples": world["examples"]})
        assert again.status_code == 409 and "already exists in the store" in again.json()["error"]["message"]
    restarted = Engine(store, backbone).predict(world["records"])  # the task outlives the server
    assert all(same(a, b) for a, b in zip(restarted, expected))
    assert main(["store", "verify", "--store", str(store.folder)]) == 0
    assert "every entry and blob matches its sha256" in capsys.readouterr().out
    entry = store.entry(NAME)
    folder = store.folder / "jobs" / job_id
    assert entry["source"] == str((folder / "adapter").resolve())
    assert entry["training"]["k"] == "all" and entry["training"]["seed"] == 0
    mine = read_tensors(folder / "adapter" / "adapter.safetensors", AssertionError)
    ref = read_tensors(world["root"] / "ref" / "adapter.safetensors", AssertionError)
    assert mine.keys() == ref.keys() and all(torch.equal(mine[k], ref[k]) for k in ref)
    # What the job kept reproduces it with `talora transfer` alone, as docs/serving.md says.
    argv = ["transfer", "--from", str(folder / "base"), "--task", NAME, "--k", "all", "--seed", "0"]
    assert main(argv + ["--data-dir", str(folder / "data"), "--output", str(folder.parent / "again")]) == 0
    again = read_tensors(folder.parent / "again" / "adapter.safetensors", AssertionError)
    assert all(torch.equal(again[k], ref[k]) for k in ref)

    # Killed right after the index was written: the next manager finds the task stored and says so.
    path = store.folder / "jobs" / f"{job_id}.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), "state": "running"}))
    manager = JobManager(store, backbone)
    assert manager.recovered == [job_id] and manager.get(job_id)["state"] == "succeeded"
    assert (store.folder / "jobs" / job_id / "adapter" / "adapter.json").is_file()


def test_a_task_taught_by_store_adapt_equals_transfer_and_store_add(world, store, tiny_models, capsys, tmp_path):
    backbone = tiny_models["tiny"]
    expected = Engine(world["root"] / "ref-store", backbone).predict(world["records"])
    examples = tmp_path / "reviews.csv"
    with examples.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, ["text", "label"])
        writer.writeheader()
        writer.writerows(world["examples"])
    argv = ["store", "adapt", "--store", str(store.folder), "--task", NAME, "--examples", str(examples)]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"added {NAME}: accuracy=") and "on 2 held-out example(s); trained on 16 for 3 steps" in out
    got = Engine(store, backbone).predict(world["records"])
    assert all(same(a, b) for a, b in zip(got, expected))
    [record] = JobManager(store, backbone).list()
    assert record["state"] == "succeeded" and record["name"] == NAME


def test_store_adapt_refuses_bad_input_before_loading_a_model(world, store, tmp_path, capsys, monkeypatch):
    import talora.core.backbone

    def no_model(*args, **kwargs):
        raise AssertionError("a model was loaded before the input was checked")

    monkeypatch.setattr(talora.core.backbone, "load_backbone", no_model)
    good = world["examples"]
    files = {
        "good.jsonl": good[:6],
        "few.jsonl": good[:3],
        "unlabelled.jsonl": [good[0], {"text": "no label here"}, *good[2:6]],
        "numbers.jsonl": [good[0], {"text": "x", "label": 1}, *good[2:6]],
    }
    for name, lines in files.items():
        (tmp_path / name).write_text("".join(json.dumps(x) + "\n" for x in lines))
    cases = [
        (["few.jsonl"], "talora: error: too few examples: 3; a task needs at least 4"),
        (["unlabelled.jsonl"], f"talora: error: {tmp_path / 'unlabelled.jsonl'}, line 2: field 'label' is missing"),
        (["numbers.jsonl"], "line 2: field 'label' must be a non-empty string, got 1"),
        (["nope.jsonl"], "talora: error: --examples nope.jsonl: file not found"),
        (["good.txt"], "expected a .jsonl or .csv file"),
        (["good.jsonl", "--task", "emotion"], "talora: error: task 'emotion' already exists in the store"),
        (["good.jsonl", "--from", "tweet_emotion"], "cannot transfer from 'tweet_emotion'"),
        (["good.jsonl", "--labels", "good"], "label 'bad' is not one of the labels given: good"),
    ]
    for args, message in cases:
        file, *extra = args
        path = file if file == "nope.jsonl" else str(tmp_path / file)
        argv = ["store", "adapt", "--store", str(store.folder), "--task", NAME, "--examples", path, *extra]
        assert main(argv) == 2, args
        err = capsys.readouterr().err
        assert message in err and err.startswith("talora: error: ") and err.count("\n") == 1, (args, err)
    assert not (store.folder / "jobs").exists()


def test_bad_requests_get_their_status_and_leave_nothing(world, store, tiny_models, tmp_path):
    backbone = tiny_models["tiny"]
    good = world["examples"]
    pairs = [{"text_a": ex["text"], "text_b": "same?", "label": ex["label"]} for ex in good]
    body = lambda **kw: {"name": NAME, "examples": good, **kw}  # noqa: E731
    cases = [
        ([1, 2], 422, 'the body must be a JSON object {"name": ..., "examples": [...]}'),
        ({"examples": good}, 422, "field 'name' must be a task name"),
        (body(name="a b"), 422, "field 'name' must be a task name of letters, digits, _ and -"),
        (body(name="emotion"), 409, "task 'emotion' already exists in the store"),
        (body(examples=good[:3]), 422, "too few examples: 3; a task needs at least 4"),
        (body(examples="text"), 422, "field 'examples' must be a list"),
        (body(examples=[*good[:4], {"text": "x"}]), 422, "example 4: field 'label' is missing"),
        (body(examples=[*good[:4], {"text": "", "label": "good"}]), 422, "example 4: field 'text' must be a non-empty"),
        (body(examples=[*good[:4], dict(good[0], id=3)]), 422, "example 4: field 'id' is not known"),
        (body(examples=[*good[:4], pairs[0]]), 422, "example 4: a pair example among single ones"),
        (body(examples=[dict(ex, label="good") for ex in good]), 422, "every example has the label 'good'"),
        (body(labels=["good", "meh"]), 422, "example 0: label 'bad' is not one of the labels given: good, meh"),
        (body(labels=["good", "bad", "meh"]), 422, "label(s) 'meh' have no example"),
        (body(template="Review: {txt}"), 422, "field 'template' must use exactly the examples' fields {text}"),
        (body(examples=pairs, template="{text_a}"), 422, "{text_a}, {text_b}; it uses {text_a}"),
        (body(steps=0), 422, "field 'steps' must be a whole number from 1 to 100000"),
        (body(k="some"), 422, "field 'k' must be a positive number of examples per label, or 'all'"),
        (body(seed="x"), 422, "field 'seed' must be a whole number"),
        (body(epochs=3), 422, "field 'epochs' is not known"),
        (body(**{"from": "nope"}), 404, "field 'from': the store has no task 'nope'"),
        (body(**{"from": "tweet_emotion"}), 422, "cannot transfer from 'tweet_emotion': it was itself transferred"),
        (body(examples=[dict(ex, label=lab) for ex, lab in zip(good, "abcd")]), 422, "cannot hold an example out"),
    ]
    app = create_app(Engine(store, backbone), api_key=TOKEN)
    with TestClient(app, headers=AUTH) as client:
        for request, status, message in cases:
            response = client.post("/tasks", json=request)
            assert response.status_code == status, (request, response.text)
            assert message in response.json()["error"]["message"], (request, response.text)
        assert client.post("/tasks", json=body(), headers={"Authorization": "Bearer no"}).status_code == 401
        assert client.post("/tasks", content=b'{"name": ', headers=JSON).status_code == 400
        assert client.post("/tasks", content=b"{}", headers={"Content-Type": "text/plain"}).status_code == 415
        assert client.get("/jobs/nope").status_code == 404 and client.delete("/jobs/nope").status_code == 404
        assert client.get("/jobs").json() == {"jobs": []}
    assert not (store.folder / "jobs").exists()

    # A store without a TA-LoRA run has no default base; one with a damaged run cannot transfer from it.
    other = AdapterStore(tmp_path / "pt-store")
    specs = {t: load_tasks(None, [t])[t].spec for t in SOURCES}
    add_random_prompts(other, tmp_path / "pt", backbone, specs, length=2)
    with TestClient(create_app(Engine(other, backbone))) as client:
        response = client.post("/tasks", json=body())
        assert response.status_code == 422 and "holds no TA-LoRA source run" in response.text
        assert "name the base with field 'from'" in response.text
    blob = store.folder / "blobs" / f"{store.entry('emotion')['tensors']['theta0']['sha256']}.safetensors"
    blob.write_bytes(blob.read_bytes()[:-4] + b"oops")
    with TestClient(create_app(Engine(store, backbone))) as client:
        response = client.post("/tasks", json=body())
        assert response.status_code == 422 and "its stored files are damaged" in response.text


def test_requests_during_a_job_are_all_answered_and_a_cancelled_job_leaves_nothing(world, store, tiny_models):
    backbone = tiny_models["tiny"]
    pool = [r for r in world["records"] if r["task"] != NAME]
    expected = Engine(store, backbone).predict(pool)
    before = files_of(store)
    app = create_app(Engine(store, backbone), max_batch=4, max_wait_ms=0)
    failures: list[str] = []

    def client_loop(url: str, c: int) -> None:
        with httpx.Client(base_url=url, timeout=120) as http:
            for i in range(4):
                k = (c + i) % len(pool)
                response = http.post("/predict", json=[pool[k]])
                if response.status_code != 200 or not same(response.json()[0], expected[k]):
                    failures.append(f"{c}/{i}: {response.status_code} {response.text}")

    with running(app) as url:
        http = httpx.Client(base_url=url, timeout=60)
        response = http.post("/tasks", json={"name": NAME, "examples": world["examples"], "steps": LONG})
        assert response.status_code == 202, response.text
        job_id = response.json()["id"]
        started = wait_for(http.get, job_id, lambda r: r["progress"]["step"] >= 2)
        assert started["state"] == "running" and started["progress"]["steps"] == LONG
        assert started["progress"]["eta_s"] > 0 and started["progress"]["loss"] is not None
        busy = http.post("/tasks", json={"name": "other", "examples": world["examples"]})
        assert busy.status_code == 429 and busy.headers["retry-after"] == "10"
        assert "at most 1 at once (max_jobs)" in busy.json()["error"]["message"]

        threads = [threading.Thread(target=client_loop, args=(url, c)) for c in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(300)
        assert failures == []
        during = job_state(http.get, job_id)
        assert during["state"] == "running"  # every request was answered while the job trained
        wait_for(http.get, job_id, lambda r: r["progress"]["step"] > during["progress"]["step"])  # and it goes on

        cancel = http.delete(f"/jobs/{job_id}")
        assert cancel.status_code in (200, 202) and cancel.json()["state"] in ("cancelling", "cancelled")
        record = wait_for(http.get, job_id, lambda r: r["state"] not in ("running", "cancelling"))
        assert record["state"] == "cancelled" and record["error"] == "cancelled; nothing was stored"
        assert files_of(store) == before  # no file of the store was touched
        assert http.delete(f"/jobs/{job_id}").status_code == 200  # cancelling twice is no error
        assert NAME not in {r["name"] for r in http.get("/tasks").json()["tasks"]}
        assert http.post("/predict", json=pool).status_code == 200

        # The slot is free again: a short job goes through.
        quick = http.post("/tasks", json={"name": "quick", "examples": world["examples"], "steps": 1})
        assert quick.status_code == 202, quick.text
        assert wait_for(http.get, quick.json()["id"], lambda r: r["state"] == "succeeded")["progress"]["step"] == 1
        http.close()
    assert not (store.folder / "jobs" / job_id).exists() and not (store.folder / "jobs" / f"{job_id}.lock").exists()
    assert store.tasks() == sorted([*SOURCES, "tweet_emotion", "quick"])


def test_a_queued_request_goes_before_the_next_training_step(world, store, tiny_models, monkeypatch):
    backbone = tiny_models["tiny"]
    engine = Engine(store, backbone)
    events: list[str] = []
    real = engine.predict
    monkeypatch.setattr(engine, "predict", lambda *a, **kw: events.append("request") or real(*a, **kw))
    batcher = Batcher(engine, 4, 0, 8)
    batcher.start()
    in_step, go_on = threading.Event(), threading.Event()

    def job() -> None:
        with batcher.training_turn(lambda: False) as between_steps:
            for step in (1, 2, 3):
                events.append(f"step {step}")
                if step == 2:
                    in_step.set()
                    assert go_on.wait(30)
                between_steps()

    trainer = threading.Thread(target=job)
    trainer.start()
    assert in_step.wait(30)
    answer = batcher.submit(world["records"][-1:])
    wait_until(lambda: batcher.pending == 0)  # the worker took it and waits for the model
    assert events == ["step 1", "step 2"]  # held off during the step under way
    go_on.set()
    trainer.join(30)
    assert answer.result(30)[0]["task"] == "tweet_emotion"
    assert events == ["step 1", "step 2", "request", "step 3"]
    batcher.close()


def test_a_server_shut_down_mid_job_stores_nothing_and_lists_the_job_failed(world, store, tiny_models):
    backbone = tiny_models["tiny"]
    before = files_of(store)
    with TestClient(create_app(Engine(store, backbone))) as client:
        response = client.post("/tasks", json={"name": NAME, "examples": world["examples"], "steps": LONG})
        job_id = response.json()["id"]
        wait_for(client.get, job_id, lambda r: r["progress"]["step"] >= 1)
    # Leaving the client ends the app's lifespan, as SIGTERM does under uvicorn.
    record = json.loads((store.folder / "jobs" / f"{job_id}.json").read_text())
    assert record["state"] == "failed"
    assert record["error"] == "the server shut down during the job; nothing was stored"
    assert files_of(store) == before and not (store.folder / "jobs" / job_id).exists()


def test_kill_9_mid_job_leaves_the_store_valid_and_a_restarted_server_lists_the_job_failed(
    world, store, tiny_models, tmp_path, capsys
):
    before = files_of(store)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "TALORA_QUIET": "1"}
    command = [sys.executable, "-m", "talora", "serve", "--store", str(store.folder), "--port", str(port)]
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
        body = {"name": NAME, "examples": world["examples"], "steps": LONG}
        response = httpx.post(f"{url}/tasks", json=body, timeout=60)
        assert response.status_code == 202, response.text
        job_id = response.json()["id"]
        get = lambda path: httpx.get(f"{url}{path}", timeout=60)  # noqa: E731
        wait_for(get, job_id, lambda r: r["progress"]["step"] >= 2)
        flight, out = in_thread(lambda: httpx.post(f"{url}/predict", json=world["records"][-1:], timeout=60))
        flight.join(60)
        assert out and out[0].status_code == 200
    finally:
        server.kill()  # SIGKILL: no handler runs
        server.wait()
    on_disk = json.loads((store.folder / "jobs" / f"{job_id}.json").read_text())
    assert on_disk["state"] == "running"  # as the killed process left it
    assert main(["store", "verify", "--store", str(store.folder)]) == 0
    capsys.readouterr()
    assert files_of(store) == before and NAME not in store.tasks()

    app = create_app(Engine(store, tiny_models["tiny"]))
    assert app.state.jobs.recovered == [job_id]
    with TestClient(app) as client:
        [record] = client.get("/jobs").json()["jobs"]
        assert record["id"] == job_id and record["state"] == "failed"
        assert "stopped before it ended (killed or crashed); nothing was stored" in record["error"]
    assert not (store.folder / "jobs" / job_id).exists() and not (store.folder / "jobs" / f"{job_id}.lock").exists()
