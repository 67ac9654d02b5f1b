"""Worker(concurrency=N): up to N records of a batch in flight, on threads for a function and
on one event loop for an ``async def`` processor, with the results of one at a time.

Every test runs on every backend. Nothing here measures time: the processors meet at events
(N records in flight, a renewal seen, an abort seen) and the tests count what happened.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import gc
import threading
import time
import warnings
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

import pydantic
import pytest

from batchactions_peewee import (
    BatchResult,
    BatchStatus,
    InMemoryStateStore,
    JobHooks,
    JobStatus,
    ProcessingContext,
    RecordFailed,
    RecordStatus,
    Worker,
    WorkerEvent,
    WorkerSummary,
    prepare_job,
)
from batchactions_peewee.engine.concurrency import is_async_processor
from batchactions_peewee.errors import InvalidInputError

from ..support.stores import Store

#: How long a processor waits for the others before it gives up (a failed test, not a pass).
PATIENCE_S = 30
KINDS = ("sync", "async")


class Person(pydantic.BaseModel):
    name: str
    age: int


def people(count: int) -> list[dict[str, Any]]:
    """Every 13th record is invalid (its age is not a number)."""
    return [{"name": f"p{i}", "age": "x" if i % 13 == 6 else str(i)} for i in range(count)]


async def until(event: threading.Event) -> None:
    """Wait for ``event`` without blocking the loop (other coroutines run meanwhile)."""
    deadline = time.monotonic() + PATIENCE_S
    while not event.is_set():
        if time.monotonic() > deadline:
            raise TimeoutError("waited too long")
        await asyncio.sleep(0.001)


def wait(event: threading.Event) -> None:
    if not event.wait(PATIENCE_S):
        raise TimeoutError("waited too long")


class Probe:
    """A processor (``sync`` or ``asynchronous``) that counts its calls in flight and
    holds every call until ``target`` are in flight at once (then lets all through), and
    fails some records: every 11th always, every 7th on its first one or two attempts."""

    def __init__(self, target: int) -> None:
        self.target = target
        self.lock = threading.Lock()
        self.in_flight = self.most = 0
        self.full = threading.Event()
        self.attempts: Counter[int] = Counter()
        self.threads: set[int] = set()
        self.loops: set[int] = set()

    def enter(self, context: ProcessingContext) -> int:
        with self.lock:
            self.in_flight += 1
            self.most = max(self.most, self.in_flight)
            if self.in_flight >= self.target:
                self.full.set()
            self.attempts[context.record_index] += 1
            self.threads.add(threading.get_ident())
            return self.attempts[context.record_index]

    def leave(self) -> None:
        with self.lock:
            self.in_flight -= 1

    @staticmethod
    def outcome(context: ProcessingContext, attempt: int) -> None:
        i = context.record_index
        if i % 11 == 4:
            raise ValueError(f"record {i} refused")
        if i % 7 == 2 and attempt <= 1 + i % 2:
            raise RuntimeError(f"attempt {attempt} of record {i} failed")

    def sync(self, record: dict[str, Any], context: ProcessingContext) -> None:
        attempt = self.enter(context)
        try:
            wait(self.full)
            self.outcome(context, attempt)
        finally:
            self.leave()

    async def asynchronous(self, record: dict[str, Any], context: ProcessingContext) -> None:
        attempt = self.enter(context)
        try:
            self.loops.add(id(asyncio.get_running_loop()))
            await until(self.full)
            self.outcome(context, attempt)
        finally:
            self.leave()

    def processor(self, kind: str) -> Callable[[dict[str, Any], ProcessingContext], object]:
        return self.sync if kind == "sync" else self.asynchronous


def stored(store: Store, job_id: str) -> list[dict[str, Any]]:
    """Every record of the job as stored, by index."""
    records = (
        store.get_processed_records(job_id)
        + store.get_failed_records(job_id)
        + store.get_pending_records(job_id)
    )
    return [r.model_dump() for r in sorted(records, key=lambda r: r.index)]


def batch_statuses(store: Store, job_id: str) -> list[BatchStatus]:
    job = store.get_job_state(job_id)
    assert job is not None
    return [b.status for b in job.batches]


def comparable(event: WorkerEvent) -> tuple[str, dict[str, Any]]:
    """An event without what differs from run to run (ids, times)."""
    fields = dataclasses.asdict(event)
    for name in ("job_id", "worker_id", "batch_id", "elapsed_ms"):
        fields.pop(name, None)
    return type(event).__name__, fields


def counts(summary: WorkerSummary) -> tuple[int, int, int, int, bool, str]:
    return (
        summary.batches,
        summary.processed,
        summary.failed,
        summary.retries,
        summary.finalized,
        summary.stopped,
    )


@dataclasses.dataclass
class Outcome:
    summary: WorkerSummary
    records: list[dict[str, Any]]
    events: list[tuple[str, dict[str, Any]]]
    delays: list[float]
    batches: list[BatchStatus]
    job: JobStatus


def run_job(
    store: Store,
    rows: list[dict[str, Any]],
    processor: Callable[[dict[str, Any], ProcessingContext], object],
    *,
    batch_size: int = 100,
    **options: Any,
) -> Outcome:
    """Prepare ``rows`` as a job and run one worker over it; what it left behind."""
    job = prepare_job(store, iter(rows), batch_size=batch_size, schema=Person)
    events: list[WorkerEvent] = []
    delays: list[float] = []
    summary = Worker(
        store,
        processor,
        schema=Person,
        max_retries=2,
        retry_delay_ms=10,
        on_event=events.append,
        sleep=delays.append,
        **options,
    ).run(job.job_id)
    state = store.get_job_state(job.job_id)
    assert state is not None
    return Outcome(
        summary,
        stored(store, job.job_id),
        [comparable(e) for e in events],
        sorted(delays),
        batch_statuses(store, job.job_id),
        state.status,
    )


def same_outcome(got: Outcome, expected: Outcome) -> None:
    assert counts(got.summary) == counts(expected.summary)
    assert got.records == expected.records
    assert got.events == expected.events
    assert got.delays == expected.delays
    assert got.batches == expected.batches
    assert got.job == expected.job


# -- the same results as one at a time ------------------------------------------------------


@pytest.mark.parametrize("concurrency", [1, 8, 64])
@pytest.mark.parametrize("kind", KINDS)
def test_concurrency_stores_what_one_record_at_a_time_stores(
    store: Store, kind: str, concurrency: int
) -> None:
    rows = people(250)  # batches of 100, 100 and 50
    expected = run_job(store, rows, Probe(1).sync)
    probe = Probe(concurrency)
    got = run_job(store, rows, probe.processor(kind), concurrency=concurrency)
    same_outcome(got, expected)
    assert probe.most == concurrency, "in flight: at most N, and N reached"
    assert got.summary.retries > 0 and got.summary.failed > 0  # the job had both
    statuses = Counter(r["status"] for r in got.records)
    assert statuses.keys() == {RecordStatus.PROCESSED, RecordStatus.FAILED, RecordStatus.INVALID}
    if kind == "async":
        assert len(probe.threads) == 1 and len(probe.loops) == 1, "one loop for every batch"
    elif concurrency == 1:
        assert probe.threads == {threading.get_ident()}, "no thread at concurrency 1"
    else:
        assert 1 < len(probe.threads) <= concurrency, "one pool for every batch"


@pytest.mark.parametrize("kind", KINDS)
def test_the_pool_and_the_loop_end_with_the_run(store: Store, kind: str) -> None:
    before = set(threading.enumerate())
    probe = Probe(4)
    run_job(store, people(120), probe.processor(kind), batch_size=40, concurrency=4)
    assert set(threading.enumerate()) <= before


@pytest.mark.parametrize("kind", KINDS)
def test_hooks_run_around_each_record_as_at_concurrency_one(store: Store, kind: str) -> None:
    rows = people(120)

    def make_hooks(seen: list[tuple[str, int]]) -> JobHooks:
        def log(step: str) -> Callable[[Any, ProcessingContext], None]:
            return lambda data, context: seen.append((step, context.record_index))

        def before_process(parsed: dict[str, Any], context: ProcessingContext) -> dict[str, Any]:
            seen.append(("before_process", context.record_index))
            if context.record_index % 17 == 3:
                raise ValueError("before_process refused it")
            return {**parsed, "hooked": True}

        def after_process(parsed: dict[str, Any], context: ProcessingContext) -> None:
            assert parsed["hooked"] is True
            seen.append(("after_process", context.record_index))
            if context.record_index % 19 == 5:
                raise ValueError("after_process refused it")

        return JobHooks(
            before_validate=log("before_validate"),
            after_validate=log("after_validate"),
            before_process=before_process,
            after_process=after_process,
        )

    expected_seen: list[tuple[str, int]] = []
    expected = run_job(store, rows, Probe(1).sync, batch_size=50, hooks=make_hooks(expected_seen))
    seen: list[tuple[str, int]] = []
    probe = Probe(8)
    got = run_job(
        store, rows, probe.processor(kind), batch_size=50, hooks=make_hooks(seen), concurrency=8
    )
    same_outcome(got, expected)
    assert sorted(seen) == sorted(expected_seen)  # each hook once per record, in any order
    assert probe.most == 8


# -- continue_on_error=False ------------------------------------------------------------------


def fails_at(index: int, kind: str) -> Callable[[dict[str, Any], ProcessingContext], object]:
    def sync(record: dict[str, Any], context: ProcessingContext) -> None:
        if context.record_index == index:
            raise ValueError(f"record {index} refused")

    async def asynchronous(record: dict[str, Any], context: ProcessingContext) -> None:
        await asyncio.sleep(0)
        sync(record, context)

    return sync if kind == "sync" else asynchronous


@pytest.mark.parametrize("kind", KINDS)
def test_stop_on_error_ends_the_batch_at_the_first_failed_index_as_one_at_a_time(
    store: Store, kind: str
) -> None:
    rows = [{"name": f"p{i}", "age": str(i)} for i in range(40)]
    expected = run_job(store, rows, fails_at(25, "sync"), batch_size=20, continue_on_error=False)
    got = run_job(
        store, rows, fails_at(25, kind), batch_size=20, continue_on_error=False, concurrency=8
    )
    same_outcome(got, expected)
    statuses = [r["status"] for r in got.records]
    assert (
        statuses
        == [RecordStatus.PROCESSED] * 25 + [RecordStatus.FAILED] + [RecordStatus.PENDING] * 14
    )
    assert got.batches == [BatchStatus.COMPLETED, BatchStatus.FAILED]
    assert got.job == JobStatus.FAILED


@pytest.mark.parametrize("kind", KINDS)
def test_after_a_failure_no_record_starts_and_later_results_are_dropped(
    store: Store, kind: str
) -> None:
    """Record 0 fails once record 1 is in flight beside it; record 1 finishes only once the
    failure is reported, so every later record could start meanwhile: none does. Record 1
    ran, but it stays pending, as it would had the records run one at a time."""
    job = prepare_job(store, iter([{"n": i} for i in range(10)]), batch_size=10)
    second = threading.Event()
    reported = threading.Event()
    started: list[int] = []

    def on_event(event: WorkerEvent) -> None:
        if isinstance(event, RecordFailed):
            reported.set()

    def sync(record: dict[str, Any], context: ProcessingContext) -> None:
        started.append(context.record_index)
        if context.record_index == 0:
            wait(second)
            raise ValueError("refused")
        second.set()
        wait(reported)

    async def asynchronous(record: dict[str, Any], context: ProcessingContext) -> None:
        started.append(context.record_index)
        if context.record_index == 0:
            await until(second)
            raise ValueError("refused")
        second.set()
        await until(reported)

    processor = sync if kind == "sync" else asynchronous
    worker = Worker(store, processor, continue_on_error=False, concurrency=2, on_event=on_event)
    summary = worker.run(job.job_id)
    assert sorted(started) == [0, 1]
    assert (summary.processed, summary.failed) == (0, 1)
    statuses = [r["status"] for r in stored(store, job.job_id)]
    assert statuses == [RecordStatus.FAILED] + [RecordStatus.PENDING] * 9
    assert batch_statuses(store, job.job_id) == [BatchStatus.FAILED]


# -- leases: renewed while records wait, and no record starts once lost ------------------------


class Gate:
    """A processor whose calls wait (blocked, or awaiting) until ``release``; ``full`` is
    set once ``size`` calls are in flight, and ``contexts`` keeps what they got."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.lock = threading.Lock()
        self.started: list[int] = []
        self.contexts: list[ProcessingContext] = []
        self.full = threading.Event()
        self.release = threading.Event()

    def enter(self, context: ProcessingContext) -> None:
        with self.lock:
            self.started.append(context.record_index)
            self.contexts.append(context)
            if len(self.started) >= self.size:
                self.full.set()

    def sync(self, record: dict[str, Any], context: ProcessingContext) -> None:
        self.enter(context)
        wait(self.release)

    async def asynchronous(self, record: dict[str, Any], context: ProcessingContext) -> None:
        self.enter(context)
        await until(self.release)

    def processor(self, kind: str) -> Callable[[dict[str, Any], ProcessingContext], object]:
        return self.sync if kind == "sync" else self.asynchronous


