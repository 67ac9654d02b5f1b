"""A worker or a prepare in its own process, for tests/test_worker_processes.py.

Run from the repository root as ``python -m tests.worker_helper work|prepare ...``.

``work`` runs a Worker on a job and prints its WorkerSummary as JSON. Its processor appends
each record index it is given to ``--log`` and, at record ``--block-at``, creates
``--marker`` and sleeps, so the test can kill it at a known point mid-batch.

``prepare`` prepares ``--records`` records under ``--job-id``; asked for record
``--block-at``, the source creates ``--marker`` and sleeps, so the test can kill it
mid-stream.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from batchactions_peewee import PeeweeStateStore, ProcessingContext, Worker, prepare_job
from tests.backends import open_database

BLOCK_S = 600.0  # far longer than any test waits: the process is killed first


def _store(args: argparse.Namespace) -> PeeweeStateStore:
    return PeeweeStateStore(open_database(args.url), table_prefix=args.prefix)


def work(args: argparse.Namespace) -> None:
    with Path(args.log).open("a", encoding="utf-8") as log:

        def processor(record: dict[str, Any], context: ProcessingContext) -> None:
            log.write(f"{context.record_index}\n")
            log.flush()
            if context.record_index == args.block_at:
                Path(args.marker).touch()
                time.sleep(BLOCK_S)

        worker = Worker(
            _store(args), processor, worker_id=args.worker_id, lease_timeout_ms=args.lease_ms
        )
        summary = worker.run(args.job_id)
    print(json.dumps(dataclasses.asdict(summary)), flush=True)


def prepare(args: argparse.Namespace) -> None:
    def source() -> Iterator[dict[str, Any]]:
        for i in range(args.records):
            if i == args.block_at:
                Path(args.marker).touch()
                time.sleep(BLOCK_S)
            yield {"n": i}

    result = prepare_job(_store(args), source(), batch_size=args.batch_size, job_id=args.job_id)
    print(json.dumps(dataclasses.asdict(result)), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("command", choices=["work", "prepare"])
    parser.add_argument("--url", required=True)
    parser.add_argument("--prefix", required=True)
    parser.add_argument("--job-id", required=True)
    parser.add_argument("--worker-id")
    parser.add_argument("--lease-ms", type=int, default=1500)
    parser.add_argument("--log", default="/dev/null")
    parser.add_argument("--marker", default="/dev/null")
    parser.add_argument("--block-at", type=int, default=-1)
    parser.add_argument("--records", type=int, default=0)
    parser.add_argument("--batch-size", type=int, default=20)
    args = parser.parse_args()
    work(args) if args.command == "work" else prepare(args)


if __name__ == "__main__":
    main()
