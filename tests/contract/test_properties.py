"""Round-trip properties: whatever JSON content goes in comes back unchanged, on every backend."""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from batchactions_peewee import (
    Batch,
    InMemoryStateStore,
    JobConfig,
    JobState,
    PeeweeStateStore,
    ProcessedRecord,
    RecordStatus,
    ValidationError,
)
from batchactions_peewee.rows import pending_rows, record_rows

from ..support.factories import uid

Store = InMemoryStateStore | PeeweeStateStore

# Unicode of every plane (emoji and other astral characters included), minus lone surrogates,
# which UTF-8 cannot carry and the stores refuse.
text = st.text(st.characters(codec="utf-8"), max_size=20)
# Plain text columns (processingError) cannot hold NUL on PostgreSQL; every store refuses it
# there (test_bad_input), while JSON columns carry it escaped.
plain_text = st.text(st.characters(codec="utf-8", exclude_characters="\x00"), max_size=20)
json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**53), max_value=2**53)
    | st.floats(allow_nan=False, allow_infinity=False)
    | text
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(text, inner, max_size=4),
    max_leaves=12,
)
json_objects = st.dictionaries(text, json_values, max_size=5)

validation_errors = st.builds(
    ValidationError,
    field=text,
    message=text,
    code=st.sampled_from(["REQUIRED", "TYPE_MISMATCH", "PATTERN_MISMATCH", "CUSTOM_VALIDATION"]),
    value=json_values,
    severity=st.sampled_from(["error", "warning", None]),
    category=st.none() | text,
    suggestion=st.none() | text,
    metadata=st.none() | json_objects,
)


def records(index: int) -> st.SearchStrategy[ProcessedRecord]:
    return st.builds(
        ProcessedRecord,
        index=st.just(index),
        raw=json_objects,
        parsed=json_objects,
        status=st.sampled_from(list(RecordStatus)),
        errors=st.lists(validation_errors, max_size=2),
        processing_error=st.none() | plain_text,
    )


@st.composite
def record_lists(draw: st.DrawFn) -> list[ProcessedRecord]:
    indexes = draw(st.lists(st.integers(0, 2**31 - 1), unique=True, max_size=5))
    return [draw(records(i)) for i in indexes]


@st.composite
def jobs(draw: st.DrawFn) -> JobState:
    count = draw(st.integers(0, 3))
    distributed = draw(st.booleans())
    extra = draw(
        st.dictionaries(st.text("abcdefghij", min_size=12, max_size=14), json_values, max_size=2)
    )
    config: dict[str, Any] = {"batchSize": draw(st.integers(1, 10_000)), **extra}
    if draw(st.booleans()):
        config["schema"] = draw(json_objects)
    if draw(st.booleans()):
        config["continueOnError"] = draw(st.booleans())
    return JobState(
        id=uid("job-"),
        config=JobConfig.model_validate(config),
        status=draw(st.sampled_from(["CREATED", "PROCESSING", "PAUSED", "COMPLETED", "FAILED"])),
        batches=[
            Batch(
                id=uid("b-"),
                index=i,
                status=draw(st.sampled_from(["PENDING", "COMPLETED", "FAILED"])),
                processed_count=draw(st.integers(0, 2**31 - 1)),
                failed_count=draw(st.integers(0, 2**31 - 1)),
                record_start_index=draw(st.integers(0, 2**31 - 1)),
                record_end_index=draw(st.integers(0, 2**31 - 1)),
            )
            for i in range(count)
        ],
        total_records=draw(st.integers(0, 2**31 - 1)),
        started_at=draw(st.none() | st.integers(0, 2**53)),
        completed_at=draw(st.none() | st.integers(0, 2**53)),
        distributed=distributed,
    )


@given(job=jobs())
def test_job_state_survives_save_and_get(store: Store, job: JobState) -> None:
    store.save_job_state(job)
    assert store.get_job_state(job.id) == job


@given(recs=record_lists())
def test_records_survive_a_bulk_save_and_get(store: Store, recs: list[ProcessedRecord]) -> None:
    job_id, batch_id = uid("job-"), uid("b-")
    store.save_batch_records(job_id, batch_id, recs)
    assert store.get_batch_records(job_id, batch_id) == sorted(recs, key=lambda r: r.index)


@given(first=records(0), second=records(0))
def test_one_record_saved_twice_reads_back_as_the_last(
    store: Store, first: ProcessedRecord, second: ProcessedRecord
) -> None:
    job_id, batch_id = uid("job-"), uid("b-")
    store.save_processed_record(job_id, batch_id, first)
    store.save_processed_record(job_id, batch_id, second)
    everything = (
        store.get_processed_records(job_id)
        + store.get_failed_records(job_id)
        + store.get_pending_records(job_id)
    )
    assert everything == [second]


@given(recs=record_lists())
def test_one_record_makes_the_row_a_bulk_write_makes_of_it(recs: list[ProcessedRecord]) -> None:
    # record_rows takes a shorter way for one record (save_processed_record's write).
    bulk = record_rows("j", "b", recs)
    assert [row for r in recs for row in record_rows("j", "b", [r])] == bulk


@given(first=st.integers(0, 2**31 - 10), dicts=st.lists(json_objects, max_size=5))
def test_pending_rows_are_the_rows_of_the_same_pending_records(
    first: int, dicts: list[dict[str, Any]]
) -> None:
    pending = [
        ProcessedRecord(index=first + k, raw=d, parsed=d, status=RecordStatus.PENDING)
        for k, d in enumerate(dicts)
    ]
    assert pending_rows("j", "b", first, dicts) == record_rows("j", "b", pending)


@given(dicts=st.lists(json_objects, min_size=1, max_size=5))
def test_pending_records_survive_a_bulk_save_and_get(
    store: Store, dicts: list[dict[str, Any]]
) -> None:
    job_id, batch_id = uid("job-"), uid("b-")
    store._save_pending_records(job_id, batch_id, 7, dicts)
    assert store.get_batch_records(job_id, batch_id) == [
        ProcessedRecord(index=7 + k, raw=d, parsed=d, status=RecordStatus.PENDING)
        for k, d in enumerate(dicts)
    ]
