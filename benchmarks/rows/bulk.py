"""The bulk rows: save_batch_records, prepare_job, complete_batch, save_processed_record.

Each runs three sides step by step (``common.compare``): the library, the raw driver given
the same input and encoding its JSON (the target's baseline), and the raw driver given rows
whose JSON is ready-made (reported on the line below).
"""

from __future__ import annotations

import uuid
from functools import partial
from typing import Any

from common import (
    NOISY_ROW_ROUNDS,
    Bench,
    Round,
    Row,
    bulk_rows,
    compare,
    dumps,
    new_id,
    record_tuples,
    records,
    setup_job,
    source_record,
    timed,
)
from raw import (
    RECORD_COLUMNS,
    RECORD_UPSERT_KEY,
    RECORD_UPSERT_SET,
    Raw,
    RawPipeline,
    raw_record_rows,
)

from batchactions_peewee import ProcessedRecord, RecordStatus, prepare_job


def row_save(b: Bench) -> list[Row]:
    """save_batch_records: one call (one transaction) per batch, against one executemany
    INSERT of the same rows per batch, in one transaction."""
    s = b.sizes
    lib = b.store("sl_")
    b.store("sr_", side="raw")
    b.store("sy_", side="ready")
    bs = s.batch_size
    payload = [records(k * bs, bs, RecordStatus.PENDING) for k in range(s.save_batches)]

    def insert(conn: Raw, table: str, rows: list[tuple[Any, ...]]) -> None:
        with conn.transaction():
            conn.insert_many(table, RECORD_COLUMNS, rows)

    raw_insert = partial(insert, b.ready, "sy_records")

    def raw_encode_insert(job_id: str, batch_id: str, chunk: list[ProcessedRecord]) -> None:
        insert(b.raw, "sr_records", raw_record_rows(job_id, batch_id, chunk))

    def make_round() -> Round:
        lib_job, raw_job, ready_job = new_id("j"), new_id("j"), new_id("j")
        work = Round(s.save_batches * bs, [], [], [])
        for k, chunk in enumerate(payload):
            save = partial(lib.save_batch_records, lib_job, new_id("b"), chunk)
            rows = record_tuples(ready_job, new_id("b"), k * bs, bs, "pending")
            work.library.append(partial(timed, save))
            work.raw.append(partial(timed, partial(raw_encode_insert, raw_job, new_id("b"), chunk)))
            work.ready.append(partial(timed, partial(raw_insert, rows)))
        return work

    c = compare(b, "save_batch_records", make_round)
    b.drop_all()
    return bulk_rows(b, f"save_batch_records, {bs}/call (rows/s)", c, 0.8)


def row_prepare(b: Bench) -> list[Row]:
    """prepare_job from dicts, against the same job written raw (RawPipeline.prepare): the
    job row, one executemany per batch in its own transaction, then the batch rows and the
    job update."""
    what = f"prepare_job, {b.sizes.batch_size}/batch (records/s)"
    s = b.sizes
    lib = b.store("pl_")
    b.store("pr_", side="raw")
    b.store("py_", side="ready")
    n, bs = s.prepare_records, s.batch_size
    source = [source_record(i) for i in range(n)]
    texts = [dumps(d) for d in source]  # the ready side gets its JSON encoded beforehand
    config = dumps({"batchSize": bs})
    raw, ready = RawPipeline(b.raw, "pr_"), RawPipeline(b.ready, "py_")

    def make_round() -> Round:
        # The ready side's ids and rows are made here, untimed.
        job_id = str(uuid.uuid4())
        batch_ids = [str(uuid.uuid4()) for _ in range(0, n, bs)]
        ranges = [range(k * bs, min(n, (k + 1) * bs)) for k in range(len(batch_ids))]
        batch_rows = [
            (bid, job_id, k, "PENDING", None, None, r.start, r.stop - 1, 0, 0, 0)
            for k, (bid, r) in enumerate(zip(batch_ids, ranges, strict=True))
        ]
        chunks = [
            [(job_id, bid, i, "pending", texts[i], texts[i], "[]", None) for i in r]
            for bid, r in zip(batch_ids, ranges, strict=True)
        ]
        library = partial(prepare_job, lib, source, batch_size=bs)
        return Round(
            n,
            [partial(timed, library)],
            [partial(timed, partial(raw.prepare, source, bs))],
            [partial(timed, partial(ready.write_job, job_id, config, chunks, batch_rows))],
        )

    c = compare(b, "prepare_job", make_round, rounds=NOISY_ROW_ROUNDS * s.rounds)
    b.drop_all()
    return bulk_rows(b, what, c, 0.8, raw_does="making ids, encoding JSON")


