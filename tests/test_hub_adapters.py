"""Adapters on the hub, offline: the model card, ``talora push`` against a fake ``HfApi`` recording the call,
and adapters named by hub id read from a hub cache laid out on disk (``HF_HUB_OFFLINE=1``)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import huggingface_hub
import pytest
from huggingface_hub import constants

from talora.adapters.files import resolve_adapter
from talora.adapters.hub import HubError, is_repo_id, made_by, model_card, push_adapter
from talora.cli import main
from talora.config import RunConfig, TrainConfig
from talora.errors import AdapterError, ConfigError
from talora.recipes import pipeline

REVISION = "0123456789abcdef0123456789abcdef01234567"
SIDECAR = {
    "format_version": 2,
    "method": "talora",
    "config": {"length": 4},
    "state": {},
    "tasks": [
        {
            "name": "sst2",
            "language": "en",
            "kind": "classification",
            "labels": ["negative", "positive"],
            "label_words": {"negative": " negative", "positive": " positive"},
            "template": "Review: {text}\nSentiment:",
            "metric": "accuracy",
        },
        {"name": "stsb", "language": "en", "kind": "regression", "labels": ["0", "5"], "template": "{text_a}|{text_b}"},
    ],
    "base_model": {"id": "Qwen/Qwen2.5-0.5B", "fingerprint": "bf0514495c542a1f"},
    "trainable_parameters": {"shared": 552, "per_task": 136000},
}
TRAIN_METRICS = {
    "method": "talora",
    "split": "validation",
    "metrics": {"sst2": {"accuracy": 0.91, "macro_f1": 0.9}, "stsb": {"pearson": 0.85, "spearman": 0.84}},
    "headline": {"sst2": "accuracy", "stsb": "pearson"},
    "average": 0.88,
}


def adapter_folder(root: Path, sidecar: dict = SIDECAR, metrics: dict | None = TRAIN_METRICS) -> Path:
    """An adapter folder as train writes it (the tensors are stand-in bytes: the card never reads them)."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "adapter.safetensors").write_bytes(b"tensors")
    (root / "adapter.json").write_text(json.dumps(sidecar))
    if metrics is not None:
        (root / "metrics.json").write_text(json.dumps(metrics))
    # The data folder sits at a path of the machine that trained (made at run time, not written here)
    (root / "config.yaml").write_text(
        f"method: talora\nmodel: Qwen/Qwen2.5-0.5B\nseed: 3\ndata_dir: {root.parent / 'machine'}/shared/data\n"
        "method_args:\n  length: 4\n"
    )
    (root / "checkpoint").mkdir(exist_ok=True)
    (root / "checkpoint" / "latest.json").write_text("{}")
    (root / "log.jsonl").write_text("{}\n")
    return root


def test_model_card_tells_what_the_adapter_is(tmp_path):
    card = model_card(adapter_folder(tmp_path / "run1"), "me/sst-adapter")
    front, body = card.split("---\n")[1], card.split("---\n", 2)[2]
    assert "library_name: talora" in front and "base_model: Qwen/Qwen2.5-0.5B" in front
    assert front.count("- talora") == 1 and "- prompt-tuning" in front
    assert body.startswith("\n# me/sst-adapter\n")
    assert "A **talora** adapter for the frozen base model `Qwen/Qwen2.5-0.5B`" in body and "sst2, stsb" in body
    assert "| sst2 | classification | accuracy | 0.9100 | macro_f1=0.9000 |" in body
    assert "| stsb | regression | pearson | 0.8500 | spearman=0.8400 |" in body
    assert "Average of the headline metrics: 0.8800" in body
    assert "| per_task | 136,000 |" in body and "| shared | 552 |" in body
    assert "talora train --config config.yaml --output run1" in body
    assert "data_dir: '.../shared/data'" in body and str(tmp_path) not in body  # no one's machine paths
    assert "`Review: {text}\\nSentiment:`" in body
    assert "talora eval --adapter me/sst-adapter --task sst2" in body
    assert "talora transfer --from me/sst-adapter" in body


