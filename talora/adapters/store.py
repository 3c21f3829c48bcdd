"""An adapter store: the per-task adapters of ONE base model in one folder, with an index.

Layout of a store folder::

    DIR/index.json                       the tasks, each with its entry file, that file's sha256 and
                                         the blobs it uses; the base model (id, fingerprint, load spec)
    DIR/entries/<task>.<sha12>.json      one small entry per task (below)
    DIR/blobs/<sha256>.safetensors       one tensor per file, named by the sha256 of the file
    DIR/.lock                            writers hold it exclusively (fcntl.flock), readers shared

Why content-addressed tensors. A task is stored as the tensors of its own one-task method
(``Method.task_slice``): for TA-LoRA that is theta0, B, the gates and the task's u, v. theta0,
B and the gates are identical for every task of a run and for every target transferred from
it, so they hash alike and are stored ONCE, while each task's u and v land in files of their
own. Adding a target later writes its entry and its own blobs only: no file of another task
is rewritten. A method whose tasks cannot be split (``task_slice`` returns None, e.g. LoRA's
one set of weights for all its tasks) is stored whole, as one unit every one of its tasks'
entries points at; its blobs are shared by those entries the same way.

An entry holds the method, its config and state, the task's spec (template, labels, label
words), the fields a request for it carries (``inputs``), its tensors (name -> blob, shape,
dtype), parameter counts, the metrics and data recorded at training time (from the adapter's
metrics.json and config.yaml when present: data_dir, seed, k, split, max_length, and the whole
run config), the source folder and the time it was added.

Crash safety. Blobs and entries are written first, each through ``talora.atomic`` (a synced
temporary file renamed into place); the index is replaced last, atomically. Entry files carry
their digest in their name, so replacing a task writes a NEW entry file: a writer killed at any
moment leaves the previous index, and every file it names, as they were. Files no index names
(left by a killed writer, or no longer used after a remove or a replacement) are deleted by the
next writer, after its index is in place. Every blob and entry is checked against its sha256
when read; a mismatch is an AdapterError naming the file and the task.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import hashlib
import json
import os
import re
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import quote

from ..atomic import atomic_write
from ..errors import AdapterError, ConfigError
from ..tasks.base import TaskSpec

if TYPE_CHECKING:
    import torch

    from ..core.backbone import Backbone
    from ..methods.base import Method

FORMAT_VERSION = 1
INDEX, LOCK, BLOBS, ENTRIES = "index.json", ".lock", "blobs", "entries"
BLOB_KEY = "tensor"  # the one tensor's name inside a blob: a blob's content is its tensor alone
_DIGEST = re.compile(r"[0-9a-f]{64}")


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def record_inputs(spec: TaskSpec) -> dict[str, str]:
    """The fields a prediction request for ``spec`` carries besides ``task``, with their JSON types:
    the template's fields, except that a multiple-choice task takes its ``choices`` (a list) and
    builds the ``options`` text from them, as the data loader does."""
    return spec.task_kind.request_fields(spec)


def load_spec_of(base_model: dict, run_model: str | None) -> str | None:
    """How to load an adapter's base model: the run config's ``model``, else the sidecar's id when
    that id is itself loadable (the embedded default's id is not a spec: it maps back to "embedded")."""
    from ..core.backbone import EMBEDDED, EMBEDDED_ID

    if run_model:
        return run_model
    model_id = base_model.get("id")
    if model_id == EMBEDDED_ID:
        return EMBEDDED
    if not model_id or str(model_id).startswith("gguf:"):
        return None
    return str(model_id)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _json_bytes(obj) -> bytes:
    return json.dumps(obj, indent=1, ensure_ascii=False, sort_keys=False).encode()


@dataclasses.dataclass
class _Prepared:
    """One task's entry and blobs, serialised in memory before the store is locked."""

    task: str
    entry: dict
    blobs: dict[str, bytes]  # digest -> file bytes


class AdapterStore:
    """A folder of per-task adapters for one base model (see the module docstring for the layout).

    Reading never changes the folder. Writers (``add``, ``remove``) lock it, write new files,
    replace the index and then delete what no index names any more. One instance holds no
    cached state, so instances in several threads or processes see each other's writes.
    """

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)

    # ------------------------------------------------------------------ locking and reading
    @contextlib.contextmanager
    def _locked(self, exclusive: bool) -> Iterator[None]:
        # flock conflicts between open file descriptions, even in one process: never nest these.
        path = self.folder / LOCK
        if exclusive:
            self.folder.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        else:
            try:
                fd = os.open(path, os.O_RDONLY)
            except FileNotFoundError:  # a store nobody has written yet: nothing to wait for
                yield
                return
        try:
            fcntl.flock(fd, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
            yield
        finally:
            os.close(fd)

    def _read_index(self) -> dict | None:
        path = self.folder / INDEX
        if not path.is_file():
            return None
        try:
            index = json.loads(path.read_bytes())
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise AdapterError(f"{path}: corrupt store index ({err})") from None
        if not isinstance(index, dict):
            raise AdapterError(f"{path}: corrupt store index (not a JSON object)")
        if index.get("format_version") != FORMAT_VERSION:
            raise AdapterError(
                f"{path}: store format {index.get('format_version')!r} is not {FORMAT_VERSION} "
                "(written by another version of talora?)"
            )
        for key, kind in (("tasks", dict), ("base_model", dict)):
            if not isinstance(index.get(key), kind):
                raise AdapterError(f"{path}: field {key!r} is missing or not a {kind.__name__}")
        return index

    def _index(self) -> dict:
        index = self._read_index()
        if index is None:
            raise ConfigError(
                f"no adapter store at {self.folder} (no {INDEX}); `talora store add --store {self.folder} "
                f"--adapter RUN_DIR` creates one"
            )
        return index

    def _task_info(self, index: dict, task: str) -> dict:
        if task not in index["tasks"]:
            known = ", ".join(index["tasks"]) or "none"
            raise ConfigError(f"store {self.folder} has no task {task!r}; it has: {known}")
        return index["tasks"][task]

    def _inside(self, relative: str, task: str) -> Path:
        path = (self.folder / relative).resolve()
        if self.folder.resolve() not in path.parents:
            raise AdapterError(f"{self.folder / INDEX}: task {task!r} names a file outside the store: {relative!r}")
        return path

    def _read_entry(self, task: str, info: dict) -> dict:
        path = self._inside(str(info.get("entry", "")), task)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise AdapterError(f"{path}: entry of task {task!r} is missing") from None
        if sha256(data) != info.get("sha256"):
            raise AdapterError(
                f"{path}: entry of task {task!r} is corrupt (its sha256 {sha256(data)[:16]}... is not the "
                f"index's {str(info.get('sha256'))[:16]}...)"
            )
        return json.loads(data)

    def exists(self) -> bool:
        return (self.folder / INDEX).is_file()

    def base_model(self) -> dict:
        """{"id", "fingerprint", "load"}: the base model every adapter here was made for, and the
        spec ``load_backbone`` loads it from (None when the adapters did not record one)."""
        with self._locked(exclusive=False):
            return dict(self._index()["base_model"])

    def tasks(self) -> list[str]:
        with self._locked(exclusive=False):
            return list(self._index()["tasks"])

    def summary(self) -> list[dict]:
        """One row per task: its index record (method, kind, metric, score, k, source, created)."""
        with self._locked(exclusive=False):
            index = self._index()
        return [
            {"task": name, **{k: v for k, v in info.items() if k != "blobs"}} for name, info in index["tasks"].items()
        ]

    def entry(self, task: str) -> dict:
        """The task's entry (checked against the index's digest)."""
        with self._locked(exclusive=False):
            index = self._index()
            return self._read_entry(task, self._task_info(index, task))

    def entries(self, damaged: dict[str, str] | None = None) -> tuple[dict, dict[str, dict]]:
        """(base model, every task's entry), read as one consistent snapshot. A missing or corrupt
        entry raises an AdapterError; given a ``damaged`` dict, its task is left out instead and
        the error recorded there (task -> message), so one bad task does not hide the others."""
        with self._locked(exclusive=False):
            index = self._index()
            entries = {}
            for task, info in index["tasks"].items():
                try:
                    entries[task] = self._read_entry(task, info)
                except (AdapterError, ValueError) as err:
                    if damaged is None:
                        raise
                    damaged[task] = str(err)
            return dict(index["base_model"]), entries

    def verify(self, tasks: list[str] | None = None) -> list[dict]:
        """Every entry and blob of ``tasks`` (default: all) checked against its sha256, each blob
        once however many tasks share it. One record per damaged file: {"file" (relative to the
        store), "tasks" (those that use it), "problem" (missing, corrupt or misnamed), "detail"};
        an intact store gives []."""
        with self._locked(exclusive=False):
            index = self._index()
            for task in tasks or []:
                self._task_info(index, task)
            problems, users = [], {}
            for task, info in index["tasks"].items():
                if tasks is not None and task not in tasks:
                    continue
                name = str(info.get("entry", ""))
                problem = self._file_problem(name, info.get("sha256"), task)
                if problem is not None:
                    problems.append({"file": name, "tasks": [task], **problem})
                for digest in info.get("blobs") or []:
                    users.setdefault(str(digest), []).append(task)
            for digest, used_by in users.items():
                name = f"{BLOBS}/{digest}.safetensors"
                if _DIGEST.fullmatch(digest):
                    problem = self._file_problem(name, digest, used_by[0])
                else:
                    problem = {"problem": "misnamed", "detail": f"the index names no blob ({digest!r})"}
                if problem is not None:
                    problems.append({"file": name, "tasks": used_by, **problem})
        return problems

    def _file_problem(self, relative: str, digest, task: str) -> dict | None:
        try:
            actual = sha256(self._inside(relative, task).read_bytes())
        except AdapterError as err:
            return {"problem": "misnamed", "detail": str(err)}
        except (FileNotFoundError, IsADirectoryError):
            return {"problem": "missing", "detail": "no such file"}
        if actual != digest:
            return {
                "problem": "corrupt",
                "detail": f"its content hashes to {actual[:16]}..., not the {str(digest)[:16]}... it was stored as",
            }
        return None

    def read_tensors(self, entry: dict, cache: dict[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
        """An entry's tensors, each blob verified against its sha256 (``cache``: blobs already read)."""
        with self._locked(exclusive=False):
            return {
                name: self._read_blob(info["sha256"], entry["task"], name, cache)
                for name, info in entry["tensors"].items()
            }

    def _read_blob(self, digest: str, task: str, name: str, cache: dict | None) -> torch.Tensor:
        from safetensors import SafetensorError
        from safetensors.torch import load

        if cache is not None and digest in cache:
            return cache[digest]
        if not isinstance(digest, str) or not _DIGEST.fullmatch(digest):
            raise AdapterError(f"entry of task {task!r}: tensor {name!r} names no blob ({digest!r})")
        path = self.folder / BLOBS / f"{digest}.safetensors"
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise AdapterError(f"{path}: blob of task {task!r} (tensor {name!r}) is missing") from None
        actual = sha256(data)
        if actual != digest:
            raise AdapterError(
                f"{path}: blob of task {task!r} (tensor {name!r}) is corrupt: its content hashes to "
                f"{actual[:16]}..., not the {digest[:16]}... it was stored as"
            )
        try:
            tensor = load(data)[BLOB_KEY]
        except (SafetensorError, KeyError, ValueError) as err:
            raise AdapterError(f"{path}: blob of task {task!r} is not a one-tensor safetensors file ({err})") from None
        if cache is not None:
            cache[digest] = tensor
        return tensor

    def load_unit(self, entry: dict, backbone: Backbone, cache: dict | None = None) -> Method:
        """The method an entry was stored as, frozen: the task alone (a slice), or the whole adapter
        its tasks share (``entry["unit"]["tasks"]``, in their trained order)."""
        from ..config import from_dict
        from ..methods import method_class

        task = entry["task"]
        cls = method_class(entry["method"])
        config, state = entry["config"], entry.get("state") or {}
        try:
            method = cls(
                from_dict(cls.config_cls, config, f"task {task!r}: config"),
                backbone,
                list(entry["unit"]["tasks"]),
                from_dict(cls.state_cls, state, f"task {task!r}: state"),
            )
        except ConfigError as err:
            raise AdapterError(f"{self.folder}: {err}") from None
        try:
            method.load_state_dict(self.read_tensors(entry, cache))
        except RuntimeError as err:
            raise AdapterError(f"{self.folder}: task {task!r}: tensors do not match its config ({err})") from None
        method.requires_grad_(False)
        return method

    # ------------------------------------------------------------------ writing
    def _check_base_model(self, index: dict | None, base: dict, adapter: Path) -> None:
        if index is None:
            return
        ours = index["base_model"]
        if (ours.get("id"), ours.get("fingerprint")) != (base.get("id"), base.get("fingerprint")):
            raise AdapterError(
                f"{adapter}: adapter is for base model {base.get('id')!r} (fingerprint {base.get('fingerprint')}), "
                f"but store {self.folder} holds adapters for {ours.get('id')!r} "
                f"(fingerprint {ours.get('fingerprint')}); one store serves one base model"
            )

    def _check_folder(self) -> None:
        if self.folder.exists() and not self.folder.is_dir():
            raise ConfigError(f"store folder {self.folder} is a file, not a folder")
        if self.folder.is_dir() and not self.exists():
            # A first add killed before its index leaves only store files: that folder is still ours.
            ours = (LOCK, BLOBS, ENTRIES)
            foreign = [
                p.name for p in self.folder.iterdir() if p.name not in ours and not p.name.startswith(f".{INDEX}.")
            ]
            if foreign:
                raise ConfigError(
                    f"store folder {self.folder} holds other files ({', '.join(sorted(foreign)[:3])}...) "
                    f"and no {INDEX}: not an adapter store; give a new or empty folder"
                )

    def add(self, adapter: str | Path, backbone: Backbone | None = None, model: str | None = None) -> list[dict]:
        """Add every task of an adapter folder (written by ``save_adapter``: a trained run or a
        transfer output), replacing tasks of the same names. ``backbone`` (or ``model``, a
        ``load_backbone`` spec; default: the run's own model) is needed to split the adapter into
        tasks. Returns per task: {"task", "method", "replaced", "new_blobs", "reused_blobs"}."""
        from ..core.backbone import load_backbone
        from .files import load_adapter, read_sidecar

        adapter = Path(adapter)
        sidecar = read_sidecar(adapter)  # not an adapter folder: said before anything is loaded
        base = sidecar["base_model"] if isinstance(sidecar["base_model"], dict) else {}
        self._check_folder()
        self._check_base_model(self._read_index(), base, adapter)
        run = _run_record(adapter)
        load = model or load_spec_of(base, run["model"])  # a --model given now is one known to load
        if backbone is None:
            if load is None:
                raise ConfigError(f"{adapter}: cannot tell how to load base model {base.get('id')!r}; give --model")
            backbone = load_backbone(load)
        method, specs = load_adapter(adapter, backbone)
        whole: list = []  # an unsplit adapter is serialised once for all its tasks
        prepared = [self._prepare(adapter, sidecar, run, method, specs, task, whole) for task in method.task_names]
        with self._locked(exclusive=True):
            index = self._read_index()
            self._check_base_model(index, base, adapter)  # another writer may have created the store meanwhile
            if index is None:
                index = {
                    "format_version": FORMAT_VERSION,
                    "base_model": {"id": base.get("id"), "fingerprint": base.get("fingerprint"), "load": load},
                    "created": _now(),
                    "tasks": {},
                }
            elif index["base_model"].get("load") is None:
                index["base_model"]["load"] = load
            report = []
            checked: set[str] = set()
            for p in prepared:
                new, reused = self._write_blobs(p.blobs, checked)
                data = _json_bytes(p.entry)
                digest = sha256(data)
                name = f"{ENTRIES}/{quote(p.task, safe='')[:100]}.{digest[:12]}.json"
                atomic_write(self.folder / name, data)
                replaced = index["tasks"].get(p.task)
                index["tasks"][p.task] = {
                    "entry": name,
                    "sha256": digest,
                    **_index_record(p.entry),
                    "blobs": sorted(p.blobs),
                }
                report.append(
                    {
                        "task": p.task,
                        "method": p.entry["method"],
                        "replaced": replaced is not None,
                        "replaced_source": replaced.get("source") if replaced else None,
                        "new_blobs": new,
                        "reused_blobs": reused,
                    }
                )
            index["tasks"] = dict(sorted(index["tasks"].items()))
            index["updated"] = _now()
            atomic_write(self.folder / INDEX, _json_bytes(index))
            self._collect_garbage(index)
        return report

    def remove(self, task: str) -> None:
        """Drop a task's entry; its blobs go unless another task still uses them."""
        with self._locked(exclusive=True):
            index = self._index()
            self._task_info(index, task)
            del index["tasks"][task]
            index["updated"] = _now()
            atomic_write(self.folder / INDEX, _json_bytes(index))
            self._collect_garbage(index)

    def _prepare(
        self, adapter: Path, sidecar: dict, run: dict, method: Method, specs: dict, task: str, whole: list
    ) -> _Prepared:
        from .files import spec_to_dict

        piece = method.task_slice(task)
        split = piece is not None
        unit = piece if split else method
        if split:
            blobs, tensors = _serialise(piece)
        else:
            if not whole:
                whole.append(_serialise(method))
            blobs, tensors = whole[0]
        # Tasks of one whole (unsplit) adapter share this key, so a server loads their unit once.
        described = [unit.name, unit.task_names, dataclasses.asdict(unit.config), dataclasses.asdict(unit.state)]
        unit_key = sha256(json.dumps([described, {n: t["sha256"] for n, t in tensors.items()}]).encode())
        spec = specs[task]
        entry = {
            "format_version": FORMAT_VERSION,
            "task": task,
            "method": unit.name,
            "config": dataclasses.asdict(unit.config),
            "state": dataclasses.asdict(unit.state),
            "spec": spec_to_dict(spec),
            "inputs": record_inputs(spec),
            "unit": {"split": split, "tasks": list(unit.task_names), "id": unit_key[:16]},
            "tensors": tensors,
            "parameters": {
                "trainable": unit.trainable_parameters(),
                "stored": sum(v.numel() for v in unit.state_dict().values()),
            },
            "metrics": run["metrics"].get(task),
            "training": {**run["training"], "tasks": list(sidecar_task_names(sidecar))},
            "max_length": run["max_length"],
            # The whole run config (its transfer budget, label scoring, ...): a server teaching a new task
            # from this one transfers as `talora transfer --from` the run would, with no run folder at hand.
            "run_config": run["run_config"],
            "base_model": {k: sidecar["base_model"].get(k) for k in ("id", "fingerprint")},
            "source": str(adapter.resolve()),
            "source_adapter": sidecar.get("source_adapter"),
            "created": _now(),
        }
        if run["transfer"] and task in run["transfer_tasks"]:
            entry["training"].update(run["transfer"])
        return _Prepared(task, entry, blobs)

    def _write_blobs(self, blobs: dict[str, bytes], checked: set[str]) -> tuple[int, int]:
        """Write the blobs not stored yet; ``checked``: digests already written or verified by this add."""
        new = reused = 0
        for digest, data in blobs.items():
            path = self.folder / BLOBS / f"{digest}.safetensors"
            # An intact blob is never rewritten (other tasks' files stay untouched); a damaged one is repaired.
            if digest in checked or (path.is_file() and sha256(path.read_bytes()) == digest):
                reused += 1
            else:
                atomic_write(path, data)
                new += 1
            checked.add(digest)
        return new, reused

    def _collect_garbage(self, index: dict) -> None:
        entries = {Path(info["entry"]).name for info in index["tasks"].values()}
        blobs = {f"{d}.safetensors" for info in index["tasks"].values() for d in info.get("blobs", [])}
        for folder, keep in ((self.folder / ENTRIES, entries), (self.folder / BLOBS, blobs)):
            if folder.is_dir():
                for path in folder.iterdir():
                    if path.name not in keep and path.is_file():
                        path.unlink()
        for path in self.folder.glob(f".{INDEX}.*"):  # atomic_write's temporary files of a killed writer
            path.unlink(missing_ok=True)


def _serialise(method: Method) -> tuple[dict[str, bytes], dict[str, dict]]:
    """(digest -> blob bytes, tensor name -> {sha256, shape, dtype}) of a method's tensors."""
    from safetensors.torch import save

    blobs, tensors = {}, {}
    for name, value in method.state_dict().items():
        data = save({BLOB_KEY: value.detach().contiguous().cpu()})
        digest = sha256(data)
        blobs[digest] = data
        tensors[name] = {"sha256": digest, "shape": list(value.shape), "dtype": str(value.dtype).split(".")[-1]}
    return blobs, tensors


def sidecar_task_names(sidecar: dict) -> list[str]:
    return [d["name"] for d in sidecar["tasks"]]


def _index_record(entry: dict) -> dict:
    """What ``talora store list`` shows of a task without opening its entry."""
    metrics = entry.get("metrics") or {}
    metric = entry["spec"]["metric"]
    training = entry.get("training") or {}
    return {
        "method": entry["method"],
        "kind": entry["spec"]["kind"],
        "metric": metric,
        "score": metrics.get(metric),
        "split": training.get("split"),
        "k": training.get("k"),
        "shared_unit": not entry["unit"]["split"],
        "source": entry["source"],
        "created": entry["created"],
    }


def _run_record(adapter: Path) -> dict:
    """What the adapter's run recorded beside it (config.yaml, metrics.json), as far as present."""
    from ..config import RunConfig, read_yaml

    config_path, metrics_path = adapter / "config.yaml", adapter / "metrics.json"
    cfg = read_yaml(config_path, "run config") if config_path.is_file() else {}
    summary: dict = {}
    if metrics_path.is_file():
        try:
            summary = json.loads(metrics_path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise AdapterError(f"{metrics_path}: corrupt metrics file ({err})") from None
        if not isinstance(summary, dict):
            raise AdapterError(f"{metrics_path}: expected a JSON object")
    per_task = summary.get("metrics") if isinstance(summary.get("metrics"), dict) else {}
    transfer = None
    if "task" in summary:  # a transfer output: one task, its metrics at the top
        per_task = {summary["task"]: per_task}
        transfer = {k: summary.get(k) for k in ("k", "seed", "split", "examples")}
    max_length = cfg.get("max_length", RunConfig.max_length)
    return {
        "model": cfg.get("model") if isinstance(cfg.get("model"), str) else None,
        "max_length": max_length if isinstance(max_length, int) and max_length > 0 else RunConfig.max_length,
        "metrics": {t: m for t, m in per_task.items() if isinstance(m, dict)},
        "training": {
            "data_dir": cfg.get("data_dir"),
            "seed": cfg.get("seed"),
            "k": None,
            "split": summary.get("split"),
            "model": cfg.get("model"),
            "steps": summary.get("steps"),
        },
        "transfer": transfer,
        "transfer_tasks": [summary["task"]] if transfer else [],
        "run_config": cfg or None,
    }
