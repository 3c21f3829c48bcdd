"""``talora data`` (pull tasks from the hub, check a data folder) and ``talora push`` (an adapter to the hub)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from ..tasks.kinds import find_kind
from .common import check_output, command, shared


def add_data(sub) -> None:
    dt = command(sub, "data", help="fetch tasks from the Hugging Face hub, or check a data folder (docs/data.md)")
    data = dt.add_subparsers(dest="action", required=True)
    dp = command(data, "pull", help="write tasks from the hub as a data folder (MANIFEST.json + JSONL)")
    dp.add_argument("tasks", nargs="+", metavar="TASK", help="task names (sst2, rte, cmrc2018, ...)")
    shared(dp, "output", output={"required": True, "help": "data folder to write (tasks already in it stay)"})
    dp.add_argument("--cache-dir", help="the datasets package's download cache")
    dp.set_defaults(func=cmd_data)
    dc = command(
        data, "check", help="read every record of a data folder or file; per task: kind, labels, metric, sizes"
    )
    dc.add_argument("path", help="a data folder (with or without MANIFEST.json) or one .jsonl/.csv/... file")
    shared(dc, "json")
    dc.set_defaults(func=cmd_data)


def add_push(sub) -> None:
    pu = command(sub, "push", help="upload an adapter folder to the Hugging Face hub with a model card")
    pu.add_argument("--adapter", required=True, help="adapter folder (written by train or transfer)")
    pu.add_argument("--repo", required=True, help="hub model repo owner/name (created when missing)")
    pu.add_argument("--private", action="store_true", help="create the repo private")
    pu.add_argument("--message", help="commit message")
    pu.add_argument("--dry-run", action="store_true", help="print the model card; upload nothing")
    pu.set_defaults(func=cmd_push)


def cmd_data(args) -> None:
    from ..errors import DataError
    from ..tasks import check_tasks, describe_tasks

    if args.action == "pull":
        from ..tasks.hub import download

        check_output(args.output)
        folder = download(args.tasks, Path(args.output), cache_dir=args.cache_dir)
        rows = {r["name"]: r for r in describe_tasks(folder)}
        for task in args.tasks:
            r = rows[task]
            sizes = ", ".join(f"{k}={v}" for k, v in r["splits"].items())
            print(f"{task:18s} {r['language']:3s} {r['kind']:16s} {r['metric']:9s} {sizes}")
        print(f"wrote {len(args.tasks)} task(s) to {folder}; `talora data check {folder}` reads them", file=sys.stderr)
        return
    rows = check_tasks(args.path)
    if args.json:
        print(json.dumps(rows, indent=1, ensure_ascii=False))
    for r in [] if args.json else rows:
        if not r["supported"]:
            print(f"{r['name']:18s} cannot be read: {r['problem']}")
            continue
        labels = r["labels"]
        shown = ", ".join(labels[:6]) + (f", ... ({len(labels)})" if len(labels) > 6 else "")
        shown = shown or getattr(find_kind(r["kind"]), "shown", "")
        sizes = ", ".join(f"{k}={v}" for k, v in r["splits"].items())
        print(f"{r['name']:18s} {r['language']:3s} {r['kind']:16s} {r['metric']:9s} [{shown}]  {sizes}")
        print(f"{'':18s} {'inferred: ' + r['inferred'] if r['inferred'] else 'declared by the manifest'}")
    bad = [r for r in rows if not r["supported"]]
    if bad:
        raise DataError(
            f"data check: {len(bad)} of {len(rows)} task(s) in {args.path} cannot be read; "
            f"{bad[0]['name']}: {bad[0]['problem']}"
        )
    print(f"{len(rows)} task(s) in {args.path}, every record readable", file=sys.stderr)


def cmd_push(args) -> None:
    from ..adapters.hub import model_card, push_adapter

    if args.dry_run:
        print(model_card(Path(args.adapter), args.repo), end="")
        return
    result = push_adapter(Path(args.adapter), args.repo, private=args.private, message=args.message)
    print(f"pushed {', '.join(result['files'])} to {result['url']} (model card: {result['card']})")
