"""Batch processors (SPEC §7): one call per batch with its valid records, on every backend;
and, with ``transactional=True``, the call and the batch's fenced completion in one
transaction on each database backend, so that a completion fenced off rolls back what the
processor wrote.

The exactly-once proof under SIGKILLs is tests/integration/test_exactly_once.py.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import pytest

from batchactions_peewee import (
    BatchCompleted,
    BatchContext,
    BatchFailed,
    BatchStatus,
    InMemoryStateStore,
    JobHooks,
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
from batchactions_peewee.errors import InvalidInputError

from ..support.imports import Numbered, counts, importer, user_table
from ..support.stores import (
    ALL_BACKENDS,
    PEEWEE_BACKENDS,
    SERVER_KINDS,
    Store,
    new_prefix,
    open_store,
    same_tables,
)


def numbers(count: int, invalid: tuple[int, ...] = ()) -> Iterator[dict[str, Any]]:
    """``{"n": i}``, or ``{"n": "x<i>"}`` (which Numbered refuses) for the ``invalid`` ones."""
    return ({"n": f"x{i}" if i in invalid else i} for i in range(count))


def batch_ids(store: Store, job_id: str) -> list[str]:
    job = store.get_job_state(job_id)
    assert job is not None
    return [b.id for b in job.batches]


def statuses(store: Store, job_id: str) -> dict[int, RecordStatus]:
    records = store.get_processed_records(job_id) + store.get_failed_records(job_id)
    records += store.get_pending_records(job_id)
    return {r.index: RecordStatus(r.status) for r in records}


def database_of(store: Store) -> Any:
    return store.database if isinstance(store, PeeweeStateStore) else None


Calls = list[tuple[list[dict[str, Any]], BatchContext]]


def recording(
    calls: Calls, answer: Callable[[BatchContext], Mapping[int, str] | None] = lambda c: None
) -> Callable[[list[dict[str, Any]], BatchContext], Mapping[int, str] | None]:
    def batch_processor(
        records: list[dict[str, Any]], context: BatchContext
    ) -> Mapping[int, str] | None:
        calls.append(([dict(r) for r in records], context))
        return answer(context)

    return batch_processor


def take_over(store: Store, context: BatchContext | ProcessingContext) -> None:
    """What a reclaim and another worker's claim do to the batch in hand (as the stale
    worker's lease ran out): PENDING again with version + 1, then claimed by "rival"."""
    worker_id = context.worker_id if isinstance(context, BatchContext) else "w-tx"
    store.release_batch(context.job_id, context.batch_id, worker_id)
    assert store.claim_batch(context.job_id, "rival").claimed


# -- what the batch processor gets and answers -----------------------------------------------


def test_a_batch_processor_gets_the_valid_records_in_order_with_their_context(
    store: Store,
) -> None:
    job = prepare_job(store, numbers(7, invalid=(2, 5)), batch_size=4)
    calls: Calls = []
    worker = Worker(store, batch_processor=recording(calls), schema=Numbered, worker_id="w-b")
    summary = worker.run(job.job_id)

    first, second = batch_ids(store, job.job_id)
    db = database_of(store)
    assert calls == [
        ([{"n": 0}, {"n": 1}, {"n": 3}], BatchContext(job.job_id, first, 0, (0, 1, 3), "w-b", db)),
        ([{"n": 4}, {"n": 6}], BatchContext(job.job_id, second, 1, (4, 6), "w-b", db)),
    ]
    assert all(context.database is db for _, context in calls)
    assert (summary.batches, summary.processed, summary.failed) == (2, 5, 2)
    assert statuses(store, job.job_id) == {
        i: RecordStatus.INVALID if i in (2, 5) else RecordStatus.PROCESSED for i in range(7)
    }
    (invalid, _) = store.get_failed_records(job.job_id)
    assert invalid.raw == {"n": "x2"} and invalid.errors[0].field == "n", "stored as today"
    state = store.get_job_state(job.job_id)
    assert state is not None and state.status == JobStatus.COMPLETED


