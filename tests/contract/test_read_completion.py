"""A worker's completion writes what it read back as one set-based UPDATE per range of
records, and upserts only the others, on every database backend.

Each test catches one way the short path can go wrong: a completion that still upserts
every record, stored rows that differ in any byte from what the full upsert stores, a
short path taken for records it cannot write (a parsed form that differs, a raw text the
worker did not read as stored), and an UPDATE whose row count is off that is not followed
by the full upsert.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pydantic

from batchactions_peewee import PeeweeStateStore, ProcessingContext, Worker, prepare_job
from batchactions_peewee.rows import raw_from_row
from batchactions_peewee.store.records import MAX_REMEMBERED

from ..support.statement_count import intercept_statements, statement_kind
from ..support.stores import make_store

FAILING = {10, 250, 499}
JOB_ID = "read-completion-job"


def _records(count: int) -> Iterator[dict[str, Any]]:
    for n in range(count):
        yield {"n": n, "name": f"r\u00e9cord {n}", "tags": ["a", {"deep": [n, None, 1.5]}]}


def _processor(record: dict[str, Any], context: ProcessingContext) -> None:
    if context.record_index in FAILING:
        raise ValueError(f"record {context.record_index} is refused")


@contextmanager
def _record_writes(store: PeeweeStateStore) -> Iterator[list[tuple[str, int]]]:
    """Yield a list that receives (kind, rows written or matched) of each write of the
    records table in the block; the others are counted under their table's kind."""
    table = store.tables.records._meta.table_name
    seen: list[tuple[str, int]] = []

    def record(sql: str, params: Any, run: Callable[[str, Any], Any]) -> Any:
        cursor = run(sql, params)
        kind = statement_kind(sql)
        if kind in ("INSERT", "UPDATE", "DELETE"):
            if table not in sql:
                kind = "other " + kind
            elif kind == "INSERT":
                seen.append((kind, _rows_sent(sql, params)))
                return cursor
            seen.append((kind, int(cursor.rowcount)))
        return cursor

    with intercept_statements(store.database, record):
        yield seen


def _rows_sent(sql: str, params: Any) -> int:
    """The rows a records upsert sends, in each of its forms."""
    if "JSON_TABLE" in sql:  # MariaDB: one JSON document in base64, an array of rows
        return len(json.loads(base64.b64decode(params[0])))
    if "string_to_array" in sql:  # PostgreSQL: each column one text, values joined
        return int(params[2].count("\x1f")) + 1
    if isinstance(params[0], list):  # PostgreSQL: one array per column
        return len(params[0])
    return len(params) // 8  # a VALUES list


def _rows(store: PeeweeStateStore) -> list[tuple[Any, ...]]:
    """Every column of every record row but the batch id (a new id per prepare)."""
    R = store.tables.records
    query: Any = R.select(
        R.id, R.job_id, R.record_index, R.status, R.raw, R.parsed, R.errors, R.processing_error
    ).order_by(R.record_index)
    return list(query.tuples())


def _full_upsert_rows(
    url: str, count: int, processor: Any = _processor, **worker: Any
) -> list[tuple[Any, ...]]:
    """The rows the full-upsert completion stores for the same job: a store that
    remembers no raw text read takes no short path."""
    store, database = make_store(url)
    try:
        store._parts.records.remember_read = lambda *args: None  # type: ignore[method-assign]
        prepare_job(store, _records(count), batch_size=count, job_id=JOB_ID)
        Worker(store, processor, **worker).run(JOB_ID)
        return _rows(store)
    finally:
        store.drop_tables()
        database.close()


def _url(store: PeeweeStateStore, url_for: Any) -> str:
    kind = {"SqliteDatabase": "sqlite", "MySQLDatabase": "mysql"}.get(
        type(store.database).__name__, "postgres"
    )
    return str(url_for(kind))


