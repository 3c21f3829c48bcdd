"""``talora serve``: the HTTP service over an adapter store (talora.serving.http)."""

from __future__ import annotations

import os
import sys

from .common import command, placement, port, positive_int, shared


def add_serve(sub) -> None:
    sv = command(sub, "serve", help="HTTP service over an adapter store, batching concurrent requests (uvicorn)")
    sv.add_argument("--store", required=True, help="adapter store folder (`talora store add`)")
    sv.add_argument("--host", default="127.0.0.1", help="address to bind (default: loopback only)")
    sv.add_argument("--port", type=port, default=8000, help="TCP port (default 8000; 0: any free one)")
    sv.add_argument("--max-batch", type=positive_int, default=32, help="records gathered into one batch")
    sv.add_argument(
        "--max-wait-ms", type=float, default=5, help="how long a batch waits for more requests after its first"
    )
    sv.add_argument("--queue-size", type=positive_int, default=256, help="requests waiting before 503s")
    sv.add_argument("--max-records", type=positive_int, default=256, help="records per request")
    sv.add_argument("--api-key", help="bearer token required on every route but /health (default: $TALORA_API_KEY)")
    sv.add_argument("--model", help="base model to load (default: the one the store was built for)")
    sv.add_argument(
        "--max-jobs", type=positive_int, default=1, help="training jobs (POST /tasks) at once; more get 429"
    )
    shared(sv, "device", "dtype")
    sv.set_defaults(func=cmd_serve)


def cmd_serve(args) -> None:
    from ..serving.http import run_server

    run_server(
        args.store,
        host=args.host,
        port=args.port,
        max_batch=args.max_batch,
        max_wait_ms=args.max_wait_ms,
        queue_size=args.queue_size,
        api_key=args.api_key or os.environ.get("TALORA_API_KEY") or None,
        model=args.model,
        max_records=args.max_records,
        placement=placement(args),
        max_jobs=args.max_jobs,
        log=lambda msg: print(msg, file=sys.stderr),
    )
