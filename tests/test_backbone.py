"""Backbone loading from a local folder, freezing, and the fingerprint adapters are checked with."""

from conftest import make_backbone

from talora.backbone import load_backbone, model_fingerprint


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
