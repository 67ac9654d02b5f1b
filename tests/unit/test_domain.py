"""The domain model: exact field names, camelCase JSON, both spellings on input, lifecycle."""

from __future__ import annotations

import pydantic
import pytest

from batchactions_peewee import (
    Batch,
    BatchReservation,
    ClaimBatchResult,
    ClaimFailureReason,
    JobConfig,
    JobProgress,
    JobState,
    JobStatus,
    ProcessedRecord,
    RecordStatus,
)
from batchactions_peewee.model import trusted_record


def test_models_dump_the_typescript_json_shape() -> None:
    job = JobState(
        id="j",
        config=JobConfig(batch_size=10, continue_on_error=True),
        status="PROCESSING",
        batches=[
            Batch(id="b", index=0, status="PENDING", record_start_index=0, record_end_index=9)
        ],
        total_records=10,
        started_at=1,
    )
    assert job.model_dump(by_alias=True, mode="json") == {
        "id": "j",
        "config": {
            "batchSize": 10,
            "id": None,
            "schema": None,
            "maxConcurrentBatches": None,
            "continueOnError": True,
            "maxRetries": None,
            "retryDelayMs": None,
            "skipEmptyRows": None,
        },
        "status": "PROCESSING",
        "batches": [
            {
                "id": "b",
                "index": 0,
                "status": "PENDING",
                "records": [],
                "processedCount": 0,
                "failedCount": 0,
                "workerId": None,
                "claimedAt": None,
                "recordStartIndex": 0,
                "recordEndIndex": 9,
            }
        ],
        "totalRecords": 10,
        "startedAt": 1,
        "completedAt": None,
        "distributed": False,
    }


def test_both_spellings_are_accepted() -> None:
    by_alias = ProcessedRecord.model_validate(
        {
            "index": 1,
            "raw": {},
            "parsed": {},
            "status": "failed",
            "processingError": "x",
            "retryCount": 2,
        }
    )
    by_name = ProcessedRecord(
        index=1, raw={}, parsed={}, status=RecordStatus.FAILED, processing_error="x", retry_count=2
    )
    assert by_alias == by_name


def test_models_are_frozen() -> None:
    config = JobConfig(batch_size=1)
    with pytest.raises(pydantic.ValidationError):
        config.batch_size = 2  # type: ignore[misc]


def test_numbers_are_not_coerced_from_strings() -> None:
    with pytest.raises(pydantic.ValidationError):
        JobConfig.model_validate({"batchSize": "10"})
    with pytest.raises(pydantic.ValidationError):
        JobState.model_validate({"id": "j", "config": {"batchSize": 1}, "status": "NOPE"})


def test_progress_field_names() -> None:
    p = JobProgress(
        total_records=1,
        processed_records=1,
        failed_records=0,
        pending_records=0,
        percentage=100,
        current_batch=1,
        total_batches=1,
        elapsed_ms=5,
    )
    assert set(p.model_dump(by_alias=True)) == {
        "totalRecords",
        "processedRecords",
        "failedRecords",
        "pendingRecords",
        "percentage",
        "currentBatch",
        "totalBatches",
        "elapsedMs",
        "estimatedRemainingMs",
    }


def test_claim_result_sets_exactly_one_of_reservation_and_reason() -> None:
    r = BatchReservation(
        job_id="j",
        batch_id="b",
        batch_index=0,
        worker_id="w",
        claimed_at=1,
        record_start_index=0,
        record_end_index=1,
        version=1,
    )
    assert ClaimBatchResult(claimed=True, reservation=r).reservation == r
    with pytest.raises(pydantic.ValidationError):
        ClaimBatchResult(claimed=True)
    with pytest.raises(pydantic.ValidationError):
        ClaimBatchResult(claimed=True, reservation=r, reason=ClaimFailureReason.JOB_NOT_FOUND)
    with pytest.raises(pydantic.ValidationError):
        ClaimBatchResult(claimed=False, reservation=r)


ALLOWED = {
    ("CREATED", "PREVIEWING"),
    ("CREATED", "PROCESSING"),
    ("PREVIEWING", "PREVIEWED"),
    ("PREVIEWING", "FAILED"),
    ("PREVIEWED", "PROCESSING"),
    ("PROCESSING", "PAUSED"),
    ("PROCESSING", "COMPLETED"),
    ("PROCESSING", "ABORTED"),
    ("PROCESSING", "FAILED"),
    ("PAUSED", "PROCESSING"),
    ("PAUSED", "ABORTED"),
}


@pytest.mark.parametrize("frm", list(JobStatus))
@pytest.mark.parametrize("to", list(JobStatus))
def test_can_transition_follows_the_lifecycle(frm: JobStatus, to: JobStatus) -> None:
    assert JobStatus.can_transition(frm, to) == ((frm.value, to.value) in ALLOWED)
    assert JobStatus.can_transition(frm.value, to.value) == ((frm.value, to.value) in ALLOWED)


def test_terminal_statuses() -> None:
    assert {s for s in JobStatus if s.is_terminal} == {
        JobStatus.COMPLETED,
        JobStatus.ABORTED,
        JobStatus.FAILED,
    }


def test_json_form_leaves_out_unset_optionals_but_keeps_unknown_keys_even_when_null() -> None:
    config = JobConfig.model_validate({"batchSize": 2, "custom": None, "maxRetries": None})
    assert config.to_json_dict() == {"batchSize": 2, "custom": None}


@pytest.mark.parametrize(
    ("processing_error", "retry_count"), [(None, None), ("boom ✓", 2), (None, 0)]
)
def test_a_trusted_record_is_the_validated_record(
    processing_error: str | None, retry_count: int | None
) -> None:
    raw = {"n": 1, "nested": {"l": [1, 2.5, None, "é"]}}
    parsed = {"n": "1"}
    fast = trusted_record(7, raw, parsed, RecordStatus.FAILED, processing_error, retry_count)
    given = {"processing_error": processing_error, "retry_count": retry_count}
    slow = ProcessedRecord(
        index=7,
        raw=raw,
        parsed=parsed,
        status=RecordStatus.FAILED,
        **{name: value for name, value in given.items() if value is not None},
    )
    assert fast.model_fields_set == slow.model_fields_set
    assert fast.model_dump(exclude_unset=True) == slow.model_dump(exclude_unset=True)
    assert fast == slow and slow == fast
    assert repr(fast) == repr(slow)
    assert fast.model_dump() == slow.model_dump()
    assert fast.to_json_dict() == slow.to_json_dict()
    assert fast.model_dump_json() == slow.model_dump_json()
    assert fast.model_copy(update={"index": 8}) == slow.model_copy(update={"index": 8})
    assert ProcessedRecord.model_validate(fast.model_dump()) == slow
    assert fast.raw is raw and fast.parsed is parsed  # kept, not copied
    with pytest.raises(pydantic.ValidationError):
        fast.index = 9  # type: ignore[misc]  # frozen, like every domain model


def test_processed_record_has_nothing_a_trusted_record_would_skip() -> None:
    # trusted_record sets the fields directly: a validator or post-init hook added to the
    # model later would silently not run for it. This test says so when that happens.
    decorators = ProcessedRecord.__pydantic_decorators__
    assert not decorators.field_validators and not decorators.model_validators
    assert ProcessedRecord.__pydantic_post_init__ is None
    assert not ProcessedRecord.__private_attributes__
