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


# -- read-ahead ------------------------------------------------------------------------------


def wrap_claims(store: Store, after: Callable[[Any], None]) -> list[int]:
    """Call ``after(reservation or None)`` after each claim of ``store``; the batch
    indexes claimed, in order."""
    claimed: list[int] = []
    claim = store.claim_batch

    def wrapped(job_id: str, worker_id: str) -> Any:
        result = claim(job_id, worker_id)
        if result.reservation is not None:
            claimed.append(result.reservation.batch_index)
        after(result.reservation)
        return result

    store.claim_batch = wrapped  # type: ignore[method-assign]
    return claimed


def test_the_next_batch_is_claimed_while_this_batchs_records_are_in_flight(
    store: Store,
) -> None:
    job = prepare_job(store, numbers(30), batch_size=10)
    second_claimed = threading.Event()

    def processor(record: dict[str, Any], context: ProcessingContext) -> None:
        # Claimed only after batch 0's records, batch 1 would never be: the test fails
        # on the timeout.
        if context.batch_index == 0 and not second_claimed.wait(PATIENCE_S):
            raise AssertionError("batch 1 was not claimed while batch 0 was in flight")

    def after(res: Any) -> None:
        if res is not None and res.batch_index == 1:
            second_claimed.set()

    claimed = wrap_claims(store, after)
    summary = Worker(store, processor, concurrency=4).run(job.job_id)

    assert (summary.batches, summary.processed, summary.failed) == (3, 30, 0)
    assert claimed == [0, 1, 2]


def test_a_batch_read_ahead_and_not_taken_is_given_back(store: Store) -> None:
    job = prepare_job(store, numbers(50), batch_size=10)
    ahead = threading.Event()
    worker: Worker

    def processor(record: dict[str, Any], context: ProcessingContext) -> None:
        if context.batch_index == 0 and ahead.wait(PATIENCE_S):
            worker.stop()

    def after(res: Any) -> None:
        if res is not None and res.batch_index == 1:
            ahead.set()

    claimed = wrap_claims(store, after)
    worker = Worker(store, processor, concurrency=4)
    summary = worker.run(job.job_id)

    assert (summary.stopped, summary.batches, summary.processed) == ("stopped", 1, 10)
    assert claimed == [0, 1]
    status = store.get_distributed_status(job.job_id)
    assert (status.completed_batches, status.processing_batches, status.pending_batches) == (
        1,
        0,
        4,
    )
    # Given back, not lost: another worker takes it at once.
    rest = Worker(store, lambda record, context: None).run(job.job_id)
    assert (rest.batches, rest.processed, rest.finalized) == (4, 40, True)


@pytest.mark.parametrize("limit", [1, 2, 3])
def test_max_batches_claims_no_batch_it_will_not_process(store: Store, limit: int) -> None:
    job = prepare_job(store, numbers(60), batch_size=10)
    claimed = wrap_claims(store, lambda res: None)
    summary = Worker(store, lambda record, context: None, concurrency=4).run(
        job.job_id, max_batches=limit
    )

    assert summary.batches == limit
    assert claimed == list(range(limit))


def test_a_read_ahead_that_fails_is_left_to_the_workers_own_claim(store: Store) -> None:
    job = prepare_job(store, numbers(30), batch_size=10)
    calls = iter(range(1000))
    claim = store.claim_batch

    def second_claim_fails(job_id: str, worker_id: str) -> Any:
        if next(calls) == 1:  # the first read-ahead
            raise StoreUnavailable("the database went away")
        return claim(job_id, worker_id)

    store.claim_batch = second_claim_fails  # type: ignore[method-assign]
    summary = Worker(store, lambda record, context: None, concurrency=4).run(job.job_id)

    assert (summary.batches, summary.processed, summary.finalized) == (3, 30, True)
    assert summary.store_errors == 0  # logged: the worker's own claim took over
