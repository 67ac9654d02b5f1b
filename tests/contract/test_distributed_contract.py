"""The DistributedStateStore contract (SPEC §2-3) on every backend: one worker at a time.

Races, crashes and fencing under real concurrency are in contract/test_state_machine.py and
integration/test_concurrency.py.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from typing import Any

import pytest

from batchactions_peewee import (
    BatchReservation,
    BatchStatus,
    ClaimFailureReason,
    InMemoryStateStore,
    JobStatus,
    PeeweeStateStore,
    ProcessedRecord,
)
from batchactions_peewee.errors import (
    DuplicateRecordError,
    InvalidInputError,
    InvalidStatusError,
    InvalidValueError,
)

from ..support.async_stores import LoopStore
from ..support.factories import job, record
from ..support.stores import on_tables, with_clock

Store = InMemoryStateStore | PeeweeStateStore | LoopStore


def claim(store: Store, job_id: str, worker: str = "w1") -> BatchReservation:
    result = store.claim_batch(job_id, worker)
    assert result.claimed and result.reservation is not None and result.reason is None
    return result.reservation


def test_claim_reasons(store: Store) -> None:
    assert store.claim_batch("missing", "w").reason == ClaimFailureReason.JOB_NOT_FOUND
    created = job(status="CREATED")
    store.save_job_state(created)
    assert store.claim_batch(created.id, "w").reason == ClaimFailureReason.JOB_NOT_PROCESSING
    j = job(batches=1)
    store.save_job_state(j)
    claim(store, j.id)
    refused = store.claim_batch(j.id, "w2")
    assert (refused.claimed, refused.reservation, refused.reason) == (
        False,
        None,
        ClaimFailureReason.NO_PENDING_BATCHES,
    )


def test_claims_take_batches_in_index_order_with_their_ranges(store: Store) -> None:
    j = job(batches=3, per_batch=4)
    store.save_job_state(j)
    reservations = [claim(store, j.id, f"w{i}") for i in range(3)]
    assert [r.batch_index for r in reservations] == [0, 1, 2]
    assert [(r.record_start_index, r.record_end_index) for r in reservations] == [
        (0, 3),
        (4, 7),
        (8, 11),
    ]
    assert all(r.version == 1 for r in reservations)
    state = store.get_job_state(j.id)
    assert state is not None
    assert [(b.status, b.worker_id) for b in state.batches] == [
        (BatchStatus.PROCESSING, "w0"),
        (BatchStatus.PROCESSING, "w1"),
        (BatchStatus.PROCESSING, "w2"),
    ]
    assert [b.claimed_at for b in state.batches] == [r.claimed_at for r in reservations]


def test_release_acts_only_for_the_holder(store: Store) -> None:
    j = job(batches=1)
    store.save_job_state(j)
    r = claim(store, j.id, "owner")
    store.release_batch(j.id, r.batch_id, "intruder")
    assert store.get_distributed_status(j.id).processing_batches == 1
    store.release_batch(j.id, r.batch_id, "owner")
    assert store.get_distributed_status(j.id).pending_batches == 1
    again = claim(store, j.id, "next")
    assert again.batch_id == r.batch_id and again.version == r.version + 2
    assert store.complete_batch(r, processed_count=1, failed_count=0) is False


def test_reclaim_returns_only_stale_batches() -> None:
    now = [1_000]
    store = InMemoryStateStore(clock=lambda: now[0])
    _reclaim_scenario(store, now)


def test_reclaim_returns_only_stale_batches_on_databases(peewee_store: PeeweeStateStore) -> None:
    now = [1_000]
    store = PeeweeStateStore(
        peewee_store.database, table_prefix=peewee_store.table_prefix, clock=lambda: now[0]
    )
    _reclaim_scenario(store, now)


def _reclaim_scenario(store: Store, now: list[int]) -> None:
    j = job(batches=3)
    store.save_job_state(j)
    old = claim(store, j.id, "old")
    now[0] = 5_000
    fresh = claim(store, j.id, "fresh")
    now[0] = 6_000
    assert store.reclaim_stale_batches(j.id, 5_000) == 0  # claimed exactly 5 s ago: not more
    now[0] = 6_001
    assert store.reclaim_stale_batches(j.id, 5_000) == 1
    assert store.reclaim_stale_batches(j.id, 5_000) == 0
    status = store.get_distributed_status(j.id)
    assert (status.pending_batches, status.processing_batches) == (2, 1)
    assert store.complete_batch(old, processed_count=2, failed_count=0) is False
    assert store.heartbeat(fresh) is True
    now[0] = 10_500
    assert store.reclaim_stale_batches(j.id, 5_000) == 0  # the heartbeat renewed the lease


def test_complete_batch_writes_state_and_records_together(store: Store) -> None:
    j = job(batches=2, per_batch=2)
    store.save_job_state(j)
    store.save_batch_records(j.id, j.batches[0].id, [record(0), record(1)])
    r = claim(store, j.id)
    done = [record(0, "processed"), record(1, "failed", processing_error="boom")]
    assert store.complete_batch(r, processed_count=1, failed_count=1, records=done) is True
    assert store.get_batch_records(j.id, r.batch_id) == done
    state = store.get_job_state(j.id)
    assert state is not None
    assert (
        state.batches[0].status,
        state.batches[0].processed_count,
        state.batches[0].failed_count,
    ) == (
        BatchStatus.COMPLETED,
        1,
        1,
    )
    # A second completion with the same reservation is fenced off and writes nothing.
    late = [record(0, "failed")]
    assert store.complete_batch(r, processed_count=0, failed_count=2, records=late) is False
    assert store.get_batch_records(j.id, r.batch_id) == done


@pytest.mark.parametrize("count", [1, 16, 40])
def test_complete_batch_processed_writes_what_complete_batch_writes(
    store: Store, count: int
) -> None:
    # The worker's completion: processed records as (index, raw, parsed), the rest as
    # ProcessedRecords. Both jobs must end with the same rows and counters.
    def outcome(i: int) -> ProcessedRecord:
        raw = {"n": i, "deep": {"l": [i, 1.5, None, "zoë"]}}
        if i % 5 == 3:
            return ProcessedRecord(
                index=i, raw=raw, parsed=raw, status="failed", processing_error=f"e{i}"
            )
        parsed = raw if i % 2 else {"n": str(i)}
        return ProcessedRecord(index=i, raw=raw, parsed=parsed, status="processed")

    outcomes = [outcome(i) for i in range(count)]
    processed = [(o.index, o.raw, o.parsed) for o in outcomes if o.status == "processed"]
    others = [o for o in outcomes if o.status != "processed"]
    done_n, failed_n = len(processed), len(others)
    read = []
    for fast in (False, True):
        j = job(batches=1, per_batch=count)
        store.save_job_state(j)
        r = claim(store, j.id)
        if fast:
            assert store._complete_batch_processed(
                r,
                processed=processed,
                records=others,
                processed_count=done_n,
                failed_count=failed_n,
            )
            # Fenced like complete_batch: a second completion writes nothing.
            assert not store._complete_batch_processed(
                r, processed=[], processed_count=done_n, failed_count=failed_n
            )
        else:
            assert store.complete_batch(
                r, records=outcomes, processed_count=done_n, failed_count=failed_n
            )
        read.append(store.get_batch_records(j.id, r.batch_id))
        state = store.get_job_state(j.id)
        assert state is not None
        assert (state.batches[0].processed_count, state.batches[0].failed_count) == (
            len(processed),
            len(others),
        )
    assert read[0] == read[1] == outcomes


def test_complete_batch_processed_refuses_bad_input_and_writes_nothing(store: Store) -> None:
    j = job(batches=1, per_batch=3)
    store.save_job_state(j)
    r = claim(store, j.id)
    ok = [(0, {"n": 0}, {"n": 0}), (1, {"n": 1}, {"n": 1})]
    cases: list[tuple[type[Exception], str, list[Any], list[ProcessedRecord]]] = [
        (DuplicateRecordError, "record index 1", [*ok, (1, {}, {})], []),
        (DuplicateRecordError, "record index 1", ok, [record(1, "failed")]),
        (InvalidValueError, "raw of record 1", [ok[0], (1, {"x": math.nan}, {})], []),
        (InvalidValueError, "parsed of record 1", [ok[0], (1, {}, {"s": {1, 2}})], []),
        (InvalidInputError, "record 1: raw and parsed", [ok[0], (1, [1], {})], []),
        (InvalidValueError, "record index", [(-1, {}, {})], []),
        (InvalidValueError, "record index", [ok[0], (2**31, {}, {})], []),
        (InvalidValueError, "record index", [ok[0], (True, {}, {})], []),
        (InvalidInputError, "records say 2 processed", ok, [record(2, "failed")]),
    ]
    for error, message, processed, others in cases:
        with pytest.raises(error, match=message):
            store._complete_batch_processed(
                r, processed=processed, records=others, processed_count=1, failed_count=2
            )
    shapes: list[Any] = [(1, {}), (1, {}, {}, 0), None, "abc"]
    for shape in shapes:
        with pytest.raises(
            InvalidInputError, match=r"processed item 1 must be \(index, raw, parsed\)"
        ):
            store._complete_batch_processed(
                r, processed=[(0, {}, {}), shape], processed_count=2, failed_count=0
            )
    assert store.get_batch_records(j.id, r.batch_id) == []
    assert store.get_distributed_status(j.id).processing_batches == 1


def test_complete_batch_processed_takes_any_iterable_and_dict_subclasses(store: Store) -> None:
    j = job(batches=1, per_batch=2)
    store.save_job_state(j)
    r = claim(store, j.id)
    ordered = OrderedDict(n=1)
    done = ((i, {"n": i} if i == 0 else ordered, {"n": i}) for i in range(2))  # one pass only
    assert store._complete_batch_processed(r, processed=done, processed_count=2, failed_count=0)
    records = store.get_batch_records(j.id, r.batch_id)
    assert [(x.index, x.raw, x.status) for x in records] == [
        (0, {"n": 0}, "processed"),
        (1, {"n": 1}, "processed"),
    ]
    assert type(records[1].raw) is dict


def test_complete_batch_refuses_a_non_terminal_status(store: Store) -> None:
    j = job(batches=1)
    store.save_job_state(j)
    r = claim(store, j.id)
    with pytest.raises(InvalidStatusError):
        store.complete_batch(r, status=BatchStatus.PENDING, processed_count=0, failed_count=0)
    assert store.get_distributed_status(j.id).processing_batches == 1


def test_complete_batch_with_bad_records_writes_nothing(store: Store) -> None:
    j = job(batches=1)
    store.save_job_state(j)
    r = claim(store, j.id)
    bad = record(1).model_copy(update={"raw": {"x": float("nan")}})
    with pytest.raises(InvalidInputError):
        store.complete_batch(r, processed_count=2, failed_count=0, records=[record(0), bad])
    assert store.get_batch_records(j.id, r.batch_id) == []
    assert store.get_distributed_status(j.id).processing_batches == 1
    assert store.complete_batch(r, processed_count=0, failed_count=0) is True


def test_heartbeat_fails_once_the_lease_is_lost(store: Store) -> None:
    now = [1_000]  # the store's clock, held still: the answer of the reclaim below is certain
    store = with_clock(store, lambda: now[0])
    j = job(batches=1)
    store.save_job_state(j)
    r = claim(store, j.id)
    assert store.heartbeat(r) is True
    assert store.heartbeat(r) is True  # twice in one millisecond is still a renewal
    # Both renewals pushed the claim time ahead of the clock: nothing is stale yet.
    assert store.reclaim_stale_batches(j.id, 0) == 0
    store.release_batch(j.id, r.batch_id, r.worker_id)
    assert store.heartbeat(r) is False


def test_finalize_needs_every_batch_terminal_and_happens_once(store: Store) -> None:
    j = job(batches=2)
    store.save_job_state(j)
    assert store.try_finalize_job(j.id) is False
    a, b = claim(store, j.id), claim(store, j.id)
    assert store.complete_batch(a, processed_count=2, failed_count=0)
    assert store.try_finalize_job(j.id) is False
    assert store.complete_batch(b, processed_count=2, failed_count=0)
    assert store.try_finalize_job(j.id) is True
    assert store.try_finalize_job(j.id) is False
    state = store.get_job_state(j.id)
    assert state is not None and state.status == JobStatus.COMPLETED
    assert state.completed_at is not None


def test_finalize_marks_the_job_failed_when_a_batch_failed(store: Store) -> None:
    j = job(batches=2)
    store.save_job_state(j)
    a, b = claim(store, j.id), claim(store, j.id)
    store.complete_batch(a, processed_count=2, failed_count=0)
    store.complete_batch(b, status=BatchStatus.FAILED, processed_count=0, failed_count=2)
    assert store.try_finalize_job(j.id) is True
    state = store.get_job_state(j.id)
    assert state is not None and state.status == JobStatus.FAILED


def test_finalize_refuses_jobs_without_batches_or_not_processing(store: Store) -> None:
    empty = job(batches=0)
    store.save_job_state(empty)
    assert store.try_finalize_job(empty.id) is False
    paused = job(batches=1, status="PAUSED")
    store.save_job_state(paused)
    store.update_batch_state(paused.id, paused.batches[0].id, _done(paused.batches[0].id))
    assert store.try_finalize_job(paused.id) is False
    assert store.try_finalize_job("missing") is False


def _done(batch_id: str):  # type: ignore[no-untyped-def]
    from batchactions_peewee import BatchState

    return BatchState(batch_id=batch_id, status="COMPLETED", processed_count=0, failed_count=0)


def test_finalize_writes_the_final_batch_list_into_the_job_row(store: Store) -> None:
    j = job(batches=1)
    store.save_job_state(j)
    r = claim(store, j.id)
    store.complete_batch(r, processed_count=2, failed_count=0)
    assert store.try_finalize_job(j.id)
    if isinstance(store, (PeeweeStateStore, LoopStore)):
        J = store.tables.jobs
        import json

        raw: str = on_tables(store, J.select(J.batches).where(J.id == j.id).scalar)
        assert json.loads(raw)[0]["status"] == "COMPLETED"


def test_distributed_status_counts_batches(store: Store) -> None:
    j = job(batches=4)
    store.save_job_state(j)
    a, b, _ = claim(store, j.id), claim(store, j.id), claim(store, j.id)
    store.complete_batch(a, processed_count=2, failed_count=0)
    store.complete_batch(b, status=BatchStatus.FAILED, processed_count=0, failed_count=2)
    s = store.get_distributed_status(j.id)
    assert (
        s.total_batches,
        s.completed_batches,
        s.failed_batches,
        s.processing_batches,
        s.pending_batches,
        s.is_complete,
    ) == (4, 1, 1, 1, 1, False)
    missing = store.get_distributed_status("missing")  # the reference adapters' answer
    assert missing.model_dump() == {
        "job_id": "missing",
        "total_batches": 0,
        "completed_batches": 0,
        "failed_batches": 0,
        "processing_batches": 0,
        "pending_batches": 0,
        "is_complete": False,
    }


def test_batch_ids_are_unique_across_jobs(store: Store) -> None:
    first = job(batches=1)
    store.save_job_state(first)
    thief = job(batches=1).model_copy(update={"batches": first.batches})
    with pytest.raises(InvalidInputError):
        store.save_job_state(thief)
    assert store.get_job_state(thief.id) is None


def test_save_batch_records_and_read_them_back_by_batch(store: Store) -> None:
    j = job(batches=2, per_batch=3)
    store.save_job_state(j)
    store.save_batch_records(j.id, j.batches[1].id, [record(5), record(3), record(4)])
    store.save_batch_records(j.id, j.batches[0].id, [record(0), record(1), record(2)])
    assert [r.index for r in store.get_batch_records(j.id, j.batches[1].id)] == [3, 4, 5]
    assert store.get_pending_records(j.id)[0].index == 0


def test_bulk_writes_larger_than_one_statement(peewee_store: PeeweeStateStore) -> None:
    j = job(batches=1, per_batch=9000)
    peewee_store.save_job_state(j)
    records = [record(i) for i in range(9000)]
    peewee_store.save_processed_records(j.id, j.batches[0].id, records)
    assert len(peewee_store.get_batch_records(j.id, j.batches[0].id)) == 9000
    assert peewee_store.get_progress(j.id).pending_records == 9000