def in_thread(action: Callable[[], object]) -> Callable[[], object]:
    """Run ``action`` in a thread; the returned function joins it and gives its result."""
    box: list[object] = []
    thread = threading.Thread(target=lambda: box.append(action()), daemon=True)
    thread.start()

    def join() -> object:
        thread.join(PATIENCE_S)
        assert not thread.is_alive() and box, "the worker did not return"
        return box[0]

    return join


@pytest.mark.parametrize("kind", KINDS)
def test_an_abort_stops_new_records_and_writes_nothing(store: Store, kind: str) -> None:
    job = prepare_job(store, iter([{"n": i} for i in range(20)]), batch_size=20)
    gate = Gate(4)
    worker = Worker(store, gate.processor(kind), concurrency=4, lease_timeout_ms=300)
    join = in_thread(lambda: worker.run(job.job_id))
    wait(gate.full)
    assert store.abort_job(job.job_id)
    wait(gate.contexts[0].lease_lost)  # the next renewal was refused
    gate.release.set()
    summary = join()
    assert isinstance(summary, WorkerSummary)
    assert summary.stopped == "aborted"
    assert sorted(gate.started) == [0, 1, 2, 3], "no record started after the abort"
    assert [r["status"] for r in stored(store, job.job_id)] == [RecordStatus.PENDING] * 20
    assert batch_statuses(store, job.job_id) == [BatchStatus.PENDING]  # given back


