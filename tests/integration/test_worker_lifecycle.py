"""Workers under the job's lifecycle controls: a paused job is waited out, an aborted one
ends the run before the next record, and run() stops at its limits, saying why."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from batchactions_peewee import (
    BatchStatus,
    JobAborted,
    JobPaused,
    JobResumed,
    JobStatus,
    LeaseLost,
    ProcessingContext,
    Worker,
    WorkerEvent,
    WorkerSummary,
    prepare_job,
)
from batchactions_peewee.errors import InvalidValueError

from ..support.stores import Store

WAIT_S = 20.0  # far longer than any step takes: a bound, not a timing


def numbered(count: int) -> Iterator[dict[str, Any]]:
    return ({"n": i} for i in range(count))


def until(condition: Callable[[], bool]) -> None:
    deadline = time.monotonic() + WAIT_S
    while not condition():
        assert time.monotonic() < deadline, "gave up waiting"
        time.sleep(0.01)


def in_thread(run: Callable[[], WorkerSummary]) -> Callable[[], WorkerSummary]:
    """Start ``run`` in a thread; the returned function joins it and gives its summary."""
    out: list[WorkerSummary] = []
    errors: list[BaseException] = []

    def target() -> None:
        try:
            out.append(run())
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=target)
    thread.start()

    def join() -> WorkerSummary:
        thread.join(WAIT_S)
        assert not thread.is_alive(), "the worker did not return"
        assert not errors, errors
        return out[0]

    return join


def test_a_paused_job_is_waited_out_and_resumed_within_a_poll(store: Store) -> None:
    job_id = prepare_job(store, numbered(12), batch_size=3).job_id
    seen: list[int] = []
    events: list[WorkerEvent] = []

    def processor(record: dict[str, Any], context: ProcessingContext) -> None:
        seen.append(context.record_index)
        if context.record_index == 0:
            assert store.pause_job(job_id)

    worker = Worker(store, processor, on_event=events.append, lease_timeout_ms=2000)
    join = in_thread(lambda: worker.run(job_id))
    until(lambda: any(isinstance(e, JobPaused) for e in events))
    assert seen == [0, 1, 2], "the batch in hand is finished, then nothing is claimed"
    time.sleep(0.5)  # several poll intervals
    assert seen == [0, 1, 2]
    assert store.get_progress(job_id).processed_records == 3, "the paused batch was written"
    assert store.resume_job(job_id)
    summary = join()
    assert (summary.processed, summary.finalized, summary.stopped) == (12, True, "done")
    kinds = [type(e) for e in events if isinstance(e, (JobPaused, JobResumed))]
    assert kinds == [JobPaused, JobResumed]
    state = store.get_job_state(job_id)
    assert state is not None and state.status == JobStatus.COMPLETED


def test_an_abort_stops_the_worker_before_its_next_record_and_gives_the_batch_back(
    store: Store,
) -> None:
    job_id = prepare_job(store, numbered(8), batch_size=4).job_id
    seen: list[int] = []
    events: list[WorkerEvent] = []

    def processor(record: dict[str, Any], context: ProcessingContext) -> None:
        seen.append(context.record_index)
        if context.record_index == 5:  # the second batch, mid-way
            assert store.abort_job(job_id)
            # The next renewal is refused: that is when the worker notices.
            assert context.lease_lost.wait(WAIT_S)

    worker = Worker(store, processor, on_event=events.append, lease_timeout_ms=300)
    summary = worker.run(job_id)
    assert summary.stopped == "aborted"
    assert seen == [0, 1, 2, 3, 4, 5], "no record is processed once the abort was noticed"
    assert (summary.batches, summary.processed, summary.leases_lost) == (1, 4, 0)
    assert not summary.finalized
    state = store.get_job_state(job_id)
    assert state is not None and state.status == JobStatus.ABORTED
    first, second = state.batches
    assert (first.status, first.processed_count) == (BatchStatus.COMPLETED, 4), "kept"
    assert (second.status, second.worker_id) == (BatchStatus.PENDING, None), "given back"
    assert len(store.get_processed_records(job_id)) == 4
    assert any(isinstance(e, JobAborted) for e in events)
    assert not any(isinstance(e, LeaseLost) for e in events)


def test_a_worker_on_an_aborted_job_returns_at_once(store: Store) -> None:
    job_id = prepare_job(store, numbered(4), batch_size=2).job_id
    assert store.abort_job(job_id)
    summary = Worker(store, lambda r, c: None).run(job_id)
    assert (summary.batches, summary.stopped, summary.finalized) == (0, "aborted", False)


def test_run_stops_at_max_batches_and_a_later_run_finishes_the_job(store: Store) -> None:
    job_id = prepare_job(store, numbered(10), batch_size=2).job_id
    first = Worker(store, lambda r, c: None).run(job_id, max_batches=2)
    assert (first.batches, first.processed, first.stopped, first.finalized) == (
        2,
        4,
        "limit",
        False,
    )
    state = store.get_job_state(job_id)
    assert state is not None and state.status == JobStatus.PROCESSING
    rest = Worker(store, lambda r, c: None).run(job_id)
    assert (rest.batches, rest.processed, rest.stopped, rest.finalized) == (3, 6, "done", True)


def test_run_stops_at_a_batch_boundary_once_max_duration_ms_has_passed(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    job_id = prepare_job(store, numbered(6), batch_size=2).job_id
    real, skipped = time.monotonic, [0.0]
    monkeypatch.setattr(time, "monotonic", lambda: real() + skipped[0])

    def slow(record: dict[str, Any], context: ProcessingContext) -> None:
        skipped[0] += 10.0  # each record "takes" 10 s: the first batch outlasts the limit

    summary = Worker(store, slow).run(job_id, max_duration_ms=5000)
    assert (summary.batches, summary.processed, summary.stopped) == (1, 2, "limit")


def test_stop_says_stopped(store: Store) -> None:
    job_id = prepare_job(store, numbered(6), batch_size=2).job_id
    worker = Worker(store, lambda r, c: worker.stop())
    summary = worker.run(job_id)
    assert (summary.batches, summary.stopped) == (1, "stopped")


@pytest.mark.parametrize("limit", [0, -1, True, 1.5])
def test_limits_must_be_positive_integers(limit: Any) -> None:
    from batchactions_peewee import InMemoryStateStore

    store = InMemoryStateStore()
    job_id = prepare_job(store, numbered(2), batch_size=2).job_id
    for option in ("max_batches", "max_duration_ms"):
        with pytest.raises(InvalidValueError):
            Worker(store, lambda r, c: None).run(job_id, **{option: limit})
    state = store.get_job_state(job_id)
    assert state is not None and state.batches[0].status == BatchStatus.PENDING


def test_drain_gives_the_batch_in_hand_back_without_counting_a_lease_lost(store: Store) -> None:
    """``Worker.drain`` (what SIGTERM calls) stops after the record in hand: the batch is
    released, PENDING again, nothing of it written, and no LeaseLost is reported."""
    job_id = prepare_job(store, numbered(10), batch_size=5).job_id
    seen: list[int] = []
    events: list[WorkerEvent] = []
    worker: Worker

    def processor(record: dict[str, Any], context: ProcessingContext) -> None:
        seen.append(context.record_index)
        if len(seen) == 2:
            worker.drain()

    worker = Worker(store, processor, on_event=events.append, lease_timeout_ms=60_000)
    summary = worker.run(job_id)
    assert summary.stopped == "stopped"
    assert (summary.batches, summary.processed, summary.leases_lost) == (0, 0, 0)
    assert seen == [0, 1], "the record in hand was finished, no later one begun"
    assert not [e for e in events if isinstance(e, LeaseLost)]
    status = store.get_distributed_status(job_id)
    assert (status.pending_batches, status.processing_batches) == (2, 0)
    assert store.get_progress(job_id).processed_records == 0
