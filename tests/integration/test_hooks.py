"""Worker hooks (JobHooks): called in the pipeline's order with each step's data, on every
backend; a hook that raises fails only its record; the store keeps the original raw data."""

from __future__ import annotations

from typing import Any

import pydantic
import pytest

import batchactions_peewee
import batchactions_peewee.engine
from batchactions_peewee import (
    BatchStatus,
    InMemoryStateStore,
    JobHooks,
    ProcessedRecord,
    ProcessingContext,
    RecordFailed,
    RecordStatus,
    Worker,
    WorkerEvent,
    prepare_job,
    prepare_retry_job,
)
from batchactions_peewee.engine.batch import RecordProcessing
from batchactions_peewee.errors import InvalidInputError

from ..support.stores import Store

HOOKS = ("before_validate", "after_validate", "before_process", "after_process")


class Person(pydantic.BaseModel):
    name: str
    age: int


def noop(record: dict[str, Any], context: ProcessingContext) -> None:
    return None


def hooks_with(step: str, hook: Any) -> JobHooks:
    return JobHooks(**{step: hook})


def where(context: ProcessingContext) -> tuple[str, str, int, int]:
    return (context.job_id, context.batch_id, context.record_index, context.total_records)


def test_each_hook_gets_its_steps_data_in_the_pipelines_order(store: Store) -> None:
    rows: list[dict[str, Any]] = [{"name": "a", "age": "1"}, {"name": "b", "age": "x"}]
    job = prepare_job(store, iter(rows), schema=Person)
    calls: list[tuple[str, int, object]] = []
    contexts: dict[str, list[tuple[str, str, int, int]]] = {}

    def log(step: str, index: int, data: object, context: ProcessingContext) -> None:
        calls.append((step, index, data))
        contexts.setdefault(step, []).append(where(context))

    def after_validate(record: ProcessedRecord, context: ProcessingContext) -> None:
        seen = (record.status, record.raw, record.parsed, [e.field for e in record.errors])
        log("after_validate", record.index, seen, context)

    hooks = JobHooks(
        before_validate=lambda raw, c: log("before_validate", c.record_index, dict(raw), c),
        after_validate=after_validate,
        before_process=lambda parsed, c: log("before_process", c.record_index, dict(parsed), c),
        after_process=lambda parsed, c: log("after_process", c.record_index, dict(parsed), c),
    )

    def processor(record: dict[str, Any], context: ProcessingContext) -> None:
        log("processor", context.record_index, dict(record), context)

    summary = Worker(store, processor, schema=Person, hooks=hooks).run(job.job_id)
    assert (summary.processed, summary.failed) == (1, 1)
    valid = {"name": "a", "age": 1}
    assert calls == [
        ("before_validate", 0, {"name": "a", "age": "1"}),
        ("after_validate", 0, (RecordStatus.VALID, rows[0], valid, [])),
        ("before_process", 0, valid),
        ("processor", 0, valid),
        ("after_process", 0, valid),
        # An invalid record is seen by the validate hooks only, with its errors.
        ("before_validate", 1, {"name": "b", "age": "x"}),
        ("after_validate", 1, (RecordStatus.INVALID, rows[1], rows[1], ["age"])),
    ]
    state = store.get_job_state(job.job_id)
    assert state is not None
    batch_id = state.batches[0].id
    # Every hook gets the record's context, the processor's.
    assert contexts["processor"] == [(job.job_id, batch_id, 0, 2)]
    assert contexts["after_process"] == contexts["processor"]
    assert contexts["before_validate"] == [(job.job_id, batch_id, i, 2) for i in (0, 1)]
    assert contexts["after_validate"] == contexts["before_validate"]


@pytest.mark.parametrize("in_place", [False, True], ids=["returned", "in_place"])
def test_before_validate_changes_what_is_validated_not_the_stored_raw(
    store: Store, in_place: bool
) -> None:
    rows: list[dict[str, Any]] = [
        {"name": "a", "age": "7 years", "tags": {"n": [1]}},
        {"name": "b", "age": "x years", "tags": {"n": [2]}},
    ]
    job = prepare_job(store, iter(rows), schema=Person)

    def fix_age(raw: dict[str, Any], context: ProcessingContext) -> dict[str, Any] | None:
        age = raw["age"].removesuffix(" years")
        if in_place:  # the hook's own copy: changing it does not change the stored data
            raw["age"] = age
            raw["tags"]["n"].append("changed")
            return None
        return {**raw, "age": age}

    got: list[dict[str, Any]] = []
    hooks = JobHooks(before_validate=fix_age)
    summary = Worker(store, lambda r, c: got.append(r), schema=Person, hooks=hooks).run(job.job_id)
    assert (summary.processed, summary.failed) == (1, 1)
    assert got == [{"name": "a", "age": 7}]
    (processed,) = store.get_processed_records(job.job_id)
    assert (processed.raw, processed.parsed) == (rows[0], {"name": "a", "age": 7})
    (invalid,) = store.get_failed_records(job.job_id)
    assert invalid.status == RecordStatus.INVALID
    assert [(e.field, e.value) for e in invalid.errors] == [("age", "x")]  # the fixed-up value
    assert (invalid.raw, invalid.parsed) == (rows[1], rows[1])


