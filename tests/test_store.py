"""The adapter store on a tiny model: add/list/show/remove, shared tensors stored once, targets added later
without touching other tasks' files, another base model refused, damaged files refused, a killed writer."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from talora.adapters.store import BLOBS, ENTRIES, INDEX, AdapterStore
from talora.cli import main
from talora.config import RunConfig, TrainConfig
from talora.core.backbone import load_backbone
from talora.errors import AdapterError, ConfigError
from talora.recipes import pipeline

SOURCES = ["movie_sentiment", "news_topic", "emotion"]
TARGETS = ["product_sentiment", "tweet_emotion"]
SHARED = ("theta0", "B", "gates")


def short_config(method="talora", tasks=SOURCES, model="tiny", **method_args) -> RunConfig:
    short = TrainConfig(steps=4, batch_size=4, warmup_steps=1, eval_every=2, eval_examples=6, log_every=2)
    return RunConfig(
        method=method,
        model=model,
        tasks=list(tasks),
        max_length=128,
        train_examples=16,
        validation_examples=8,
        test_examples=8,
        method_args={"length": 4, **method_args},
        stage1=short,
        train=short,
        transfer=TrainConfig(steps=3, batch_size=4, warmup_steps=1, eval_every=0),
    )


def train_runs(root: Path, saved_tiny_models, extra: bool = False) -> Path:
    """A TA-LoRA run on SOURCES and its transfers to TARGETS (and, with ``extra``, a prompt-tuning run
    and a LoRA run on other tasks), trained under ``root`` with ``tiny`` loadable from there."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "tiny").symlink_to(saved_tiny_models["llama"])
    old = os.getcwd()
    os.chdir(root)
    try:
        backbone = load_backbone("tiny")
        pipeline.run_train(short_config(layers=2), root / "src", backbone=backbone)
        for target in TARGETS:
            pipeline.run_transfer(root / "src", target, 4, 0, root / target, backbone=backbone)
        if extra:
            pt = short_config("prompt_tuning", ["question_match", "word_category"])
            pipeline.run_train(pt, root / "pt", backbone=backbone)
            lora = short_config("lora", ["hypernym_entailment", "question_match"])
            lora.method_args = {}
            pipeline.run_train(lora, root / "lora", backbone=backbone)
    finally:
        os.chdir(old)
    return root


@pytest.fixture(scope="module")
def runs(tmp_path_factory, saved_tiny_models) -> Path:
    return train_runs(tmp_path_factory.mktemp("runs"), saved_tiny_models)


@pytest.fixture(autouse=True)
def _in_a_folder_with_tiny_models(tiny_models):
    return tiny_models


def files(store: Path) -> dict[str, tuple[int, str]]:
    """Every blob and entry file: (mtime_ns, sha256)."""
    out = {}
    for sub in (BLOBS, ENTRIES):
        for p in sorted((store / sub).iterdir()):
            out[f"{sub}/{p.name}"] = (p.stat().st_mtime_ns, hashlib.sha256(p.read_bytes()).hexdigest())
    return out


