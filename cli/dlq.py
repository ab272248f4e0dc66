"""`rebalance dlq list | replay (JOB_ID... | --all) | purge`: the dead-letter queue."""

from __future__ import annotations

import argparse
import json
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--queue", default=None, help="queue name (default: the rebalance queue)")
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    listing = actions.add_parser("list", help="print dead jobs as JSON lines, newest first")
    listing.add_argument("--limit", type=int, default=100)
    replay = actions.add_parser("replay", help="put dead jobs back on the queue as new")
    replay.add_argument("job_ids", nargs="*", metavar="JOB_ID")
    replay.add_argument("--all", action="store_true", dest="all_jobs")
    purge = actions.add_parser("purge", help="drop every dead job (asks for --yes)")
    purge.add_argument("--yes", action="store_true", help="really drop them")


def run(args: argparse.Namespace) -> int:
    from core import keys, queue
    from core.jobs import iso
    from core.redis import get_client

    name = args.queue or keys.REQUEST_QUEUE
    client = get_client()
    if args.action == "list":
        dead = queue.list_dead(client, name, args.limit)
        if not dead:  # on stderr: stdout stays JSON lines only
            print("no dead jobs", file=sys.stderr)
        for job in dead:
            print(
                json.dumps(
                    {
                        "jobId": job.id,
                        "userId": job.user_id,
                        "attempts": job.attempts,
                        "lastError": job.last_error,
                        "deadAt": iso(job.extra.get("dead_at")),
                        "payload": job.payload,
                    }
                )
            )
        return 0
    if args.action == "purge":
        if not args.yes:
            count = queue.depth(client, name)["dead"]
            print(f"would purge {count} dead job(s): run again with --yes to drop them")
            return 2
        print(f"purged {queue.purge(client, name)} dead job(s)")
        return 0
    if bool(args.job_ids) == args.all_jobs:
        print("give JOB_ID... or --all (not both)")
        return 2
    replayed = queue.replay(client, name, args.job_ids, all_jobs=args.all_jobs)
    missing = sorted(set(args.job_ids) - set(replayed))
    print(f"replayed {len(replayed)} job(s)")
    for job_id in missing:
        print(f"not in the dead-letter queue: {job_id}")
    return 1 if missing else 0