def test_without_a_schema_the_batch_processor_gets_the_raw_records(store: Store) -> None:
    job = prepare_job(store, ({"n": i, "tag": "t"} for i in range(3)))
    calls: Calls = []
    Worker(store, batch_processor=recording(calls)).run(job.job_id)
    assert [records for records, _ in calls] == [[{"n": i, "tag": "t"} for i in range(3)]]
    assert [r.parsed for r in store.get_processed_records(job.job_id)] == [
        {"n": i, "tag": "t"} for i in range(3)
    ]


def test_a_mapping_fails_exactly_those_records_with_those_messages(store: Store) -> None:
    job = prepare_job(store, numbers(6), batch_size=3)
    events: list[WorkerEvent] = []
    refused = {1: "no stock", 4: "unknown sku", 5: ""}

    def answer(context: BatchContext) -> Mapping[int, str]:
        return {i: refused[i] for i in context.record_indexes if i in refused}

    worker = Worker(store, batch_processor=recording([], answer), on_event=events.append)
    summary = worker.run(job.job_id)
    assert (summary.processed, summary.failed, summary.retries) == (3, 3, 0)
    failed = {r.index: r.processing_error for r in store.get_failed_records(job.job_id)}
    assert failed == {1: "no stock", 4: "unknown sku", 5: "failed by the batch processor"}
    assert [r.index for r in store.get_processed_records(job.job_id)] == [0, 2, 3]
    reported = [(e.record_index, e.status, e.error) for e in events if isinstance(e, RecordFailed)]
    assert reported == [
        (1, RecordStatus.FAILED, "no stock"),
        (4, RecordStatus.FAILED, "unknown sku"),
        (5, RecordStatus.FAILED, "failed by the batch processor"),
    ]
    written = [
        (e.batch_index, e.processed_count, e.failed_count)
        for e in events
        if isinstance(e, BatchCompleted)
    ]
    assert written == [(0, 2, 1), (1, 1, 2)]


def test_a_batch_processor_that_raises_fails_every_record_after_its_retries(store: Store) -> None:
    job = prepare_job(store, numbers(4, invalid=(1,)), batch_size=4)
    calls: list[int] = []
    delays: list[float] = []
    events: list[WorkerEvent] = []

    def batch_processor(records: list[dict[str, Any]], context: BatchContext) -> None:
        calls.append(len(records))
        raise TimeoutError(f"try {len(calls) - 1}")

    worker = Worker(
        store,
        batch_processor=batch_processor,
        schema=Numbered,
        max_retries=2,
        retry_delay_ms=100,
        sleep=delays.append,
        on_event=events.append,
    )
    result = worker.process_next(job.job_id)
    assert calls == [3, 3, 3], "one call, then two retries, each with the 3 valid records"
    assert delays == [0.1, 0.2], "exponential backoff, as for a record processor"
    assert (result.processed_count, result.failed_count, result.retries) == (0, 4, 2)
    assert result.job_complete
    assert statuses(store, job.job_id) == {
        0: RecordStatus.FAILED,
        1: RecordStatus.INVALID,
        2: RecordStatus.FAILED,
        3: RecordStatus.FAILED,
    }
    errors = {r.index: r.processing_error for r in store.get_failed_records(job.job_id)}
    assert errors == {0: "try 2", 1: None, 2: "try 2", 3: "try 2"}
    failed = [(e.record_index, e.retry_count) for e in events if isinstance(e, RecordFailed)]
    assert failed == [(1, 0), (0, 2), (2, 2), (3, 2)], "the invalid one as it was validated"