def test_add_list_show_remove_through_the_cli(tmp_path, runs, capsys):
    store = tmp_path / "store"
    assert main(["store", "add", "--store", str(store), "--adapter", str(runs / "src")]) == 0
    out = capsys.readouterr().out
    assert [line.split(":")[0] for line in out.splitlines()] == [f"added {t}" for t in SOURCES]
    assert main(["store", "add", "--store", str(store), "--adapter", str(runs / TARGETS[0])]) == 0
    assert "added product_sentiment: talora, 2 new tensor file(s), 3 already stored" in capsys.readouterr().out

    assert main(["store", "list", "--store", str(store)]) == 0
    listed = capsys.readouterr().out
    assert all(t in listed for t in SOURCES + TARGETS[:1]) and "k=4" in listed
    assert main(["store", "list", "--store", str(store), "--json"]) == 0
    rows = {r["task"]: r for r in json.loads(capsys.readouterr().out)}
    assert set(rows) == set(SOURCES + TARGETS[:1])
    assert rows["product_sentiment"]["k"] == 4 and rows["product_sentiment"]["split"] == "test"
    assert rows["emotion"]["split"] == "test" and rows["emotion"]["method"] == "talora"

    assert main(["store", "show", "--store", str(store), "--task", "product_sentiment"]) == 0
    entry = json.loads(capsys.readouterr().out)
    assert entry["inputs"] == {"text": "string"}
    assert entry["spec"]["labels"] == ["good", "bad"] and entry["spec"]["template"].startswith("Product review:")
    assert entry["state"] == {"transfer": True, "joint": False} and entry["config"]["layers"] == 2
    assert set(entry["tensors"]) == {"theta0", "B", "u", "v", "gates"}
    assert entry["tensors"]["u"]["shape"][1] == 1  # the task's own slice
    assert entry["training"]["k"] == 4 and entry["training"]["seed"] == 0 and entry["training"]["data_dir"] is None
    assert entry["metrics"]["accuracy"] == json.loads((runs / TARGETS[0] / "metrics.json").read_text())["score"]
    assert entry["max_length"] == 128 and entry["source"] == str((runs / TARGETS[0]).resolve())
    assert entry["parameters"]["trainable"] == {"shared": 2 * 4 * 64 + 2 * 4 * 4 + 2 * 4, "per_task": 2 * (4 + 64)}

    own = {entry["tensors"][n]["sha256"] for n in ("u", "v")}
    assert main(["store", "remove", "--store", str(store), "--task", "product_sentiment"]) == 0
    assert "removed product_sentiment" in capsys.readouterr().out
    left = {p.stem for p in (store / BLOBS).iterdir()}
    assert not own & left and len(left) == 3 + 2 * len(SOURCES)  # its own tensors went, the shared ones stayed
    assert AdapterStore(store).tasks() == sorted(SOURCES)

    assert main(["store", "remove", "--store", str(store), "--task", "nope"]) == 2
    assert "has no task 'nope'; it has: emotion, movie_sentiment, news_topic" in capsys.readouterr().err
    assert main(["store", "show", "--store", str(tmp_path / "none"), "--task", "x"]) == 2
    assert "no adapter store at" in capsys.readouterr().err


def test_shared_tensors_are_stored_once_and_a_later_target_rewrites_nothing(tmp_path, runs, tiny_models):
    store = AdapterStore(tmp_path / "store")
    backbone = tiny_models["tiny"]
    store.add(runs / "src", backbone)
    store.add(runs / TARGETS[0], backbone)
    before = files(store.folder)
    report = store.add(runs / TARGETS[1], backbone)
    assert report[0]["new_blobs"] == 2 and report[0]["reused_blobs"] == 3
    after = files(store.folder)
    assert all(after[name] == stamp for name, stamp in before.items())  # not rewritten, not even touched
    assert len(after) == len(before) + 3  # the new target's u, v and entry

    _, entries = store.entries()
    assert set(entries) == set(SOURCES + TARGETS)
    for name in SHARED:
        assert len({e["tensors"][name]["sha256"] for e in entries.values()}) == 1, name
    own = [e["tensors"][n]["sha256"] for e in entries.values() for n in ("u", "v")]
    assert len(set(own)) == len(own)
    blobs = sorted(p.stem for p in (store.folder / BLOBS).iterdir())
    assert blobs == sorted({*own, *(entries["emotion"]["tensors"][n]["sha256"] for n in SHARED)})
    assert len(blobs) == len(SHARED) + 2 * len(SOURCES + TARGETS)
    for p in (store.folder / BLOBS).iterdir():  # content-addressed: each name is its file's digest
        assert hashlib.sha256(p.read_bytes()).hexdigest() == p.stem

    # The slices reproduce the trained tensors.
    from talora.adapters.files import load_adapter

    trained, _ = load_adapter(runs / "src", backbone)
    piece = store.load_unit(entries["news_topic"], backbone)
    assert piece.task_names == ["news_topic"]
    assert (piece.u[:, 0] == trained.u[:, 1]).all() and (piece.theta0 == trained.theta0).all()


def test_adding_a_task_again_replaces_only_its_entry(tmp_path, runs, tiny_models, capsys):
    store = tmp_path / "store"
    for folder in ("src", TARGETS[0]):
        assert main(["store", "add", "--store", str(store), "--adapter", str(runs / folder)]) == 0
    before = files(store)
    index = json.loads((store / INDEX).read_text())
    shutil.copytree(runs / TARGETS[0], tmp_path / "copy")
    capsys.readouterr()
    assert main(["store", "add", "--store", str(store), "--adapter", str(tmp_path / "copy")]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"replaced product_sentiment (was from {(runs / TARGETS[0]).resolve()})")
    assert "0 new tensor file(s), 5 already stored" in out
    after = files(store)
    old_entry = index["tasks"]["product_sentiment"]["entry"]
    assert old_entry not in after  # the replaced entry file is gone once the new index is in place
    assert {k: v for k, v in before.items() if k != old_entry}.items() <= after.items()
    assert AdapterStore(store).entry("product_sentiment")["source"] == str((tmp_path / "copy").resolve())