def test_a_batch_with_three_failures_writes_its_records_in_two_statements(
    peewee_store: PeeweeStateStore, url_for: Any
) -> None:
    """Catches a completion that upserts its processed records again: 500 records, three
    failed, cost the fenced UPDATE, one records UPDATE and one INSERT of the three (and
    the claim); the rows are byte for byte those of the full upsert."""
    store = peewee_store
    prepare_job(store, _records(500), batch_size=500, job_id=JOB_ID)
    worker = Worker(store, _processor)
    with _record_writes(store) as seen:
        result = worker.process_next(JOB_ID)
    assert (result.processed_count, result.failed_count) == (497, 3)
    on_records = [w for w in seen if not w[0].startswith("other")]
    assert on_records == [("UPDATE", 497), ("INSERT", 3)], seen
    # The claim and the fenced finish; the finalize's UPDATEs, as before.
    assert len(seen) - len(on_records) <= 4, seen
    assert _rows(store) == _full_upsert_rows(_url(store, url_for), 500)


def test_records_whose_parsed_form_differs_are_upserted(
    peewee_store: PeeweeStateStore, url_for: Any
) -> None:
    """Catches a short path taken for a record whose parsed form is not its raw form (a
    schema that coerces, a processor that changes its record): their rows would keep the
    raw text as parsed."""

    class Coerced(pydantic.BaseModel):
        n: float  # an int read as a float: parsed 3.0 against raw 3
        name: str
        tags: list[Any]

    def changes_some(record: dict[str, Any], context: ProcessingContext) -> None:
        if context.record_index % 7 == 0:
            record["changed"] = True

    store = peewee_store
    url = _url(store, url_for)
    for processor, schema in ((changes_some, None), (_processor, Coerced)):
        other, database = make_store(url)
        try:
            prepare_job(other, _records(60), batch_size=60, job_id=JOB_ID)
            Worker(other, processor, schema=schema).run(JOB_ID)
            assert _rows(other) == _full_upsert_rows(url, 60, processor, schema=schema)
        finally:
            other.drop_tables()
            database.close()


def test_a_raw_text_stored_in_another_form_is_written_again(
    peewee_store: PeeweeStateStore, url_for: Any
) -> None:
    """Catches a short path that trusts the worker's encoding rather than the text it
    read: a raw form stored with spaces (as another adapter may write it) is rewritten by
    the full upsert, so it must be here too."""
    store = peewee_store
    prepare_job(store, _records(40), batch_size=40, job_id=JOB_ID)
    R = store.tables.records
    R.update(
        raw='{"n": 5, "name": "r\u00e9cord 5", "tags": ["a", {"deep": [5, null, 1.5]}]}'
    ).where(R.record_index == 5).execute()
    Worker(store, _processor).run(JOB_ID)
    rows = {row[2]: row for row in _rows(store)}
    assert (
        rows[5][4]
        == rows[5][5]
        == '{"n":5,"name":"r\u00e9cord 5","tags":["a",{"deep":[5,null,1.5]}]}'
    )
    assert all(row[3] == ("failed" if i in FAILING else "processed") for i, row in rows.items())


def test_an_update_whose_row_count_is_off_falls_back_to_the_full_upsert(
    peewee_store: PeeweeStateStore, url_for: Any
) -> None:
    """Catches a completion that trusts its set-based UPDATE without reading its row
    count: a record moved to another batch after the read is not matched, so every row
    is upserted, and the rows end as the full upsert leaves them."""
    store = peewee_store
    prepare_job(store, _records(30), batch_size=30, job_id=JOB_ID)
    claim = store.claim_batch(JOB_ID, "w")
    assert claim.reservation is not None
    res = claim.reservation
    read = store._get_batch_raw(JOB_ID, res.batch_id)
    R = store.tables.records
    R.update(batch_id="elsewhere").where(R.record_index == 12).execute()
    processed = [(index, raw, raw) for index, raw in read]
    with _record_writes(store) as seen:
        assert store._complete_batch_processed(
            res, processed_count=30, failed_count=0, processed=processed
        )
    # The short path matched 29 rows of the 30 it meant: every row is upserted.
    assert [w for w in seen if not w[0].startswith("other")] == [("UPDATE", 29), ("INSERT", 30)]
    rows = _rows(store)
    assert [row[3] for row in rows] == ["processed"] * 30
    assert all(row[4] == row[5] for row in rows)
    assert R.select().where(R.batch_id == res.batch_id).count() == 30


