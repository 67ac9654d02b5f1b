"""The StateStore contract (SPEC §2-3), run against every backend."""

from __future__ import annotations

import pydantic
import pytest

from batchactions_peewee import (
    Batch,
    BatchState,
    BatchStatus,
    InMemoryStateStore,
    JobConfig,
    JobState,
    JobStatus,
    PeeweeStateStore,
    ProcessedRecord,
    RecordStatus,
    ValidationError,
    is_distributed_state_store,
)

from ..support.factories import job, record, uid

Store = InMemoryStateStore | PeeweeStateStore


def test_both_stores_implement_the_distributed_port(store: Store) -> None:
    assert is_distributed_state_store(store)
    assert not is_distributed_state_store(object())


def test_unknown_job_reads_as_none_and_zero_progress(store: Store) -> None:
    assert store.get_job_state("nope") is None
    assert store.get_failed_records("nope") == []
    progress = store.get_progress("nope")  # the reference adapters' answer: all zeros
    assert progress.model_dump() == {
        "total_records": 0,
        "processed_records": 0,
        "failed_records": 0,
        "pending_records": 0,
        "percentage": 0,
        "current_batch": 0,
        "total_batches": 0,
        "elapsed_ms": 0,
        "estimated_remaining_ms": None,
    }


def test_save_and_get_job_state_round_trips(store: Store) -> None:
    j = job(distributed=False)
    store.save_job_state(j)
    assert store.get_job_state(j.id) == j


def test_save_job_state_is_an_upsert(store: Store) -> None:
    j = job(distributed=False)
    store.save_job_state(j)
    later = j.model_copy(update={"status": JobStatus.COMPLETED, "completed_at": 5_000})
    store.save_job_state(later)
    assert store.get_job_state(j.id) == later


def test_config_keeps_unknown_keys_and_schema(store: Store) -> None:
    config = JobConfig.model_validate(
        {"batchSize": 5, "schema": {"fields": [{"name": "email"}]}, "customKey": {"a": [1, 2]}}
    )
    j = JobState(id=uid("job-"), config=config, status="CREATED")
    store.save_job_state(j)
    back = store.get_job_state(j.id)
    assert back is not None
    assert back.config.to_json_dict() == {
        "batchSize": 5,
        "schema": {"fields": [{"name": "email"}]},
        "customKey": {"a": [1, 2]},
    }


def test_records_are_listed_by_status_in_index_order(store: Store) -> None:
    j = job(distributed=False)
    store.save_job_state(j)
    b = j.batches[0].id
    statuses = ["processed", "failed", "invalid", "pending", "valid", "processed"]
    for i in reversed(range(6)):
        store.save_processed_record(j.id, b, record(i, statuses[i]))
    assert [r.index for r in store.get_processed_records(j.id)] == [0, 5]
    assert [r.index for r in store.get_failed_records(j.id)] == [1, 2]
    assert [r.index for r in store.get_pending_records(j.id)] == [3, 4]


def test_save_processed_record_replaces_the_record_with_the_same_index(store: Store) -> None:
    j = job(distributed=False)
    store.save_job_state(j)
    b = j.batches[0].id
    store.save_processed_record(j.id, b, record(0, "pending"))
    failed = record(
        0,
        "failed",
        processing_error="boom",
        errors=[ValidationError(field="email", message="bad", code="TYPE_MISMATCH", value=3)],
    )
    store.save_processed_record(j.id, b, failed)
    assert store.get_failed_records(j.id) == [failed]
    assert store.get_pending_records(j.id) == []


def varied_records(count: int, version: int) -> list[ProcessedRecord]:
    """Records of every shape a bulk write carries: parsed equal to raw or not, errors,
    processing errors, nested and non-ASCII JSON, empty objects."""
    out = []
    for i in range(count):
        raw = {"n": i, "v": version, "nested": {"list": [i, 1.5, None, True, "zoë 😀"]}}
        parsed = raw if i % 3 else {"n": str(i), "v": version}
        out.append(
            ProcessedRecord(
                index=i * 7,
                raw={} if i == 5 else raw,
                parsed=parsed,
                status=list(RecordStatus)[i % len(RecordStatus)],
                errors=[ValidationError(field="n", message=f"bad {i}", code="CUSTOM_VALIDATION")]
                if i % 4 == 0
                else [],
                processing_error=f"error {i} ✓" if i % 5 == 0 else None,
            )
        )
    return out