def test_model_card_of_a_transfer_names_its_source_and_shots(tmp_path):
    sidecar = {**SIDECAR, "tasks": SIDECAR["tasks"][:1], "source_adapter": "me/sources"}
    metrics = {"task": "sst2", "k": 16, "seed": 2, "split": "test", "metrics": {"accuracy": 0.7}, "metric": "accuracy"}
    folder = adapter_folder(tmp_path / "tgt", sidecar, metrics)
    card = model_card(folder)
    assert "talora transfer --from me/sources --task sst2 --k 16 --seed 2 --output tgt" in card
    assert "k=16 training examples (per class for classification), seed 2, scored on test" in card
    assert "| sst2 | classification | accuracy | 0.7000 |" in card
    scratch = {**sidecar, "source_adapter": None}
    assert (
        made_by(scratch, metrics, "o") == "talora transfer --config config.yaml --task sst2 --k 16 --seed 2 --output o"
    )
    local = {**sidecar, "source_adapter": str(tmp_path / "machine" / "runs" / "src")}
    assert "--from .../runs/src " in made_by(local, metrics, "o")


def test_model_card_without_metrics_and_of_a_local_base_model(tmp_path):
    sidecar = {**SIDECAR, "base_model": {"id": "tiny", "fingerprint": "x"}}
    card = model_card(adapter_folder(tmp_path / "a", sidecar, metrics=None))
    assert "base_model:" not in card and "No metrics.json" in card


def test_model_card_refuses_what_is_not_an_adapter(tmp_path):
    with pytest.raises(AdapterError, match=r"adapter.json: no adapter sidecar here"):
        model_card(tmp_path)
    folder = adapter_folder(tmp_path / "a")
    (folder / "adapter.safetensors").unlink()
    with pytest.raises(AdapterError, match=r"adapter.safetensors: the adapter's tensors are missing"):
        model_card(folder)
    folder = adapter_folder(tmp_path / "b")
    (folder / "adapter.json").write_text("{broken")
    with pytest.raises(AdapterError, match=r"adapter.json: corrupt JSON"):
        model_card(folder)


class FakeApi:
    """Stands in for huggingface_hub.HfApi: records each call and what the uploaded folder held."""

    calls: list = []

    def __init__(self, *args, **kwargs):
        pass

    def create_repo(self, repo_id, **kwargs):
        self.calls.append(("create_repo", repo_id, kwargs))

    def upload_folder(self, *, repo_id, folder_path, **kwargs):
        staged = {p.name: p.read_bytes() for p in Path(folder_path).iterdir()}
        self.calls.append(("upload_folder", repo_id, kwargs, staged))
        return type("CommitInfo", (), {"commit_url": f"https://huggingface.co/{repo_id}/commit/abc"})()


@pytest.fixture
def fake_api(monkeypatch):
    FakeApi.calls = []
    monkeypatch.setattr(huggingface_hub, "HfApi", FakeApi)
    return FakeApi.calls


def test_push_uploads_the_adapter_and_its_card_in_one_commit(tmp_path, capsys, fake_api):
    folder = adapter_folder(tmp_path / "run1")
    assert main(["push", "--adapter", str(folder), "--repo", "me/sst-adapter", "--private"]) == 0
    (create, repo, options), (upload, repo2, kwargs, staged) = fake_api
    assert (create, repo, options) == (
        "create_repo",
        "me/sst-adapter",
        {"private": True, "exist_ok": True, "repo_type": "model"},
    )
    assert upload == "upload_folder" and repo2 == "me/sst-adapter" and kwargs["repo_type"] == "model"
    assert kwargs["commit_message"] == "talora push: talora adapter (sst2, stsb)"
    assert sorted(staged) == ["README.md", "adapter.json", "adapter.safetensors", "config.yaml", "metrics.json"]
    assert staged["README.md"].decode() == model_card(folder, "me/sst-adapter")
    assert staged["adapter.safetensors"] == b"tensors"
    out = capsys.readouterr().out
    assert "to https://huggingface.co/me/sst-adapter/commit/abc (model card: generated)" in out
    assert not (folder / "README.md").exists()  # the card is staged, the user's folder left as it was


