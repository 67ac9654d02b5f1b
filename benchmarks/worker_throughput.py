"""Records/s of a job shared by several worker processes.

    /work/venv/bin/python benchmarks/worker_throughput.py [--database URL] [--records 100000]
        [--workers 4] [--batch-size 500]

Prepares a job of ``--records`` small records (default on a temporary SQLite file), starts
``--workers`` processes that each run a Worker with a no-op processor, and prints:

- wall: from starting the processes until the last one exits (includes interpreter start-up);
- processing: from the first batch claim to the job's ``completed_at`` (store clock).

Tables get a fresh prefix and are dropped at the end, so any database URL may be used, e.g.
``mysql://root@127.0.0.1:3306/test`` or ``postgresql://postgres@127.0.0.1:5432/postgres``.

It has no raw baseline; the benchmark's end-to-end row (bench.py) is the one compared with
the raw driver, and its numbers are in RESULTS.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from playhouse.db_url import connect

from batchactions_peewee import PeeweeStateStore, ProcessingContext, Worker, prepare_job


def open_store(url: str, prefix: str) -> PeeweeStateStore:
    if url.startswith("sqlite"):
        database = connect(url, pragmas={"journal_mode": "wal", "busy_timeout": 30000}, timeout=30)
    else:
        database = connect(url)
    return PeeweeStateStore(database, table_prefix=prefix)


def noop(record: dict[str, Any], context: ProcessingContext) -> None:
    return None


def work(url: str, prefix: str, job_id: str) -> None:
    summary = Worker(open_store(url, prefix), noop).run(job_id)
    print(json.dumps(dataclasses.asdict(summary)), flush=True)


def bench(url: str, records: int, workers: int, batch_size: int) -> None:
    prefix = f"bench{os.getpid()}_"
    store = open_store(url, prefix)
    store.create_tables()
    try:
        started = time.monotonic()
        source = ({"email": f"user{i}@example.com", "n": i} for i in range(records))
        job = prepare_job(store, source, batch_size=batch_size)
        prepared = time.monotonic() - started
        print(f"prepare: {records:,} records in {prepared:.1f} s ({records / prepared:,.0f}/s)")

        started = time.monotonic()
        procs = [
            subprocess.Popen(
                [
                    sys.executable,
                    __file__,
                    "--work",
                    job.job_id,
                    "--prefix",
                    prefix,
                    "--database",
                    url,
                ],
                stdout=subprocess.PIPE,
                text=True,
            )
            for _ in range(workers)
        ]
        summaries = [json.loads(p.communicate()[0].strip().splitlines()[-1]) for p in procs]
        wall = time.monotonic() - started

        state = store.get_job_state(job.job_id)
        assert state is not None and state.completed_at is not None
        first_claim = min(b.claimed_at for b in state.batches if b.claimed_at is not None)
        processing = (state.completed_at - first_claim) / 1000
        processed = sum(s["processed"] for s in summaries)
        print(f"job {state.status.value}: {processed:,} records by {workers} workers")
        print(f"  per worker: {[s['processed'] for s in summaries]}")
        print(f"  wall:       {wall:.1f} s, {records / wall:,.0f} records/s")
        print(f"  processing: {processing:.1f} s, {records / processing:,.0f} records/s")
    finally:
        store.drop_tables()
        store.database.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database")
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=500)
    parser.add_argument("--work", metavar="JOB_ID", help=argparse.SUPPRESS)
    parser.add_argument("--prefix", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.work:
        work(args.database, args.prefix, args.work)
        return
    if args.database:
        bench(args.database, args.records, args.workers, args.batch_size)
        return
    with tempfile.TemporaryDirectory() as tmp:
        bench(f"sqlite:///{Path(tmp) / 'bench.db'}", args.records, args.workers, args.batch_size)


if __name__ == "__main__":
    main()