@pytest.mark.parametrize("kind", KINDS)
def test_a_lost_lease_stops_new_records_and_writes_nothing(store: Store, kind: str) -> None:
    job = prepare_job(store, iter([{"n": i} for i in range(20)]), batch_size=20)
    gate = Gate(4)
    worker = Worker(store, gate.processor(kind), concurrency=4, lease_timeout_ms=300)
    join = in_thread(lambda: worker.process_next(job.job_id))
    wait(gate.full)
    while not store.reclaim_stale_batches(job.job_id, 0):  # another worker's reclaim
        time.sleep(0.01)
    wait(gate.contexts[0].lease_lost)
    gate.release.set()
    result = join()
    assert isinstance(result, BatchResult)
    assert result.lease_lost and (result.processed_count, result.failed_count) == (0, 0)
    assert sorted(gate.started) == [0, 1, 2, 3], "no record started after the loss"
    assert [r["status"] for r in stored(store, job.job_id)] == [RecordStatus.PENDING] * 20


@pytest.mark.parametrize("kind", KINDS)
def test_records_that_wait_do_not_stall_the_lease(store: Store, kind: str) -> None:
    """Eight records in flight wait until the lease has been renewed three times; the
    batch is then written, not lost."""
    job = prepare_job(store, iter([{"n": i} for i in range(16)]), batch_size=16)
    renewals: list[bool] = []
    renewed = threading.Event()
    heartbeat = store.heartbeat

    def counting(reservation: Any) -> bool:
        ok = heartbeat(reservation)
        renewals.append(ok)
        if len(renewals) >= 3:
            renewed.set()
        return ok

    store.heartbeat = counting  # type: ignore[method-assign]
    gate = Gate(8)
    gate.release = renewed
    worker = Worker(store, gate.processor(kind), concurrency=8, lease_timeout_ms=300)
    summary = worker.run(job.job_id)
    assert renewals[:3] == [True, True, True]
    assert (summary.processed, summary.leases_lost) == (16, 0)
    assert batch_statuses(store, job.job_id) == [BatchStatus.COMPLETED]