@pytest.mark.parametrize("count", [1, 15, 16, 200])
def test_bulk_writes_of_every_size_and_shape_read_back_unchanged(store: Store, count: int) -> None:
    # PostgreSQL switches statement form at 16 rows: both forms must write the same rows.
    j = job(batches=1)
    store.save_job_state(j)
    batch_id = j.batches[0].id
    store.save_batch_records(j.id, batch_id, varied_records(count, 1))
    assert store.get_batch_records(j.id, batch_id) == varied_records(count, 1)
    store.save_batch_records(j.id, batch_id, varied_records(count, 2))  # an upsert: replaced
    assert store.get_batch_records(j.id, batch_id) == varied_records(count, 2)


@pytest.mark.parametrize("count", [1, 200])
def test_get_batch_raw_reads_what_get_batch_records_reads(store: Store, count: int) -> None:
    # The worker's read path: (index, raw) pairs, by index, of any record status.
    j = job(batches=2)
    store.save_job_state(j)
    batch_id = j.batches[0].id
    store.save_batch_records(j.id, batch_id, list(reversed(varied_records(count, 1))))
    store.save_batch_records(j.id, j.batches[1].id, [record(10_000)])  # another batch
    expected = [(r.index, r.raw) for r in store.get_batch_records(j.id, batch_id)]
    assert store._get_batch_raw(j.id, batch_id) == expected
    assert [index for index, _ in expected] == [i * 7 for i in range(count)]
    assert store._get_batch_raw(j.id, "no-such-batch") == []


def test_get_batch_raw_refuses_a_raw_form_that_get_batch_records_refuses(
    peewee_store: PeeweeStateStore,
) -> None:
    # A row written by hand (or by another adapter) whose raw form is no JSON object.
    j = job(batches=1)
    peewee_store.save_job_state(j)
    batch_id = j.batches[0].id
    peewee_store.save_batch_records(j.id, batch_id, [record(0)])
    R = peewee_store.tables.records
    R.update(raw="[1, 2]").where(R.job_id == j.id).execute()
    with pytest.raises(pydantic.ValidationError) as by_records:
        peewee_store.get_batch_records(j.id, batch_id)
    with pytest.raises(pydantic.ValidationError) as by_raw:
        peewee_store._get_batch_raw(j.id, batch_id)
    assert by_raw.value.errors()[0]["loc"] == by_records.value.errors()[0]["loc"] == ("raw",)


def test_records_of_other_jobs_are_not_mixed_in(store: Store) -> None:
    a, b = job(distributed=False), job(distributed=False)
    store.save_job_state(a)
    store.save_job_state(b)
    store.save_processed_record(a.id, a.batches[0].id, record(0, "failed"))
    store.save_processed_record(b.id, b.batches[0].id, record(0, "processed"))
    assert [r.status for r in store.get_failed_records(a.id)] == [RecordStatus.FAILED]
    assert store.get_failed_records(b.id) == []


def test_update_batch_state_of_a_non_distributed_job(store: Store) -> None:
    j = job(distributed=False)
    store.save_job_state(j)
    target = j.batches[1]
    store.update_batch_state(
        j.id,
        target.id,
        BatchState(batch_id=target.id, status="COMPLETED", processed_count=2, failed_count=0),
    )
    back = store.get_job_state(j.id)
    assert back is not None
    assert back.batches[1].status == BatchStatus.COMPLETED
    assert back.batches[1].processed_count == 2
    assert back.batches[0] == j.batches[0]


def test_update_batch_state_of_a_distributed_job_writes_the_batches_table(store: Store) -> None:
    j = job(distributed=True)
    store.save_job_state(j)
    target = j.batches[2]
    store.update_batch_state(
        j.id,
        target.id,
        BatchState(batch_id=target.id, status="FAILED", processed_count=1, failed_count=1),
    )
    status = store.get_distributed_status(j.id)
    assert (status.failed_batches, status.pending_batches) == (1, 2)


