"""Adapters on the Hugging Face hub: push a trained adapter folder with a model card, fetch one by repo id.

``push_adapter`` uploads what ``eval`` and ``transfer --from`` need (``adapter.safetensors``,
``adapter.json``, ``config.yaml``, ``metrics.json``) and a ``README.md`` model card made from them by
``model_card`` (the folder's own README.md wins when it has one), in one commit; checkpoints and logs
stay home. ``download_adapter`` fetches those files of a model repo ``owner/name`` (``@revision``
optional) into the hub cache, so ``adapter_files.resolve_adapter`` can hand any recipe a folder.
``HF_HUB_OFFLINE=1`` reads the cache only; the login is the hub's own (``hf auth login`` or ``HF_TOKEN``).

Needs ``huggingface_hub`` (installed with transformers); nothing else in talora imports it.
"""

from __future__ import annotations

import json
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

import yaml

from ..errors import AdapterError, ConfigError, TaloraError

# The adapter's own files, named as adapter_files writes them (it imports this module, so not the reverse).
TENSORS, SIDECAR, CONFIG, METRICS = "adapter.safetensors", "adapter.json", "config.yaml", "metrics.json"
CARD = "README.md"
NOTICE = "NOTICE"  # pushed beside the adapter of a Gemma base model
UPLOADED = (TENSORS, SIDECAR, CONFIG, METRICS)
# owner/name, each part as the hub allows it, then an optional @revision (branch, tag or commit).
REPO_ID = re.compile(r"(?P<repo>[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*)(?:@(?P<rev>[A-Za-z0-9._/-]+))?")
HUB_URL = "https://huggingface.co"
# The notice the Gemma Terms of Use (section 3.1) ask every distribution of Gemma or a model derivative to carry.
GEMMA_NOTICE = "Gemma is provided under and subject to the Gemma Terms of Use found at ai.google.dev/gemma/terms"


class HubError(TaloraError):
    """The hub refused or could not be reached (no login, no such repo, no network)."""


def is_repo_id(spec: str) -> bool:
    """Whether ``spec`` reads as a hub model repo ``owner/name[@revision]`` (a bare name never does, so a
    mistyped local folder is not looked up on the hub)."""
    return REPO_ID.fullmatch(spec) is not None and ".." not in spec and "--" not in spec


def split_revision(spec: str) -> tuple[str, str | None]:
    found = REPO_ID.fullmatch(spec)
    if found is None or not is_repo_id(spec):
        raise ConfigError(f"{spec!r} is not a hub model repo id (owner/name, optionally @revision)")
    return found["repo"], found["rev"]


def _hub(why: str):
    try:
        import huggingface_hub
    except ImportError:
        raise ConfigError(f"{why} needs the 'huggingface_hub' package: pip install huggingface_hub") from None
    return huggingface_hub


def _reason(err: Exception) -> str:
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    return f"{type(err).__name__}: {lines[0] if lines else 'no message'}"


# ---------------------------------------------------------------- reading an adapter folder
def read_adapter_folder(folder: Path) -> tuple[dict, dict | None, dict | None]:
    """(sidecar, metrics or None, config or None) of an adapter folder; refuses one the recipes could not load."""
    folder = Path(folder)
    path = folder / SIDECAR
    if not path.is_file():
        raise AdapterError(f"{path}: no adapter sidecar here (is {folder} an adapter folder?)")
    if not (folder / TENSORS).is_file():
        raise AdapterError(f"{folder / TENSORS}: the adapter's tensors are missing")
    sidecar = _json(path)
    for key in ("method", "config", "tasks", "base_model"):
        if key not in sidecar:
            raise AdapterError(f"{path}: field {key!r} is missing")
    metrics = _json(folder / METRICS) if (folder / METRICS).is_file() else None
    config = None
    if (folder / CONFIG).is_file():
        try:
            config = yaml.safe_load((folder / CONFIG).read_text(encoding="utf-8"))
        except (yaml.YAMLError, UnicodeDecodeError) as err:
            raise AdapterError(f"{folder / CONFIG}: not valid YAML ({_reason(err)})") from None
        if not isinstance(config, dict):
            raise AdapterError(f"{folder / CONFIG}: expected a mapping of settings")
    return sidecar, metrics, config


def _json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise AdapterError(f"{path}: corrupt JSON ({_reason(err)})") from None
    if not isinstance(data, dict):
        raise AdapterError(f"{path}: expected a JSON object")
    return data


# ---------------------------------------------------------------- the model card
def _shown(path: Any) -> str:
    """A path as a card may show it: hub ids and relative paths as they are, an absolute path by its
    last two parts (the rest names someone's machine)."""
    text = str(path)
    if is_repo_id(text) or not Path(text).is_absolute():
        return text
    return ".../" + "/".join(Path(text).parts[-2:])


