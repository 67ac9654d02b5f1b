"""prepare_retry_job makes a new job of another job's failed records; preview_records tries
a schema on records and writes nothing."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pydantic
import pytest

from batchactions_peewee import (
    JobStatus,
    ProcessingContext,
    RecordStatus,
    Worker,
    prepare_job,
    prepare_retry_job,
    preview_records,
)
from batchactions_peewee.errors import InvalidInputError, InvalidStatusError, JobNotFoundError

from ..support.stores import Store


class Person(pydantic.BaseModel):
    name: str
    age: int


def people(count: int) -> Iterator[dict[str, Any]]:
    # Every 5th age is not a number (invalid); every 4th record fails in the processor.
    for i in range(count):
        yield {"name": f"p{i}", "age": "x" if i % 5 == 0 else i}


def refuse_every_fourth(record: dict[str, Any], context: ProcessingContext) -> None:
    if context.record_index % 4 == 1:
        raise RuntimeError(f"refused {context.record_index}")


def finished_job(store: Store) -> str:
    job_id = prepare_job(store, people(20), batch_size=6, schema=Person).job_id
    Worker(store, refuse_every_fourth, schema=Person).run(job_id)
    return job_id


def test_a_retry_job_holds_the_raw_data_of_the_failed_records_in_order(store: Store) -> None:
    job_id = finished_job(store)
    before = store.get_job_state(job_id)
    failed = [r for r in store.get_failed_records(job_id) if r.status == RecordStatus.FAILED]
    assert [r.index for r in failed] == [1, 9, 13, 17]
    result = prepare_retry_job(store, job_id)
    assert (result.total_records, result.total_batches) == (4, 1)
    retry = store.get_job_state(result.job_id)
    assert retry is not None and retry.status == JobStatus.PROCESSING
    assert [r.raw for r in store.get_pending_records(result.job_id)] == [r.raw for r in failed]
    extra = retry.config.model_dump(by_alias=True)
    assert (extra["retryOf"], extra["retryStatuses"], extra["batchSize"]) == (
        job_id,
        ["failed"],
        6,
    )
    assert retry.config.schema_ == before.config.schema_  # type: ignore[union-attr]
    assert store.get_job_state(job_id) == before, "the original job is left unchanged"
    summary = Worker(store, lambda r, c: None, schema=Person).run(result.job_id)
    assert (summary.processed, summary.failed) == (4, 0)


def test_a_retry_of_the_invalid_records_with_another_batch_size(store: Store) -> None:
    job_id = finished_job(store)
    result = prepare_retry_job(
        store, job_id, statuses=[RecordStatus.INVALID, "failed"], batch_size=3
    )
    indexes = [0, 1, 5, 9, 10, 13, 15, 17]  # invalid (every 5th) and failed, merged in order
    expected = [{"name": f"p{i}", "age": "x" if i % 5 == 0 else i} for i in indexes]
    assert [r.raw for r in store.get_pending_records(result.job_id)] == expected
    assert (result.total_records, result.total_batches) == (8, 3)


def test_retry_refuses_an_unknown_job_and_unknown_statuses(store: Store) -> None:
    with pytest.raises(JobNotFoundError):
        prepare_retry_job(store, "nope")
    job_id = finished_job(store)
    with pytest.raises(InvalidStatusError):
        prepare_retry_job(store, job_id, statuses=["broken"])
    with pytest.raises(InvalidInputError):
        prepare_retry_job(store, job_id, statuses=[])
    assert len(store.list_jobs()) == 1, "nothing was written"


def test_preview_counts_valid_and_invalid_records_and_names_each_error() -> None:
    result = preview_records(people(12), schema=Person, limit=10)
    assert (result.total, result.valid, result.invalid) == (10, 8, 2)
    assert [(index, e.field, e.code) for index, e in result.errors] == [
        (0, "age", "TYPE_MISMATCH"),
        (5, "age", "TYPE_MISMATCH"),
    ]


def test_preview_refuses_bad_arguments() -> None:
    with pytest.raises(InvalidInputError):
        preview_records(people(2), schema=Person, limit=0)
    with pytest.raises(InvalidInputError):
        preview_records([{"name": "a", "age": 1}, ["no", "dict"]], schema=Person)  # type: ignore[list-item]
    with pytest.raises(InvalidInputError):
        preview_records(people(2), schema=dict)  # type: ignore[arg-type]