def test_an_adapter_for_another_base_model_is_refused(tmp_path, runs, tiny_models, capsys):
    pipeline.run_train(
        short_config("prompt_tuning", ["movie_sentiment"], model="tiny-qwen3"),
        tmp_path / "qwen",
        backbone=tiny_models["tiny-qwen3"],
    )
    store = tmp_path / "store"
    assert main(["store", "add", "--store", str(store), "--adapter", str(runs / "src")]) == 0
    index = (store / INDEX).read_bytes()
    capsys.readouterr()
    assert main(["store", "add", "--store", str(store), "--adapter", str(tmp_path / "qwen")]) == 2
    err = capsys.readouterr().err
    assert "adapter is for base model 'tiny-qwen3'" in err and "holds adapters for 'tiny'" in err
    assert (store / INDEX).read_bytes() == index and AdapterStore(store).tasks() == sorted(SOURCES)

    from talora.serving.engine import Engine

    with pytest.raises(AdapterError, match=r"holds adapters for base model 'tiny' .*not for 'tiny-qwen3'"):
        Engine(store, tiny_models["tiny-qwen3"])


def test_damaged_blob_or_entry_is_refused_naming_file_and_task(tmp_path, runs, tiny_models):
    store = AdapterStore(tmp_path / "store")
    store.add(runs / "src", tiny_models["tiny"])
    entry = store.entry("emotion")
    blob = store.folder / BLOBS / f"{entry['tensors']['u']['sha256']}.safetensors"
    data = bytearray(blob.read_bytes())
    data[-3] ^= 0x01
    blob.write_bytes(bytes(data))
    with pytest.raises(AdapterError, match=rf"{blob.name}: blob of task 'emotion' \(tensor 'u'\) is corrupt"):
        store.load_unit(entry, tiny_models["tiny"])
    assert blob.read_bytes() == bytes(data)  # reading never repairs nor deletes

    from talora.serving.engine import Engine

    engine = Engine(store, tiny_models["tiny"])
    with pytest.raises(AdapterError, match="blob of task 'emotion'"):
        engine.predict([{"task": "emotion", "text": "I am happy"}])

    index = json.loads((store.folder / INDEX).read_text())
    path = store.folder / index["tasks"]["news_topic"]["entry"]
    path.write_text(path.read_text().replace('"news_topic"', '"news_topik"', 1))
    with pytest.raises(AdapterError, match=r"entry of task 'news_topic' is corrupt"):
        store.entry("news_topic")


def test_not_an_adapter_or_not_a_store_is_refused_and_nothing_is_written(tmp_path, runs, capsys):
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    assert main(["store", "add", "--store", str(foreign), "--adapter", str(runs / "src")]) == 2
    assert "not an adapter store" in capsys.readouterr().err
    assert sorted(p.name for p in foreign.iterdir()) == ["notes.txt"]
    assert main(["store", "add", "--store", str(tmp_path / "s"), "--adapter", str(tmp_path)]) == 2
    assert "no adapter sidecar here" in capsys.readouterr().err and not (tmp_path / "s").exists()
    with pytest.raises(ConfigError, match="no adapter store"):
        AdapterStore(tmp_path / "s").tasks()