@pytest.mark.parametrize("in_place", [False, True], ids=["returned", "in_place"])
def test_before_process_changes_what_the_processor_gets_not_the_stored_parsed(
    store: Store, in_place: bool
) -> None:
    rows: list[dict[str, Any]] = [{"name": "a", "age": "1"}, {"name": "b", "age": 2}]
    job = prepare_job(store, iter(rows))

    def greet(parsed: dict[str, Any], context: ProcessingContext) -> dict[str, Any] | None:
        if in_place:
            parsed["greeting"] = f"hi {parsed['name']}"
            return None
        return {**parsed, "greeting": f"hi {parsed['name']}"}

    got: list[dict[str, Any]] = []
    after: list[dict[str, Any]] = []
    hooks = JobHooks(before_process=greet, after_process=lambda p, c: after.append(p))
    Worker(store, lambda r, c: got.append(r), schema=Person, hooks=hooks).run(job.job_id)
    assert got == [
        {"name": "a", "age": 1, "greeting": "hi a"},
        {"name": "b", "age": 2, "greeting": "hi b"},
    ]
    assert after == got and all(a is g for a, g in zip(after, got, strict=True))
    stored = store.get_processed_records(job.job_id)
    assert [r.parsed for r in stored] == [{"name": "a", "age": 1}, {"name": "b", "age": 2}]
    assert [r.raw for r in stored] == rows


def test_before_process_without_a_schema_hands_on_a_copy_of_the_raw_record(store: Store) -> None:
    job = prepare_job(store, iter([{"n": 1, "deep": {"x": [1]}}]))

    def change(parsed: dict[str, Any], context: ProcessingContext) -> None:
        parsed["deep"]["x"].append(2)

    got: list[dict[str, Any]] = []
    Worker(store, lambda r, c: got.append(r), hooks=JobHooks(before_process=change)).run(job.job_id)
    assert got == [{"n": 1, "deep": {"x": [1, 2]}}]
    (stored,) = store.get_processed_records(job.job_id)
    assert stored.raw == stored.parsed == {"n": 1, "deep": {"x": [1]}}


@pytest.mark.parametrize("failing", HOOKS)
def test_a_raising_hook_fails_only_its_record_and_is_not_retried(
    store: Store, failing: str
) -> None:
    rows = [{"name": f"p{i}", "age": i} for i in range(4)]
    job = prepare_job(store, iter(rows), batch_size=2, schema=Person)
    hook_calls: list[int] = []
    processed: list[int] = []

    def hook(record: Any, context: ProcessingContext) -> None:
        hook_calls.append(context.record_index)
        if context.record_index == 1:
            raise ValueError(f"{failing} refused record 1")

    def processor(record: dict[str, Any], context: ProcessingContext) -> None:
        processed.append(context.record_index)

    events: list[WorkerEvent] = []
    worker = Worker(
        store,
        processor,
        schema=Person,
        max_retries=2,
        sleep=lambda s: None,
        hooks=hooks_with(failing, hook),
        on_event=events.append,
    )
    summary = worker.run(job.job_id)
    assert (summary.processed, summary.failed, summary.retries) == (3, 1, 0)
    assert hook_calls == [0, 1, 2, 3]  # once each: a hook is not retried
    # Before the processor, a failing hook keeps the record from it; after_process runs
    # once the processor succeeded, and it is not run again.
    assert processed == ([0, 1, 2, 3] if failing == "after_process" else [0, 2, 3])
    (failed,) = store.get_failed_records(job.job_id)
    assert (failed.index, failed.status, failed.processing_error) == (
        1,
        RecordStatus.FAILED,
        f"{failing} refused record 1",
    )
    assert failed.errors == [] and failed.raw == rows[1]
    assert [r.index for r in store.get_processed_records(job.job_id)] == [0, 2, 3]
    state = store.get_job_state(job.job_id)
    assert state is not None
    assert [(b.status, b.processed_count, b.failed_count) for b in state.batches] == [
        (BatchStatus.COMPLETED, 1, 1),
        (BatchStatus.COMPLETED, 2, 0),
    ]
    (event,) = [e for e in events if isinstance(e, RecordFailed)]
    assert (event.record_index, event.error) == (1, f"{failing} refused record 1")


def test_after_validate_that_raises_fails_an_invalid_record_too(store: Store) -> None:
    rows: list[dict[str, Any]] = [{"name": "a"}, {"name": "b", "age": 2}]
    job = prepare_job(store, iter(rows), schema=Person)

    def refuse_invalid(record: ProcessedRecord, context: ProcessingContext) -> None:
        if record.status == RecordStatus.INVALID:
            raise RuntimeError(f"{len(record.errors)} problem(s)")

    hooks = JobHooks(after_validate=refuse_invalid)
    summary = Worker(store, noop, schema=Person, hooks=hooks).run(job.job_id)
    assert (summary.processed, summary.failed) == (1, 1)
    (failed,) = store.get_failed_records(job.job_id)
    assert (failed.index, failed.status, failed.processing_error) == (
        0,
        RecordStatus.FAILED,
        "1 problem(s)",
    )


