"""AsyncWorker inside the caller's event loop, on SQLite, MySQL/MariaDB and PostgreSQL
through pwasyncio: counts, fencing once the lease is lost, stop(), async and plain
processors and batch processors, and several workers (tasks of one loop, and two
processes) on one job: no batch claimed twice, no worker told "nothing left" early, one
finalizer."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import subprocess
import sys
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest

from batchactions_peewee import (
    AsyncPeeweeStateStore,
    AsyncWorker,
    BatchContext,
    BatchStatus,
    JobStatus,
    PeeweeStateStore,
    ProcessingContext,
    Worker,
    WorkerSummary,
    prepare_job,
)
from batchactions_peewee.errors import InvalidInputError

from ..support.async_stores import ASYNC_BACKENDS, ASYNC_PREFIX, open_async_database
from ..support.backends import open_database
from ..support.imports import Numbered
from ..support.stores import new_prefix

T = TypeVar("T")
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(params=ASYNC_BACKENDS)
def url(request: pytest.FixtureRequest, url_for: Callable[[str], str]) -> str:
    """The ``async+`` URL of each database."""
    return url_for(str(request.param))


def on_store(url: str, body: Callable[[AsyncPeeweeStateStore], Awaitable[T]]) -> T:
    """``body(store)`` in a new event loop, on fresh tables dropped afterwards."""

    async def main() -> T:
        database: Any = open_async_database(url)
        store = AsyncPeeweeStateStore(database, table_prefix=new_prefix())
        await store.create_tables()
        try:
            return await body(store)
        finally:
            await store.drop_tables()
            await store.close()
            await database.close_pool()

    return asyncio.run(main())


async def prepared(store: AsyncPeeweeStateStore, records: int, batch_size: int) -> str:
    rows = [{"n": i} for i in range(records)]
    return (await store.run(prepare_job, rows, batch_size=batch_size)).job_id


def test_an_async_processor_runs_every_record_on_the_loop(url: str) -> None:
    seen: list[int] = []
    loop_threads: set[int] = set()

    async def processor(record: dict[str, Any], context: ProcessingContext) -> None:
        loop_threads.add(threading.get_ident())
        await asyncio.sleep(0.001)
        if record["n"] % 7 == 3:
            raise ValueError(f"no {record['n']}")
        seen.append(record["n"])

    async def body(store: AsyncPeeweeStateStore) -> tuple[WorkerSummary, Any, int]:
        job_id = await prepared(store, 25, 4)
        summary = await AsyncWorker(store, processor, concurrency=5).run(job_id)
        return summary, await store.get_job_state(job_id), threading.get_ident()

    summary, job, main_thread = on_store(url, body)
    failing = [n for n in range(25) if n % 7 == 3]
    assert (summary.batches, summary.processed, summary.failed) == (
        7,
        25 - len(failing),
        len(failing),
    )
    assert summary.finalized and summary.stopped == "done"
    assert sorted(seen) == [n for n in range(25) if n not in failing]
    assert loop_threads == {main_thread}, "an async processor runs on the caller's loop"
    assert job.status == JobStatus.COMPLETED


def test_a_plain_processor_runs_in_threads_and_retries(url: str) -> None:
    threads: set[int] = set()
    attempts: dict[int, int] = {}
    lock = threading.Lock()

    def processor(record: dict[str, Any], context: ProcessingContext) -> None:
        with lock:
            threads.add(threading.get_ident())
            attempts[record["n"]] = attempts.get(record["n"], 0) + 1
            first = attempts[record["n"]] == 1
        if record["n"] == 5 and first:
            raise RuntimeError("once")

    async def body(store: AsyncPeeweeStateStore) -> tuple[WorkerSummary, int, list[Any]]:
        job_id = await prepared(store, 12, 5)
        worker = AsyncWorker(store, processor, concurrency=3, max_retries=1, retry_delay_ms=1)
        summary = await worker.run(job_id)
        return summary, threading.get_ident(), await store.get_processed_records(job_id)

    summary, loop_thread, processed = on_store(url, body)
    assert (summary.processed, summary.failed, summary.retries) == (12, 0, 1)
    assert loop_thread not in threads, "a plain function does not block the loop"
    assert sorted(r.index for r in processed) == list(range(12))
    assert attempts[5] == 2 and all(attempts[n] == 1 for n in range(12) if n != 5)


def test_invalid_records_and_batch_failures_count_as_the_sync_worker_counts(url: str) -> None:
    async def processor(record: dict[str, Any], context: ProcessingContext) -> None:
        return None

    async def body(store: AsyncPeeweeStateStore) -> tuple[WorkerSummary, Any]:
        rows = [{"n": i} if i != 4 else {"n": "four"} for i in range(9)]
        job_id = (await store.run(prepare_job, rows, batch_size=3)).job_id
        worker = AsyncWorker(store, processor, schema=Numbered, continue_on_error=False)
        return await worker.run(job_id), await store.get_job_state(job_id)

    summary, job = on_store(url, body)
    assert (summary.processed, summary.failed) == (7, 1), "5 of batch 1 stays pending"
    assert job.status == JobStatus.FAILED
    assert [b.status for b in job.batches] == [
        BatchStatus.COMPLETED,
        BatchStatus.FAILED,
        BatchStatus.COMPLETED,
    ]


def test_a_worker_whose_lease_was_taken_over_writes_nothing(url: str) -> None:
    async def body(store: AsyncPeeweeStateStore) -> tuple[Any, Any, list[Any]]:
        job_id = await prepared(store, 3, 3)
        entered, release = asyncio.Event(), asyncio.Event()

        async def slow(record: dict[str, Any], context: ProcessingContext) -> None:
            entered.set()
            await release.wait()

        first = asyncio.create_task(AsyncWorker(store, slow, worker_id="old").process_next(job_id))
        await entered.wait()
        assert await store.reclaim_stale_batches(job_id, 0) == 1  # as if "old" had died
        await asyncio.sleep(0.002)  # the claim below is later than the reclaim

        async def mark(record: dict[str, Any], context: ProcessingContext) -> None:
            return None

        second = await AsyncWorker(store, mark, worker_id="new").process_next(job_id)
        release.set()
        return await first, second, await store.get_batches_page(job_id)

    old, new, batches = on_store(url, body)
    assert old.claimed and old.lease_lost and old.processed_count == 0
    assert new.claimed and not new.lease_lost and new.processed_count == 3
    assert [(b.status, b.worker_id) for b in batches] == [(BatchStatus.COMPLETED, "new")]


@pytest.mark.parametrize("concurrency", [1, 2], ids=["one-by-one", "written-behind"])
def test_stop_gives_the_batch_in_hand_back_at_the_next_record(url: str, concurrency: int) -> None:
    async def body(store: AsyncPeeweeStateStore) -> tuple[WorkerSummary, Any, WorkerSummary]:
        job_id = await prepared(store, 12, 4)
        worker: AsyncWorker
        stops = [True]  # once: the second run goes to the end

        async def processor(record: dict[str, Any], context: ProcessingContext) -> None:
            if record["n"] == 5 and stops:
                stops.pop()
                worker.stop()

        worker = AsyncWorker(store, processor, concurrency=concurrency)
        stopped = await worker.run(job_id)
        status = await store.get_distributed_status(job_id)
        return stopped, status, await worker.run(job_id)

    stopped, status, resumed = on_store(url, body)
    assert stopped.stopped == "stopped" and stopped.batches == 1 and stopped.processed == 4
    assert (status.completed_batches, status.pending_batches, status.processing_batches) == (
        1,
        2,
        0,
    ), "the batch in hand was given back, unwritten"
    assert resumed.stopped == "done" and resumed.processed == 8 and resumed.finalized


def test_max_batches_counts_the_batch_written_behind(url: str) -> None:
    async def processor(record: dict[str, Any], context: ProcessingContext) -> None:
        await asyncio.sleep(0.001)

    async def body(store: AsyncPeeweeStateStore) -> tuple[WorkerSummary, Any]:
        job_id = await prepared(store, 20, 4)
        summary = await AsyncWorker(store, processor, concurrency=8).run(job_id, max_batches=2)
        return summary, await store.get_distributed_status(job_id)

    summary, status = on_store(url, body)
    assert (summary.stopped, summary.batches, summary.processed) == ("limit", 2, 8)
    assert (status.completed_batches, status.processing_batches) == (2, 0)


def test_batch_processors_async_and_plain(url: str) -> None:
    calls: list[tuple[str, tuple[int, ...]]] = []

    async def async_batch(records: list[dict[str, Any]], context: BatchContext) -> Any:
        await asyncio.sleep(0)
        calls.append(("async", context.record_indexes))
        return {i: "odd" for i in context.record_indexes if i % 2}

    def plain_batch(records: list[dict[str, Any]], context: BatchContext) -> Any:
        calls.append(("plain", context.record_indexes))
        return None

    async def body(store: AsyncPeeweeStateStore) -> tuple[WorkerSummary, WorkerSummary]:
        one = await prepared(store, 6, 3)
        two = await prepared(store, 6, 3)
        first = await AsyncWorker(store, batch_processor=async_batch).run(one)
        second = await AsyncWorker(store, batch_processor=plain_batch).run(two)
        return first, second

    first, second = on_store(url, body)
    assert (first.processed, first.failed, first.batches) == (3, 3, 2)
    assert (second.processed, second.failed, second.batches) == (6, 0, 2)
    assert calls == [
        ("async", (0, 1, 2)),
        ("async", (3, 4, 5)),
        ("plain", (0, 1, 2)),
        ("plain", (3, 4, 5)),
    ]


def test_a_transactional_batch_processor_commits_with_the_completion(url: str) -> None:
    async def body(store: AsyncPeeweeStateStore) -> tuple[WorkerSummary, int]:
        database: Any = store.database
        table = f"{store.table_prefix}imported"
        await database.run(database.execute_sql, f"CREATE TABLE {table} (n INTEGER)")
        job_id = await prepared(store, 5, 2)

        async def importer(records: list[dict[str, Any]], context: BatchContext) -> None:
            for r in records:  # the store's transaction: same task, same connection
                insert = f"INSERT INTO {table} VALUES ({database.param})"
                await context.database.aexecute_sql(insert, (r["n"],))

        summary = await AsyncWorker(store, batch_processor=importer, transactional=True).run(job_id)
        cursor = await database.aexecute_sql(f"SELECT COUNT(*) FROM {table}")
        count = int(cursor.fetchone()[0])
        await database.run(database.execute_sql, f"DROP TABLE {table}")
        return summary, count

    summary, count = on_store(url, body)
    assert (summary.processed, summary.batches) == (5, 3)
    assert count == 5


def test_a_fenced_off_transactional_batch_processor_writes_nothing(url: str) -> None:
    async def body(store: AsyncPeeweeStateStore) -> tuple[Any, int, Any]:
        database: Any = store.database
        table = f"{store.table_prefix}imported"
        await database.run(database.execute_sql, f"CREATE TABLE {table} (n INTEGER)")
        job_id = await prepared(store, 2, 2)

        async def importer(records: list[dict[str, Any]], context: BatchContext) -> None:
            # Meanwhile (another task, its own connection) the batch is taken over; before
            # the processor's first write, which on SQLite holds the one write lock.
            await asyncio.create_task(take_over())
            for r in records:
                insert = f"INSERT INTO {table} VALUES ({database.param})"
                await context.database.aexecute_sql(insert, (r["n"],))

        async def take_over() -> None:
            assert await store.reclaim_stale_batches(job_id, 0) == 1
            assert (await store.claim_batch(job_id, "rival")).claimed

        worker = AsyncWorker(store, batch_processor=importer, transactional=True)
        result = await worker.process_next(job_id)
        cursor = await database.aexecute_sql(f"SELECT COUNT(*) FROM {table}")
        count = int(cursor.fetchone()[0])
        await database.run(database.execute_sql, f"DROP TABLE {table}")
        return result, count, await store.get_batches_page(job_id)

    result, count, batches = on_store(url, body)
    assert result.lease_lost and result.processed_count == 0
    assert count == 0, "the processor's rows rolled back with the refused completion"
    assert [(b.status, b.worker_id) for b in batches] == [(BatchStatus.PROCESSING, "rival")]


def test_sync_and_async_workers_share_one_job(url: str) -> None:
    sync_database = open_database(url.removeprefix(ASYNC_PREFIX))

    def plain(record: dict[str, Any], context: ProcessingContext) -> None:
        time.sleep(0.001)

    async def body(store: AsyncPeeweeStateStore) -> tuple[WorkerSummary, WorkerSummary, Any]:
        sync_store = PeeweeStateStore(sync_database, table_prefix=store.table_prefix)
        job_id = prepare_job(sync_store, ({"n": i} for i in range(40)), batch_size=2).job_id

        async def slow(record: dict[str, Any], context: ProcessingContext) -> None:
            await asyncio.sleep(0.002)

        def in_thread() -> WorkerSummary:
            try:
                return Worker(sync_store, plain, worker_id="sync").run(job_id)
            finally:
                sync_database.close()

        both = await asyncio.gather(
            asyncio.to_thread(in_thread), AsyncWorker(store, slow, worker_id="async").run(job_id)
        )
        return both[0], both[1], sync_store.get_job_state(job_id)

    try:
        by_sync, by_async, job = on_store(url, body)
    finally:
        sync_database.close()
    assert by_sync.processed + by_async.processed == 40
    assert by_sync.batches and by_async.batches, "both kinds of worker took batches"
    assert by_sync.finalized + by_async.finalized == 1
    assert job.status == JobStatus.COMPLETED


def test_bad_options_are_refused() -> None:
    async def noop(record: dict[str, Any], context: ProcessingContext) -> None:
        return None

    with pytest.raises(InvalidInputError):
        AsyncWorker(object(), noop)  # type: ignore[arg-type]


def _child(url: str, prefix: str, job_id: str, worker_id: str) -> subprocess.Popen[str]:
    code = (
        "import sys\n"
        "from tests.integration.test_async_worker import work_in_child\n"
        "work_in_child(*sys.argv[1:])\n"
    )
    args = [sys.executable, "-c", code, url, prefix, job_id, worker_id]
    return subprocess.Popen(args, cwd=REPO, stdout=subprocess.PIPE, text=True)


def work_in_child(url: str, prefix: str, job_id: str, worker_id: str) -> None:
    """A child process: three AsyncWorkers on the job; prints their summaries and the
    record indexes each processed, as one JSON line."""
    summaries, seen = asyncio.run(_workers(url, prefix, job_id, worker_id, 3))
    print(json.dumps({"summaries": summaries, "seen": seen}))


async def _workers(
    url: str, prefix: str, job_id: str, name: str, count: int
) -> tuple[list[dict[str, Any]], list[int]]:
    database: Any = open_async_database(url)
    store = AsyncPeeweeStateStore(database, table_prefix=prefix)
    seen: list[int] = []

    async def processor(record: dict[str, Any], context: ProcessingContext) -> None:
        await asyncio.sleep(0.002)
        seen.append(context.record_index)

    workers = [
        AsyncWorker(store, processor, worker_id=f"{name}-{i}", concurrency=4) for i in range(count)
    ]
    try:
        done = await asyncio.gather(*(w.run(job_id) for w in workers))
        status = await store.get_distributed_status(job_id)
        # No worker returns before the job is done: "nothing left" is never said early.
        assert status.is_complete, status
    finally:
        await database.close_pool()
    return [dataclasses.asdict(s) for s in done], seen


@pytest.mark.slow
def test_tasks_of_one_loop_and_two_processes_share_a_job(url: str) -> None:
    total = 400

    async def body(store: AsyncPeeweeStateStore) -> tuple[list[dict[str, Any]], list[int], Any]:
        job_id = await prepared(store, total, 10)
        children = [_child(url, store.table_prefix, job_id, f"proc{i}") for i in range(2)]
        mine = asyncio.create_task(_workers(url, store.table_prefix, job_id, "loop", 3))
        outputs = await asyncio.gather(*(asyncio.to_thread(c.communicate) for c in children))
        summaries, seen = await mine
        for child, (out, _) in zip(children, outputs, strict=True):
            assert child.returncode == 0
            result = json.loads(out.strip().splitlines()[-1])
            summaries += result["summaries"]
            seen += result["seen"]
        return summaries, seen, await store.get_job_state(job_id)

    summaries, seen, job = on_store(url, body)
    assert sorted(seen) == list(range(total)), "each record processed once: no double claim"
    assert sum(s["processed"] for s in summaries) == total
    assert sum(1 for s in summaries if s["finalized"]) == 1, "exactly one finalizer"
    assert all(s["stopped"] == "done" for s in summaries)
    assert job.status == JobStatus.COMPLETED
    assert sum(1 for s in summaries if s["batches"]) >= 2, "the work was shared"