# -- async processors -------------------------------------------------------------------------


class AsyncCall:
    """An object whose ``__call__`` is a coroutine function."""

    def __init__(self) -> None:
        self.seen: list[int] = []

    async def __call__(self, record: dict[str, Any], context: ProcessingContext) -> None:
        await asyncio.sleep(0)
        self.seen.append(context.record_index)
        if context.record_index % 5 == 1:
            raise ValueError("refused after an await")


async def refuse_odd(record: dict[str, Any], context: ProcessingContext, *, tag: str) -> None:
    await asyncio.sleep(0)
    if context.record_index % 2:
        raise ValueError(f"{tag}: odd")


def test_processors_are_told_apart_by_their_function_or_call() -> None:
    assert is_async_processor(refuse_odd)
    assert is_async_processor(functools.partial(refuse_odd, tag="t"))
    assert is_async_processor(AsyncCall())
    assert not is_async_processor(lambda record, context: None)
    assert not is_async_processor(Probe(1).sync)


def test_an_async_processor_is_awaited_at_concurrency_one(store: Store) -> None:
    """Its failures count: before, its coroutine was never awaited and every record
    counted as processed."""
    job = prepare_job(store, iter([{"n": i} for i in range(20)]), batch_size=10)
    call = AsyncCall()
    summary = Worker(store, call).run(job.job_id)
    assert sorted(call.seen) == list(range(20))
    assert (summary.processed, summary.failed) == (16, 4)
    failed = [r for r in stored(store, job.job_id) if r["status"] == RecordStatus.FAILED]
    assert [r["index"] for r in failed] == [1, 6, 11, 16]
    assert {r["processing_error"] for r in failed} == {"refused after an await"}

    job = prepare_job(store, iter([{"n": i} for i in range(6)]), batch_size=10)
    summary = Worker(store, functools.partial(refuse_odd, tag="partial")).run(job.job_id)
    assert (summary.processed, summary.failed) == (3, 3)


