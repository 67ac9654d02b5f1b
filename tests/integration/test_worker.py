"""prepare_job and Worker: unit tests on InMemoryStateStore, contract tests on every backend.

Multi-process tests (a worker killed mid-batch, a prepare killed mid-stream) are in
tests/integration/test_worker_processes.py.
"""

from __future__ import annotations

import datetime
import logging
import math
import os
import threading
import uuid
from collections.abc import Iterable, Iterator
from typing import Any

import pydantic
import pytest
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    computed_field,
    field_serializer,
    field_validator,
    model_serializer,
    model_validator,
)
from pydantic_core import PydanticCustomError

from batchactions_peewee import (
    Batch,
    BatchClaimed,
    BatchCompleted,
    BatchFailed,
    BatchReservation,
    BatchResult,
    BatchStatus,
    ClaimFailureReason,
    DistributedJobStatus,
    InMemoryStateStore,
    JobCompleted,
    JobConfig,
    JobStatus,
    LeaseLost,
    PeeweeStateStore,
    ProcessedRecord,
    ProcessingContext,
    RecordFailed,
    RecordStatus,
    Worker,
    WorkerEvent,
    prepare_job,
)
from batchactions_peewee.engine.io import PortsOnly, worker_io
from batchactions_peewee.engine.validation import (
    CUSTOM_VALIDATION,
    PATTERN_MISMATCH,
    REQUIRED,
    TYPE_MISMATCH,
    validate_record,
)
from batchactions_peewee.errors import (
    InvalidIdentifierError,
    InvalidInputError,
    InvalidValueError,
    JobExistsError,
    JobNotFoundError,
)

Store = InMemoryStateStore | PeeweeStateStore


def numbered(count: int) -> Iterator[dict[str, Any]]:
    return ({"n": i, "name": f"row {i}"} for i in range(count))


def noop(record: dict[str, Any], context: ProcessingContext) -> None:
    return None


class Address(BaseModel):
    zip: str = Field(pattern=r"^\d{5}$")


class Person(BaseModel):
    name: str
    age: int
    code: str = Field(default="AAA", pattern=r"^[A-Z]{3}$")
    born: datetime.date | None = None
    address: Address | None = None
    tags: list[int] = []
    even: int = 0

    @field_validator("even")
    @classmethod
    def _even(cls, value: int) -> int:
        if value % 2:
            raise ValueError("must be even")
        return value


# -- prepare_job ----------------------------------------------------------------------


def test_prepare_splits_records_into_batches_with_inclusive_ranges() -> None:
    store = InMemoryStateStore()
    result = prepare_job(store, numbered(1050), batch_size=500)
    assert (result.total_records, result.total_batches) == (1050, 3)
    job = store.get_job_state(result.job_id)
    assert job is not None
    assert job.status == JobStatus.PROCESSING and job.distributed
    assert job.total_records == 1050 and job.started_at is not None
    assert [(b.index, b.record_start_index, b.record_end_index) for b in job.batches] == [
        (0, 0, 499),
        (1, 500, 999),
        (2, 1000, 1049),
    ]
    assert all(b.status == BatchStatus.PENDING for b in job.batches)
    for batch in job.batches:
        indexes = [r.index for r in store.get_batch_records(result.job_id, batch.id)]
        assert indexes == list(
            range(batch.record_start_index or 0, (batch.record_end_index or 0) + 1)
        )


def test_prepare_stores_each_record_pending_with_raw_and_parsed_equal_to_the_input() -> None:
    store = InMemoryStateStore()
    source: list[dict[str, Any]] = [{"n": 1, "nested": {"a": [1, 2.5, None, "zoë 😀"]}}, {"n": 2}]
    result = prepare_job(store, source)
    records = store.get_pending_records(result.job_id)
    assert [r.index for r in records] == [0, 1]
    assert all(r.status == RecordStatus.PENDING and not r.errors for r in records)
    assert [r.raw for r in records] == source and [r.parsed for r in records] == source


def test_prepare_writes_each_batch_before_reading_the_rest_of_the_source() -> None:
    store = InMemoryStateStore()
    job_id = "streamed"
    seen_written: list[int] = []

    def source() -> Iterator[dict[str, Any]]:
        for i in range(25):
            if i % 10 == 0:
                seen_written.append(len(store.get_pending_records(job_id)))
            yield {"n": i}

    prepare_job(store, source(), batch_size=10, job_id=job_id)
    assert seen_written == [0, 10, 20]


def test_prepare_gives_uuid4_job_and_batch_ids() -> None:
    store = InMemoryStateStore()
    first = prepare_job(store, numbered(3), batch_size=2)
    second = prepare_job(store, numbered(3), batch_size=2)
    job = store.get_job_state(first.job_id)
    assert job is not None
    ids = [first.job_id, second.job_id, *(b.id for b in job.batches)]
    assert all(uuid.UUID(i).version == 4 for i in ids)
    assert len(set(ids)) == len(ids)


def test_prepare_with_existing_job_id_raises_and_writes_nothing(store: Store) -> None:
    prepare_job(store, numbered(4), batch_size=2, job_id="taken")
    with pytest.raises(JobExistsError):
        prepare_job(store, ({"other": i} for i in range(9)), batch_size=3, job_id="taken")
    job = store.get_job_state("taken")
    assert job is not None
    assert job.config.batch_size == 2 and job.total_records == 4 and len(job.batches) == 2
    assert [r.raw for r in store.get_pending_records("taken")] == list(numbered(4))


def test_prepare_config_carries_batch_size_schema_and_other_settings() -> None:
    store = InMemoryStateStore()
    result = prepare_job(
        store,
        numbered(3),
        batch_size=2,
        config={"batch_size": 99, "maxRetries": 3, "customKey": "kept"},
        schema=Person,
    )
    job = store.get_job_state(result.job_id)
    assert job is not None
    config = job.config.to_json_dict()
    assert config["batchSize"] == 2 and config["maxRetries"] == 3
    assert config["customKey"] == "kept" and "batch_size" not in config
    assert config["schema"] == Person.model_json_schema()

    from_model = prepare_job(store, numbered(1), config=JobConfig(batch_size=7, max_retries=1))
    job = store.get_job_state(from_model.job_id)
    assert job is not None and job.config.batch_size == 500 and job.config.max_retries == 1


