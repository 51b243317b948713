"""``label-assistant worker``: an RQ worker for the backend's jobs (beyond one machine)."""

from __future__ import annotations

import argparse
import os

from label_assistant.cli.common import CliError


def register(subparsers: argparse._SubParsersAction) -> None:
    from label_assistant.ml_backend.rq_queue import HEARTBEAT, QUEUE_NAME, STALE_BEATS

    p = subparsers.add_parser(
        "worker",
        help="run training and ranking jobs from a Redis queue (the service's LA_QUEUE)",
        description="Run the backend's training and ranking jobs on this machine, taken one "
        f"at a time from the RQ queue {QUEUE_NAME!r} on Redis, where a service started with "
        "LA_QUEUE=<the same URL> puts them. The machine must see the service's work "
        "directory at the same path (a shared filesystem: NFS, a cluster filesystem, one "
        "docker volume): a job reads its request and images there and publishes its model "
        "version there with an atomic rename, which must stay on that filesystem. Workers "
        "never open the service's store; the service records the outcomes. Each job runs in "
        "a forked process; a job whose process is killed, or whose worker stops sending "
        f"heartbeats for {STALE_BEATS} beats, is run once more, then failed with the reason. "
        "Stop with Ctrl-C or SIGTERM: the job in progress finishes first (a second Ctrl-C "
        "kills it; the service then reruns it).",
    )
    p.add_argument("--queue", default=os.environ.get("LA_QUEUE") or None, metavar="URL",
                   help="the Redis URL, e.g. redis://host:6379/0 (default: LA_QUEUE)")
    p.add_argument("--gpus", default=None, metavar="IDS",
                   help="the GPUs this worker's jobs may use, e.g. 0,1 (CUDA_VISIBLE_DEVICES); "
                   "'none' for CPU only. One job runs at a time: start one worker per GPU "
                   "(--gpus 0, --gpus 1) to train on each at once. Default: what the "
                   "environment gives")
    p.add_argument("--name", default=None,
                   help="the worker's name in rounds and /metrics (default: HOST.PID)")
    p.add_argument("--heartbeat", type=float, default=HEARTBEAT, metavar="S",
                   help=f"seconds between heartbeats while a job runs (default {HEARTBEAT:g}); "
                   "the service takes a job for dead after "
                   f"{STALE_BEATS} missed ones")
    p.add_argument("--burst", action="store_true",
                   help="exit when the queue is empty instead of waiting for jobs")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from label_assistant.ml_backend.rq_queue import parse_gpus, work
    from label_assistant.ml_backend.settings import parse_redis_url

    if not args.queue:
        raise CliError("--queue is required (or LA_QUEUE): the Redis URL, e.g. "
                       "redis://host:6379/0")
    try:
        url = parse_redis_url(args.queue)
        gpus = None if args.gpus is None else parse_gpus(args.gpus)
    except ValueError as error:
        text = str(error)
        raise CliError(text if text.startswith("--") else f"--queue {text}") from None
    if not args.heartbeat >= 1:
        raise CliError(f"--heartbeat must be >= 1 second, got {args.heartbeat:g}")
    from redis.exceptions import RedisError

    try:
        work(url, gpus=gpus, name=args.name, heartbeat=args.heartbeat, burst=args.burst)
    except RedisError as error:
        raise CliError(f"Redis at {url}: {error}") from None
    return 0