@pytest.mark.parametrize("step", ["before_validate", "before_process"])
def test_a_before_hook_that_returns_no_dict_fails_its_record(store: Store, step: str) -> None:
    job = prepare_job(store, iter([{"name": "a", "age": 1}, {"name": "b", "age": 2}]))

    def hook(record: dict[str, Any], context: ProcessingContext) -> Any:
        return ["not", "a", "dict"] if context.record_index == 0 else None

    summary = Worker(store, noop, schema=Person, hooks=hooks_with(step, hook)).run(job.job_id)
    assert (summary.processed, summary.failed) == (1, 1)
    (failed,) = store.get_failed_records(job.job_id)
    assert (failed.index, failed.processing_error) == (
        0,
        f"{step} must return a dict or None, got list",
    )


def test_a_failing_hook_with_continue_on_error_false_fails_the_batch(store: Store) -> None:
    job = prepare_job(store, iter([{"name": f"p{i}", "age": i} for i in range(3)]))

    def refuse_first(parsed: dict[str, Any], context: ProcessingContext) -> None:
        if context.record_index == 0:
            raise ValueError("first refused")

    hooks = JobHooks(before_process=refuse_first)
    worker = Worker(store, noop, schema=Person, continue_on_error=False, hooks=hooks)
    result = worker.process_next(job.job_id)
    assert (result.processed_count, result.failed_count) == (0, 1)
    state = store.get_job_state(job.job_id)
    assert state is not None and state.batches[0].status == BatchStatus.FAILED
    assert [r.index for r in store.get_pending_records(job.job_id)] == [1, 2]


def test_a_retry_job_runs_from_the_original_raw_data(store: Store) -> None:
    rows = [{"name": "a", "age": "1"}, {"name": "b", "age": "2"}]
    job = prepare_job(store, iter(rows), schema=Person)

    def rename(raw: dict[str, Any], context: ProcessingContext) -> dict[str, Any]:
        return {**raw, "name": raw["name"].upper()}

    def refuse_b(record: dict[str, Any], context: ProcessingContext) -> None:
        if record["name"] == "B":
            raise ValueError("B refused")

    hooks = JobHooks(before_validate=rename)
    Worker(store, refuse_b, schema=Person, hooks=hooks).run(job.job_id)
    retry = prepare_retry_job(store, job.job_id)
    assert [r.raw for r in store.get_pending_records(retry.job_id)] == [rows[1]]


def test_no_hooks_leave_the_pipeline_as_it_was(store: Store) -> None:
    rows: list[dict[str, Any]] = [{"name": "a", "age": "1"}, {"age": "x"}, {"name": "c", "age": 3}]

    def refuse_c(record: dict[str, Any], context: ProcessingContext) -> None:
        if record["name"] == "c":
            raise ValueError("c refused")

    outcomes = []
    for options in ({}, {"hooks": None}, {"hooks": JobHooks()}):
        job = prepare_job(store, iter(rows), schema=Person)
        worker = Worker(store, refuse_c, schema=Person, **options)
        # The plain pipeline, not the hooked one with nothing to call.
        assert type(worker._record_processing()) is RecordProcessing
        summary = worker.run(job.job_id)
        records = store.get_processed_records(job.job_id) + store.get_failed_records(job.job_id)
        outcomes.append((summary.processed, summary.failed, [r.model_dump() for r in records]))
    assert outcomes[0] == outcomes[1] == outcomes[2]
    processed, failed, dumps = outcomes[0]
    assert (processed, failed) == (1, 2)
    assert [(r["index"], r["status"], r["parsed"]) for r in dumps] == [
        (0, RecordStatus.PROCESSED, {"name": "a", "age": 1}),
        (1, RecordStatus.INVALID, {"age": "x"}),
        (2, RecordStatus.FAILED, {"name": "c", "age": 3}),
    ]


# -- arguments ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "make",
    [
        lambda: "not hooks",
        lambda: {"before_process": noop},
        lambda: JobHooks(before_validate=lambda r, c: None),  # no schema to validate with
        lambda: JobHooks(after_validate=lambda r, c: None),
    ],
)
def test_worker_refuses_hooks_it_could_not_call(make: Any) -> None:
    with pytest.raises(InvalidInputError):
        Worker(InMemoryStateStore(), noop, hooks=make())


def test_job_hooks_refuse_what_is_not_callable() -> None:
    with pytest.raises(InvalidInputError, match="after_process must be callable"):
        JobHooks(after_process="print")  # type: ignore[arg-type]


def test_job_hooks_are_public_names() -> None:
    assert batchactions_peewee.JobHooks is batchactions_peewee.engine.JobHooks is JobHooks
    assert "JobHooks" in batchactions_peewee.__all__
    assert "JobHooks" in batchactions_peewee.engine.__all__