def test_a_plain_function_that_returns_a_coroutine_fails_its_records(store: Store) -> None:
    job = prepare_job(store, iter([{"n": i} for i in range(3)]), batch_size=10)

    def wrapped(record: dict[str, Any], context: ProcessingContext) -> Awaitable[None]:
        return refuse_odd(record, context, tag="wrapped")

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        summary = Worker(store, wrapped).run(job.job_id)
        gc.collect()
    assert (summary.processed, summary.failed) == (0, 3)
    errors = {r["processing_error"] for r in stored(store, job.job_id)}
    assert len(errors) == 1 and "declare the processor async def" in errors.pop()
    assert not [w for w in caught if "never awaited" in str(w.message)]


def test_async_retries_wait_without_blocking_the_loop(store: Store) -> None:
    """Record 0 fails once and waits to retry (asyncio.sleep, 50 ms); record 1 runs during
    that wait, which the retry checks."""
    job = prepare_job(store, iter([{"n": i} for i in range(2)]), batch_size=10)
    failed_once = threading.Event()
    ran_meanwhile = threading.Event()

    async def processor(record: dict[str, Any], context: ProcessingContext) -> None:
        if context.record_index == 1:
            await until(failed_once)
            ran_meanwhile.set()
        elif not failed_once.is_set():
            failed_once.set()
            raise RuntimeError("first attempt")
        elif not ran_meanwhile.is_set():
            raise RuntimeError("the retry wait blocked the loop")

    worker = Worker(store, processor, concurrency=2, max_retries=1, retry_delay_ms=50)
    summary = worker.run(job.job_id)
    assert (summary.processed, summary.failed, summary.retries) == (2, 0, 1)


