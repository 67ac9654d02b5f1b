"""Write-behind (``Worker(concurrency=N)``, N > 1, in ``run``): a batch's write runs on a
writer thread while the next batch's records are in flight; one write at a time, all of
them settled before the worker finalizes, stops or returns, and events in the order of
one batch at a time."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import pytest

from batchactions_peewee import (
    BatchCompleted,
    JobStatus,
    ProcessingContext,
    Worker,
    WorkerEvent,
    prepare_job,
)
from batchactions_peewee.errors import StoreUnavailable

from ..support.stores import Store

#: How long a write waits for the next batch's records (a failed test, not a pass).
PATIENCE_S = 20

Complete = Callable[..., bool]


def numbers(count: int) -> list[dict[str, Any]]:
    return [{"n": n} for n in range(count)]


def wrap_writes(store: Store, before: Callable[[Any], None]) -> list[int]:
    """Call ``before(reservation)`` ahead of each batch write of ``store``; the batch
    indexes written, in order."""
    written: list[int] = []
    complete: Complete = store._complete_batch_processed

    def wrapped(res: Any, **kwargs: Any) -> bool:
        before(res)
        done = complete(res, **kwargs)
        if done:
            written.append(res.batch_index)
        return done

    # An attribute of this instance only: the store's class is untouched.
    store._complete_batch_processed = wrapped  # type: ignore[method-assign, assignment]
    return written


def test_a_batch_is_written_while_the_next_batchs_records_are_in_flight(store: Store) -> None:
    job = prepare_job(store, numbers(30), batch_size=10)
    next_started = threading.Event()

    def processor(record: dict[str, Any], context: ProcessingContext) -> None:
        if context.batch_index == 1:
            next_started.set()

    def first_write_waits_for_the_next_batch(res: Any) -> None:
        # Written in line, batch 0's write would wait here for records that only start
        # after it: the test would fail on the timeout.
        if res.batch_index == 0 and not next_started.wait(PATIENCE_S):
            raise AssertionError("batch 1 did not start while batch 0 was being written")

    written = wrap_writes(store, first_write_waits_for_the_next_batch)
    summary = Worker(store, processor, concurrency=4, lease_timeout_ms=60_000).run(job.job_id)

    assert (summary.batches, summary.processed, summary.finalized) == (3, 30, True)
    assert written == [0, 1, 2]
    state = store.get_job_state(job.job_id)
    assert state is not None and state.status == JobStatus.COMPLETED


def test_events_keep_the_order_of_one_batch_at_a_time(store: Store) -> None:
    def run(concurrency: int) -> list[tuple[str, int]]:
        job = prepare_job(store, numbers(40), batch_size=10)
        events: list[WorkerEvent] = []

        def processor(record: dict[str, Any], context: ProcessingContext) -> None:
            if record["n"] % 7 == 3:
                raise ValueError("refused")

        Worker(store, processor, concurrency=concurrency, on_event=events.append).run(job.job_id)
        return [(type(e).__name__, getattr(e, "batch_index", -1)) for e in events]

    one_at_a_time = run(1)
    assert ("BatchCompleted", 3) in one_at_a_time
    assert run(4) == one_at_a_time


def test_a_write_that_fails_behind_is_outlived_and_its_batch_done_again(store: Store) -> None:
    job = prepare_job(store, numbers(30), batch_size=10)
    failures = iter([True])

    def first_write_fails(res: Any) -> None:
        if res.batch_index == 1 and next(failures, False):
            raise StoreUnavailable("the database went away")

    written = wrap_writes(store, first_write_fails)
    events: list[WorkerEvent] = []
    worker = Worker(
        store,
        lambda record, context: None,
        concurrency=4,
        sleep=lambda s: None,
        on_event=events.append,
    )
    summary = worker.run(job.job_id)

    assert summary.store_errors == 1
    assert (summary.processed, summary.finalized) == (30, True)
    assert sorted(written) == [0, 1, 2]
    completed = sorted(e.batch_index for e in events if isinstance(e, BatchCompleted))
    assert completed == [0, 1, 2]  # batch 1 once: the failed write counts for nothing
    assert {r.index for r in store.get_processed_records(job.job_id)} == set(range(30))
    state = store.get_job_state(job.job_id)
    assert state is not None and state.status == JobStatus.COMPLETED


@pytest.mark.parametrize("limit", [1, 2])
def test_max_batches_counts_the_batch_behind_and_waits_for_its_write(
    store: Store, limit: int
) -> None:
    job = prepare_job(store, numbers(50), batch_size=10)
    summary = Worker(store, lambda record, context: None, concurrency=4).run(
        job.job_id, max_batches=limit
    )

    assert (summary.batches, summary.processed, summary.stopped) == (limit, 10 * limit, "limit")
    status = store.get_distributed_status(job.job_id)
    assert (status.completed_batches, status.processing_batches) == (limit, 0)
    assert status.pending_batches == 5 - limit


def test_stop_returns_with_every_batch_in_hand_written(store: Store) -> None:
    job = prepare_job(store, numbers(50), batch_size=10)
    worker: Worker

    def processor(record: dict[str, Any], context: ProcessingContext) -> None:
        if context.batch_index == 1:
            worker.stop()

    worker = Worker(store, processor, concurrency=4)
    summary = worker.run(job.job_id)

    assert summary.stopped == "stopped"
    status = store.get_distributed_status(job.job_id)
    assert (status.completed_batches, status.processing_batches) == (summary.batches, 0)
    assert summary.batches == 2 and summary.processed == 20