def test_prepare_of_empty_source_gives_completed_job_without_batches() -> None:
    store = InMemoryStateStore()
    result = prepare_job(store, iter([]))
    assert (result.total_records, result.total_batches) == (0, 0)
    job = store.get_job_state(result.job_id)
    assert job is not None
    assert job.status == JobStatus.COMPLETED and job.batches == []
    assert job.completed_at is not None
    worker = Worker(store, noop)
    step = worker.process_next(result.job_id)
    assert not step.claimed and step.job_complete
    assert step.reason == ClaimFailureReason.JOB_NOT_PROCESSING
    summary = worker.run(result.job_id)
    assert (summary.batches, summary.processed, summary.finalized) == (0, 0, False)


@pytest.mark.parametrize(
    ("bad", "error"),
    [
        (["not", "a", "dict"], InvalidInputError),
        ("a string", InvalidInputError),
        ({"x": math.nan}, InvalidValueError),
        ({"x": math.inf}, InvalidValueError),
        ({1: "int key"}, InvalidValueError),
        ({"x": object()}, InvalidValueError),
        ({"x": b"bytes"}, InvalidValueError),
    ],
)
def test_prepare_rejects_bad_record_and_leaves_no_job(bad: object, error: type[Exception]) -> None:
    store = InMemoryStateStore()

    def source() -> Iterator[object]:
        yield from numbered(7)
        yield bad
        yield from numbered(3)

    with pytest.raises(error):
        prepare_job(store, source(), batch_size=3, job_id="bad")  # type: ignore[arg-type]
    assert store.get_job_state("bad") is None
    assert store.get_pending_records("bad") == []
    assert store.claim_batch("bad", "w").reason == ClaimFailureReason.JOB_NOT_FOUND


#: Our stores offer prepare_job and Worker their bulk forms through this method; a store
#: without it is worked through its port methods alone.
BULK_PATHS = ("_worker_io",)


class WithoutBulkPath:
    """A store that implements the ports but none of BULK_PATHS, as a user's own
    DistributedStateStore may: prepare_job and Worker then go through the ports alone."""

    def __init__(self, inner: InMemoryStateStore) -> None:
        self._inner = inner

    def __getattr__(self, name: str) -> Any:
        if name in BULK_PATHS:
            raise AttributeError(name)
        return getattr(self._inner, name)


@pytest.mark.parametrize("bulk", [True, False], ids=["save_pending_records", "save_batch_records"])
def test_prepare_writes_the_same_records_with_and_without_the_bulk_path(bulk: bool) -> None:
    inner = InMemoryStateStore()
    store: Any = inner if bulk else WithoutBulkPath(inner)
    assert (not isinstance(worker_io(store), PortsOnly)) is bulk
    source = [{"n": i, "deep": {"l": [i, None, "é"]}} for i in range(7)]
    result = prepare_job(store, iter(source), batch_size=3, job_id="j")
    assert result.total_batches == 3
    expected = [
        ProcessedRecord(index=i, raw=d, parsed=d, status=RecordStatus.PENDING)
        for i, d in enumerate(source)
    ]
    assert inner.get_pending_records("j") == expected


@pytest.mark.parametrize("bulk", [True, False], ids=["bulk paths", "ports only"])
def test_workers_write_the_same_records_with_and_without_the_bulk_paths(bulk: bool) -> None:
    inner = InMemoryStateStore()
    store: Any = inner if bulk else WithoutBulkPath(inner)
    assert (not isinstance(worker_io(store), PortsOnly)) is bulk
    source = [
        {"name": f"p{i}", "age": "x" if i % 5 == 0 else i, "address": {"zip": "12345"}}
        for i in range(12)
    ]
    job = prepare_job(store, iter(source), batch_size=4, job_id="j")

    def processor(record: dict[str, Any], context: ProcessingContext) -> None:
        if context.record_index % 4 == 1:
            raise ValueError(f"no {context.record_index}")

    summary = Worker(store, processor, schema=Person, max_retries=1, retry_delay_ms=0).run(
        job.job_id
    )
    invalid, failed = {0, 5, 10}, {1, 9}
    assert (summary.processed, summary.failed, summary.retries) == (7, 5, 2)
    batches = [inner.get_batch_records("j", b.id) for b in job_batches(inner, "j")]
    records = [r for batch in batches for r in batch]
    assert [r.index for r in records] == list(range(12))
    assert [r.status for r in records] == [
        RecordStatus.INVALID
        if i in invalid
        else RecordStatus.FAILED
        if i in failed
        else RecordStatus.PROCESSED
        for i in range(12)
    ]
    assert all(r.raw == source[r.index] for r in records)
    assert all(
        r.parsed == Person.model_validate(r.raw).model_dump(mode="json")
        for r in records
        if r.status == RecordStatus.PROCESSED
    )
    assert [r.processing_error for r in records if r.status == RecordStatus.FAILED] == [
        "no 1",
        "no 9",
    ]
    assert [b.processed_count for b in job_batches(inner, "j")] == [2, 3, 2]


def job_batches(store: InMemoryStateStore, job_id: str) -> list[Batch]:
    state = store.get_job_state(job_id)
    assert state is not None
    return state.batches


def test_prepare_copies_each_record_as_it_reads_it() -> None:
    store = InMemoryStateStore()
    reused: dict[str, Any] = {}

    def source() -> Iterator[dict[str, Any]]:
        for i in range(5):  # one dict, changed for each record
            reused["n"] = i
            yield reused

    prepare_job(store, source(), batch_size=5, job_id="j")
    assert [r.raw for r in store.get_pending_records("j")] == [{"n": i} for i in range(5)]


@pytest.mark.parametrize("bulk", [True, False], ids=["save_pending_records", "save_batch_records"])
@pytest.mark.parametrize(
    "bad", [{1: "int key"}, {"x": math.nan}, {"x": (1, 2)}, {"x": {"y": {2}}}, {"x": "\ud800"}]
)
def test_both_prepare_paths_refuse_the_same_records(bulk: bool, bad: dict[Any, Any]) -> None:
    inner = InMemoryStateStore()
    store: Any = inner if bulk else WithoutBulkPath(inner)
    with pytest.raises(InvalidValueError):
        prepare_job(store, iter([{"ok": 1}, bad]), batch_size=5, job_id="bad")
    assert inner.get_job_state("bad") is None and inner.get_pending_records("bad") == []


def test_prepare_source_that_raises_leaves_no_job() -> None:
    store = InMemoryStateStore()

    def source() -> Iterator[dict[str, Any]]:
        yield from numbered(5)
        raise RuntimeError("source broke")

    with pytest.raises(RuntimeError, match="source broke"):
        prepare_job(store, source(), batch_size=2, job_id="broken")
    assert store.get_job_state("broken") is None and store.get_pending_records("broken") == []