def test_push_keeps_the_folders_own_readme(tmp_path, fake_api):
    folder = adapter_folder(tmp_path / "run1")
    (folder / "README.md").write_text("# my words\n")
    result = push_adapter(folder, "me/x", message="first")
    assert result["card"] == "the folder's README.md" and result["files"][0] == "README.md"
    assert fake_api[1][3]["README.md"] == b"# my words\n" and fake_api[1][2]["commit_message"] == "first"


def test_an_adapter_of_gemma3_270m_carries_the_gemma_terms(tmp_path, fake_api):
    from talora.core.backbone import GEMMA3_270M_ID

    sidecar = {**SIDECAR, "base_model": {"id": GEMMA3_270M_ID, "fingerprint": "x"}}
    folder = adapter_folder(tmp_path / "g", sidecar)
    card = model_card(folder, "me/gemma-adapter")
    front = card.split("---\n")[1]
    assert "license: gemma" in front and "base_model: google/gemma-3-270m\n" in front
    assert "## Licence" in card and "Gemma is provided under and subject to the Gemma Terms of Use" in card
    assert "ai.google.dev/gemma/prohibited_use_policy" in card
    result = push_adapter(folder, "me/gemma-adapter")
    staged = fake_api[1][3]
    assert "NOTICE" in result["files"] and staged["NOTICE"].decode().startswith("Gemma is provided under")
    assert "license:" not in model_card(adapter_folder(tmp_path / "q"))  # other base models: no such section


def test_push_refuses_before_reaching_the_hub(tmp_path, capsys, fake_api):
    assert main(["push", "--adapter", str(tmp_path), "--repo", "me/x"]) == 2
    assert "no adapter sidecar here" in capsys.readouterr().err
    folder = adapter_folder(tmp_path / "a")
    for repo in ("just-a-name", "me/x@v1", "me/../x", "/abs/path"):
        with pytest.raises(ConfigError, match="not a hub model repo id"):
            push_adapter(folder, repo)
    assert fake_api == []


def test_push_reports_what_the_hub_said(tmp_path, capsys, monkeypatch):
    class Refusing(FakeApi):
        def create_repo(self, repo_id, **kwargs):
            raise huggingface_hub.errors.LocalTokenNotFoundError("Token is required (`token=True`), none found.")

    monkeypatch.setattr(huggingface_hub, "HfApi", Refusing)
    folder = adapter_folder(tmp_path / "a")
    with pytest.raises(HubError, match=r"pushing .* to me/x: LocalTokenNotFoundError: Token is required"):
        push_adapter(folder, "me/x")
    assert main(["push", "--adapter", str(folder), "--repo", "me/x"]) == 2
    err = capsys.readouterr().err
    assert err.count("talora: error:") == 1 and "hf auth login" in err


def test_push_dry_run_prints_the_card(tmp_path, capsys, fake_api):
    folder = adapter_folder(tmp_path / "a")
    assert main(["push", "--adapter", str(folder), "--repo", "me/x", "--dry-run"]) == 0
    assert capsys.readouterr().out == model_card(folder, "me/x") and fake_api == []


def test_the_hub_package_is_named_when_missing(tmp_path, monkeypatch):
    folder = adapter_folder(tmp_path / "a")
    monkeypatch.setitem(sys.modules, "huggingface_hub", None)
    with pytest.raises(ConfigError, match=r"pushing an adapter to the hub needs the 'huggingface_hub' package"):
        push_adapter(folder, "me/x")
    with pytest.raises(ConfigError, match=r"adapter 'me/x': there is no such local folder, and loading it from"):
        resolve_adapter("me/x")


# ---------------------------------------------------------------- adapters by hub id
def hub_cache(root: Path, repo_id: str, folder: Path, files=("adapter.json", "adapter.safetensors", "config.yaml")):
    """The hub cache layout snapshot_download reads: models--owner--name/{snapshots/<rev>/..., refs/main}."""
    repo = root / f"models--{repo_id.replace('/', '--')}"
    snapshot = repo / "snapshots" / REVISION
    snapshot.mkdir(parents=True)
    for name in files:
        if (folder / name).is_file():
            shutil.copy2(folder / name, snapshot / name)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(REVISION)
    return snapshot


