"""Serving many tasks from one frozen model: an ``Engine`` over an adapter store, and ``talora predict``.

A request is a list of records ``{"task": name, <that task's input fields>}`` (``id`` optional,
echoed back); tasks mix freely within a batch. Each task's input fields are its template's
fields, as in its JSONL lines less the gold answer and metadata (``talora store show`` lists
them under ``inputs``): a multiple-choice record carries its ``choices`` list, from which the
``options`` text is built as the data loader does; a multi-answer (MultiRC) record carries ONE
candidate ``answer`` string (a data line's candidates are one record each).

Results, in input order: ``{"task", "prediction"}``, plus
* classification: ``"probabilities": {label: p}``, the softmax over the label words' scores;
* multiple choice: the prediction is the choice's index; ``"probabilities"`` lists one per choice;
* regression: the prediction is the score (the bins' values weighted by the softmax of their scores);
* extraction: the prediction is the generated span (KV-cached greedy generation to the newline).

About the probabilities: when every candidate is one token, its score is a logit; otherwise it
is the candidate's summed log-probability (``talora.core.predict.score_candidates``). Both differ from
the log-probability of the candidate by the same constant within an example (the logit's
log-normaliser) or not at all, so the softmax over either is the model's distribution
restricted to the candidates: the probability of each label given that the answer is one of them.
A task whose run compared labels another way (its ``label_scoring``) is served that way, as it was
evaluated: ``mean`` ranks by the per-token average and its probabilities are the softmax of those;
``calibrated`` divides out the label prior the task's prompts give content-free inputs (computed
once, when the task's unit loads), and its probabilities are the calibrated distribution.

An input too long for the task's ``max_length`` (recorded from its run) is cut as in evaluation
(``talora.core.batching``), keeping room for the longest label word, since there is no gold label.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ..adapters.store import AdapterStore, record_inputs
from ..errors import AdapterError, ConfigError, DataError
from ..tasks.base import Example, TaskSpec

if TYPE_CHECKING:
    from ..core.backbone import Backbone
    from ..core.batching import Encoded
    from ..core.predict import Verbalizer
    from ..methods.base import Method

# Besides its inputs, a record may carry these: the task it is for and an id echoed in its result.
RESERVED = ("task", "id")


def _type_name(value) -> str:
    return "null" if value is None else type(value).__name__


def record_example(spec: TaskSpec, record: dict, where: str) -> Example:
    """The example a prediction record stands for, or a DataError naming ``where`` and the field.
    Its label is a placeholder (the first label, the first choice, no span): nothing is scored."""
    inputs = record_inputs(spec)
    listed = ", ".join(inputs)
    for key in record:
        if key not in inputs and key not in RESERVED:
            raise DataError(
                f"{where}: field {key!r} is not an input of task {spec.name!r} (its inputs: {listed}; "
                f"besides them a record may hold {' and '.join(map(repr, RESERVED))})"
            )
    fields: dict = {}
    for key, kind in inputs.items():
        if key not in record:
            raise DataError(f"{where}: field {key!r} is missing (task {spec.name!r} needs {listed})")
        value = record[key]
        if kind == "string" and not isinstance(value, str):
            raise DataError(f"{where}: field {key!r} must be a string, got {_type_name(value)}")
        if kind == "list of strings" and (
            not isinstance(value, list) or len(value) < 2 or not all(isinstance(c, str) and c for c in value)
        ):
            raise DataError(f"{where}: field {key!r} must list at least two non-empty strings, got {value!r}")
        fields[key] = list(value) if isinstance(value, list) else value
    if "id" in record and (not isinstance(record["id"], str | int) or isinstance(record["id"], bool)):
        raise DataError(f"{where}: field 'id' must be a string or an integer, got {_type_name(record['id'])}")
    fields, label = spec.task_kind.request_example(spec, fields)
    return Example(where, spec.name, fields, label)


def records_to_examples(
    specs: dict[str, TaskSpec],
    records: Sequence,
    where: Sequence[str] | None = None,
    damaged: dict[str, str] | None = None,
) -> list[Example]:
    """Check every record against the tasks' specs (no model needed) and build its example.
    ``where`` names each record in errors (default ``record <i>``, counted from 0). A record for
    a task of ``damaged`` (task -> what is wrong with its stored files) is an AdapterError."""
    examples = []
    for i, record in enumerate(records):
        here = where[i] if where is not None else f"record {i}"
        if not isinstance(record, dict):
            raise DataError(f"{here}: expected a JSON object, got {_type_name(record)}")
        task = record.get("task")
        if "task" not in record:
            raise DataError(f"{here}: field 'task' is missing")
        if not isinstance(task, str):
            raise DataError(f"{here}: field 'task' must be a string, got {_type_name(task)}")
        if damaged and task in damaged:
            raise AdapterError(f"{here}: {unservable(task, damaged[task])}")
        if task not in specs:
            known = ", ".join(specs) or "no tasks"
            raise DataError(f"{here}: field 'task' is {task!r}, not a task of this store; it has: {known}")
        examples.append(record_example(specs[task], record, here))
    return examples


def unservable(task: str, problem: str) -> str:
    return (
        f"task {task!r} cannot be served, its stored files are damaged ({problem}); "
        "`talora store verify` lists them, and `talora store add` of its adapter again repairs them"
    )


@dataclass
class _Unit:
    """Tasks served by one method in one forward pass; ``task_ids`` are their rows in it."""

    method: Method
    task_ids: dict[str, int]
    verbalizers: dict[int, Verbalizer]
    priors: dict  # task id -> log label prior of a calibrated task (core.predict.label_priors)


class Engine:
    """Predictions for records of any of a store's tasks, many tasks per batch, on one frozen model.

    ``Engine(store, backbone)`` reads the store's entries once (a snapshot: build a new engine to
    see later adds and removes) and checks that ``backbone`` is the store's base model. Tensors
    are loaded when a task is first asked for, together with every task it can share a forward
    pass with: tasks split by ``Method.task_slice`` whose configs and shared tensors agree are
    merged by ``Method.merge_tasks`` into one method (TA-LoRA: one theta0, B and gates, the tasks'
    u, v side by side); an adapter stored whole serves all its tasks as one unit. Each batch then
    costs one forward per unit present in it, never one per task.

    ``predict(records)`` validates every record first (nothing runs on a bad request), then
    answers in input order; see the module docstring for the records and results. An engine
    holds all its state itself (no module globals). Calls from several threads are safe and run
    one at a time: weight-changing methods (LoRA, adapters, BitFit) patch the shared backbone
    while they run, so the engine's lock serialises whole calls.
    """

    def __init__(self, store: AdapterStore | str | Path, backbone: Backbone, batch_size: int = 16):
        if batch_size < 1:
            raise ConfigError(f"batch size must be >= 1, got {batch_size}")
        self.store = store if isinstance(store, AdapterStore) else AdapterStore(store)
        self.backbone = backbone
        self.batch_size = batch_size
        # Tasks whose files are damaged (task -> what is wrong): their requests fail, the others are served.
        self._damaged: dict[str, str] = {}
        base, self._entries = self.store.entries(damaged=self._damaged)
        if base.get("fingerprint") != backbone.fingerprint:
            raise AdapterError(
                f"store {self.store.folder} holds adapters for base model {base.get('id')!r} "
                f"(fingerprint {base.get('fingerprint')}), not for {backbone.model_id!r} "
                f"(fingerprint {backbone.fingerprint})"
            )
        from ..adapters.files import spec_from_dict

        self.specs: dict[str, TaskSpec] = {t: spec_from_dict(e["spec"]) for t, e in self._entries.items()}
        # Tasks that may share a unit are loaded together: slices of one method and config, or one whole adapter.
        self._group_of = {t: _group_key(e) for t, e in self._entries.items()}
        self._unit_of: dict[str, _Unit] = {}
        self._room_label: dict[str, str] = {}
        self._lock = threading.Lock()

    @property
    def tasks(self) -> list[str]:
        return list(self._entries)

    @property
    def damaged(self) -> dict[str, str]:
        """Tasks found damaged so far (all of them after ``preload``) -> what is wrong with their files.
        Read without the lock (a dict copy is atomic), so request handlers never wait for a batch."""
        return dict(self._damaged)

    def preload(self, tasks: Sequence[str] | None = None, strict: bool = True) -> dict[str, str]:
        """Load the given tasks (default: all) now rather than on their first request; a server
        calls this at start-up so a damaged file is reported before the first request. Every task
        that can be loaded is; then, if any asked for is damaged, ``strict`` raises an AdapterError
        naming them, else they are returned (task -> problem) and the engine serves the rest."""
        with self._lock:
            wanted = [*self._entries, *self._damaged] if tasks is None else list(tasks)
            for task in wanted:
                if task not in self._entries and task not in self._damaged:
                    raise ConfigError(
                        f"store {self.store.folder} has no task {task!r}; it has: {', '.join(self.tasks)}"
                    )
                if task in self._entries:
                    self._load(task)
            bad = {t: self._damaged[t] for t in wanted if t in self._damaged}
        if strict and bad:
            raise AdapterError("; ".join(unservable(t, problem) for t, problem in bad.items()))
        return bad

    def units(self) -> list[list[str]]:
        """The tasks of each loaded unit: one forward pass per batch serves each list."""
        with self._lock:
            grouped: dict[int, list[str]] = {}
            for task, unit in self._unit_of.items():
                grouped.setdefault(id(unit), []).append(task)
            return list(grouped.values())

    def check(self, records: Sequence, where: Sequence[str] | None = None) -> list[Example]:
        """The examples of ``records``, or the DataError of the first bad one (no model is run); a
        record for a task known to be damaged is an AdapterError."""
        return records_to_examples(self.specs, records, where, self.damaged)

    def predict(
        self, records: Sequence[dict], where: Sequence[str] | None = None, batch_size: int | None = None
    ) -> list[dict]:
        """One result per record, in input order. ``where`` names each record in error messages
        (default ``record <i>``); ``batch_size`` overrides the engine's."""
        import torch

        if batch_size is not None and batch_size < 1:
            raise ConfigError(f"batch size must be >= 1, got {batch_size}")
        size = batch_size or self.batch_size
        examples = self.check(records, where)
        with self._lock, torch.no_grad():
            for task in dict.fromkeys(ex.task for ex in examples):
                self._load(task)
            for ex in examples:  # damage found by the loads just made
                if ex.task in self._damaged:
                    raise AdapterError(f"{ex.uid}: {unservable(ex.task, self._damaged[ex.task])}")
            items = [self._encode(ex) for ex in examples]
            results: list[dict] = [{} for _ in examples]
            for start in range(0, len(items), size):
                rows = range(start, min(start + size, len(items)))
                by_unit: dict[int, tuple[_Unit, list[int]]] = {}
                for i in rows:
                    unit = self._unit_of[examples[i].task]
                    by_unit.setdefault(id(unit), (unit, []))[1].append(i)
                for unit, idx in by_unit.values():
                    for i, result in zip(idx, self._run(unit, [items[i] for i in idx], examples, idx)):
                        results[i] = result
        return [{"task": r["task"], "id": rec["id"], **r} if "id" in rec else r for rec, r in zip(records, results)]

    # ------------------------------------------------------------------ internals
    def _load(self, task: str) -> None:
        if task in self._unit_of or task in self._damaged:
            return
        from ..core.predict import label_priors
        from ..methods import method_class

        group = [t for t, g in self._group_of.items() if g == self._group_of[task]]
        cache: dict = {}
        if self._entries[task]["unit"]["split"]:
            cls = method_class(self._entries[task]["method"])
            clusters: list[list[Method]] = []
            for t in group:
                try:
                    piece = self.store.load_unit(self._entries[t], self.backbone, cache)
                except AdapterError as err:  # this task alone: the others still merge and serve
                    self._damaged[t] = str(err)
                    continue
                # Equal shared tensors are transitive: trying a cluster's first member decides.
                home = next((c for c in clusters if cls.merge_tasks([c[0], piece], self.backbone) is not None), None)
                if home is None:
                    clusters.append([piece])
                else:
                    home.append(piece)
            methods = []
            for cluster in clusters:
                merged = cls.merge_tasks(cluster, self.backbone) if len(cluster) > 1 else cluster[0]
                methods += [merged] if merged is not None else cluster
        else:
            try:
                methods = [self.store.load_unit(self._entries[task], self.backbone, cache)]
            except AdapterError as err:  # one set of tensors for all of them: they fail together
                self._damaged.update(dict.fromkeys(group, str(err)))
                return
        tokenizer = self.backbone.tokenizer
        for method in methods:
            served = [t for t in method.task_names if t in group]
            ids = {t: method.task_names.index(t) for t in served}
            verbs = {ids[t]: self._verbalizer(t, tokenizer) for t in served}
            with method.applied(self.backbone):
                priors = label_priors(self.backbone, method, verbs, list(verbs))
            unit = _Unit(method, ids, verbs, priors)
            for t in served:
                self._unit_of[t] = unit
                self._room_label[t] = _longest_label(self.specs[t], verbs[ids[t]])

    def _verbalizer(self, task: str, tokenizer) -> Verbalizer:
        """The task's verbalizer, comparing labels as its run did (runs from before label_scoring: sum)."""
        from ..core.predict import Verbalizer

        entry = self._entries[task]
        scoring = (entry.get("run_config") or {}).get("label_scoring", "sum")
        return Verbalizer.of(self.specs[task], tokenizer, scoring, entry["max_length"])

    def _encode(self, ex: Example) -> Encoded:
        from ..core.batching import encode

        spec = self.specs[ex.task]
        if spec.task_kind.label_set:
            ex = dataclasses.replace(ex, label=self._room_label[ex.task])
        unit = self._unit_of[ex.task]
        return encode(spec, ex, self.backbone.tokenizer, self._entries[ex.task]["max_length"], unit.task_ids[ex.task])

    def _run(self, unit: _Unit, items: list[Encoded], examples: list[Example], idx: list[int]) -> list[dict]:
        from ..core.predict import generate, score_candidates

        out: list[dict] = [{} for _ in items]
        verbs = unit.verbalizers
        ranked = [j for j, e in enumerate(items) if verbs[e.task_id].task_kind.ranks]
        generated = [j for j, e in enumerate(items) if not verbs[e.task_id].task_kind.ranks]
        with unit.method.applied(self.backbone):
            if ranked:
                chunk = [items[j] for j in ranked]
                cands = [verbs[e.task_id].candidates(e) for e in chunk]
                scores = score_candidates(self.backbone, unit.method, chunk, cands)
                for j, e, s, c in zip(ranked, chunk, scores, cands):
                    verb = verbs[e.task_id]
                    out[j] = _ranked_result(examples[idx[j]].task, verb, verb.adjust(s, c, unit.priors.get(e.task_id)))
            if generated:
                chunk = [items[j] for j in generated]
                texts = generate(self.backbone, unit.method, chunk, [verbs[e.task_id].max_new_tokens for e in chunk])
                for j, text in zip(generated, texts):
                    out[j] = {"task": examples[idx[j]].task, "prediction": text}
        return out