@pytest.mark.parametrize("batch_size", [0, -1, 2.5, True, "10"])
def test_prepare_rejects_bad_batch_size_before_writing(batch_size: Any) -> None:
    store = InMemoryStateStore()
    with pytest.raises(InvalidValueError):
        prepare_job(store, numbered(3), batch_size=batch_size, job_id="j")
    assert store.get_job_state("j") is None


@pytest.mark.parametrize("schema", [dict, Person(name="a", age=1), "Person"])
def test_prepare_rejects_a_schema_that_is_not_a_model_class(schema: Any) -> None:
    store = InMemoryStateStore()
    with pytest.raises(InvalidInputError):
        prepare_job(store, numbered(3), schema=schema, job_id="j")
    assert store.get_job_state("j") is None


@pytest.mark.parametrize(
    "config",
    [{"maxRetries": "three"}, {"continue_on_error": 1}, {"extra": math.nan}, ["batchSize", 5]],
)
def test_prepare_rejects_a_bad_config_before_writing(config: Any) -> None:
    store = InMemoryStateStore()
    with pytest.raises(InvalidInputError):
        prepare_job(store, numbered(3), config=config, job_id="j")
    assert store.get_job_state("j") is None and store.get_pending_records("j") == []


def test_prepare_rejects_a_job_id_that_does_not_fit() -> None:
    with pytest.raises(InvalidIdentifierError):
        prepare_job(InMemoryStateStore(), numbered(1), job_id="x" * 37)


def test_job_is_not_claimable_until_every_batch_is_written(store: Store) -> None:
    seen: list[Any] = []

    def source() -> Iterator[dict[str, Any]]:
        yield from numbered(5)
        # Two batches are written by now; a worker arriving early must find nothing to do.
        seen.append(store.claim_batch("early", "w").reason)
        seen.append(Worker(store, noop).run("early"))
        seen.append(store.try_finalize_job("early"))
        yield from numbered(3)

    prepare_job(store, source(), batch_size=2, job_id="early")
    reason, summary, finalized = seen
    assert reason == ClaimFailureReason.JOB_NOT_PROCESSING
    assert (summary.batches, summary.processed, summary.finalized) == (0, 0, False)
    assert finalized is False
    assert Worker(store, noop).run("early").processed == 8


# -- Worker: processing ---------------------------------------------------------------


class AsList(BaseModel):
    n: int

    @model_serializer
    def as_list(self) -> list[int]:
        return [self.n]


def test_a_schema_that_dumps_records_as_no_object_is_refused_before_writing() -> None:
    store = InMemoryStateStore()
    job = prepare_job(store, iter([{"n": 1}, {"n": 2}]), job_id="j")
    with pytest.raises(InvalidInputError, match="AsList dumps a record as list"):
        Worker(store, noop, schema=AsList).run(job.job_id)
    assert [r.raw for r in store.get_pending_records("j")] == [{"n": 1}, {"n": 2}]
    assert store.get_processed_records("j") == []
    state = store.get_job_state("j")
    assert state is not None and state.status == JobStatus.PROCESSING


def test_a_processor_that_keeps_and_changes_its_dicts_does_not_change_what_is_stored() -> None:
    store = InMemoryStateStore()
    job = prepare_job(store, numbered(6), batch_size=6, job_id="j")
    kept: list[dict[str, Any]] = []

    def keeper(record: dict[str, Any], context: ProcessingContext) -> None:
        for earlier in kept:
            earlier["changed later"] = True
        kept.append(record)

    Worker(store, keeper).run(job.job_id)
    stored = store.get_processed_records("j")
    assert [r.raw for r in stored] == list(numbered(6))
    assert [r.parsed for r in stored] == list(numbered(6))


def test_run_processes_every_record_and_finalizes_the_job(store: Store) -> None:
    records = [{"name": f"p{i}", "age": str(20 + i)} for i in range(23)]
    records[4] = {"age": "x"}  # invalid: name missing, age not an int
    records[15]["code"] = "abc"  # invalid: pattern

    def processor(record: dict[str, Any], context: ProcessingContext) -> None:
        if record["name"] == "p9":
            raise ValueError("p9 refused")

    job = prepare_job(store, iter(records), batch_size=5, schema=Person)
    summary = Worker(store, processor, schema=Person).run(job.job_id)
    assert (summary.batches, summary.processed, summary.failed) == (5, 20, 3)
    assert summary.finalized

    state = store.get_job_state(job.job_id)
    assert state is not None and state.status == JobStatus.COMPLETED
    assert [(b.status, b.processed_count, b.failed_count) for b in state.batches] == [
        (BatchStatus.COMPLETED, 4, 1),
        (BatchStatus.COMPLETED, 4, 1),
        (BatchStatus.COMPLETED, 5, 0),
        (BatchStatus.COMPLETED, 4, 1),
        (BatchStatus.COMPLETED, 3, 0),
    ]
    failed = {r.index: r for r in store.get_failed_records(job.job_id)}
    assert sorted(failed) == [4, 9, 15]
    assert failed[4].status == RecordStatus.INVALID and failed[4].raw == {"age": "x"}
    assert [(e.field, e.code) for e in failed[4].errors] == [
        ("name", REQUIRED),
        ("age", TYPE_MISMATCH),
    ]
    assert [(e.field, e.code) for e in failed[15].errors] == [("code", PATTERN_MISMATCH)]
    assert failed[9].status == RecordStatus.FAILED
    assert failed[9].processing_error == "p9 refused"
    processed = store.get_processed_records(job.job_id)
    assert len(processed) == 20
    assert processed[0].parsed == Person(name="p0", age=20).model_dump(mode="json")
    assert processed[0].raw == {"name": "p0", "age": "20"}
    assert store.get_pending_records(job.job_id) == []
    progress = store.get_progress(job.job_id)
    assert (progress.processed_records, progress.failed_records, progress.percentage) == (
        20,
        3,
        100,
    )