def test_a_batch_processor_retried_until_it_succeeds_processes_its_records() -> None:
    store = InMemoryStateStore()
    job = prepare_job(store, numbers(3))
    calls: list[int] = []

    def batch_processor(records: list[dict[str, Any]], context: BatchContext) -> None:
        calls.append(len(records))
        if len(calls) < 3:
            raise ConnectionError("flaky")

    worker = Worker(store, batch_processor=batch_processor, max_retries=5, sleep=lambda s: None)
    result = worker.process_next(job.job_id)
    assert calls == [3, 3, 3]
    assert (result.processed_count, result.failed_count, result.retries) == (3, 0, 2)
    assert [r.index for r in store.get_processed_records(job.job_id)] == [0, 1, 2]


@pytest.mark.parametrize(
    ("answer", "message"),
    [
        ({99: "no"}, "batch_processor returned record index 99, which is not one of"),
        ({True: "no"}, "batch_processor returned record index True, which is not one of"),
        ({0: 42}, "batch_processor returned int as the message of record 0: expected a string"),
        ([0], "batch_processor returned list: expected None or a mapping"),
    ],
)
def test_an_answer_that_is_no_mapping_of_its_records_fails_the_batch_without_retries(
    answer: object, message: str, caplog: pytest.LogCaptureFixture
) -> None:
    store = InMemoryStateStore()
    job = prepare_job(store, numbers(3))
    calls: list[int] = []

    def batch_processor(records: list[dict[str, Any]], context: BatchContext) -> Any:
        calls.append(1)
        return answer

    worker = Worker(store, batch_processor=batch_processor, max_retries=3, sleep=lambda s: None)
    with caplog.at_level(logging.ERROR):
        result = worker.process_next(job.job_id)
    assert calls == [1], "a wrong answer is a bug, not a flaky call: no retries"
    assert (result.processed_count, result.failed_count) == (0, 3)
    errors = [r.processing_error or "" for r in store.get_failed_records(job.job_id)]
    assert len(errors) == 3 and all(e.startswith(message) for e in errors), errors
    assert message in caplog.text


# -- the Worker's arguments --------------------------------------------------------------------


def _noop(record: dict[str, Any], context: ProcessingContext) -> None:
    return None


def _nothing(records: list[dict[str, Any]], context: BatchContext) -> None:
    return None


async def _nothing_async(records: list[dict[str, Any]], context: BatchContext) -> None:
    return None


@pytest.mark.parametrize(
    ("args", "kwargs", "message"),
    [
        ((), {}, "exactly one of processor"),
        ((_noop,), {"batch_processor": _nothing}, "exactly one of processor"),
        ((None,), {"batch_processor": None}, "exactly one of processor"),
        (("nope",), {}, "processor must be callable"),
        ((), {"batch_processor": 42}, "batch_processor must be callable"),
        ((), {"batch_processor": _nothing, "transactional": True}, "needs a PeeweeStateStore"),
        ((), {"batch_processor": _nothing, "transactional": "yes"}, "True or False"),
        ((), {"batch_processor": _nothing, "concurrency": 8}, "gets the whole batch in one"),
        ((), {"batch_processor": _nothing_async}, "plain function, not async def"),
        # The settings are checked first, as they always were: this names the concurrency.
        ((), {"batch_processor": _nothing_async, "concurrency": 2}, "gets the whole batch"),
    ],
)
def test_a_worker_takes_exactly_one_processor_and_transactional_only_where_it_holds(
    args: tuple[Any, ...], kwargs: dict[str, Any], message: str
) -> None:
    with pytest.raises(InvalidInputError, match=message):
        Worker(InMemoryStateStore(), *args, **kwargs)


def test_a_record_processor_is_still_the_second_positional_argument() -> None:
    store = InMemoryStateStore()
    job = prepare_job(store, numbers(2))
    worker = Worker(store, _noop)
    assert (worker.processor, worker.batch_processor) == (_noop, None)
    assert worker.run(job.job_id).processed == 2