def test_update_batch_state_of_an_unknown_job_returns_and_writes_nothing(store: Store) -> None:
    other = job(batches=1)  # another job's batch, named by the wrong job id
    store.save_job_state(other)
    store.update_batch_state(
        "nope",
        other.batches[0].id,
        BatchState(batch_id="b", status="COMPLETED", processed_count=5, failed_count=0),
    )
    assert store.get_job_state("nope") is None
    assert store.get_job_state(other.id) == other


@pytest.mark.parametrize(
    ("total", "processed", "failed", "percentage"),
    [
        (0, 0, 0, 0),
        (8, 1, 0, 13),
        (8, 0, 1, 13),
        (3, 1, 0, 33),
        (3, 2, 0, 67),
        (2, 1, 0, 50),
        (200, 29, 0, 14),
        (7, 7, 0, 100),
    ],
)
def test_progress_percentage_rounds_like_javascript(
    store: Store, total: int, processed: int, failed: int, percentage: int
) -> None:
    # (200, 29): 29 / 200 * 100 is 14.499999999999998 in doubles, so Math.round gives 14.
    j = JobState(
        id=uid("job-"),
        config=JobConfig(batch_size=10),
        status="PROCESSING",
        total_records=total,
        batches=[Batch(id=uid("b-"), index=0, status="PENDING")],
    )
    store.save_job_state(j)
    for i in range(processed):
        store.save_processed_record(j.id, j.batches[0].id, record(i, "processed"))
    for i in range(processed, processed + failed):
        store.save_processed_record(j.id, j.batches[0].id, record(i, "invalid"))
    progress = store.get_progress(j.id)
    assert progress.percentage == percentage
    assert progress.processed_records == processed
    assert progress.failed_records == failed
    assert progress.pending_records == max(0, total - processed - failed)


def test_progress_counts_batches_and_elapsed_time() -> None:
    now = [10_000]
    store = InMemoryStateStore(clock=lambda: now[0])
    j = job(batches=3, distributed=False, started_at=4_000)
    store.save_job_state(j)
    store.update_batch_state(
        j.id,
        j.batches[0].id,
        BatchState(batch_id=j.batches[0].id, status="COMPLETED", processed_count=2, failed_count=0),
    )
    progress = store.get_progress(j.id)
    assert (progress.current_batch, progress.total_batches, progress.elapsed_ms) == (1, 3, 6_000)
    unstarted = job(started_at=None, distributed=False)
    store.save_job_state(unstarted)
    assert store.get_progress(unstarted.id).elapsed_ms == 0


def test_progress_elapsed_uses_the_injected_clock(peewee_store: PeeweeStateStore) -> None:
    store = PeeweeStateStore(
        peewee_store.database, table_prefix=peewee_store.table_prefix, clock=lambda: 9_000
    )
    j = job(started_at=1_000)
    store.save_job_state(j)
    assert store.get_progress(j.id).elapsed_ms == 8_000


def test_pending_never_goes_negative(store: Store) -> None:
    j = JobState(
        id=uid("job-"), config=JobConfig(batch_size=1), status="PROCESSING", total_records=1
    )
    store.save_job_state(j)
    for i in range(3):
        store.save_processed_record(j.id, "b", record(i, "processed"))
    assert store.get_progress(j.id).pending_records == 0


def test_records_inside_batches_are_kept_in_the_records_table(store: Store) -> None:
    recs = [record(0, "processed"), record(1, "failed", processing_error="x")]
    j = JobState(
        id=uid("job-"),
        config=JobConfig(batch_size=2),
        status="PROCESSING",
        total_records=2,
        batches=[
            Batch(
                id=uid("b-"),
                index=0,
                status="COMPLETED",
                records=recs,
                processed_count=1,
                failed_count=1,
            )
        ],
    )
    store.save_job_state(j)
    back = store.get_job_state(j.id)
    assert back is not None and back.batches[0].records == []
    assert store.get_processed_records(j.id) == recs[:1]
    assert store.get_failed_records(j.id) == recs[1:]


def test_delete_job_removes_job_batches_and_records(store: Store) -> None:
    j = job(distributed=True)
    keep = job(distributed=True)
    for x in (j, keep):
        store.save_job_state(x)
        store.save_batch_records(x.id, x.batches[0].id, [record(0), record(1)])
    assert store.delete_job(j.id) is True
    assert store.get_job_state(j.id) is None
    assert store.get_batch_records(j.id, j.batches[0].id) == []
    assert store.delete_job(j.id) is False
    assert len(store.get_batch_records(keep.id, keep.batches[0].id)) == 2
    assert store.get_distributed_status(keep.id).total_batches == 3