def test_a_transactional_batch_processor_takes_the_short_path_too(
    peewee_store: PeeweeStateStore, url_for: Any
) -> None:
    """Catches a completion inside the batch processor's transaction that upserts every
    record again, or stores other bytes than the full upsert does."""

    def fails_some(records: list[dict[str, Any]], context: Any) -> dict[int, str]:
        return {i: "refused" for i in context.record_indexes if i in FAILING}

    store = peewee_store
    prepare_job(store, _records(500), batch_size=500, job_id=JOB_ID)
    worker = Worker(store, batch_processor=fails_some, transactional=True)
    with _record_writes(store) as seen:
        result = worker.process_next(JOB_ID)
    assert (result.processed_count, result.failed_count) == (497, 3)
    assert [w for w in seen if not w[0].startswith("other")] == [("UPDATE", 497), ("INSERT", 3)]
    expected = _full_upsert_rows(
        _url(store, url_for), 500, None, batch_processor=fails_some, transactional=True
    )
    assert _rows(store) == expected


def test_the_texts_read_stay_few_and_go_with_their_batch(peewee_store: PeeweeStateStore) -> None:
    """Catches raw texts kept for batches never completed (memory growing with the job):
    at most MAX_REMEMBERED batches are kept, and a batch's go once it is released."""
    store = peewee_store
    records = store._parts.records
    prepare_job(store, _records(MAX_REMEMBERED + 6), batch_size=1, job_id=JOB_ID)
    job = store.get_job_state(JOB_ID)
    assert job is not None
    for batch in job.batches:
        store._get_batch_raw(JOB_ID, batch.id)
    assert len(records._read) == MAX_REMEMBERED
    claim = store.claim_batch(JOB_ID, "w")
    assert claim.reservation is not None
    store._get_batch_raw(JOB_ID, claim.reservation.batch_id)
    assert (JOB_ID, claim.reservation.batch_id) in records._read
    assert store._release_reservation(claim.reservation)
    assert (JOB_ID, claim.reservation.batch_id) not in records._read


def test_a_batch_read_decodes_every_stored_form_as_one_row_at_a_time(
    peewee_store: PeeweeStateStore,
) -> None:
    """Catches a batch read whose one-parse-per-text fast path reads a form otherwise than
    ``raw_from_row`` does: an escaped lone surrogate (JSON.stringify writes them; the fast
    parser refuses them) and JSON text stored as a JSON string (as Prisma may)."""
    store = peewee_store
    prepare_job(store, _records(6), batch_size=6, job_id=JOB_ID)
    R = store.tables.records
    R.update(raw='{"s":"\\ud800"}').where(R.record_index == 2).execute()
    R.update(raw='"{\\"n\\":4}"').where(R.record_index == 4).execute()
    job = store.get_job_state(JOB_ID)
    assert job is not None
    batch_id = job.batches[0].id
    query: Any = R.select(R.record_index, R.raw).where(R.job_id == JOB_ID).tuples()
    stored: list[tuple[Any, Any]] = list(query)
    expected = sorted(raw_from_row(index, raw) for index, raw in stored)
    assert store._get_batch_raw(JOB_ID, batch_id) == expected
    assert expected[2][1] == {"s": "\ud800"} and expected[4][1] == {"n": 4}
    assert store._parts.records._read[(JOB_ID, batch_id)] == dict(stored)


def test_a_batch_processor_retried_in_a_new_transaction_keeps_the_short_path(
    peewee_store: PeeweeStateStore,
) -> None:
    """Catches texts read that are dropped when a transactional batch processor raises:
    its retry, in a new transaction, would upsert every record again."""
    calls: list[int] = []

    def fails_once(records: list[dict[str, Any]], context: Any) -> None:
        calls.append(len(records))
        if len(calls) == 1:
            raise RuntimeError("a transient failure of the processor")

    store = peewee_store
    prepare_job(store, _records(200), batch_size=200, job_id=JOB_ID)
    worker = Worker(
        store, batch_processor=fails_once, transactional=True, max_retries=1, retry_delay_ms=0
    )
    with _record_writes(store) as seen:
        result = worker.process_next(JOB_ID)
    assert calls == [200, 200]
    assert (result.processed_count, result.failed_count) == (200, 0)
    assert [w for w in seen if not w[0].startswith("other")] == [("UPDATE", 200)]