def test_transactional_is_refused_for_a_record_processor_and_a_store_that_overrides_completion(
    url_for: Callable[[str], str],
) -> None:
    class Audited(PeeweeStateStore):
        def complete_batch(self, *args: Any, **kwargs: Any) -> bool:
            return super().complete_batch(*args, **kwargs)

    with open_store("sqlite", url_for) as store:
        assert isinstance(store, PeeweeStateStore)
        with pytest.raises(InvalidInputError, match="transactional=True is for a batch_processor"):
            Worker(store, _noop, transactional=True)
        Worker(store, batch_processor=_nothing, transactional=True)  # ours: fine
        audited = Audited(store.database, table_prefix=store.table_prefix)
        with pytest.raises(InvalidInputError, match=r"needs a PeeweeStateStore.*not Audited"):
            Worker(audited, batch_processor=_nothing, transactional=True)
        Worker(audited, batch_processor=_nothing)  # through the port methods: fine


# -- hooks -------------------------------------------------------------------------------------


def test_hooks_run_per_record_around_one_call_of_the_batch_processor(store: Store) -> None:
    rows: list[dict[str, Any]] = [{"n": 0}, {"n": "x"}, {"n": 2}, {"n": 3}, {"n": 4}]
    job = prepare_job(store, iter(rows))
    steps: list[tuple[str, int]] = []

    def before_process(parsed: dict[str, Any], context: ProcessingContext) -> dict[str, Any]:
        steps.append(("before_process", context.record_index))
        if parsed["n"] == 3:
            raise ValueError("three is refused before the call")
        return {**parsed, "seen": True}

    def after_process(given: dict[str, Any], context: ProcessingContext) -> None:
        steps.append(("after_process", context.record_index))
        assert given["seen"] is True
        if given["n"] == 4:
            raise ValueError("four is refused after the call")

    hooks = JobHooks(
        before_validate=lambda raw, c: steps.append(("before_validate", c.record_index)),
        after_validate=lambda record, c: steps.append(("after_validate", c.record_index)),
        before_process=before_process,
        after_process=after_process,
    )
    calls: Calls = []

    def answer(context: BatchContext) -> dict[int, str]:
        steps.append(("batch_processor", len(context.record_indexes)))
        return {2: "two is refused by the processor"}

    worker = Worker(store, batch_processor=recording(calls, answer), schema=Numbered, hooks=hooks)
    summary = worker.run(job.job_id)
    assert [records for records, _ in calls] == [[{"n": n, "seen": True} for n in (0, 2, 4)]]
    assert steps == [
        ("before_validate", 0),
        ("after_validate", 0),
        ("before_process", 0),
        ("before_validate", 1),
        ("after_validate", 1),  # invalid: not handed on
        ("before_validate", 2),
        ("after_validate", 2),
        ("before_process", 2),
        ("before_validate", 3),
        ("after_validate", 3),
        ("before_process", 3),
        ("before_validate", 4),
        ("after_validate", 4),
        ("before_process", 4),
        ("batch_processor", 3),
        ("after_process", 0),
        ("after_process", 4),
    ], "after_process only for the records the processor did not fail"
    assert (summary.processed, summary.failed) == (1, 4)
    errors = {r.index: r.processing_error for r in store.get_failed_records(job.job_id)}
    assert errors == {
        1: None,
        2: "two is refused by the processor",
        3: "three is refused before the call",
        4: "four is refused after the call",
    }
    (processed,) = store.get_processed_records(job.job_id)
    assert (processed.raw, processed.parsed) == ({"n": 0}, {"n": 0}), "hooks' dicts not stored"


# -- continue_on_error=False -----------------------------------------------------------------


def test_without_continue_on_error_an_invalid_record_ends_its_batch_there(store: Store) -> None:
    job = prepare_job(store, numbers(8, invalid=(2,)), batch_size=4)
    calls: Calls = []
    events: list[WorkerEvent] = []
    worker = Worker(
        store,
        batch_processor=recording(calls),
        schema=Numbered,
        continue_on_error=False,
        on_event=events.append,
    )
    summary = worker.run(job.job_id)
    assert [context.record_indexes for _, context in calls] == [(0, 1), (4, 5, 6, 7)]
    assert [r.index for r in store.get_pending_records(job.job_id)] == [3]
    state = store.get_job_state(job.job_id)
    assert state is not None and state.status == JobStatus.FAILED
    assert [b.status for b in state.batches] == [BatchStatus.FAILED, BatchStatus.COMPLETED]
    (failed,) = [e for e in events if isinstance(e, BatchFailed)]
    assert (failed.record_index, failed.processed_count, failed.failed_count) == (2, 2, 1)
    assert (summary.processed, summary.failed) == (6, 1)


