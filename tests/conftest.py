"""Tiny random models built from configs (no download) and a tokenizer trained in memory."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import (
    AutoModelForCausalLM,
    Gemma3TextConfig,
    LlamaConfig,
    PreTrainedTokenizerFast,
    Qwen2Config,
    Qwen3Config,
)

from talora.core.backbone import Backbone, freeze, load_backbone

CORPUS = [
    "the movie was wonderful and the acting was superb",
    "the food was awful and the service was slow",
    "Review: great product, works well. Sentiment: positive negative",
    "Question: is a dog an animal? Answer: yes no maybe",
    "sports politics science business joy anger fear sadness good bad same different",
] * 20

FAMILIES = ("llama", "qwen2", "qwen3", "gemma3")


def tiny_tokenizer() -> PreTrainedTokenizerFast:
    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=300, special_tokens=["<pad>", "<eos>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tok.train_from_iterator(CORPUS, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="<eos>")


def tiny_config(family: str):
    common = dict(
        vocab_size=320,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        initializer_range=0.2,
    )
    if family == "llama":
        return LlamaConfig(**common)
    if family == "qwen2":
        return Qwen2Config(**common)
    if family == "gemma3":
        # Gemma 3 as the 270M has it, small: one key/value head, head_dim apart from hidden/heads, a
        # query scalar apart from head_dim, sliding-window layers (a window shorter than the test
        # inputs) beside global ones, q/k norms, the embedding scaled inside embed_tokens, tied head.
        common.update(num_key_value_heads=1, head_dim=24, query_pre_attn_scalar=20, sliding_window=4)
        layer_types = ["sliding_attention", "full_attention"] * 2
        return Gemma3TextConfig(**common, layer_types=layer_types, pad_token_id=0, eos_token_id=1, bos_token_id=None)
    return Qwen3Config(**common, head_dim=16)


_TOKENIZER = None


def make_backbone(family: str = "llama", seed: int = 0) -> Backbone:
    global _TOKENIZER
    if _TOKENIZER is None:
        _TOKENIZER = tiny_tokenizer()
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(tiny_config(family), attn_implementation="sdpa")
    return freeze(Backbone(model, _TOKENIZER, f"tiny-{family}"))


@pytest.fixture(params=FAMILIES)
def family_backbone(request) -> Backbone:
    return make_backbone(request.param)


@pytest.fixture
def backbone() -> Backbone:
    return make_backbone("llama")


@pytest.fixture(scope="session")
def saved_tiny_models(tmp_path_factory) -> dict[str, Path]:
    """Tiny Llama and Qwen3 models saved as Hugging Face model folders, once per session."""
    root = tmp_path_factory.mktemp("tiny-models")
    folders = {}
    for family in ("llama", "qwen3"):
        backbone = make_backbone(family)
        folders[family] = root / family
        backbone.model.save_pretrained(folders[family])
        backbone.tokenizer.save_pretrained(folders[family])
    return folders


@pytest.fixture
def tiny_models(tmp_path, monkeypatch, saved_tiny_models) -> dict[str, Backbone]:
    """Run the test in ``tmp_path``, where ``tiny`` (Llama) and ``tiny-qwen3`` are model folders, so
    recipes and the CLI load ``model: tiny`` like any local model; returns those backbones."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "tiny").symlink_to(saved_tiny_models["llama"])
    (tmp_path / "tiny-qwen3").symlink_to(saved_tiny_models["qwen3"])
    return {"tiny": load_backbone("tiny"), "tiny-qwen3": load_backbone("tiny-qwen3")}


def write_tiny_sweep(path: Path, methods: dict, seeds=(0,)) -> Path:
    """A sweep config of two-step runs on the ``tiny`` model (see ``tiny_models``): two sources,
    ``tweet_emotion`` as the one target at k = 2, the given methods and seeds."""
    short = dict(steps=2, batch_size=2, warmup_steps=0, eval_every=0, eval_examples=2)
    run = dict(
        model="tiny",
        tasks=["movie_sentiment", "emotion"],
        max_length=48,
        train_examples=8,
        validation_examples=4,
        test_examples=6,
        stage1=short,
        train=short,
        transfer=dict(steps=1, batch_size=2, warmup_steps=0, eval_every=0),
    )
    sweep = {"run": run, "methods": methods, "targets": ["tweet_emotion"], "ks": [2], "seeds": list(seeds)}
    path.write_text(yaml.safe_dump(sweep))
    return path