def _group_key(entry: dict) -> tuple:
    if entry["unit"]["split"]:
        return ("split", entry["method"], json.dumps(entry["config"], sort_keys=True))
    return ("whole", entry["unit"]["id"])


def _longest_label(spec: TaskSpec, verb: Verbalizer) -> str:
    """The label whose word has the most tokens: the room an unknown answer may need."""
    if not spec.task_kind.label_set:
        return ""
    return max(zip(verb.labels, verb.words), key=lambda lw: len(lw[1]))[0]


def _ranked_result(task: str, verb: Verbalizer, scores) -> dict:
    probabilities = scores.float().softmax(-1).tolist()
    return {"task": task, **verb.task_kind.result(verb, verb.decide(scores), probabilities)}


# ---------------------------------------------------------------- talora predict
def parse_json(text: str, where: str):
    """``text`` parsed, or a DataError naming ``where``. Python's parser recurses once per level of
    nesting, so a line nested deeper than the recursion limit raises RecursionError: that is the
    input's fault, and is reported as such rather than as a crash."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise DataError(f"{where}: malformed JSON ({err.msg})") from None
    except RecursionError:
        raise DataError(
            f"{where}: JSON nested too deeply to read; a record is one object of its task's fields"
        ) from None


def read_jsonl(path: str) -> tuple[list, list[str]]:
    """The records of a JSONL file ("-" = stdin) and where each came from (``FILE, line N``);
    blank lines are skipped, a malformed line is a DataError naming its number."""
    if path == "-":
        # Bytes, decoded as UTF-8 below: the locale's encoding is not the records'.
        raw = getattr(sys.stdin, "buffer", None)
        name, data = "stdin", raw.read() if raw is not None else sys.stdin.read().encode()
    else:
        file = Path(path)
        if not file.is_file():
            raise ConfigError(f"--input {path}: file not found")
        name, data = path, file.read_bytes()
    try:
        # Only "\n" ends a JSONL line: str.splitlines() would also cut at U+2028 and the like,
        # which JSON strings may hold unescaped.
        lines = data.decode("utf-8").split("\n")
    except UnicodeDecodeError as err:
        raise DataError(f"{name}: not UTF-8 text ({err})") from None
    records, where = [], []
    for lineno, line in enumerate(lines, 1):
        if not line.strip():
            continue
        here = f"{name}, line {lineno}"
        records.append(parse_json(line, here))
        where.append(here)
    return records, where


def run_predict(
    store_dir: str | Path,
    input_path: str = "-",
    output_path: str = "-",
    batch_size: int = 16,
    model: str | None = None,
    backbone: Backbone | None = None,
) -> int:
    """``talora predict``: JSONL records in, one JSONL result per record out, in the same order.

    The input is checked against the store's tasks before a model is loaded; results are
    written only once all are computed (to a file atomically), so an error leaves no partial
    output. The model is ``model``, else the one the store records. Returns the record count."""
    from ..adapters.files import spec_from_dict
    from ..atomic import atomic_write
    from ..core.backbone import load_backbone

    if output_path != "-" and Path(output_path).is_dir():
        raise ConfigError(f"--output {output_path} is a folder, not a file")
    store = AdapterStore(store_dir)
    damaged: dict[str, str] = {}
    base, entries = store.entries(damaged=damaged)
    records, where = read_jsonl(input_path)
    records_to_examples({t: spec_from_dict(e["spec"]) for t, e in entries.items()}, records, where, damaged)
    results: list[dict] = []
    if records:  # an empty input needs no model
        if backbone is None:
            spec = model or base.get("load")
            if spec is None:
                raise ConfigError(
                    f"store {store_dir} does not record how to load base model {base.get('id')!r}; give --model"
                )
            backbone = load_backbone(spec)
        results = Engine(store, backbone, batch_size).predict(records, where)
    text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in results)
    if output_path == "-":
        sys.stdout.write(text)
        sys.stdout.flush()
    else:
        atomic_write(Path(output_path), text.encode())
    return len(results)