def row_complete(b: Bench) -> list[Row]:
    """complete_batch of a claimed batch with its records, against one transaction holding
    the fenced UPDATE and one executemany upsert of the same rows."""
    s = b.sizes
    lib = b.store("cl_")
    raw_store = b.store("cr_", side="raw")
    ready_store = b.store("cy_", side="ready")
    m = s.complete_records

    def statements(conn: Raw, prefix: str) -> tuple[str, str, str]:
        p, q = conn.p, conn.q
        batches = q(f"{prefix}batches")
        fence = (
            f"UPDATE {batches} SET {q('status')} = {p}, {q('processedCount')} = {p}, "
            f"{q('failedCount')} = {p}, {q('version')} = {q('version')} + 1 "
            f"WHERE {q('id')} = {p} AND {q('jobId')} = {p} AND {q('workerId')} = {p} "
            f"AND {q('version')} = {p} AND {q('status')} = {p}"
        )
        claim = (
            f"UPDATE {batches} SET {q('status')} = 'PROCESSING', "
            f"{q('workerId')} = 'bench', {q('version')} = 1 WHERE {q('id')} = {p}"
        )
        return fence, claim, conn.upsert_tail(RECORD_UPSERT_KEY, RECORD_UPSERT_SET)

    sql = {"cr_": statements(b.raw, "cr_"), "cy_": statements(b.ready, "cy_")}

    def library_step(job_id: str) -> float:
        res = lib.claim_batch(job_id, "bench").reservation
        assert res is not None
        done = records(res.record_start_index, m, RecordStatus.PROCESSED)
        return timed(
            partial(lib.complete_batch, res, processed_count=m, failed_count=0, records=done)
        )

    def raw_complete(
        conn: Raw, prefix: str, job_id: str, batch_id: str, rows: list[tuple[Any, ...]]
    ) -> None:
        fence, _, tail = sql[prefix]
        with conn.transaction():
            args = ("COMPLETED", m, 0, batch_id, job_id, "bench", 1, "PROCESSING")
            if conn.execute(fence, args) != 1:
                raise AssertionError("the raw fence refused its own claim")
            conn.insert_many(f"{prefix}records", RECORD_COLUMNS, rows, tail)

    def raw_encode_complete(job_id: str, batch_id: str, done: list[ProcessedRecord]) -> None:
        raw_complete(b.raw, "cr_", job_id, batch_id, raw_record_rows(job_id, batch_id, done))

    def raw_step(job_id: str, k: int, batch_id: str, *, ready: bool) -> float:
        conn, prefix = (b.ready, "cy_") if ready else (b.raw, "cr_")
        conn.execute(sql[prefix][1], (batch_id,))  # the claim, untimed
        if ready:
            rows = record_tuples(job_id, batch_id, k * m, m, "processed")
            return timed(partial(raw_complete, conn, prefix, job_id, batch_id, rows))
        done = records(k * m, m, RecordStatus.PROCESSED)
        return timed(partial(raw_encode_complete, job_id, batch_id, done))

    def make_round() -> Round:
        lib_job, raw_job, ready_job = new_id("j"), new_id("j"), new_id("j")
        setup_job(lib, lib_job, s.complete_calls, m, with_records=True)
        raw_ids = setup_job(raw_store, raw_job, s.complete_calls, m, with_records=True)
        ready_ids = setup_job(ready_store, ready_job, s.complete_calls, m, with_records=True)
        return Round(
            s.complete_calls * m,
            [partial(library_step, lib_job) for _ in raw_ids],
            [partial(raw_step, raw_job, k, bid, ready=False) for k, bid in enumerate(raw_ids)],
            [partial(raw_step, ready_job, k, bid, ready=True) for k, bid in enumerate(ready_ids)],
        )

    c = compare(b, "complete_batch", make_round)
    b.drop_all()
    return bulk_rows(b, f"complete_batch, {m} records (records/s)", c, 0.7)


def row_single(b: Bench) -> list[Row]:
    """save_processed_record, one call per record, against one raw upsert statement per
    call (autocommit on both sides), on records a batch already holds."""
    s = b.sizes
    lib = b.store("ol_")
    raw_store = b.store("or_", side="raw")
    ready_store = b.store("oy_", side="ready")
    n = s.single_calls
    step = 25
    done = records(0, n, RecordStatus.PROCESSED)

    def upsert(conn: Raw, prefix: str) -> str:
        tail = conn.upsert_tail(RECORD_UPSERT_KEY, RECORD_UPSERT_SET)
        marks = ", ".join([conn.p] * len(RECORD_COLUMNS))
        table = conn.q(f"{prefix}records")
        return f"INSERT INTO {table} ({conn.cols(RECORD_COLUMNS)}) VALUES ({marks}){tail}"

    raw_upsert, ready_upsert = upsert(b.raw, "or_"), upsert(b.ready, "oy_")

    def library_calls(job_id: str, batch_id: str, chunk: list[ProcessedRecord]) -> None:
        for record in chunk:
            lib.save_processed_record(job_id, batch_id, record)

    def raw_calls(rows: list[tuple[Any, ...]]) -> None:
        for row in rows:
            b.ready.execute(ready_upsert, row)

    def raw_encode_calls(job_id: str, batch_id: str, chunk: list[ProcessedRecord]) -> None:
        for record in chunk:
            (row,) = raw_record_rows(job_id, batch_id, [record])
            b.raw.execute(raw_upsert, row)

    def make_round() -> Round:
        lib_job, raw_job, ready_job = new_id("j"), new_id("j"), new_id("j")
        (lib_batch,) = setup_job(lib, lib_job, 1, n, with_records=True)
        (raw_batch,) = setup_job(raw_store, raw_job, 1, n, with_records=True)
        (ready_batch,) = setup_job(ready_store, ready_job, 1, n, with_records=True)
        rows = record_tuples(ready_job, ready_batch, 0, n, "processed")
        steps = range(0, n, step)
        return Round(
            n,
            [
                partial(timed, partial(library_calls, lib_job, lib_batch, done[k : k + step]))
                for k in steps
            ],
            [
                partial(timed, partial(raw_encode_calls, raw_job, raw_batch, done[k : k + step]))
                for k in steps
            ],
            [partial(timed, partial(raw_calls, rows[k : k + step])) for k in steps],
        )

    c = compare(b, "save_processed_record", make_round, rounds=NOISY_ROW_ROUNDS * s.rounds)
    b.drop_all()
    return bulk_rows(b, "save_processed_record (calls/s)", c, 0.8)
