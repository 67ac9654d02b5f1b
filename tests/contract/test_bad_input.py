"""Bad input gets a specific exception from batchactions_peewee.errors and writes nothing."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import peewee as pw
import pytest

from batchactions_peewee import (
    BatchState,
    InMemoryStateStore,
    JobState,
    PeeweeStateStore,
    ProcessedRecord,
    RecordStatus,
)
from batchactions_peewee.errors import (
    BatchActionsError,
    DuplicateRecordError,
    InvalidIdentifierError,
    InvalidInputError,
    InvalidStatusError,
    InvalidTablePrefixError,
    InvalidValueError,
)

from ..support.factories import job, record

Store = InMemoryStateStore | PeeweeStateStore


def snapshot(store: Store, job_id: str) -> tuple[Any, ...]:
    return (
        store.get_job_state(job_id),
        store.get_pending_records(job_id),
        store.get_failed_records(job_id),
        store.get_processed_records(job_id),
    )


def raw(value: Any) -> ProcessedRecord:
    return ProcessedRecord.model_construct(
        index=7,
        raw={"v": value},
        parsed={},
        status=RecordStatus.PENDING,
        errors=[],
        processing_error=None,
        retry_count=None,
    )


class Weird:
    pass


BAD_VALUES = {
    "nan": float("nan"),
    "infinity": float("inf"),
    "minus-infinity": float("-inf"),
    "bytes": b"abc",
    "set": {1, 2},
    "object": Weird(),
    "lone-surrogate": "a\ud800b",
    "int-key": {1: "a"},
    "tuple": (1, 2),
}


@pytest.mark.parametrize("name", list(BAD_VALUES))
def test_values_without_an_exact_json_form_are_refused(store: Store, name: str) -> None:
    j = job(batches=1)
    store.save_job_state(j)
    before = snapshot(store, j.id)
    bad = raw(BAD_VALUES[name])
    writes: list[Callable[[], object]] = [
        lambda: store.save_processed_record(j.id, j.batches[0].id, bad),
        lambda: store.save_batch_records(j.id, j.batches[0].id, [record(0), bad]),
    ]
    for write in writes:
        with pytest.raises(InvalidValueError):
            write()
    assert snapshot(store, j.id) == before


@pytest.mark.parametrize("name", list(BAD_VALUES))
def test_bulk_pending_records_refuse_the_same_values(store: Store, name: str) -> None:
    j = job(batches=1)
    store.save_job_state(j)
    before = snapshot(store, j.id)
    with pytest.raises(InvalidValueError):
        store._save_pending_records(j.id, j.batches[0].id, 0, [{"ok": 1}, {"v": BAD_VALUES[name]}])
    assert snapshot(store, j.id) == before


def test_a_duplicate_index_is_reported_before_the_values_are_looked_at(store: Store) -> None:
    j = job(batches=1)
    store.save_job_state(j)
    before = snapshot(store, j.id)
    with pytest.raises(DuplicateRecordError, match="record index 3 appears twice"):
        store.save_batch_records(
            j.id, j.batches[0].id, [record(3), record(1), record(3), raw(b"x")]
        )
    assert snapshot(store, j.id) == before


def test_bulk_pending_records_take_any_iterable(store: Store) -> None:
    j = job(batches=1)
    store.save_job_state(j)
    store._save_pending_records(j.id, j.batches[0].id, 0, ({"n": i} for i in range(3)))
    assert [r.raw for r in store.get_pending_records(j.id)] == [{"n": i} for i in range(3)]


def test_bulk_pending_records_refuse_bad_ids_indexes_and_non_dicts(store: Store) -> None:
    j = job(batches=1)
    store.save_job_state(j)
    before = snapshot(store, j.id)
    batch_id = j.batches[0].id
    with pytest.raises(InvalidIdentifierError):
        store._save_pending_records("", batch_id, 0, [{}])
    with pytest.raises(InvalidIdentifierError):
        store._save_pending_records(j.id, "x" * 37, 0, [{}])
    with pytest.raises(InvalidValueError):
        store._save_pending_records(j.id, batch_id, -1, [{}])
    with pytest.raises(InvalidValueError):  # the last index would not fit its column
        store._save_pending_records(j.id, batch_id, 2**31 - 2, [{}, {}, {}])
    with pytest.raises(InvalidInputError):
        store._save_pending_records(j.id, batch_id, 0, [{}, ["not", "a", "dict"]])  # type: ignore[list-item]
    assert snapshot(store, j.id) == before
    store._save_pending_records(j.id, batch_id, 2**31 - 2, [{}, {}])  # the last one fits
    assert [r.index for r in store.get_pending_records(j.id)] == [2**31 - 2, 2**31 - 1]


def test_job_config_without_json_form_is_refused(store: Store) -> None:
    j = job()
    bad = j.model_copy(
        update={"config": j.config.model_copy(update={"schema_": {"x": float("nan")}})}
    )
    with pytest.raises(InvalidValueError):
        store.save_job_state(bad)
    assert store.get_job_state(j.id) is None


@pytest.mark.parametrize("job_id", ["", "x" * 37])
def test_bad_job_ids(store: Store, job_id: str) -> None:
    with pytest.raises(InvalidIdentifierError):
        store.save_job_state(job(job_id=job_id))
    with pytest.raises(InvalidIdentifierError):
        store.get_job_state(job_id)
    with pytest.raises(InvalidIdentifierError):
        store.claim_batch(job_id, "w")
    assert store.list_jobs() == []


def test_a_36_character_id_fits(store: Store) -> None:
    j = job(job_id="x" * 36)
    store.save_job_state(j)
    assert store.get_job_state("x" * 36) == j


def test_bad_batch_ids(store: Store) -> None:
    j = job(batches=1)
    long_batch = j.model_copy(
        update={"batches": [j.batches[0].model_copy(update={"id": "b" * 37})]}
    )
    with pytest.raises(InvalidIdentifierError):
        store.save_job_state(long_batch)
    store.save_job_state(j)
    with pytest.raises(InvalidIdentifierError):
        store.save_processed_record(j.id, "", record(0))
    with pytest.raises(InvalidIdentifierError):
        store.save_batch_records(j.id, "b" * 37, [record(0)])
    assert store.get_pending_records(j.id) == []


@pytest.mark.parametrize("worker_id", ["", "w" * 129])
def test_bad_worker_ids(store: Store, worker_id: str) -> None:
    j = job(batches=1)
    store.save_job_state(j)
    with pytest.raises(InvalidIdentifierError):
        store.claim_batch(j.id, worker_id)
    assert store.get_distributed_status(j.id).pending_batches == 1


def test_a_128_character_worker_id_fits(store: Store) -> None:
    j = job(batches=1)
    store.save_job_state(j)
    result = store.claim_batch(j.id, "w" * 128)
    assert result.reservation is not None and result.reservation.worker_id == "w" * 128
    state = store.get_job_state(j.id)
    assert state is not None and state.batches[0].worker_id == "w" * 128


def test_unknown_statuses(store: Store) -> None:
    with pytest.raises(InvalidStatusError):
        store.list_jobs(status="RUNNING")
    j = job(batches=1)
    store.save_job_state(j)
    bogus = BatchState.model_construct(
        batch_id=j.batches[0].id,
        status="DONE",  # type: ignore[arg-type]
        processed_count=0,
        failed_count=0,
    )
    with pytest.raises(BatchActionsError):
        store.update_batch_state(j.id, j.batches[0].id, bogus)
    bogus_record = ProcessedRecord.model_construct(
        index=0,
        raw={},
        parsed={},
        status="ok",  # type: ignore[arg-type]
        errors=[],
        processing_error=None,
    )
    with pytest.raises(BatchActionsError):
        store.save_processed_record(j.id, j.batches[0].id, bogus_record)
    assert snapshot(store, j.id)[1:] == ([], [], [])


def test_negative_record_index(store: Store) -> None:
    j = job(batches=1)
    store.save_job_state(j)
    negative = ProcessedRecord.model_construct(
        index=-1, raw={}, parsed={}, status=RecordStatus.PENDING, errors=[], processing_error=None
    )
    with pytest.raises(InvalidValueError):
        store.save_batch_records(j.id, j.batches[0].id, [negative])
    assert store.get_pending_records(j.id) == []


def test_duplicate_record_index_in_one_bulk_write(store: Store) -> None:
    j = job(batches=1)
    store.save_job_state(j)
    with pytest.raises(DuplicateRecordError):
        store.save_batch_records(j.id, j.batches[0].id, [record(0), record(1), record(0)])
    assert store.get_pending_records(j.id) == []


@pytest.mark.parametrize("prefix", ["ba-", "x; DROP TABLE y", "a b", "é_", "`q`", None, "p" * 38])
def test_table_prefix_is_validated(prefix: Any) -> None:
    with pytest.raises(InvalidTablePrefixError):
        PeeweeStateStore(pw.SqliteDatabase(":memory:"), table_prefix=prefix)


def test_empty_and_plain_prefixes_are_fine() -> None:
    for prefix in ("", "my_app_2_"):
        store = PeeweeStateStore(pw.SqliteDatabase(":memory:"), table_prefix=prefix)
        assert store.tables.jobs._meta.table_name == f"{prefix}jobs"


def test_database_must_be_a_peewee_database() -> None:
    with pytest.raises(BatchActionsError):
        PeeweeStateStore("sqlite:///x.db")  # type: ignore[arg-type]


def test_negative_timeout_and_counts(store: Store) -> None:
    j = job(batches=1)
    store.save_job_state(j)
    with pytest.raises(InvalidValueError):
        store.reclaim_stale_batches(j.id, -1)
    r = store.claim_batch(j.id, "w").reservation
    assert r is not None
    with pytest.raises(InvalidValueError):
        store.complete_batch(r, processed_count=-1, failed_count=0)
    assert store.get_distributed_status(j.id).processing_batches == 1


def test_job_state_round_trip_is_untouched_by_refused_resave(store: Store) -> None:
    j = job(batches=2)
    store.save_job_state(j)
    broken = JobState.model_construct(
        **{**dict(j), "config": j.config.model_copy(update={"schema_": {"b": b"x"}})}
    )
    with pytest.raises(InvalidValueError):
        store.save_job_state(broken)
    assert store.get_job_state(j.id) == j


def test_nul_in_plain_text_columns_is_refused(store: Store) -> None:
    j = job(batches=1)
    store.save_job_state(j)
    with pytest.raises(InvalidValueError):
        store.save_processed_record(j.id, j.batches[0].id, record(0, processing_error="a\x00b"))
    with pytest.raises(InvalidIdentifierError):
        store.claim_batch(j.id, "w\x00")
    assert store.get_pending_records(j.id) == []


def test_nul_inside_json_values_is_fine(store: Store) -> None:
    j = job(batches=1)
    store.save_job_state(j)
    rec = ProcessedRecord(index=0, raw={"a\x00": "b\x00"}, parsed={}, status="pending")
    store.save_processed_record(j.id, j.batches[0].id, rec)
    assert store.get_pending_records(j.id) == [rec]


@pytest.mark.parametrize("value", [2**31, 2**40])
def test_integers_over_their_columns_range_are_refused(store: Store, value: int) -> None:
    j = job(batches=1)
    store.save_job_state(j)
    over = ProcessedRecord.model_construct(
        index=value,
        raw={},
        parsed={},
        status=RecordStatus.PENDING,
        errors=[],
        processing_error=None,
    )
    with pytest.raises(InvalidValueError):
        store.save_batch_records(j.id, j.batches[0].id, [over])
    with pytest.raises(InvalidValueError):
        store.save_job_state(j.model_copy(update={"total_records": value}))
    r = store.claim_batch(j.id, "w").reservation
    assert r is not None
    with pytest.raises(InvalidValueError):
        store.complete_batch(r, processed_count=value, failed_count=0)
    assert store.get_pending_records(j.id) == []
    assert store.get_job_state(j.id) is not None
    assert store.get_distributed_status(j.id).processing_batches == 1


def test_the_largest_32_bit_index_fits(store: Store) -> None:
    j = job(batches=1)
    store.save_job_state(j)
    store.save_batch_records(j.id, j.batches[0].id, [record(2**31 - 1)])
    assert [r.index for r in store.get_pending_records(j.id)] == [2**31 - 1]


def test_a_processing_error_over_the_text_column_is_refused(store: Store) -> None:
    from batchactions_peewee.checks import MAX_TEXT_BYTES

    j = job(batches=1)
    store.save_job_state(j)
    fits = record(0, "failed", processing_error="é" * (MAX_TEXT_BYTES // 2))
    store.save_processed_record(j.id, j.batches[0].id, fits)
    too_long = record(1, "failed", processing_error="é" * (MAX_TEXT_BYTES // 2 + 1))
    with pytest.raises(InvalidValueError):
        store.save_processed_record(j.id, j.batches[0].id, too_long)
    assert store.get_failed_records(j.id) == [fits]


def test_timestamps_over_bigint_are_refused(store: Store) -> None:
    j = job(batches=1).model_copy(update={"started_at": 2**63})
    with pytest.raises(InvalidValueError):
        store.save_job_state(j)
    assert store.get_job_state(j.id) is None


def test_our_own_messages_are_made_storable() -> None:
    from batchactions_peewee.checks import MAX_TEXT_BYTES, check_text, storable_text

    text = storable_text("a\x00b\ud800" + "é" * MAX_TEXT_BYTES)
    assert check_text(text, "message") == text
    assert text.startswith("a\ufffdb?")
    assert text.endswith(f"[... cut: the message was {2 * MAX_TEXT_BYTES + 6:,} bytes]")
