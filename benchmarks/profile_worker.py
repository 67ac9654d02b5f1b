"""Where one worker's time goes: Worker.run over a prepared SQLite job, under pyinstrument.

    /work/venv/bin/python benchmarks/profile_worker.py [--records N] [--out FILE]

One process, no-op processor, the end-to-end row's records and batch size (500), a file
database with WAL and synchronous=NORMAL as in bench.py. It prints the work rate without
the profiler, then runs a second job under pyinstrument (a dev tool, not a dependency)
and writes the call tree to FILE (default: stdout). A single worker shows the CPU each
record costs; the end-to-end row adds the write lock that four processes share.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import peewee as pw

from batchactions_peewee import PeeweeStateStore, ProcessingContext, Worker, prepare_job


def source(n: int) -> Any:
    for i in range(n):
        yield {
            "email": f"user{i}@example.com",
            "name": f"User {i}",
            "age": i % 90,
            "tags": ["a", "b"],
        }


def noop(record: dict[str, Any], context: ProcessingContext) -> None:
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        db = pw.SqliteDatabase(
            str(Path(tmp) / "worker.db"),
            pragmas={"journal_mode": "wal", "synchronous": "normal", "busy_timeout": 60_000},
        )
        store = PeeweeStateStore(db)
        store.create_tables()
        n = args.records

        pyinstrument: Any = importlib.import_module("pyinstrument")
        profiler = pyinstrument.Profiler(interval=0.0005)

        def one_job(profiled: bool) -> float:
            job = prepare_job(store, source(n), batch_size=500)
            if profiled:
                profiler.start()
            started = time.perf_counter()
            summary = Worker(store, noop).run(job.job_id)
            elapsed = time.perf_counter() - started
            if profiled:
                profiler.stop()
            if summary.processed != n:
                raise SystemExit(f"processed {summary.processed} of {n} records")
            return elapsed

        rate = n / one_job(profiled=False)
        one_job(profiled=True)
        db.close()
    head = (
        f"# Worker.run, one process, SQLite, {n:,} records, batches of 500, no-op processor\n"
        f"# (benchmarks/profile_worker.py): {rate:,.0f} records/s without the profiler\n"
        "# The profile covers Worker.run of a second job (its prepare_job is not sampled).\n\n"
    )
    report = head + profiler.output_text(time="percent_of_total")
    if args.out:
        args.out.write_text(report)
        print(f"{rate:,.0f} records/s; profile written to {args.out}", file=sys.stderr)
    else:
        print(report)


if __name__ == "__main__":
    main()