def test_processor_receives_parsed_data_and_its_context() -> None:
    store = InMemoryStateStore()
    job = prepare_job(store, iter([{"name": "a", "age": "7", "extra": 1}] * 3), batch_size=2)
    calls: list[tuple[dict[str, Any], ProcessingContext]] = []
    Worker(store, lambda r, c: calls.append((r, c)), schema=Person).run(job.job_id)
    state = store.get_job_state(job.job_id)
    assert state is not None
    expected = Person(name="a", age=7).model_dump(mode="json")
    assert [r for r, _ in calls] == [expected] * 3
    assert [
        (c.job_id, c.batch_id, c.batch_index, c.record_index, c.total_records) for _, c in calls
    ] == [
        (job.job_id, state.batches[0].id, 0, 0, 3),
        (job.job_id, state.batches[0].id, 0, 1, 3),
        (job.job_id, state.batches[1].id, 1, 2, 3),
    ]


def test_processor_without_schema_receives_the_raw_record() -> None:
    store = InMemoryStateStore()
    job = prepare_job(store, iter([{"n": "1", "x": [1]}]))
    seen: list[dict[str, Any]] = []
    Worker(store, lambda r, c: seen.append(r)).run(job.job_id)
    assert seen == [{"n": "1", "x": [1]}]


def test_invalid_records_are_not_processed_and_count_as_failed() -> None:
    store = InMemoryStateStore()
    rows: list[dict[str, Any]] = [{"name": "a", "age": 1}, {"name": "b"}]
    job = prepare_job(store, rows)
    seen: list[str] = []
    result = Worker(store, lambda r, c: seen.append(r["name"]), schema=Person).process_next(
        job.job_id
    )
    assert seen == ["a"]
    assert (result.processed_count, result.failed_count) == (1, 1)
    (invalid,) = store.get_failed_records(job.job_id)
    assert invalid.status == RecordStatus.INVALID and invalid.parsed == {"name": "b"}


def test_processor_exception_fails_only_that_record() -> None:
    store = InMemoryStateStore()
    job = prepare_job(store, numbered(4))

    def processor(record: dict[str, Any], context: ProcessingContext) -> None:
        if record["n"] == 2:
            raise KeyError("missing thing")
        if record["n"] == 3:
            raise RuntimeError()

    result = Worker(store, processor).process_next(job.job_id)
    assert (result.processed_count, result.failed_count) == (2, 2)
    failed = store.get_failed_records(job.job_id)
    assert [(r.index, r.status, r.processing_error) for r in failed] == [
        (2, RecordStatus.FAILED, "'missing thing'"),
        (3, RecordStatus.FAILED, "RuntimeError"),
    ]
    state = store.get_job_state(job.job_id)
    assert state is not None and state.status == JobStatus.COMPLETED


def test_retries_wait_exponentially_then_succeed() -> None:
    store = InMemoryStateStore()
    job = prepare_job(store, numbered(3))
    attempts: list[int] = []
    delays: list[float] = []

    def processor(record: dict[str, Any], context: ProcessingContext) -> None:
        attempts.append(record["n"])
        if record["n"] == 1 and attempts.count(1) <= 3:
            raise ConnectionError("flaky")

    worker = Worker(store, processor, max_retries=5, retry_delay_ms=100, sleep=delays.append)
    result = worker.process_next(job.job_id)
    assert attempts == [0, 1, 1, 1, 1, 2]
    assert delays == [0.1, 0.2, 0.4]
    assert (result.processed_count, result.failed_count, result.retries) == (3, 0, 3)
    assert [r.index for r in store.get_processed_records(job.job_id)] == [0, 1, 2]


def test_retries_exhausted_fail_the_record_with_the_last_error() -> None:
    store = InMemoryStateStore()
    job = prepare_job(store, numbered(2))
    delays: list[float] = []
    events: list[WorkerEvent] = []
    tries = iter(range(100))

    def processor(record: dict[str, Any], context: ProcessingContext) -> None:
        if record["n"] == 0:
            raise TimeoutError(f"try {next(tries)}")

    worker = Worker(
        store,
        processor,
        max_retries=2,
        retry_delay_ms=250,
        sleep=delays.append,
        on_event=events.append,
    )
    result = worker.process_next(job.job_id)
    assert delays == [0.25, 0.5]
    assert (result.processed_count, result.failed_count, result.retries) == (1, 1, 2)
    (failed,) = store.get_failed_records(job.job_id)
    assert failed.processing_error == "try 2"
    (record_failed,) = [e for e in events if isinstance(e, RecordFailed)]
    assert (record_failed.record_index, record_failed.retry_count) == (0, 2)
    assert record_failed.status == RecordStatus.FAILED and record_failed.error == "try 2"


def test_without_retries_a_failure_is_final_at_once() -> None:
    store = InMemoryStateStore()
    job = prepare_job(store, numbered(1))
    delays: list[float] = []
    calls: list[int] = []

    def processor(record: dict[str, Any], context: ProcessingContext) -> None:
        calls.append(1)
        raise ValueError("no")

    Worker(store, processor, sleep=delays.append).run(job.job_id)
    assert (calls, delays) == ([1], [])


def test_continue_on_error_false_fails_the_batch_and_leaves_the_rest_pending(
    store: Store,
) -> None:
    job = prepare_job(store, numbered(12), batch_size=6)
    events: list[WorkerEvent] = []
    seen: list[int] = []

    def processor(record: dict[str, Any], context: ProcessingContext) -> None:
        seen.append(record["n"])
        if record["n"] == 3:
            raise ValueError("stop here")

    worker = Worker(store, processor, continue_on_error=False, on_event=events.append)
    first = worker.process_next(job.job_id)
    assert (first.processed_count, first.failed_count) == (3, 1)
    assert seen == [0, 1, 2, 3]
    summary = worker.run(job.job_id)
    assert summary.finalized and summary.processed == 6

    state = store.get_job_state(job.job_id)
    assert state is not None and state.status == JobStatus.FAILED
    assert [(b.status, b.processed_count, b.failed_count) for b in state.batches] == [
        (BatchStatus.FAILED, 3, 1),
        (BatchStatus.COMPLETED, 6, 0),
    ]
    assert [r.index for r in store.get_pending_records(job.job_id)] == [4, 5]
    assert [r.index for r in store.get_failed_records(job.job_id)] == [3]
    (failed,) = [e for e in events if isinstance(e, BatchFailed)]
    assert (failed.record_index, failed.error, failed.processed_count) == (3, "stop here", 3)


