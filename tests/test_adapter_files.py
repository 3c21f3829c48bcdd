"""Adapter sidecars: config and state through the strict reader, and format-1 files still load."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import make_backbone

from talora.adapters.files import SIDECAR, load_adapter, save_adapter
from talora.errors import AdapterError
from talora.methods.base import TargetContext
from talora.methods.talora import TALoRA, TALoRAConfig
from talora.tasks import SYNTHETIC_TARGET_TASKS, load_tasks


@pytest.fixture
def saved_target(tmp_path):
    backbone = make_backbone("llama")
    task = SYNTHETIC_TARGET_TASKS[0]
    spec = load_tasks(None, [task])[task].spec
    source = TALoRA(TALoRAConfig(length=2, layers=2, rank=2), backbone, ["a", "b"])
    target = source.for_target(TargetContext(task, backbone))
    with torch.no_grad():
        target.u.normal_()
    save_adapter(tmp_path, target, backbone, {task: spec})
    return backbone, target, tmp_path


def test_state_is_saved_apart_from_the_config_and_comes_back(saved_target):
    backbone, target, folder = saved_target
    sidecar = json.loads((folder / SIDECAR).read_text())
    assert sidecar["state"] == {"transfer": True, "joint": False} and "transfer" not in sidecar["config"]
    loaded, _ = load_adapter(folder, backbone)
    assert loaded.state.transfer and not loaded.theta0.requires_grad
    assert torch.equal(loaded.u, target.u)


def test_a_format_1_sidecar_moves_its_state_out_of_the_config(saved_target):
    backbone, _, folder = saved_target
    sidecar = json.loads((folder / SIDECAR).read_text())
    sidecar["format_version"] = 1
    sidecar["config"]["transfer"] = sidecar.pop("state")["transfer"]
    (folder / SIDECAR).write_text(json.dumps(sidecar))
    loaded, _ = load_adapter(folder, backbone)
    assert loaded.state.transfer


@pytest.mark.parametrize(
    "change, message",
    [
        ({"config": {"rank": "two"}}, r"adapter.json: config.rank: expected int"),
        ({"config": {"rnak": 2}}, r"adapter.json: config: unknown key\(s\) rnak"),
        ({"state": {"transfer": "yes"}}, r"adapter.json: state.transfer: expected bool"),
    ],
)
def test_a_bad_sidecar_is_refused_naming_the_file_and_field(saved_target, change, message):
    backbone, _, folder = saved_target
    sidecar = json.loads((folder / SIDECAR).read_text())
    for key, value in change.items():
        sidecar[key].update(value)
    (folder / SIDECAR).write_text(json.dumps(sidecar))
    before = (folder / SIDECAR).read_bytes()
    with pytest.raises(AdapterError, match=message):
        load_adapter(folder, backbone)
    assert (folder / SIDECAR).read_bytes() == before
