"""AsyncPeeweeStateStore against PeeweeStateStore, in the same run, on the same database.

Rows per backend: claim + complete cycles (one batch claimed and completed per cycle, one
caller), bulk record writes (``save_batch_records`` of 1,000 records at a time), and a job
worked by an ``async def`` processor that sleeps 20 ms per record at 256 in flight:
``AsyncWorker`` in this process's loop against ``Worker(concurrency=256)`` (whose async
processor runs on a loop of its own). Each side runs every step alternately, ``--rounds``
times; the table gives the better round of each side, the ratio async / sync, and the
process CPU seconds of each side.

    python benchmarks/async_store.py [--backends sqlite,mysql,postgres] [--rounds 3]
        [--cycles 300] [--records 5000] [--worker-records 39000]

Servers: ``BATCHACTIONS_TEST_MYSQL_URL`` / ``BATCHACTIONS_TEST_POSTGRES_URL`` (defaults:
``mysql://root@127.0.0.1:3306/test``, ``postgresql://postgres@127.0.0.1:5432/postgres``).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
import urllib.parse
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import peewee as pw
from playhouse.db_url import connect
from playhouse.pwasyncio import AsyncMySQLDatabase, AsyncPostgresqlDatabase, AsyncSqliteDatabase

from batchactions_peewee import (
    AsyncPeeweeStateStore,
    AsyncWorker,
    PeeweeStateStore,
    ProcessedRecord,
    ProcessingContext,
    RecordStatus,
    Worker,
    prepare_job,
)

DEFAULT_URLS = {
    "mysql": os.environ.get("BATCHACTIONS_TEST_MYSQL_URL", "mysql://root@127.0.0.1:3306/test"),
    "postgres": os.environ.get(
        "BATCHACTIONS_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
    ),
}
RECORD_MS = 20
IN_FLIGHT = 256


def databases(kind: str, sqlite_path: Path) -> tuple[pw.Database, pw.Database]:
    """A sync and an async database on the same data."""
    if kind == "sqlite":
        pragmas = {"journal_mode": "wal", "busy_timeout": 10000}
        sync = pw.SqliteDatabase(str(sqlite_path), pragmas=pragmas, timeout=10)
        return sync, AsyncSqliteDatabase(str(sqlite_path), pragmas=pragmas, timeout=10)
    url = DEFAULT_URLS[kind]
    parts = urllib.parse.urlsplit(url)
    server: dict[str, Any] = {"host": parts.hostname, "user": parts.username}
    if parts.port:
        server["port"] = parts.port
    if parts.password:
        server["password"] = parts.password
    name = parts.path.lstrip("/")
    if kind == "mysql":
        return connect(url), AsyncMySQLDatabase(name, charset="utf8mb4", **server)
    return connect(url), AsyncPostgresqlDatabase(name, **server)


def records(start: int, count: int) -> list[ProcessedRecord]:
    return [
        ProcessedRecord(index=i, raw={"n": i}, parsed={"n": i}, status=RecordStatus.PROCESSED)
        for i in range(start, start + count)
    ]


# -- the sync side ----------------------------------------------------------------------


def sync_cycles(store: PeeweeStateStore, cycles: int) -> float:
    job_id = prepare_job(store, ({"n": i} for i in range(cycles)), batch_size=1).job_id
    started = time.perf_counter()
    while (claim := store.claim_batch(job_id, "bench")).reservation is not None:
        assert store.complete_batch(claim.reservation, processed_count=1, failed_count=0)
    return cycles / (time.perf_counter() - started)


def sync_bulk(store: PeeweeStateStore, count: int) -> float:
    job_id = prepare_job(store, iter([{"n": 0}]), batch_size=1).job_id
    batch_id = store.get_batches_page(job_id)[0].id
    chunks = [records(start, 1000) for start in range(0, count, 1000)]
    started = time.perf_counter()
    for chunk in chunks:
        store.save_batch_records(job_id, batch_id, chunk)
    return count / (time.perf_counter() - started)


def sync_worker(store: PeeweeStateStore, count: int) -> float:
    async def sleepy(record: dict[str, Any], context: ProcessingContext) -> None:
        await asyncio.sleep(RECORD_MS / 1000)

    job_id = prepare_job(store, ({"n": i} for i in range(count)), batch_size=1000).job_id
    started = time.perf_counter()
    summary = Worker(store, sleepy, concurrency=IN_FLIGHT).run(job_id)
    assert summary.processed == count and summary.finalized, summary
    return count / (time.perf_counter() - started)


# -- the async side ---------------------------------------------------------------------


async def async_cycles(store: AsyncPeeweeStateStore, cycles: int) -> float:
    rows = ({"n": i} for i in range(cycles))
    job_id = (await store.run(prepare_job, rows, batch_size=1)).job_id
    started = time.perf_counter()
    while (claim := await store.claim_batch(job_id, "bench")).reservation is not None:
        assert await store.complete_batch(claim.reservation, processed_count=1, failed_count=0)
    return cycles / (time.perf_counter() - started)


async def async_bulk(store: AsyncPeeweeStateStore, count: int) -> float:
    job_id = (await store.run(prepare_job, iter([{"n": 0}]), batch_size=1)).job_id
    batch_id = (await store.get_batches_page(job_id))[0].id
    chunks = [records(start, 1000) for start in range(0, count, 1000)]
    started = time.perf_counter()
    for chunk in chunks:
        await store.save_batch_records(job_id, batch_id, chunk)
    return count / (time.perf_counter() - started)


async def async_worker(store: AsyncPeeweeStateStore, count: int) -> float:
    async def sleepy(record: dict[str, Any], context: ProcessingContext) -> None:
        await asyncio.sleep(RECORD_MS / 1000)

    rows = ({"n": i} for i in range(count))
    job_id = (await store.run(prepare_job, rows, batch_size=1000)).job_id
    started = time.perf_counter()
    summary = await AsyncWorker(store, sleepy, concurrency=IN_FLIGHT).run(job_id)
    assert summary.processed == count and summary.finalized, summary
    return count / (time.perf_counter() - started)


# -- the run ----------------------------------------------------------------------------


class Sides:
    """Both stores on one backend, and a loop for the async one."""

    def __init__(self, kind: str, directory: Path) -> None:
        self.kind = kind
        self.sync_db, self.async_db = databases(kind, directory / f"{kind}.db")
        prefix = f"bench{os.getpid()}_"
        self.sync = PeeweeStateStore(self.sync_db, table_prefix=prefix)
        self.sync.create_tables()
        self.loop = asyncio.new_event_loop()
        self.asynchronous = AsyncPeeweeStateStore(self.async_db, table_prefix=prefix)

    def on_loop(
        self, step: Callable[[AsyncPeeweeStateStore, int], Awaitable[float]], n: int
    ) -> float:
        return self.loop.run_until_complete(step(self.asynchronous, n))

    def close(self) -> None:
        self.sync.drop_tables()
        self.sync_db.close()
        database: Any = self.async_db
        self.loop.run_until_complete(self.asynchronous.close())
        self.loop.run_until_complete(database.close_pool())
        self.loop.close()


def measure(
    sides: Sides, rounds: int, name: str, sync: Callable[[], float], asyn: Callable[[], float]
) -> list[str]:
    best = {"sync": 0.0, "async": 0.0}
    cpu = {"sync": 0.0, "async": 0.0}
    for _ in range(rounds):
        for side, step in (("sync", sync), ("async", asyn)):
            before = time.process_time()
            best[side] = max(best[side], step())
            cpu[side] += time.process_time() - before
    ratio = best["async"] / best["sync"]
    return [
        sides.kind,
        name,
        f"{best['async']:,.0f}/s",
        f"{best['sync']:,.0f}/s",
        f"{ratio:.2f}x",
        f"{cpu['async'] / rounds:.2f} s / {cpu['sync'] / rounds:.2f} s",
    ]


def backend_rows(sides: Sides, args: argparse.Namespace) -> list[list[str]]:
    """The three rows of one backend."""
    cycles, count, worked = args.cycles, args.records, args.worker_records
    return [
        measure(
            sides,
            args.rounds,
            f"claim + complete cycles ({cycles}, one caller)",
            lambda: sync_cycles(sides.sync, cycles),
            lambda: sides.on_loop(async_cycles, cycles),
        ),
        measure(
            sides,
            args.rounds,
            f"bulk writes ({count:,} records, 1,000 a statement)",
            lambda: sync_bulk(sides.sync, count),
            lambda: sides.on_loop(async_bulk, count),
        ),
        measure(
            sides,
            1,
            f"worker, async processor {RECORD_MS} ms/record, {IN_FLIGHT} in flight, "
            f"{worked:,} records in batches of 1,000",
            lambda: sync_worker(sides.sync, worked),
            lambda: sides.on_loop(async_worker, worked),
        ),
    ]


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backends", default="sqlite,mysql,postgres")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--cycles", type=int, default=300)
    parser.add_argument("--records", type=int, default=5000)
    parser.add_argument("--worker-records", type=int, default=39_000)
    args = parser.parse_args(argv)
    rows: list[list[str]] = []
    with tempfile.TemporaryDirectory() as directory:
        for kind in args.backends.split(","):
            sides = Sides(kind, Path(directory))
            try:
                rows += backend_rows(sides, args)
            finally:
                sides.close()
    header = ["backend", "row", "async", "sync", "async / sync", "CPU s per round (async / sync)"]
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for row in rows:
        print("| " + " | ".join(row) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