def test_continue_on_error_false_stops_at_an_invalid_record_too() -> None:
    store = InMemoryStateStore()
    rows: list[dict[str, Any]] = [{"name": "a", "age": 1}, {"age": 2}, {"name": "c", "age": 3}]
    job = prepare_job(store, rows)
    result = Worker(store, noop, schema=Person, continue_on_error=False).process_next(job.job_id)
    assert (result.processed_count, result.failed_count) == (1, 1)
    assert [r.index for r in store.get_pending_records(job.job_id)] == [2]
    state = store.get_job_state(job.job_id)
    assert state is not None and state.status == JobStatus.FAILED


# -- Worker: validation codes ----------------------------------------------------------


@pytest.mark.parametrize(
    ("record", "field", "code"),
    [
        ({"age": 1}, "name", REQUIRED),
        ({"name": "a", "age": "old"}, "age", TYPE_MISMATCH),
        ({"name": "a", "age": [1]}, "age", TYPE_MISMATCH),
        ({"name": 5, "age": 1}, "name", TYPE_MISMATCH),
        ({"name": "a", "age": 1, "code": "ab1"}, "code", PATTERN_MISMATCH),
        ({"name": "a", "age": 1, "born": "2024-13-45"}, "born", PATTERN_MISMATCH),
        ({"name": "a", "age": 1, "address": {"zip": "12"}}, "address.zip", PATTERN_MISMATCH),
        ({"name": "a", "age": 1, "address": {}}, "address.zip", REQUIRED),
        ({"name": "a", "age": 1, "tags": [1, "x"]}, "tags.1", TYPE_MISMATCH),
        ({"name": "a", "age": 1, "even": 3}, "even", CUSTOM_VALIDATION),
    ],
)
def test_validation_gives_one_coded_error_with_a_dotted_path(
    record: dict[str, Any], field: str, code: str
) -> None:
    parsed, errors = validate_record(Person, record)
    assert parsed == record
    assert [(e.field, e.code) for e in errors] == [(field, code)]
    (error,) = errors
    assert error.message and error.severity == "error"
    assert error.value == (None if code == REQUIRED else _at(record, field))


def _at(record: dict[str, Any], path: str) -> Any:
    value: Any = record
    for part in path.split("."):
        value = value[int(part)] if isinstance(value, list) else value[part]
    return value


def test_validation_reports_every_problem_of_a_record() -> None:
    record = {"age": "x", "code": "no", "tags": ["a", 2, "b"], "even": 1}
    _, errors = validate_record(Person, record)
    assert [(e.field, e.code) for e in errors] == [
        ("name", REQUIRED),
        ("age", TYPE_MISMATCH),
        ("code", PATTERN_MISMATCH),
        ("tags.0", TYPE_MISMATCH),
        ("tags.2", TYPE_MISMATCH),
        ("even", CUSTOM_VALIDATION),
    ]


class Checked(BaseModel):
    low: int
    high: int
    token: str = "ok"

    @field_validator("token")
    @classmethod
    def _token(cls, value: str) -> str:
        if value == "custom":
            raise PydanticCustomError("token_revoked", "token {token} revoked", {"token": value})
        if value == "assert":
            assert value != "assert", "no asserts"
        if value == "type":
            raise TypeError("not even a ValueError")
        return value

    @model_validator(mode="after")
    def _ordered(self) -> Checked:
        if self.low > self.high:
            raise ValueError("low must not exceed high")
        return self


@pytest.mark.parametrize(
    ("record", "field"),
    [
        ({"low": 2, "high": 1}, ""),
        ({"low": 1, "high": 2, "token": "custom"}, "token"),
        ({"low": 1, "high": 2, "token": "assert"}, "token"),
        ({"low": 1, "high": 2, "token": "type"}, ""),
    ],
)
def test_a_raising_validator_gives_custom_validation(record: dict[str, Any], field: str) -> None:
    _, errors = validate_record(Checked, record)
    assert [(e.field, e.code) for e in errors] == [(field, CUSTOM_VALIDATION)]


def test_valid_record_is_parsed_to_the_models_json_form() -> None:
    record = {"name": "a", "age": "41", "born": "2001-02-03", "extra": True}
    parsed, errors = validate_record(Person, record)
    assert errors == []
    assert parsed == {
        "name": "a",
        "age": 41,
        "code": "AAA",
        "born": "2001-02-03",
        "address": None,
        "tags": [],
        "even": 0,
    }


class Aliased(BaseModel):
    model_config = ConfigDict(serialize_by_alias=True)

    name: str = Field(alias="fullName")
    born: datetime.date
    secret: str = Field(default="s", exclude=True)

    @field_serializer("name")
    def _upper(self, value: str) -> str:
        return value.upper()

    @computed_field  # type: ignore[prop-decorator]
    @property
    def year(self) -> int:
        return self.born.year


class OwnDump(BaseModel):
    """Overrides model_dump: validation must use the override, not the serializer."""

    name: str

    def model_dump(self, **kwargs: Any) -> dict[str, Any]:
        return {**super().model_dump(**kwargs), "dumped_by": "override"}


class OwnValidate(BaseModel):
    name: str

    @classmethod
    def model_validate(cls, obj: Any, **kwargs: Any) -> OwnValidate:
        return super().model_validate({**obj, "name": obj["name"] + "!"}, **kwargs)


@pytest.mark.parametrize("schema", [Person, Aliased])
def test_parsed_form_is_exactly_model_dump_in_json_mode(schema: type[BaseModel]) -> None:
    record = (
        {"name": "a", "age": "41", "born": "2001-02-03"}
        if schema is Person
        else {"fullName": "ann", "born": "2001-02-03", "secret": "x"}
    )
    parsed, errors = validate_record(schema, record)
    assert errors == []
    assert parsed == schema.model_validate(record).model_dump(mode="json")
    if schema is Aliased:
        assert parsed == {"fullName": "ANN", "born": "2001-02-03", "year": 2001}


def test_a_schema_overriding_model_dump_or_model_validate_keeps_its_override() -> None:
    assert validate_record(OwnDump, {"name": "a"}) == ({"name": "a", "dumped_by": "override"}, [])
    assert validate_record(OwnValidate, {"name": "a"}) == ({"name": "a!"}, [])


class Animal(BaseModel):
    """A base whose validator hands some records to a subclass."""

    kind: str

    @model_validator(mode="wrap")
    @classmethod
    def _dispatch(cls, data: Any, handler: Any) -> Any:
        if cls is Animal and isinstance(data, dict) and data.get("kind") == "dog":
            return Dog.model_validate(data)
        if cls is Animal and isinstance(data, dict) and data.get("kind") == "dict":
            return dict(data)  # not a model: nothing to dump
        return handler(data)