# A child that SIGKILLs itself during one of the store's file writes (leaving a torn temporary file,
# as a real kill inside atomic_write would); WHICH picks the write: the first new blob or the index.
KILL_DURING_ADD = """
import os, signal, sys
import talora.adapters.store as st
real = st.atomic_write  # store.py's own reference, the one it calls
def dying_write(path, data):
    if (WHICH == "blob" and path.parent.name == "blobs") or (WHICH == "index" and path.name == "index.json"):
        with open(path.parent / ("." + path.name + ".torn"), "wb") as f:
            f.write(data[: len(data) // 2])
        os.kill(os.getpid(), signal.SIGKILL)
    real(path, data)
st.atomic_write = dying_write
from talora.cli import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.parametrize("which", ["blob", "index"])
def test_a_writer_killed_mid_add_leaves_the_previous_store(tmp_path, runs, tiny_models, which):
    store = AdapterStore(tmp_path / "store")
    store.add(runs / "src", tiny_models["tiny"])
    store.add(runs / TARGETS[0], tiny_models["tiny"])
    index, before = (store.folder / INDEX).read_bytes(), files(store.folder)
    child = subprocess.run(
        [sys.executable, "-c", f"WHICH = {which!r}\n" + KILL_DURING_ADD]
        + ["store", "add", "--store", str(store.folder), "--adapter", str(runs / TARGETS[1])],
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env={**os.environ, "TQDM_DISABLE": "1"},
        timeout=300,
    )
    assert child.returncode == -signal.SIGKILL, child.stderr.decode()[-2000:]
    assert (store.folder / INDEX).read_bytes() == index
    assert list((store.folder / ("blobs" if which == "blob" else ".")).glob(".*.torn"))  # it died mid-write
    assert all(files(store.folder)[name] == stamp for name, stamp in before.items())
    _, entries = store.entries()
    assert sorted(entries) == sorted(SOURCES + TARGETS[:1])
    for entry in entries.values():
        store.load_unit(entry, tiny_models["tiny"])  # every tensor still verifies

    store.add(runs / TARGETS[1], tiny_models["tiny"])  # the next writer finishes the job and sweeps up
    assert store.tasks() == sorted(SOURCES + TARGETS)
    index = json.loads((store.folder / INDEX).read_text())
    referenced = {f"{ENTRIES}/{Path(i['entry']).name}" for i in index["tasks"].values()}
    referenced |= {
        f"{BLOBS}/{t['sha256']}.safetensors" for e in store.entries()[1].values() for t in e["tensors"].values()
    }
    assert set(files(store.folder)) == referenced
    assert not [p for p in store.folder.rglob("*") if p.name.startswith(".") and p.name != ".lock"]


def test_a_writer_waits_for_the_lock(tmp_path, runs, tiny_models):
    import fcntl
    import threading

    store = AdapterStore(tmp_path / "store")
    store.add(runs / "src", tiny_models["tiny"])
    fd = os.open(store.folder / ".lock", os.O_RDWR)
    fcntl.flock(fd, fcntl.LOCK_EX)  # another writer at work
    try:
        writer = threading.Thread(target=store.add, args=(runs / TARGETS[0], tiny_models["tiny"]))
        writer.start()
        writer.join(timeout=5)
        assert writer.is_alive()
        assert TARGETS[0] not in json.loads((store.folder / INDEX).read_text())["tasks"]
    finally:
        os.close(fd)
    writer.join(timeout=120)
    assert not writer.is_alive() and TARGETS[0] in store.tasks()


def _prompt_tensors(method, task_ids: list[int]) -> list:
    out = method.prompt_inputs(torch.tensor(task_ids))
    lp = out.layer_prompts
    return [out.input_prefix] if lp is None else [lp.prompts, lp.gates]


def _same(a, b) -> bool:
    return (a is None and b is None) or torch.equal(a, b)


def _split_methods(backbone):
    from talora.methods.deep_prompt_tuning import DeepPromptTuning, DeepPromptTuningConfig
    from talora.methods.prompt_tuning import PromptTuning, PromptTuningConfig
    from talora.methods.spot_retrieval import SPoTRetrieval, SPoTRetrievalConfig
    from talora.methods.talora import TALoRA, TALoRAConfig
    from talora.methods.tpv import TPV, TPVConfig

    return {
        "talora": lambda n: TALoRA(TALoRAConfig(length=3, layers=2), backbone, n),
        "talora_unshared_b": lambda n: TALoRA(TALoRAConfig(length=3, layers=2, shared_b=False), backbone, n),
        "prompt_tuning": lambda n: PromptTuning(PromptTuningConfig(length=3), backbone, n),
        "spot_retrieval": lambda n: SPoTRetrieval(SPoTRetrievalConfig(length=3), backbone, n),
        "deep_prompt_tuning": lambda n: DeepPromptTuning(DeepPromptTuningConfig(length=3, layers=2), backbone, n),
        "tpv": lambda n: TPV(TPVConfig(length=3), backbone, n),
    }


@pytest.mark.parametrize(
    "kind", ["talora", "talora_unshared_b", "prompt_tuning", "spot_retrieval", "deep_prompt_tuning", "tpv"]
)
def test_task_slices_merge_back_into_the_same_method(kind, tiny_models):
    backbone = tiny_models["tiny"]
    make = _split_methods(backbone)[kind]
    names = ["a", "b", "c"]
    torch.manual_seed(0)
    method = make(names)
    with torch.no_grad():
        for t in [*method.parameters(), *method.buffers()]:
            t.normal_()
    pieces = [method.task_slice(n) for n in names]
    for i, piece in enumerate(pieces):
        assert piece.task_names == [names[i]] and type(piece) is type(method)
        for mine, theirs in zip(_prompt_tensors(piece, [0]), _prompt_tensors(method, [i])):
            assert _same(mine, theirs)
        # A fresh one-task method loads the slice's tensors: the shapes a store entry rebuilds.
        make([names[i]]).load_state_dict(piece.state_dict())
    merged = type(method).merge_tasks([pieces[2], pieces[0], pieces[1]], backbone)
    assert merged.task_names == ["c", "a", "b"]
    for mine, theirs in zip(_prompt_tensors(merged, [1, 2, 0]), _prompt_tensors(method, [0, 1, 2])):
        assert _same(mine, theirs)
    assert type(method).merge_tasks([pieces[0], pieces[0]], backbone) is None  # one task twice

    other = make(["d"])  # its own shared tensors (where the method has any) differ
    with torch.no_grad():
        for t in [*other.parameters(), *other.buffers()]:
            t.normal_()
    shares = kind in ("talora", "talora_unshared_b", "tpv")
    assert (type(method).merge_tasks([pieces[0], other], backbone) is None) == shares


def test_methods_that_cannot_split_keep_the_safe_default(tiny_models):
    from talora.methods.lora import LoRA, LoRAConfig

    lora = LoRA(LoRAConfig(), tiny_models["tiny"], ["a", "b"])
    assert lora.task_slice("a") is None and LoRA.merge_tasks([lora, lora], tiny_models["tiny"]) is None


def test_verify_and_list_report_damaged_blobs_naming_their_tasks(tmp_path, runs, tiny_models, capsys):
    store = AdapterStore(tmp_path / "store")
    store.add(runs / "src", tiny_models["tiny"])
    where = ["--store", str(store.folder)]
    assert main(["store", "verify", *where]) == 0
    assert "3 task(s) in" in capsys.readouterr().out and store.verify() == []

    own = store.folder / BLOBS / f"{store.entry('emotion')['tensors']['u']['sha256']}.safetensors"
    shared = store.folder / BLOBS / f"{store.entry('emotion')['tensors']['B']['sha256']}.safetensors"
    own.write_bytes(own.read_bytes()[:-4] + b"oops")
    shared.unlink()
    assert main(["store", "verify", *where]) == 2
    out, err = capsys.readouterr()
    # Blobs are reported in the order of their digests, which the trained values decide: compare as sets.
    assert sorted(out.splitlines()) == sorted(
        [
            f"{own}: corrupt, its content hashes to {hashlib.sha256(own.read_bytes()).hexdigest()[:16]}..., "
            f"not the {own.stem[:16]}... it was stored as (task emotion)",
            f"{shared}: missing, no such file (tasks emotion, movie_sentiment, news_topic)",
        ]
    )
    assert err.startswith(f"talora: error: store {store.folder}: damaged files in 3 task(s): emotion, movie_sentiment")

    assert main(["store", "list", *where]) == 2
    out, err = capsys.readouterr()
    flagged = {line.split()[0]: line for line in out.splitlines()}
    damaged = flagged["emotion"].split("DAMAGED: ", 1)[1].split("; ")
    assert sorted(damaged) == sorted([f"{BLOBS}/{own.name} corrupt", f"{BLOBS}/{shared.name} missing"])
    assert flagged["news_topic"].endswith(f"DAMAGED: {BLOBS}/{shared.name} missing")
    assert "talora: error:" in err and "talora store verify" in err
    assert main(["store", "list", *where, "--json"]) == 2
    rows = {r["task"]: r for r in json.loads(capsys.readouterr().out)}
    assert sorted(rows["emotion"]["damaged"]) == sorted(
        [f"{BLOBS}/{own.name} corrupt", f"{BLOBS}/{shared.name} missing"]
    )
    assert main(["store", "show", *where, "--task", "emotion"]) == 2
    out, err = capsys.readouterr()
    assert json.loads(out)["task"] == "emotion" and "damaged files in 1 task(s): emotion" in err

    store.add(runs / "src", tiny_models["tiny"])  # adding the adapter again repairs its blobs
    assert main(["store", "verify", *where]) == 0 and store.verify() == []
