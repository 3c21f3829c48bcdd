"""Adapter files: ``adapter.safetensors`` (the method's tensors) + ``adapter.json`` (everything else).

The sidecar records the method, its config and its state, the task names with their
templates and label words, and the base model's id and shape fingerprint. Loading refuses
an adapter made for another base model (by fingerprint) or another method, a config or
state the method's strict reader rejects, and a corrupt or truncated tensor file, each
with an error that names the file.

Format 2 keeps a method's runtime state (``state``) apart from the user's choices
(``config``); a format-1 sidecar, which kept both in ``config``, is read by moving the
state fields across.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from ..atomic import atomic_save_tensors, atomic_write, read_tensors
from ..config import from_dict
from ..core.backbone import Backbone
from ..errors import AdapterError, ConfigError
from ..methods import Method, method_class
from ..tasks import TaskSpec

FORMAT_VERSION = 2
TENSORS, SIDECAR = "adapter.safetensors", "adapter.json"


def spec_to_dict(spec: TaskSpec) -> dict:
    d = dataclasses.asdict(spec)
    d["labels"] = list(spec.labels)
    d["label_words"] = dict(spec.label_words)
    return d


def spec_from_dict(d: dict) -> TaskSpec:
    return TaskSpec(**{**d, "labels": tuple(d["labels"]), "label_words": dict(d["label_words"])})


def save_adapter(
    folder: Path, method: Method, backbone: Backbone, specs: dict[str, TaskSpec], extra: dict | None = None
) -> None:
    """Tensors first, sidecar last: a sidecar on disk means its tensors are complete."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    atomic_save_tensors(folder / TENSORS, method.state_dict())
    sidecar = {
        "format_version": FORMAT_VERSION,
        "method": method.name,
        "config": dataclasses.asdict(method.config),
        "state": dataclasses.asdict(method.state),
        "tasks": [spec_to_dict(specs[t]) for t in method.task_names],
        "base_model": {"id": backbone.model_id, "fingerprint": backbone.fingerprint},
        "trainable_parameters": method.trainable_parameters(),
        **(extra or {}),
    }
    atomic_write(folder / SIDECAR, json.dumps(sidecar, indent=1, ensure_ascii=False).encode())


def resolve_adapter(spec: str | Path) -> Path:
    """The folder of an adapter named on the command line: a local folder as it is, otherwise a hub model
    repo ``owner/name[@revision]`` fetched into the hub cache (``hub_adapters``). Anything else comes back
    as a path, for ``read_sidecar`` to say what is wrong with it."""
    path = Path(spec).expanduser()
    if path.exists():
        return path
    from .hub import download_adapter, is_repo_id

    return download_adapter(str(spec)) if is_repo_id(str(spec)) else path


def read_sidecar(folder: Path) -> dict:
    path = Path(folder) / SIDECAR
    if not path.is_file():
        raise AdapterError(f"{path}: no adapter sidecar here (is {folder} an adapter folder?)")
    try:
        sidecar = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise AdapterError(f"{path}: corrupt adapter sidecar ({err})") from None
    for key in ("method", "config", "tasks", "base_model"):
        if key not in sidecar:
            raise AdapterError(f"{path}: field {key!r} is missing")
    return sidecar


def load_adapter(
    folder: Path, backbone: Backbone, expect_method: str | None = None
) -> tuple[Method, dict[str, TaskSpec]]:
    folder = Path(folder)
    sidecar = read_sidecar(folder)
    base = sidecar["base_model"]
    if base.get("fingerprint") != backbone.fingerprint:
        raise AdapterError(
            f"{folder / SIDECAR}: adapter was made for base model {base.get('id')!r} "
            f"(fingerprint {base.get('fingerprint')}), not for {backbone.model_id!r} "
            f"(fingerprint {backbone.fingerprint})"
        )
    if expect_method is not None and sidecar["method"] != expect_method:
        raise AdapterError(f"{folder / SIDECAR}: adapter is for method {sidecar['method']!r}, not {expect_method!r}")
    cls = method_class(sidecar["method"])
    specs = {d["name"]: spec_from_dict(d) for d in sidecar["tasks"]}
    config, state = _config_and_state(cls, sidecar)
    try:
        method = cls(
            from_dict(cls.config_cls, config, "config"), backbone, list(specs), from_dict(cls.state_cls, state, "state")
        )
    except ConfigError as err:
        raise AdapterError(f"{folder / SIDECAR}: {err}") from None
    tensors = read_tensors(folder / TENSORS, AdapterError)
    try:
        method.placed(backbone).load_state_dict(tensors)
    except RuntimeError as err:
        raise AdapterError(f"{folder / TENSORS}: tensors do not match the sidecar's config ({err})") from None
    method.requires_grad_(False)
    return method, specs


def _config_and_state(cls: type[Method], sidecar: dict) -> tuple[dict, dict]:
    config, state = dict(sidecar["config"]), dict(sidecar.get("state") or {})
    if sidecar.get("format_version", 1) < 2:  # format 1 kept the runtime state inside the config
        for f in dataclasses.fields(cls.state_cls):
            if f.name in config:
                state[f.name] = config.pop(f.name)
    return config, state