def test_without_continue_on_error_a_record_the_processor_fails_fails_the_batch(
    store: Store,
) -> None:
    job = prepare_job(store, numbers(4))
    events: list[WorkerEvent] = []
    worker = Worker(
        store,
        batch_processor=recording([], lambda c: {2: "late", 1: "early"}),
        continue_on_error=False,
        on_event=events.append,
    )
    result = worker.process_next(job.job_id)
    assert (result.processed_count, result.failed_count) == (2, 2)
    (failed,) = [e for e in events if isinstance(e, BatchFailed)]
    assert (failed.record_index, failed.error) == (1, "early"), "the first failed record"
    state = store.get_job_state(job.job_id)
    assert state is not None and state.status == JobStatus.FAILED


def test_a_batch_without_a_valid_record_is_written_without_calling_the_processor(
    store: Store,
) -> None:
    job = prepare_job(store, numbers(2, invalid=(0, 1)))
    calls: Calls = []
    summary = Worker(store, batch_processor=recording(calls), schema=Numbered).run(job.job_id)
    assert calls == []
    assert (summary.batches, summary.processed, summary.failed) == (1, 0, 2)


# -- leases ------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ALL_BACKENDS)
def test_the_retry_wait_ends_when_the_batch_is_taken_over(
    kind: str, url_for: Callable[[str], str]
) -> None:
    with open_store(kind, url_for) as store:
        job = prepare_job(store, numbers(3))
        calls: list[int] = []
        events: list[WorkerEvent] = []

        def batch_processor(records: list[dict[str, Any]], context: BatchContext) -> None:
            calls.append(1)
            take_over(store, context)
            raise ConnectionError("the CRM is down")

        worker = Worker(
            store,
            batch_processor=batch_processor,
            max_retries=3,
            retry_delay_ms=60_000,
            lease_timeout_ms=300,  # renewed every 0.1 s: the refusal ends the wait
            on_event=events.append,
        )
        started = time.monotonic()
        result = worker.process_next(job.job_id)
        assert time.monotonic() - started < 30, "the 60 s wait before the retry was cut short"
        assert calls == [1]
        assert (result.lease_lost, result.processed_count, result.failed_count) == (True, 0, 0)
        assert [type(e) for e in events if isinstance(e, LeaseLost)] == [LeaseLost]
        assert store.get_distributed_status(job.job_id).processing_batches == 1, "the rival's"


# -- transactional ---------------------------------------------------------------------------


@pytest.mark.parametrize("kind", PEEWEE_BACKENDS)
def test_transactional_writes_commit_with_the_batch(
    kind: str, url_for: Callable[[str], str]
) -> None:
    with open_store(kind, url_for) as store:
        assert isinstance(store, PeeweeStateStore)
        with user_table(store.database, f"{new_prefix()}imported") as table:
            job = prepare_job(store, numbers(25, invalid=(3, 17)), batch_size=10)
            worker = Worker(
                store, batch_processor=importer(table), schema=Numbered, transactional=True
            )
            summary = worker.run(job.job_id)
            assert (summary.batches, summary.processed, summary.failed) == (3, 23, 2)
            assert counts(store.database, table) == (23, 23)
            state = store.get_job_state(job.job_id)
            assert state is not None and state.status == JobStatus.COMPLETED