class Dog(Animal):
    bark: str


class Reset(BaseModel):
    a: int

    @model_validator(mode="after")
    def _nothing(self) -> Any:
        return None  # a validator that forgets to return the model


def test_what_a_validator_returns_in_the_schemas_place_is_dumped_as_model_dump_would() -> None:
    assert validate_record(Animal, {"kind": "dog", "bark": "woof"}) == (
        {"kind": "dog", "bark": "woof"},
        [],
    )
    assert validate_record(Animal, {"kind": "cat"}) == ({"kind": "cat"}, [])
    for schema, record in ((Animal, {"kind": "dict"}), (Reset, {"a": 1})):
        with pytest.raises(AttributeError):
            schema.model_validate(record).model_dump(mode="json")
        _, errors = validate_record(schema, record)
        assert [(e.field, e.code) for e in errors] == [("", CUSTOM_VALIDATION)]


def test_a_rebuilt_schema_validates_as_it_is_now() -> None:
    model = pydantic.create_model("Rebuilt", a=(int, ...))
    assert validate_record(model, {"a": 1, "b": 2}) == ({"a": 1}, [])
    model.model_config["extra"] = "forbid"
    model.model_rebuild(force=True)
    _, errors = validate_record(model, {"a": 1, "b": 2})
    assert [e.field for e in errors] == ["b"]


class _Unhashable(type(BaseModel)):  # type: ignore[misc]
    def __eq__(cls, other: object) -> bool:
        return cls is other

    __hash__ = None  # type: ignore[assignment]


class Unhashable(BaseModel, metaclass=_Unhashable):
    a: int


def test_a_schema_class_that_cannot_be_hashed_still_validates() -> None:
    assert validate_record(Unhashable, {"a": "3"}) == ({"a": 3}, [])


def test_worker_rejects_a_schema_that_is_not_a_model_class() -> None:
    with pytest.raises(InvalidInputError):
        Worker(InMemoryStateStore(), noop, schema=dict)  # type: ignore[arg-type]


# -- Worker: events, ids, arguments -----------------------------------------------------


def test_events_report_batches_records_and_the_job_summary() -> None:
    store = InMemoryStateStore()
    job = prepare_job(store, numbered(25), batch_size=10)
    events: list[WorkerEvent] = []

    def processor(record: dict[str, Any], context: ProcessingContext) -> None:
        if record["n"] == 12:
            raise ValueError("twelve")

    worker = Worker(store, processor, on_event=events.append)
    worker.run(job.job_id)
    state = store.get_job_state(job.job_id)
    assert state is not None
    ids = [b.id for b in state.batches]
    shape = [
        (type(e).__name__, getattr(e, "batch_id", None), getattr(e, "record_index", None))
        for e in events
    ]
    assert shape == [
        ("BatchClaimed", ids[0], None),
        ("BatchCompleted", ids[0], None),
        ("BatchClaimed", ids[1], None),
        ("RecordFailed", ids[1], 12),
        ("BatchCompleted", ids[1], None),
        ("BatchClaimed", ids[2], None),
        ("BatchCompleted", ids[2], None),
        ("JobCompleted", None, None),
    ]
    assert all(e.job_id == job.job_id and e.worker_id == worker.worker_id for e in events)
    claimed = events[2]
    assert isinstance(claimed, BatchClaimed)
    assert (claimed.batch_index, claimed.record_start_index, claimed.record_end_index) == (
        1,
        10,
        19,
    )
    completed = events[4]
    assert isinstance(completed, BatchCompleted)
    assert (completed.processed_count, completed.failed_count) == (9, 1)
    done = events[-1]
    assert isinstance(done, JobCompleted)
    assert (done.status, done.total, done.processed, done.failed) == (
        JobStatus.COMPLETED,
        25,
        24,
        1,
    )
    assert done.elapsed_ms >= 0


def test_an_exception_in_on_event_is_logged_and_ignored(caplog: pytest.LogCaptureFixture) -> None:
    store = InMemoryStateStore()
    job = prepare_job(store, numbered(6), batch_size=2)

    def on_event(event: WorkerEvent) -> None:
        raise RuntimeError(f"listener broke on {type(event).__name__}")

    with caplog.at_level(logging.ERROR, logger="batchactions_peewee.engine.worker"):
        summary = Worker(store, noop, on_event=on_event).run(job.job_id)
    assert (summary.batches, summary.processed, summary.finalized) == (3, 6, True)
    broke = [r for r in caplog.records if r.exc_info and "listener broke" in str(r.exc_info[1])]
    assert len(broke) == 7  # 3 claimed + 3 completed + 1 job completed
    assert {r.name for r in broke} == {"batchactions_peewee.engine.worker"}


def test_default_worker_ids_are_unique_per_worker_and_fit_the_column() -> None:
    store = InMemoryStateStore()
    ids = {Worker(store, noop).worker_id for _ in range(20)}
    assert len(ids) == 20
    assert all(0 < len(i) <= 128 and f"-{os.getpid()}-" in i for i in ids)


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"worker_id": "w" * 129}, InvalidIdentifierError),
        ({"worker_id": ""}, InvalidIdentifierError),
        ({"max_retries": -1}, InvalidValueError),
        ({"retry_delay_ms": 1.5}, InvalidValueError),
        ({"lease_timeout_ms": 0}, InvalidValueError),
    ],
)
def test_worker_rejects_bad_arguments(kwargs: dict[str, Any], error: type[Exception]) -> None:
    with pytest.raises(error):
        Worker(InMemoryStateStore(), noop, **kwargs)


def test_worker_rejects_a_store_without_the_fenced_methods() -> None:
    class PortOnly:
        claim_batch = get_batch_records = InMemoryStateStore.claim_batch

    with pytest.raises(InvalidInputError, match="heartbeat, complete_batch"):
        Worker(PortOnly(), noop)  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError):
        Worker(InMemoryStateStore(), "not callable")  # type: ignore[arg-type]


def test_unknown_job_raises_job_not_found() -> None:
    worker = Worker(InMemoryStateStore(), noop)
    with pytest.raises(JobNotFoundError):
        worker.process_next("nope")
    with pytest.raises(JobNotFoundError):
        worker.run("nope")


