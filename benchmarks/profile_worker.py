"""Where one worker's time goes: Worker.run over a prepared SQLite job, against RawPipeline.

    /work/venv/bin/python benchmarks/profile_worker.py [--records N] [--rounds R]
        [--profile [DIR]]

One process, no-op processor, the end-to-end row's records and batch size (500), a file
database with WAL and synchronous=NORMAL as in bench.py. It measures the work rate side by
side with RawPipeline (raw.py: the raw driver doing the same work, on a second file) in one
process: ``R`` rounds, the sides alternating, each on a freshly prepared job; it prints each
side's median and the median ratio. With ``--profile`` it then runs one more job under
pyinstrument (a dev tool, not a dependency) and writes the call tree to
DIR/sqlite-worker-run.txt (default DIR: benchmarks/profiles/, which git ignores). A single
worker shows the CPU each record costs, without the write lock that the end-to-end row's
processes share.
"""

from __future__ import annotations

import argparse
import importlib
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import peewee as pw

from batchactions_peewee import PeeweeStateStore, ProcessingContext, Worker, prepare_job

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import Target
from raw import RawPipeline

PROFILE_DIR = Path(__file__).resolve().parent / "profiles"


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
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--profile",
        nargs="?",
        const=PROFILE_DIR,
        metavar="DIR",
        type=Path,
        help="also profile one more job with pyinstrument and write the report into DIR "
        "(default benchmarks/profiles/); off unless given",
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        db = pw.SqliteDatabase(
            str(Path(tmp) / "worker.db"),
            pragmas={"journal_mode": "wal", "synchronous": "normal", "busy_timeout": 60_000},
        )
        store = PeeweeStateStore(db)
        store.create_tables()
        raw_target = Target(kind="sqlite", path=str(Path(tmp) / "raw.db"))
        PeeweeStateStore(raw_target.peewee(), table_prefix="r_").create_tables()
        raw = raw_target.raw()
        pipeline = RawPipeline(raw, "r_")
        n = args.records

        profiler: Any = None
        if args.profile is not None:
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

        def one_raw_job() -> float:
            job_id, _ = pipeline.prepare(source(n), 500)
            started = time.perf_counter()
            processed = pipeline.work(job_id, "raw-worker")
            elapsed = time.perf_counter() - started
            if processed != n:
                raise SystemExit(f"the raw pipeline processed {processed} of {n} records")
            return elapsed

        lib_rates, raw_rates, ratios = [], [], []
        for round_ in range(args.rounds):
            # Alternating, who goes first rotating, so that the machine's moods fall alike.
            if round_ % 2 == 0:
                lib_s = one_job(profiled=False)
                raw_s = one_raw_job()
            else:
                raw_s = one_raw_job()
                lib_s = one_job(profiled=False)
            lib_rates.append(n / lib_s)
            raw_rates.append(n / raw_s)
            ratios.append(raw_s / lib_s)
        if profiler is not None:
            one_job(profiled=True)
        raw.close()
        db.close()
    rate = statistics.median(lib_rates)
    summary = (
        f"{rate:,.0f} records/s; raw pipeline {statistics.median(raw_rates):,.0f} records/s; "
        f"ratio {statistics.median(ratios):.2f}x (median of {args.rounds} rounds)"
    )
    if profiler is None:
        print(summary)
        return
    head = (
        f"# Worker.run, one process, SQLite, {n:,} records, batches of 500, no-op processor\n"
        f"# (benchmarks/profile_worker.py), without the profiler: {summary}\n"
        "# The profile covers Worker.run of one more job (its prepare_job is not sampled).\n\n"
    )
    args.profile.mkdir(parents=True, exist_ok=True)
    path = args.profile / "sqlite-worker-run.txt"
    path.write_text(head + profiler.output_text(time="percent_of_total"))
    print(f"{summary}; profile written to {path}")


if __name__ == "__main__":
    main()