def _number(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def made_by(sidecar: dict, metrics: dict | None, folder_name: str) -> str:
    """The talora command that makes an adapter like this one from its config.yaml."""
    if metrics and "k" in metrics and "task" in metrics:
        source = sidecar.get("source_adapter")
        start = f"--from {_shown(source)}" if source else f"--config {CONFIG}"
        return (
            f"talora transfer {start} --task {metrics['task']} --k {metrics['k']} --seed {metrics.get('seed', 0)} "
            f"--output {folder_name}"
        )
    return f"talora train --config {CONFIG} --output {folder_name}"


def _metric_rows(sidecar: dict, metrics: dict | None) -> list[str]:
    specs = {t["name"]: t for t in sidecar["tasks"] if isinstance(t, dict) and "name" in t}
    if not metrics:
        return ["No metrics.json was found beside the adapter: no scores to report."]
    split = metrics.get("split", "?")
    if "k" in metrics and "task" in metrics:
        scores = {metrics["task"]: metrics.get("metrics") or {}}
        headline = {metrics["task"]: metrics.get("metric")}
        intro = (
            f"Few-shot transfer: k={metrics['k']} training examples (per class for classification), "
            f"seed {metrics.get('seed', 0)}, scored on {split}."
        )
    else:
        scores = metrics.get("metrics") or {}
        headline = metrics.get("headline") or {}
        intro = f"Multi-task training on {len(scores)} task(s), scored on {split}."
        if isinstance(metrics.get("average"), (int, float)):
            intro += f" Average of the headline metrics: {metrics['average']:.4f}."
    rows = [intro, "", "| task | kind | headline metric | score | other scores |", "|---|---|---|---|---|"]
    for task, values in scores.items():
        values = values if isinstance(values, dict) else {}
        main = headline.get(task) or specs.get(task, {}).get("metric", "")
        others = ", ".join(f"{k}={_number(v)}" for k, v in values.items() if k != main)
        rows.append(
            f"| {task} | {specs.get(task, {}).get('kind', '')} | {main} | {_number(values.get(main, ''))} | {others} |"
        )
    return rows


def model_card(folder: Path, repo_id: str | None = None) -> str:
    """The README.md of an adapter pushed to the hub: base model, method, tasks, scores, parameter counts,
    the command that made it and how to use it, all read from the folder's files."""
    folder = Path(folder)
    sidecar, metrics, config = read_adapter_folder(folder)
    base = sidecar["base_model"] if isinstance(sidecar["base_model"], dict) else {}
    base_id, method = str(base.get("id", "?")), str(sidecar["method"])
    tasks = [t for t in sidecar["tasks"] if isinstance(t, dict)]
    name = repo_id or folder.resolve().name
    gemma = "gemma" in base_id.lower()
    front = ["---", "library_name: talora"] + (["license: gemma"] if gemma else [])
    # A named model's id is its hub id with the packaging in parentheses: "google/gemma-3-270m (GGUF ...)".
    hub_base = base_id.split(" (", 1)[0]
    if is_repo_id(hub_base) and not Path(hub_base).exists():
        front.append(f"base_model: {hub_base}")
    tags = dict.fromkeys(["talora", "prompt-tuning", method.replace("_", "-")])
    front += ["tags:", *(f"- {tag}" for tag in tags), "---", ""]
    lines = [
        *front,
        f"# {name}",
        "",
        f"A **{method}** adapter for the frozen base model `{base_id}` (shape fingerprint "
        f"`{base.get('fingerprint', '?')}`), made with talora. It holds {len(tasks)} task(s): "
        f"{', '.join(t.get('name', '?') for t in tasks)}.",
        "",
    ]
    if gemma:
        lines += [
            "## Licence",
            "",
            f"{GEMMA_NOTICE}. The base model is Gemma: using this adapter runs it, and those terms, including "
            "the use restrictions of the Gemma Prohibited Use Policy (ai.google.dev/gemma/prohibited_use_policy), "
            f"apply to Gemma and to its model derivatives, which may include this adapter (see `{NOTICE}`).",
            "",
        ]
    lines += [
        "## Tasks and scores",
        "",
        *_metric_rows(sidecar, metrics),
        "",
        "| task | language | kind | labels | prompt template |",
        "|---|---|---|---|---|",
    ]
    for t in tasks:
        labels = t.get("labels") or []
        shown = ", ".join(map(str, labels[:6])) + (f", ... ({len(labels)})" if len(labels) > 6 else "")
        template = str(t.get("template", "")).replace("\n", "\\n").replace("|", "\\|")
        lines.append(f"| {t.get('name')} | {t.get('language', '')} | {t.get('kind', '')} | {shown} | `{template}` |")
    params = sidecar.get("trainable_parameters") or (metrics or {}).get("trainable_parameters") or {}
    lines += ["", "## Trainable parameters", ""]
    if isinstance(params, dict) and params:
        lines += ["| part | parameters |", "|---|---|"]
        lines += [f"| {k} | {v:,} |" if isinstance(v, int) else f"| {k} | {v} |" for k, v in params.items()]
    else:
        lines.append("Not recorded in adapter.json.")
    lines += ["", "## How it was made", "", "```", made_by(sidecar, metrics, folder.resolve().name), "```", ""]
    if config is not None:
        settings = {k: config[k] for k in ("method", "model", "seed", "max_length", "method_args") if k in config}
        if config.get("data_dir"):
            settings["data_dir"] = _shown(config["data_dir"])
        lines += [
            f"with the `{CONFIG}` of this repository, which holds every setting; the main ones:",
            "",
            "```yaml",
            yaml.safe_dump(settings, sort_keys=False, allow_unicode=True).rstrip(),
            "```",
            "",
        ]
    else:
        lines += [f"(no `{CONFIG}` beside the adapter: `talora transfer --from` needs one)", ""]
    ref = repo_id or "OWNER/NAME"
    first = tasks[0].get("name", "TASK") if tasks else "TASK"
    lines += [
        "## Use",
        "",
        "```",
        f"talora eval --adapter {ref} --task {first} --data-dir DATA",
        f"talora transfer --from {ref} --task TARGET --k 16 --output runs/target",
        "```",
        "",
        f"`{TENSORS}` holds the method's tensors; `{SIDECAR}` the method, its config, each task's template and "
        "label words, and the base model's fingerprint (loading refuses another base model).",
        "",
    ]
    return "\n".join(lines)


# ---------------------------------------------------------------- push and fetch
def push_adapter(
    folder: Path, repo_id: str, private: bool = False, message: str | None = None, api: Any = None
) -> dict:
    """Upload an adapter folder to the hub model repo ``repo_id`` (created when missing) in one commit."""
    folder = Path(folder)
    if not is_repo_id(repo_id) or "@" in repo_id:
        raise ConfigError(f"--repo {repo_id!r}: not a hub model repo id (owner/name)")
    card = model_card(folder, repo_id)  # also refuses a folder that is no adapter, before any network
    files = [name for name in UPLOADED if (folder / name).is_file()]
    own_card = (folder / CARD).is_file()
    if api is None:
        api = _hub("pushing an adapter to the hub").HfApi()
    sidecar = json.loads((folder / SIDECAR).read_text(encoding="utf-8"))
    # The Gemma Terms of Use ask every distribution of Gemma or a derivative to carry the notice as a file.
    gemma = "gemma" in str((sidecar.get("base_model") or {}).get("id", "")).lower()
    names = ", ".join(t.get("name", "?") for t in sidecar["tasks"] if isinstance(t, dict))
    message = message or f"talora push: {sidecar['method']} adapter ({names})"
    with tempfile.TemporaryDirectory(prefix="talora-push-") as staging:
        for name in files:
            shutil.copy2(folder / name, Path(staging) / name)
        if own_card:
            shutil.copy2(folder / CARD, Path(staging) / CARD)
        else:
            (Path(staging) / CARD).write_text(card, encoding="utf-8")
        if gemma:
            (Path(staging) / NOTICE).write_text(GEMMA_NOTICE + "\n", encoding="utf-8")
        try:
            api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
            info = api.upload_folder(repo_id=repo_id, folder_path=staging, repo_type="model", commit_message=message)
        except TaloraError:
            raise
        except Exception as err:  # the hub client's errors share no base class worth naming
            raise HubError(
                f"pushing {folder} to {repo_id}: {_reason(err)} (log in with `hf auth login` or set HF_TOKEN)"
            ) from None
    return {
        "repo": repo_id,
        "url": getattr(info, "commit_url", None) or f"{HUB_URL}/{repo_id}",
        "files": sorted([*files, CARD, *([NOTICE] if gemma else [])]),
        "card": f"the folder's {CARD}" if own_card else "generated",
        "private": private,
    }


def download_adapter(spec: str, cache_dir: str | Path | None = None) -> Path:
    """The folder of a hub adapter ``owner/name[@revision]``, fetched into the hub cache (or found there)."""
    repo_id, revision = split_revision(spec)
    hub = _hub(f"adapter {spec!r}: there is no such local folder, and loading it from the hub")
    try:
        folder = hub.snapshot_download(
            repo_id=repo_id, revision=revision, allow_patterns=list(UPLOADED), cache_dir=cache_dir
        )
    except Exception as err:  # not found, gated, offline without a cached copy, no network
        raise AdapterError(
            f"adapter {spec!r}: there is no such local folder, and the hub model repo {repo_id}"
            f"{'@' + revision if revision else ''} could not be fetched ({_reason(err)})"
        ) from None
    folder = Path(folder)
    if not (folder / SIDECAR).is_file():
        raise AdapterError(f"adapter {spec!r}: the hub model repo {repo_id} has no {SIDECAR}: not a talora adapter")
    return folder