def test_process_next_without_pending_batch_reports_not_claimed() -> None:
    store = InMemoryStateStore()
    job = prepare_job(store, numbered(2))
    worker = Worker(store, noop)
    first = worker.process_next(job.job_id)
    assert first.claimed and first.job_complete and first.finalized
    again = worker.process_next(job.job_id)
    assert not again.claimed and again.job_complete and not again.finalized
    assert again.reason == ClaimFailureReason.JOB_NOT_PROCESSING
    assert again.batch_id is None and again.processed_count == 0


def test_process_next_reports_the_job_incomplete_while_batches_remain() -> None:
    store = InMemoryStateStore()
    job = prepare_job(store, numbered(4), batch_size=2)
    first = Worker(store, noop).process_next(job.job_id)
    assert first.claimed and first.batch_index == 0
    assert not first.job_complete and not first.finalized


# -- Worker: sharing a job ---------------------------------------------------------------


def test_threads_share_a_job_each_record_once_and_one_finalizes() -> None:
    store = InMemoryStateStore()
    job = prepare_job(store, numbered(300), batch_size=10)
    lock = threading.Lock()
    seen: list[int] = []

    def processor(record: dict[str, Any], context: ProcessingContext) -> None:
        with lock:
            seen.append(record["n"])

    summaries = []

    def work(i: int) -> None:
        summaries.append(Worker(store, processor, worker_id=f"t{i}").run(job.job_id))

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(seen) == list(range(300))
    assert sum(s.processed for s in summaries) == 300 and sum(s.batches for s in summaries) == 30
    assert [s.finalized for s in summaries].count(True) == 1


def test_run_reclaims_the_stale_batch_of_a_dead_worker() -> None:
    store = InMemoryStateStore()
    job = prepare_job(store, numbered(30), batch_size=10)
    dead = store.claim_batch(job.job_id, "dead-worker")  # claims batch 0, never finishes
    assert dead.reservation is not None and dead.reservation.batch_index == 0
    worker = Worker(store, noop, lease_timeout_ms=200)
    summary = worker.run(job.job_id)
    assert (summary.batches, summary.processed, summary.finalized) == (3, 30, True)
    state = store.get_job_state(job.job_id)
    assert state is not None and state.status == JobStatus.COMPLETED
    assert state.batches[0].worker_id == worker.worker_id
    assert store.complete_batch(dead.reservation, processed_count=0, failed_count=0) is False


class FakeClock:
    def __init__(self) -> None:
        self.now = 1_700_000_000_000

    def __call__(self) -> int:
        return self.now


class HeartbeatSpy(InMemoryStateStore):
    """Records every lease renewal, so a test can wait for one."""

    def __init__(self, clock: FakeClock) -> None:
        super().__init__(clock=clock)
        self.renewed = threading.Event()

    def heartbeat(self, reservation: BatchReservation) -> bool:
        held = super().heartbeat(reservation)
        self.renewed.set()
        return held


def test_heartbeat_keeps_a_long_batch_from_being_reclaimed() -> None:
    clock = FakeClock()
    store = HeartbeatSpy(clock)
    job = prepare_job(store, numbered(5))
    reclaimed: list[int] = []

    def slow(record: dict[str, Any], context: ProcessingContext) -> None:
        clock.now += 200  # each record takes 200 ms of a 300 ms lease
        store.renewed.clear()
        assert store.renewed.wait(10)
        reclaimed.append(store.reclaim_stale_batches(job.job_id, 300))

    result = Worker(store, slow, lease_timeout_ms=300).process_next(job.job_id)
    assert reclaimed == [0, 0, 0, 0, 0]  # 1000 ms in all, yet the lease held
    assert result.claimed and not result.lease_lost and result.processed_count == 5
    assert result.finalized


def test_one_lease_thread_serves_a_whole_run_and_ends_with_it() -> None:
    clock = FakeClock()
    store = HeartbeatSpy(clock)
    job = prepare_job(store, numbered(6), batch_size=1)
    threads: list[set[threading.Thread]] = []

    def processor(record: dict[str, Any], context: ProcessingContext) -> None:
        threads.append({t for t in threading.enumerate() if t.name.startswith("lease-")})
        if record["n"] == 3:  # a long record: the same thread renews this batch too
            clock.now += 200
            store.renewed.clear()
            assert store.renewed.wait(10)
            assert store.reclaim_stale_batches(job.job_id, 300) == 0

    summary = Worker(store, processor, lease_timeout_ms=300).run(job.job_id)
    assert summary.processed == 6 and summary.finalized
    assert len(threads) == 6 and len(threads[0]) == 1 and all(t == threads[0] for t in threads)
    assert not next(iter(threads[0])).is_alive()
    assert not [t for t in threading.enumerate() if t.name.startswith("lease-")]


class HeartbeatDiesOnce(HeartbeatSpy):
    """The first renewal raises a BaseException, which ends the lease thread."""

    def __init__(self, clock: FakeClock) -> None:
        super().__init__(clock)
        self.attempted = threading.Event()

    def heartbeat(self, reservation: BatchReservation) -> bool:
        if not self.attempted.is_set():
            self.attempted.set()
            raise Crash()
        return super().heartbeat(reservation)


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_a_lease_thread_that_died_loses_its_batch_and_is_replaced_for_the_next() -> None:
    clock = FakeClock()
    store = HeartbeatDiesOnce(clock)
    job = prepare_job(store, numbered(4), batch_size=2)
    seen: list[int] = []

    def processor(record: dict[str, Any], context: ProcessingContext) -> None:
        seen.append(record["n"])
        if len(seen) == 1:
            # Nobody renews this batch's lease now: the worker must give it up.
            assert context.lease_lost.wait(10)
            return
        store.renewed.clear()
        assert store.renewed.wait(10)  # a new thread renews the batch in hand

    summary = Worker(store, processor, lease_timeout_ms=60).run(job.job_id)
    assert (summary.processed, summary.leases_lost, summary.finalized) == (4, 1, True)
    assert seen == [0, 0, 1, 2, 3]  # batch 0 given up before its record 1, then done again