def test_list_jobs_newest_first_and_by_status(store: Store) -> None:
    old = job(started_at=1_000, status="COMPLETED")
    new = job(started_at=2_000)
    never = job(started_at=None, status="CREATED")
    for x in (old, never, new):
        store.save_job_state(x)
    assert [x.id for x in store.list_jobs()] == [new.id, old.id, never.id]
    assert [x.id for x in store.list_jobs(status="COMPLETED")] == [old.id]
    assert [x.id for x in store.list_jobs(status=JobStatus.PROCESSING)] == [new.id]
    assert len(store.list_jobs(limit=2)) == 2


def test_list_jobs_reports_live_batches_of_distributed_jobs(store: Store) -> None:
    j = job(batches=2)
    store.save_job_state(j)
    claim = store.claim_batch(j.id, "w1")
    assert claim.reservation is not None
    (listed,) = store.list_jobs()
    assert listed.batches[0].status == BatchStatus.PROCESSING
    assert listed.batches[0].worker_id == "w1"


def test_ids_are_case_sensitive(store: Store) -> None:
    lower = job(job_id="job-a", distributed=False)
    upper = job(job_id="JOB-A", distributed=False, status="COMPLETED")
    store.save_job_state(lower)
    store.save_job_state(upper)
    a, b = store.get_job_state("job-a"), store.get_job_state("JOB-A")
    assert a is not None and b is not None
    assert (a.status, b.status) == (JobStatus.PROCESSING, JobStatus.COMPLETED)


def test_ids_with_quotes_and_semicolons_are_stored_verbatim(store: Store) -> None:
    nasty = "j'; DROP TABLE x; --\"`"
    j = job(job_id=nasty, distributed=True)
    store.save_job_state(j)
    back = store.get_job_state(nasty)
    assert back is not None and back.id == nasty
    assert store.claim_batch(nasty, "w'\";").claimed


def test_processed_record_keeps_every_validation_error_field(store: Store) -> None:
    j = job(distributed=False)
    store.save_job_state(j)
    err = ValidationError(
        field="a.b",
        message="m",
        code="CUSTOM_VALIDATION",
        value={"x": [1, None]},
        severity="warning",
        category="FORMAT",
        suggestion="s",
        metadata={"k": "v", "n": None},
    )
    rec = ProcessedRecord(index=0, raw={"a": None}, parsed={}, status="invalid", errors=[err])
    store.save_processed_record(j.id, j.batches[0].id, rec)
    assert store.get_failed_records(j.id) == [rec]


def test_ids_differing_only_in_trailing_spaces_are_distinct(store: Store) -> None:
    plain = job(job_id="job-pad", distributed=False)
    padded = job(job_id="job-pad ", distributed=False, status="COMPLETED")
    store.save_job_state(plain)
    store.save_job_state(padded)
    a, b = store.get_job_state("job-pad"), store.get_job_state("job-pad ")
    assert a is not None and b is not None
    assert (a.status, b.status) == (JobStatus.PROCESSING, JobStatus.COMPLETED)


def test_a_json_value_of_16_mib_and_more_fits(peewee_store: PeeweeStateStore) -> None:
    from ..support.backends import IN_CI, mysql_packet_limit

    if peewee_store.dialect.name == "mysql":
        limit = mysql_packet_limit(peewee_store.database)  # type: ignore[arg-type]
        if limit < 40 * 2**20 and not IN_CI:
            pytest.skip(f"max_allowed_packet is {limit} bytes; .ci/run raises it to 64 MiB")
    big = "é😀" * (2**22 + 1)  # 8 Mi + 2 characters, 24 MiB + 6 bytes of UTF-8
    j = job(batches=1)
    peewee_store.save_job_state(j)
    rec = ProcessedRecord(index=0, raw={"blob": big}, parsed={}, status="pending")
    peewee_store.save_processed_record(j.id, j.batches[0].id, rec)
    (back,) = peewee_store.get_pending_records(j.id)
    assert back.raw["blob"] == big
