"""``talora store`` (an adapter store: add, list, show, remove, verify, adapt) and ``talora predict``."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from ..errors import ConfigError, TaloraError
from ..tasks.sampling import K_ALL
from .common import command, k_shots, placement, positive_int, shared


def add_store(sub) -> None:
    st = command(sub, "store", help="an adapter store: per-task adapters of one base model (docs/serving.md)")
    actions = st.add_subparsers(dest="action", required=True)
    sa = command(actions, "add", help="add every task of a trained run or transfer output (same names: replaced)")
    sa.add_argument("--store", required=True, help="store folder (created on the first add)")
    sa.add_argument("--adapter", required=True, help="folder with adapter.safetensors + adapter.json")
    sa.add_argument("--model", help="load the base model from here (default: the run's config.yaml `model`)")
    sl = command(actions, "list", help="the store's tasks with method, kind, score and source")
    sl.add_argument("--store", required=True)
    shared(sl, "json")
    ss = command(actions, "show", help="one task's entry as JSON (inputs, spec, tensors, metrics, training data)")
    ss.add_argument("--store", required=True)
    ss.add_argument("--task", required=True)
    sr = command(actions, "remove", help="remove a task (tensors other tasks use stay)")
    sr.add_argument("--store", required=True)
    sr.add_argument("--task", required=True)
    sk = command(actions, "verify", help="check every entry and blob against its sha256 (exit 2 if one is damaged)")
    sk.add_argument("--store", required=True)
    sd = command(
        actions, "adapt", help="teach the store a new task from a few labelled examples (what POST /tasks does, here)"
    )
    sd.add_argument("--store", required=True)
    sd.add_argument("--task", required=True, help="the new task's name (letters, digits, _ and -)")
    sd.add_argument(
        "--examples", required=True, help="JSONL or CSV file: text (or text_a and text_b) and label per line"
    )
    sd.add_argument(
        "--from", dest="source", help="a stored task whose trained run to transfer from (default: its TA-LoRA run)"
    )
    sd.add_argument("--k", type=k_shots, default=K_ALL, help="examples per label to train on (default: all)")
    sd.add_argument("--steps", type=positive_int, help="training steps (default: the base run's transfer budget)")
    sd.add_argument("--seed", type=int, default=0, help="seed of the training order (and of a k-shot draw)")
    sd.add_argument("--labels", help="the label set, comma-separated: an example with another label is refused")
    sd.add_argument("--template", help='the prompt with its fields in braces, e.g. "Review: {text} Sentiment:"')
    sd.add_argument("--model", help="base model to load (default: the one the store was built for)")
    shared(sd, "json", "device", "dtype", json={"help": "print the job's record as JSON"})
    for action in (sa, sl, ss, sr, sk, sd):
        action.set_defaults(func=cmd_store)


def add_predict(sub) -> None:
    pr = command(sub, "predict", help="JSONL records {task, fields...} in, one JSONL prediction per record out")
    pr.add_argument("--store", required=True, help="adapter store folder (`talora store add`)")
    pr.add_argument("--input", default="-", help="JSONL file, or - for stdin (default)")
    shared(pr, "output", output={"default": "-", "help": "JSONL file (written only when every record succeeded), or -"})
    pr.add_argument("--batch-size", type=positive_int, default=16, help="records per forward pass, tasks mixed")
    pr.add_argument("--model", help="base model to load (default: the one the store was built for)")
    pr.set_defaults(func=cmd_predict)


def cmd_store(args) -> None:
    from ..adapters.store import AdapterStore

    store = AdapterStore(Path(args.store))
    if args.action == "adapt":
        return _store_adapt(args, store)
    if args.action == "add":
        for r in store.add(Path(args.adapter), model=args.model):
            what = f"replaced {r['task']} (was from {r['replaced_source']})" if r["replaced"] else f"added {r['task']}"
            print(f"{what}: {r['method']}, {r['new_blobs']} new tensor file(s), {r['reused_blobs']} already stored")
    elif args.action == "list":
        rows = store.summary()
        damaged = _damaged_tasks(store.verify())
        if args.json:
            rows = [{**r, "damaged": damaged.get(r["task"])} for r in rows]
            print(json.dumps(rows, indent=1, ensure_ascii=False))
        for r in [] if args.json else rows:
            score = "-" if r["score"] is None else f"{r['metric']}={r['score']:.4f}"
            k = "" if r["k"] is None else f" k={r['k']}"
            flag = f"  DAMAGED: {'; '.join(damaged[r['task']])}" if r["task"] in damaged else ""
            print(f"{r['task']:24s} {r['method']:18s} {r['kind']:15s} {score:20s}{k}  {r['source']}{flag}")
        _refuse_damage(store, damaged)
    elif args.action == "show":
        entry = store.entry(args.task)
        print(json.dumps(entry, indent=1, ensure_ascii=False))
        _refuse_damage(store, _damaged_tasks(store.verify([args.task])))
    elif args.action == "verify":
        problems = store.verify()
        for p in problems:
            users = f"task{'s' if len(p['tasks']) > 1 else ''} {', '.join(p['tasks'])}"
            print(f"{store.folder / p['file']}: {p['problem']}, {p['detail']} ({users})")
        _refuse_damage(store, _damaged_tasks(problems))
        print(f"{len(store.tasks())} task(s) in {args.store}: every entry and blob matches its sha256")
    else:
        store.remove(args.task)
        print(f"removed {args.task} from {args.store}")


def _store_adapt(args, store) -> None:
    """``talora store adapt``: a POST /tasks job run here, in the foreground, with the training's
    progress bar. Everything is checked before the model is loaded."""
    from ..core.backbone import load_backbone
    from ..serving.jobs import JobManager
    from ..tasks.records import read_records

    path = Path(args.examples)
    if path.suffix.lower() not in (".jsonl", ".json", ".csv", ".tsv"):
        raise ConfigError(f"--examples {path}: expected a .jsonl or .csv file (also .json or .tsv)")
    if not path.is_file():
        raise ConfigError(f"--examples {path}: file not found")
    records = read_records(path)
    body = {"name": args.task, "examples": [obj for _, _, obj in records], "k": args.k, "seed": args.seed}
    for key, value in (("from", args.source), ("steps", args.steps), ("template", args.template)):
        if value is not None:
            body[key] = value
    if args.labels is not None:
        body["labels"] = [lab.strip() for lab in args.labels.split(",")]
    manager = JobManager(store, None)  # the model is not needed to check the request
    prepared = manager.prepare(body, [where for _, where, _ in records])
    spec = args.model or store.base_model().get("load")
    if spec is None:
        raise ConfigError(f"store {store.folder} does not record how to load its base model; give --model")
    chosen = placement(args)
    manager.backbone = load_backbone(spec, chosen.get("dtype", "auto"), chosen.get("device", "auto"))
    record = manager.run_here(prepared)
    if args.json:
        print(json.dumps(record, indent=1, ensure_ascii=False))
    if record["state"] != "succeeded":
        raise TaloraError(f"store adapt: {record['error']} (job record: {store.folder / 'jobs' / record['id']}.json)")
    if not args.json:
        r, base = record["result"], record["base"]
        print(
            f"added {args.task}: {r['metric']}={r['score']:.4f} on {r['held_out']} held-out example(s); trained on "
            f"{r['train_examples']} for {record['progress']['steps']} steps ({r['seconds']} s) from the "
            f"{base['method']} run of {', '.join(base['tasks'])}; {r['new_blobs']} new tensor file(s), "
            f"{r['reused_blobs']} already stored; job {record['id']}"
        )


def _damaged_tasks(problems: list[dict]) -> dict[str, list[str]]:
    """Task -> what is wrong with each of its damaged files, from ``AdapterStore.verify``."""
    out: dict[str, list[str]] = {}
    for p in problems:
        for task in p["tasks"]:
            out.setdefault(task, []).append(f"{p['file']} {p['problem']}")
    return out


def _refuse_damage(store, damaged: dict[str, list[str]]) -> None:
    from ..errors import AdapterError

    if damaged:
        raise AdapterError(
            f"store {store.folder}: damaged files in {len(damaged)} task(s): {', '.join(damaged)}; "
            f"`talora store verify --store {store.folder}` lists them, `talora store add` of a task's adapter "
            "again repairs them"
        )


def cmd_predict(args) -> None:
    from ..serving.engine import run_predict

    count = run_predict(args.store, args.input, args.output, args.batch_size, args.model)
    if args.output != "-":
        print(f"{count} prediction(s) in {args.output}", file=sys.stderr)