@pytest.fixture
def offline_cache(tmp_path, monkeypatch):
    """An offline hub whose cache is a folder of the test (HF_HUB_OFFLINE=1 as the library reads it)."""
    cache = tmp_path / "hf-cache"
    cache.mkdir()
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    return cache


def test_repo_ids_and_local_paths():
    assert is_repo_id("owner/name") and is_repo_id("owner/name@v1.0") and is_repo_id("Org-1/x.y_z")
    for spec in ("name", "./owner/name", "/owner/name", "owner/name/extra", "a/b--c", "~/x"):
        assert not is_repo_id(spec), spec


def test_resolve_adapter_prefers_a_local_folder_then_the_hub_cache(tmp_path, offline_cache, monkeypatch):
    monkeypatch.chdir(tmp_path)
    local = adapter_folder(tmp_path / "owner" / "name")
    assert resolve_adapter("owner/name") == Path("owner/name")  # a local folder wins over a hub id
    shutil.rmtree(tmp_path / "owner")
    snapshot = hub_cache(offline_cache, "owner/name", adapter_folder(tmp_path / "src"))
    assert resolve_adapter("owner/name") == snapshot
    assert resolve_adapter(str(local)) == local  # not there and not an id: the path, for read_sidecar to refuse
    assert resolve_adapter("missing") == Path("missing")


def test_an_uncached_or_foreign_hub_adapter_is_refused(tmp_path, offline_cache):
    with pytest.raises(AdapterError, match=r"adapter 'owner/other': there is no such local folder, and the hub"):
        resolve_adapter("owner/other")
    with pytest.raises(AdapterError, match=r"owner/other@v2 could not be fetched \(LocalEntryNotFoundError"):
        resolve_adapter("owner/other@v2")
    bare = tmp_path / "bare"
    bare.mkdir()
    (bare / "README.md").write_text("a model, not an adapter")
    hub_cache(offline_cache, "owner/model", bare, files=("README.md",))
    with pytest.raises(AdapterError, match=r"hub model repo owner/model has no adapter.json: not a talora adapter"):
        resolve_adapter("owner/model")


def test_hub_ids_honour_the_offline_environment(tmp_path):
    cache = tmp_path / "cache"
    snapshot = hub_cache(cache, "owner/name", adapter_folder(tmp_path / "src"))
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(cache), "HF_HOME": str(tmp_path / "home")}
    # the hub half of resolve_adapter, without the torch import adapter_files brings
    code = "from talora.adapters.hub import download_adapter; print(download_adapter('owner/name'))"
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == str(snapshot)


def test_eval_and_transfer_take_an_adapter_by_hub_id(tmp_path, tiny_models, offline_cache, capsys):
    short = TrainConfig(steps=2, batch_size=4, warmup_steps=1, eval_every=0, eval_examples=4)
    cfg = RunConfig(
        method="prompt_tuning",
        model="tiny",
        tasks=["movie_sentiment", "news_topic"],
        max_length=48,
        train_examples=8,
        validation_examples=8,
        test_examples=8,
        method_args={"length": 4},
        train=short,
        transfer=TrainConfig(steps=2, batch_size=4, warmup_steps=1, eval_every=0),
    )
    pipeline.run_train(cfg, tmp_path / "src")
    hub_cache(offline_cache, "me/pt-adapter", tmp_path / "src")
    local = pipeline.run_eval(tmp_path / "src", "movie_sentiment")
    assert main(["eval", "--adapter", "me/pt-adapter", "--task", "movie_sentiment", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["metrics"] == local["metrics"]
    argv = ["transfer", "--from", "me/pt-adapter", "--task", "product_sentiment", "--k", "2", "--output", "tgt"]
    assert main(argv) == 0
    sidecar = json.loads((tmp_path / "tgt" / "adapter.json").read_text())
    assert sidecar["source_adapter"] == "me/pt-adapter"  # the id, not the cache folder it was read from
    assert "--from me/pt-adapter --task product_sentiment --k 2" in model_card(tmp_path / "tgt")
