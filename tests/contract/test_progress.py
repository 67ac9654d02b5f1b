"""Progress of a distributed job comes from per-batch counters (O(batches), not O(records)),
yet agrees exactly with counting the records, whatever the history of fenced writes."""

from __future__ import annotations

import logging
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from batchactions_peewee import (
    BatchReservation,
    BatchStatus,
    JobProgress,
    PeeweeStateStore,
    RecordStatus,
)
from batchactions_peewee.errors import InvalidInputError

from ..support.factories import job, record, uid
from ..support.stores import CONTRACT_BACKENDS, AnyStore, open_any_store


def progress_by_counting_records(store: AnyStore, job_id: str, now: int) -> JobProgress:
    """SPEC §3 progress computed the slow way: from the records themselves."""
    state = store.get_job_state(job_id)
    assert state is not None
    processed = len(store.get_processed_records(job_id))
    failed = len(store.get_failed_records(job_id))
    total = state.total_records
    done = processed + failed
    return JobProgress(
        total_records=total,
        processed_records=processed,
        failed_records=failed,
        pending_records=max(0, total - done),
        percentage=int(done / total * 100 + 0.5) if total else 0,
        current_batch=sum(1 for b in state.batches if b.status == BatchStatus.COMPLETED),
        total_batches=len(state.batches),
        elapsed_ms=now - state.started_at if state.started_at is not None else 0,
    )


operations = st.lists(
    st.tuples(
        st.sampled_from(["claim", "complete", "release", "reclaim", "tick"]),
        st.lists(st.sampled_from(list(RecordStatus)), min_size=4, max_size=4),
        st.booleans(),
    ),
    max_size=25,
)


@settings(max_examples=15)
@given(history=operations, batches=st.integers(1, 4), size=st.integers(1, 4))
def test_counters_agree_with_counting_records_on_random_histories(
    store_kind: str,
    url_for: Callable[[str], str],
    history: list[tuple[str, list[RecordStatus], bool]],
    batches: int,
    size: int,
) -> None:
    now = [10_000]
    with open_any_store(store_kind, url_for, lambda: now[0]) as store:
        _random_history(store, now, history, batches, size)


def _random_history(
    store: AnyStore,
    now: list[int],
    history: list[tuple[str, list[RecordStatus], bool]],
    batches: int,
    size: int,
) -> None:
    j = job(batches=batches, per_batch=size, started_at=1_000)
    store.save_job_state(j)
    for b in j.batches:  # the pending records prepare_job writes
        start = b.record_start_index or 0
        store.save_batch_records(j.id, b.id, [record(i) for i in range(start, start + size)])
    held: list[BatchReservation] = []
    for op, statuses, fail in history:
        if op == "claim":
            result = store.claim_batch(j.id, uid("w-"))
            if result.reservation is not None:
                held.append(result.reservation)
        elif op == "complete" and held:
            r = held.pop(0)
            done = [record(r.record_start_index + i, statuses[i]) for i in range(size)]
            processed = sum(1 for x in done if x.status == RecordStatus.PROCESSED)
            failed = sum(1 for x in done if x.status in (RecordStatus.FAILED, RecordStatus.INVALID))
            status = BatchStatus.FAILED if fail else BatchStatus.COMPLETED
            store.complete_batch(
                r, status=status, processed_count=processed, failed_count=failed, records=done
            )
        elif op == "release" and held:
            r = held.pop()
            store.release_batch(j.id, r.batch_id, r.worker_id)
        elif op == "reclaim":
            store.reclaim_stale_batches(j.id, 5_000)
        elif op == "tick":
            now[0] += 3_000
        assert store.get_progress(j.id) == progress_by_counting_records(store, j.id, now[0])


@pytest.fixture(params=CONTRACT_BACKENDS)
def store_kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def test_completion_counts_must_match_the_records_they_carry(store: AnyStore) -> None:
    j = job(batches=1, per_batch=3)
    store.save_job_state(j)
    r = store.claim_batch(j.id, "w").reservation
    assert r is not None
    done = [record(0, "processed"), record(1, "invalid"), record(2, "pending")]
    with pytest.raises(InvalidInputError):
        store.complete_batch(r, processed_count=3, failed_count=0, records=done)
    assert store.get_distributed_status(j.id).processing_batches == 1
    assert store.complete_batch(r, processed_count=1, failed_count=1, records=done)
    progress = store.get_progress(j.id)
    assert (progress.processed_records, progress.failed_records, progress.pending_records) == (
        1,
        1,
        1,
    )


def test_counts_are_checked_against_the_batchs_own_records_only(store: AnyStore) -> None:
    j = job(batches=1, per_batch=3)
    store.save_job_state(j)
    r = store.claim_batch(j.id, "w").reservation
    assert r is not None
    start = r.record_start_index
    done = [record(start + i, "processed") for i in range(3)] + [record(start + 50, "failed")]
    with pytest.raises(InvalidInputError):  # the record outside the batch is not counted
        store.complete_batch(r, processed_count=3, failed_count=1, records=done)
    assert store.complete_batch(r, processed_count=3, failed_count=0, records=done)


def test_partial_record_sets_are_not_second_guessed(store: AnyStore) -> None:
    j = job(batches=1, per_batch=3)
    store.save_job_state(j)
    r = store.claim_batch(j.id, "w").reservation
    assert r is not None
    assert store.complete_batch(
        r, processed_count=3, failed_count=0, records=[record(0, "processed")]
    )


def test_progress_of_a_distributed_job_never_reads_the_records_table(
    peewee_store: PeeweeStateStore, caplog: pytest.LogCaptureFixture
) -> None:
    j = job(batches=3, per_batch=2)
    peewee_store.save_job_state(j)
    records_table = peewee_store.tables.records._meta.table_name
    with caplog.at_level(logging.DEBUG, logger="peewee"):
        progress = peewee_store.get_progress(j.id)
    sql = [r.getMessage() for r in caplog.records if r.name == "peewee"]
    assert sql, "peewee logs every query at DEBUG"
    assert not [q for q in sql if records_table in q]
    assert progress.total_batches == 3


def test_records_written_outside_a_completion_count_once_it_lands(store: AnyStore) -> None:
    j = job(batches=1, per_batch=2)
    store.save_job_state(j)
    store.save_processed_record(j.id, j.batches[0].id, record(0, "processed"))
    assert store.get_progress(j.id).processed_records == 0
    r = store.claim_batch(j.id, "w").reservation
    assert r is not None
    store.complete_batch(
        r,
        processed_count=2,
        failed_count=0,
        records=[record(0, "processed"), record(1, "processed")],
    )
    assert store.get_progress(j.id).processed_records == 2