@pytest.mark.parametrize("kind", PEEWEE_BACKENDS)
def test_transactional_workers_that_read_before_they_write_import_each_record_once(
    kind: str, url_for: Callable[[str], str]
) -> None:
    # On SQLite the processor's transaction takes the write lock at its first write; a
    # read before it can make that write fail busy (another worker wrote meanwhile),
    # and the whole transaction is run again: each record still lands once.
    with open_store(kind, url_for) as store:
        assert isinstance(store, PeeweeStateStore)
        with user_table(store.database, f"{new_prefix()}imported") as table:
            job = prepare_job(store, numbers(200), batch_size=5)
            seen: list[int] = []

            def count_first(records: list[dict[str, Any]], context: BatchContext) -> None:
                with context.database.bind_ctx([table]):
                    seen.append(table.select().count())

            def run() -> None:
                worker = Worker(
                    store, batch_processor=importer(table, count_first), transactional=True
                )
                summaries.append(worker.run(job.job_id))
                store.database.close()

            summaries: list[Any] = []
            threads = [threading.Thread(target=run) for _ in range(4)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(timeout=120)
            assert len(summaries) == 4
            assert sum(s.processed for s in summaries) == 200
            assert sum(s.batches for s in summaries) == 40
            assert counts(store.database, table) == (200, 200)
            assert len(seen) >= 40
            state = store.get_job_state(job.job_id)
            assert state is not None and state.status == JobStatus.COMPLETED


@pytest.mark.parametrize("kind", PEEWEE_BACKENDS)
def test_transactional_retries_roll_back_the_failed_attempts_writes(
    kind: str, url_for: Callable[[str], str]
) -> None:
    with open_store(kind, url_for) as store:
        assert isinstance(store, PeeweeStateStore)
        with user_table(store.database, f"{new_prefix()}imported") as table:
            job = prepare_job(store, numbers(6), batch_size=3)
            tries: dict[int, int] = {}

            def fail_twice(records: list[dict[str, Any]], context: BatchContext) -> None:
                tries[context.batch_index] = tries.get(context.batch_index, 0) + 1
                if tries[context.batch_index] <= 2:
                    raise ConnectionError("after the insert")

            worker = Worker(
                store,
                batch_processor=importer(table, fail_twice),
                transactional=True,
                max_retries=2,
                sleep=lambda s: None,
            )
            summary = worker.run(job.job_id)
            assert tries == {0: 3, 1: 3}
            assert (summary.processed, summary.failed, summary.retries) == (6, 0, 4)
            assert counts(store.database, table) == (6, 6), "each failed attempt rolled back"


@pytest.mark.parametrize("kind", PEEWEE_BACKENDS)
def test_transactional_processor_that_keeps_raising_writes_nothing_and_fails_its_records(
    kind: str, url_for: Callable[[str], str]
) -> None:
    with open_store(kind, url_for) as store:
        assert isinstance(store, PeeweeStateStore)
        with user_table(store.database, f"{new_prefix()}imported") as table:
            job = prepare_job(store, numbers(4, invalid=(0,)))
            calls: list[int] = []

            def always(records: list[dict[str, Any]], context: BatchContext) -> None:
                calls.append(1)
                raise RuntimeError("the ledger refused")

            worker = Worker(
                store,
                batch_processor=importer(table, always),
                schema=Numbered,
                transactional=True,
                max_retries=1,
                sleep=lambda s: None,
            )
            summary = worker.run(job.job_id)
            assert calls == [1, 1]
            assert (summary.batches, summary.processed, summary.failed) == (1, 0, 4)
            assert counts(store.database, table) == (0, 0)
            errors = {r.index: r.processing_error for r in store.get_failed_records(job.job_id)}
            refused = "the ledger refused"
            assert errors == {0: None, 1: refused, 2: refused, 3: refused}


def _take_over(
    store: PeeweeStateStore, url: str, context: BatchContext | ProcessingContext
) -> None:
    """Another worker takes the batch over, on a connection of its own."""
    with same_tables(store, url) as rival:
        take_over(rival, context)


@pytest.mark.parametrize("kind", PEEWEE_BACKENDS)
def test_transactional_writes_roll_back_when_the_batch_was_taken_over(
    kind: str, url_for: Callable[[str], str]
) -> None:
    url = url_for(kind)
    with open_store(kind, lambda _: url) as store:
        assert isinstance(store, PeeweeStateStore)
        with user_table(store.database, f"{new_prefix()}imported") as table:
            job = prepare_job(store, numbers(5))
            events: list[WorkerEvent] = []

            def taken_over(records: list[dict[str, Any]], context: BatchContext) -> None:
                # On a server, mid-transaction. SQLite's transaction holds the write lock,
                # which another worker cannot take meanwhile: there the takeover happens
                # just before, in before_process.
                if kind in SERVER_KINDS:
                    _take_over(store, url, context)

            def before_process(parsed: dict[str, Any], context: ProcessingContext) -> None:
                if kind not in SERVER_KINDS and context.record_index == 0:
                    _take_over(store, url, context)

            worker = Worker(
                store,
                batch_processor=importer(table, taken_over),
                transactional=True,
                worker_id="w-tx",
                hooks=JobHooks(before_process=before_process),
                on_event=events.append,
            )
            result = worker.process_next(job.job_id)
            assert (result.lease_lost, result.processed_count, result.failed_count) == (
                True,
                0,
                0,
            )
            assert [e for e in events if isinstance(e, BatchCompleted)] == []
            assert [type(e) for e in events if isinstance(e, LeaseLost)] == [LeaseLost]
            assert counts(store.database, table) == (0, 0), "the processor's rows rolled back"
            status = store.get_distributed_status(job.job_id)
            assert (status.processing_batches, status.completed_batches) == (1, 0)
            assert set(statuses(store, job.job_id).values()) == {RecordStatus.PENDING}


@pytest.mark.parametrize("kind", PEEWEE_BACKENDS)
def test_a_transactional_batch_longer_than_the_renewal_interval_keeps_its_lease(
    kind: str, url_for: Callable[[str], str]
) -> None:
    # Renewals every 0.1 s while each batch's transaction lasts 0.5 s: on SQLite they wait
    # for its write lock, on a server the last one waits for the batch row; neither may
    # make the worker think it lost the lease.
    with open_store(kind, url_for) as store:
        assert isinstance(store, PeeweeStateStore)
        with user_table(store.database, f"{new_prefix()}imported") as table:
            job = prepare_job(store, numbers(6), batch_size=2)
            events: list[WorkerEvent] = []
            worker = Worker(
                store,
                batch_processor=importer(table, lambda records, context: time.sleep(0.5)),
                transactional=True,
                lease_timeout_ms=300,
                on_event=events.append,
            )
            summary = worker.run(job.job_id)
            assert (summary.batches, summary.processed, summary.leases_lost) == (3, 6, 0)
            assert [e for e in events if isinstance(e, LeaseLost)] == []
            assert counts(store.database, table) == (6, 6)


def test_the_context_of_a_batch_is_frozen_and_compares_without_its_lease_event() -> None:
    context = BatchContext("j", "b", 0, (1, 2), "w")
    assert context == BatchContext("j", "b", 0, (1, 2), "w")
    assert context.database is None and not context.lease_lost.is_set()
    with pytest.raises(AttributeError):
        context.batch_index = 3  # type: ignore[misc]


def test_records_a_processor_keeps_and_changes_later_do_not_change_what_is_stored() -> None:
    store = InMemoryStateStore()
    job = prepare_job(store, numbers(2))
    kept: list[dict[str, Any]] = []

    def keep(records: list[dict[str, Any]], context: BatchContext) -> None:
        kept.extend(records)

    Worker(store, batch_processor=keep).run(job.job_id)
    for record in kept:
        record["n"] = "changed"
    stored: list[ProcessedRecord] = store.get_processed_records(job.job_id)
    assert [(r.raw, r.parsed) for r in stored] == [({"n": 0}, {"n": 0}), ({"n": 1}, {"n": 1})]
