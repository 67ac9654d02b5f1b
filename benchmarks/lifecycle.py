"""How soon pause, resume and abort take effect across worker processes, and how long purge
takes, at the default lease and poll settings.

    python benchmarks/lifecycle.py [--url sqlite:///lifecycle.db] [--records 1000000]

Four worker processes work a job whose processor takes ``--record-ms`` per record. The
script pauses the job, waits, resumes it, then aborts it, and reports from the records'
own timestamps: how long after ``pause_job`` returned the last record was processed (the
batches in hand finishing), how long after ``resume_job`` the first one was, and how long
after ``abort_job`` the last one was and every worker had returned. Then it prepares a job
of ``--records`` records, aborts it, and times ``purge_jobs``.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from batchactions_peewee import PeeweeStateStore, ProcessingContext, Worker, prepare_job
from batchactions_peewee.cli import open_database

PREFIX = "lifecycle_"


def store_for(url: str) -> PeeweeStateStore:
    # As the CLI opens it: SQLite in WAL mode with a busy timeout.
    return PeeweeStateStore(open_database(url), table_prefix=PREFIX)


def work(url: str, job_id: str, record_ms: float, log: str) -> None:
    """One worker process: logs ``monotonic time, record index`` per record processed."""
    store = store_for(url)
    with open(log, "a", encoding="utf-8") as out:

        def processor(record: dict[str, Any], context: ProcessingContext) -> None:
            time.sleep(record_ms / 1000)
            out.write(f"{time.monotonic()} {context.record_index}\n")
            out.flush()

        Worker(store, processor).run(job_id)  # default lease and poll settings
    with open(log, "a", encoding="utf-8") as done:
        done.write(f"{time.monotonic()} done\n")


def stamps(logs: list[str]) -> list[tuple[float, str]]:
    found: list[tuple[float, str]] = []
    for log in logs:
        for line in Path(log).read_text().splitlines():
            stamp, what = line.split()
            found.append((float(stamp), what))
    return sorted(found)


def controls(url: str, record_ms: float, workers: int) -> None:
    store = store_for(url)
    job_id = prepare_job(store, ({"n": i} for i in range(200_000)), batch_size=500).job_id
    scratch = tempfile.mkdtemp()
    logs = [os.path.join(scratch, f"w{n}.log") for n in range(workers)]
    context = multiprocessing.get_context("spawn")
    processes = [context.Process(target=work, args=(url, job_id, record_ms, log)) for log in logs]
    for p in processes:
        p.start()
    time.sleep(3.0)
    assert store.pause_job(job_id)
    paused_at = time.monotonic()
    time.sleep(3.0)
    assert store.resume_job(job_id)
    resumed_at = time.monotonic()
    time.sleep(3.0)
    assert store.abort_job(job_id)
    aborted_at = time.monotonic()
    for p in processes:
        p.join(timeout=600)
    records = [(t, w) for t, w in stamps(logs) if w != "done"]
    done = [t for t, w in stamps(logs) if w == "done"]
    last_before_resume = max(t for t, _ in records if t < resumed_at)
    first_after_resume = min(t for t, _ in records if t >= resumed_at)
    print(f"workers: {workers} processes, {record_ms} ms per record, batches of 500")
    print(f"pause:  last record {last_before_resume - paused_at:.2f} s after pause_job")
    print(f"resume: first record {first_after_resume - resumed_at:.2f} s after resume_job")
    print(f"abort:  last record {max(t for t, _ in records) - aborted_at:.2f} s after abort_job;")
    print(f"        every worker returned {max(done) - aborted_at:.2f} s after it")
    store.delete_job(job_id)  # not part of the purge measured next


def purge(url: str, records: int) -> None:
    store = store_for(url)
    started = time.monotonic()
    job_id = prepare_job(store, ({"n": i} for i in range(records)), batch_size=500).job_id
    prepared = time.monotonic() - started
    assert store.abort_job(job_id)
    time.sleep(0.01)  # older than the cutoff, not of the same millisecond
    started = time.monotonic()
    purged = store.purge_jobs(older_than_ms=0)
    took = time.monotonic() - started
    print(f"purge:  {records:,} records ({prepared:.1f} s to prepare): {took:.1f} s ({purged} job)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="sqlite:///lifecycle.db")
    parser.add_argument("--records", type=int, default=1_000_000, help="the purged job's")
    parser.add_argument("--record-ms", type=float, default=2.0)
    parser.add_argument("--workers", type=int, default=4)
    args = parser.parse_args()
    store = store_for(args.url)
    store.drop_tables()
    store.create_tables()
    try:
        controls(args.url, args.record_ms, args.workers)
        purge(args.url, args.records)
    finally:
        store.drop_tables()


if __name__ == "__main__":
    main()