class OverridingStore(InMemoryStateStore):
    """A subclass of ours that overrides port methods: its overrides must be called, not
    the bulk forms it inherits."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[str] = []

    def save_batch_records(
        self, job_id: str, batch_id: str, records: Iterable[ProcessedRecord]
    ) -> None:
        self.calls.append("save_batch_records")
        super().save_batch_records(job_id, batch_id, records)

    def get_batch_records(self, job_id: str, batch_id: str) -> list[ProcessedRecord]:
        self.calls.append("get_batch_records")
        return super().get_batch_records(job_id, batch_id)

    def complete_batch(
        self,
        reservation: BatchReservation,
        *,
        status: BatchStatus = BatchStatus.COMPLETED,
        processed_count: int,
        failed_count: int,
        records: Iterable[ProcessedRecord] = (),
    ) -> bool:
        self.calls.append("complete_batch")
        return super().complete_batch(
            reservation,
            status=status,
            processed_count=processed_count,
            failed_count=failed_count,
            records=records,
        )


def test_a_store_subclass_that_overrides_a_port_method_gets_its_override_called() -> None:
    store = OverridingStore()
    job = prepare_job(store, numbered(4), batch_size=2)
    summary = Worker(store, noop).run(job.job_id)
    assert (summary.processed, summary.finalized) == (4, True)
    assert sorted(store.calls) == sorted(
        ["save_batch_records", "get_batch_records", "complete_batch"] * 2
    )
    assert len(store.get_processed_records(job.job_id)) == 4


class CallCounter(InMemoryStateStore):
    """Counts the reads a worker makes of the job's state."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: dict[str, int] = {}

    def _count(self, name: str) -> None:
        self.calls[name] = self.calls.get(name, 0) + 1

    def try_finalize_job(self, job_id: str) -> bool:
        self._count("try_finalize_job")
        return super().try_finalize_job(job_id)

    def get_distributed_status(self, job_id: str) -> DistributedJobStatus:
        self._count("get_distributed_status")
        return super().get_distributed_status(job_id)


def test_run_reads_the_job_state_once_no_batch_is_left_not_after_every_batch() -> None:
    store = CallCounter()
    job = prepare_job(store, numbered(20), batch_size=1)
    summary = Worker(store, noop).run(job.job_id)
    assert (summary.batches, summary.processed, summary.finalized) == (20, 20, True)
    # Once when the claim finds nothing, once more as run returns (both may finalize).
    assert store.calls == {"try_finalize_job": 2, "get_distributed_status": 1}
    state = store.get_job_state(job.job_id)
    assert state is not None and state.status == JobStatus.COMPLETED


def test_process_next_still_reports_job_complete_and_finalizes_with_the_last_batch() -> None:
    store = CallCounter()
    job = prepare_job(store, numbered(2), batch_size=1)
    worker = Worker(store, noop)
    first = worker.process_next(job.job_id)
    assert first.claimed and not first.job_complete and not first.finalized
    last = worker.process_next(job.job_id)
    assert last.claimed and last.job_complete and last.finalized
    assert not [t for t in threading.enumerate() if t.name.startswith("lease-")]


def test_lost_lease_stops_processing_promptly_and_writes_nothing() -> None:
    store = InMemoryStateStore()
    job = prepare_job(store, numbered(10))
    events: list[WorkerEvent] = []
    seen: list[int] = []
    worker: Worker

    def processor(record: dict[str, Any], context: ProcessingContext) -> None:
        seen.append(record["n"])
        if record["n"] == 2:
            store.release_batch(job.job_id, context.batch_id, worker.worker_id)
            assert context.lease_lost.wait(10)  # the next renewal is refused

    worker = Worker(store, processor, lease_timeout_ms=150, on_event=events.append)
    result = worker.process_next(job.job_id)
    assert seen == [0, 1, 2]
    assert result.claimed and result.lease_lost and not result.finalized
    assert (result.processed_count, result.failed_count) == (0, 0)
    assert [type(e) for e in events] == [BatchClaimed, LeaseLost]
    assert len(store.get_pending_records(job.job_id)) == 10

    summary = Worker(store, noop).run(job.job_id)
    assert (summary.batches, summary.processed, summary.finalized) == (1, 10, True)


def test_a_refused_write_keeps_the_new_owners_results(store: Store) -> None:
    job = prepare_job(store, numbered(5))
    successor_results: list[BatchResult] = []

    def successor(record: dict[str, Any], context: ProcessingContext) -> None:
        if record["n"] == 0:
            raise ValueError("successor failed record 0")

    def slow(record: dict[str, Any], context: ProcessingContext) -> None:
        if record["n"] == 4:
            # The slow worker's batch is taken over and finished behind its back.
            store.release_batch(job.job_id, context.batch_id, slow_worker.worker_id)
            successor_results.append(Worker(store, successor).process_next(job.job_id))
        else:
            raise ValueError("slow worker's result")

    slow_worker = Worker(store, slow)
    result = slow_worker.process_next(job.job_id)
    assert result.claimed and result.lease_lost and result.processed_count == 0
    (taken,) = successor_results
    assert (
        taken.claimed and taken.finalized and (taken.processed_count, taken.failed_count) == (4, 1)
    )
    failed = store.get_failed_records(job.job_id)
    assert [(r.index, r.processing_error) for r in failed] == [(0, "successor failed record 0")]
    assert len(store.get_processed_records(job.job_id)) == 4
    state = store.get_job_state(job.job_id)
    assert state is not None and state.status == JobStatus.COMPLETED
    assert (state.batches[0].processed_count, state.batches[0].failed_count) == (4, 1)


class Crash(BaseException):
    """Stands for KeyboardInterrupt / SystemExit escaping a processor."""


def test_an_escaping_exception_releases_the_batch_and_stops_the_lease_thread() -> None:
    store = InMemoryStateStore()
    job = prepare_job(store, numbered(4), batch_size=2)

    def processor(record: dict[str, Any], context: ProcessingContext) -> None:
        if record["n"] == 1:
            raise Crash()

    with pytest.raises(Crash):
        Worker(store, processor).run(job.job_id)
    state = store.get_job_state(job.job_id)
    assert state is not None
    assert [(b.status, b.worker_id) for b in state.batches] == [(BatchStatus.PENDING, None)] * 2
    assert not [t for t in threading.enumerate() if t.name.startswith("lease-")]
    assert Worker(store, noop).run(job.job_id).processed == 4


def test_stop_makes_run_return_after_the_batch_in_hand() -> None:
    store = InMemoryStateStore()
    job = prepare_job(store, numbered(6), batch_size=2)
    worker: Worker

    def on_event(event: WorkerEvent) -> None:
        if isinstance(event, BatchCompleted):
            worker.stop()

    worker = Worker(store, noop, on_event=on_event)
    summary = worker.run(job.job_id)
    assert (summary.batches, summary.processed, summary.finalized) == (1, 2, False)
    # stop() applies to one run: the next run goes on where it left off.
    worker.on_event = None
    assert worker.run(job.job_id).batches == 2