# -- arguments --------------------------------------------------------------------------------


@pytest.mark.parametrize("value", [0, -1, 1.5, True, "2", None])
def test_concurrency_must_be_a_positive_integer(value: object) -> None:
    with pytest.raises(InvalidInputError, match="concurrency"):
        Worker(InMemoryStateStore(), Probe(1).sync, concurrency=value)  # type: ignore[arg-type]


def test_results_keep_their_records_order_whatever_order_they_finish_in(store: Store) -> None:
    """Later records finish first (each waits for the one after it); the stored records,
    the events and the processor's order of results are still by index."""
    count = 8
    done = [threading.Event() for _ in range(count + 1)]
    done[count].set()
    finished: list[int] = []

    async def processor(record: dict[str, Any], context: ProcessingContext) -> None:
        i = context.record_index
        await until(done[i + 1])
        finished.append(i)
        done[i].set()
        if i % 3 == 0:
            raise ValueError(f"record {i}")

    events: list[WorkerEvent] = []
    job = prepare_job(store, iter([{"n": i} for i in range(count)]), batch_size=count)
    Worker(store, processor, concurrency=count, on_event=events.append).run(job.job_id)
    assert finished == list(reversed(range(count)))
    failed = [e.record_index for e in events if isinstance(e, RecordFailed)]
    assert failed == [0, 3, 6]
    records = stored(store, job.job_id)
    assert [r["index"] for r in records] == list(range(count))
    expected = [RecordStatus.FAILED if i % 3 == 0 else RecordStatus.PROCESSED for i in range(8)]
    assert [r["status"] for r in records] == expected


_IMPORTS_OF_A_RUN = """
import sys
from batchactions_peewee import InMemoryStateStore, Worker, prepare_job
import batchactions_peewee.cli

store = InMemoryStateStore()
job = prepare_job(store, [{"n": n} for n in range(20)], batch_size=5)
ran = Worker(store, lambda record, context: None, concurrency=4).run(job.job_id)
print(ran.processed, "asyncio" in sys.modules)

async def waits(record, context):
    return None

job = prepare_job(store, [{"n": n} for n in range(20)], batch_size=5)
ran = Worker(store, waits, concurrency=4).run(job.job_id)
print(ran.processed, "asyncio" in sys.modules)
"""


def test_only_a_worker_with_an_async_processor_imports_asyncio() -> None:
    # asyncio costs each worker process about 30 ms at start (a kill storm starts many).
    import subprocess
    import sys

    ran = subprocess.run(
        [sys.executable, "-c", _IMPORTS_OF_A_RUN], capture_output=True, text=True, check=True
    )
    assert ran.stdout.split("\n")[:2] == ["20 False", "20 True"]
