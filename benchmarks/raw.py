"""The raw-driver side of the benchmark: the physical limit each row is compared with.

The same driver the library uses (sqlite3, PyMySQL, psycopg2), used directly with
hand-written SQL on tables the library created under another prefix: ``Raw`` (a connection
with the driver's own bulk path), the raw side's JSON encoder and record rows, the raw
claim + complete loop, and ``RawPipeline`` (the end-to-end job). This module imports nothing
from the rest of the benchmark.
"""

from __future__ import annotations

import contextlib
import importlib
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from pydantic_core import from_json, to_json

from batchactions_peewee import ProcessedRecord

RECORD_COLUMNS = (
    "jobId",
    "batchId",
    "recordIndex",
    "status",
    "raw",
    "parsed",
    "errors",
    "processingError",
)
BATCH_COLUMNS = (
    "id",
    "jobId",
    "batchIndex",
    "status",
    "workerId",
    "claimedAt",
    "recordStartIndex",
    "recordEndIndex",
    "processedCount",
    "failedCount",
    "version",
)
RECORD_UPSERT_KEY = ("jobId", "recordIndex")
RECORD_UPSERT_SET = tuple(c for c in RECORD_COLUMNS if c not in RECORD_UPSERT_KEY)


class Raw:
    """The raw driver: hand-written SQL, the driver's own bulk path, explicit transactions."""

    def __init__(self, kind: str, conn: Any) -> None:
        self.kind = kind
        self.conn = conn
        self.p = "?" if kind == "sqlite" else "%s"
        self.cursor: Any = conn.cursor()

    def q(self, name: str) -> str:
        return f"`{name}`" if self.kind == "mysql" else f'"{name}"'

    def cols(self, names: Sequence[str]) -> str:
        return ", ".join(self.q(n) for n in names)

    def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        self.cursor.execute(sql, tuple(params))
        return int(self.cursor.rowcount)

    def fetchone(self, sql: str, params: Sequence[Any] = ()) -> Any:
        self.cursor.execute(sql, tuple(params))
        return self.cursor.fetchone()

    def insert_many(
        self, table: str, columns: Sequence[str], rows: Sequence[Any], tail: str = ""
    ) -> None:
        """One bulk INSERT: ``executemany`` for sqlite3 and PyMySQL (which folds it into
        multi-row INSERTs), ``execute_values`` for psycopg2 (whose ``executemany`` is one
        round trip per row, slower than the library and so no physical limit)."""
        if not rows:  # an empty job (execute_values needs a first row for its template)
            return
        head = f"INSERT INTO {self.q(table)} ({self.cols(columns)}) VALUES "
        if self.kind == "postgres":
            extras: Any = importlib.import_module("psycopg2.extras")
            extras.execute_values(self.cursor, head + "%s" + tail, rows, page_size=len(rows))
            return
        marks = "(" + ", ".join([self.p] * len(columns)) + ")"
        self.cursor.executemany(head + marks + tail, rows)

    def upsert_tail(self, key: Sequence[str], update: Sequence[str]) -> str:
        """The ON CONFLICT clause the library writes for the same upsert."""
        if self.kind == "mysql":
            sets = ", ".join(f"{self.q(c)} = VALUES({self.q(c)})" for c in update)
            return f" ON DUPLICATE KEY UPDATE {sets}"
        sets = ", ".join(f"{self.q(c)} = EXCLUDED.{self.q(c)}" for c in update)
        return f" ON CONFLICT ({self.cols(key)}) DO UPDATE SET {sets}"

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        self.execute("BEGIN IMMEDIATE" if self.kind == "sqlite" else "BEGIN")
        try:
            yield
        except BaseException:
            self.execute("ROLLBACK")
            raise
        self.execute("COMMIT")

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.cursor.close()
        self.conn.close()


def encode(value: Any) -> str:
    """The raw side's JSON encoder: pydantic-core's (the fastest at hand), compact UTF-8
    like the library's, without the library's checks that the value reads back unchanged."""
    return to_json(value).decode()


def raw_record_rows(
    job_id: str, batch_id: str, recs: Sequence[ProcessedRecord]
) -> list[tuple[Any, ...]]:
    """The rows the raw side makes of the library's input: each record's JSON encoded (once
    when its parsed form is its raw form), its status as text."""
    rows = []
    for r in recs:
        raw = encode(r.raw)
        parsed = raw if r.parsed is r.raw else encode(r.parsed)
        errors = encode([e.to_json_dict() for e in r.errors]) if r.errors else "[]"
        rows.append((job_id, batch_id, r.index, r.status.value, raw, parsed, errors, None))
    return rows


@dataclass
class CycleOutcome:
    """What one claim + complete loop (library or raw) did."""

    cycles: int = 0
    errors: int = 0
    first_error: str = ""

    def add(self, other: CycleOutcome) -> None:
        self.cycles += other.cycles
        self.errors += other.errors
        self.first_error = self.first_error or other.first_error


def raw_cycles(raw: Raw, table: str, job_id: str, worker_id: str) -> CycleOutcome:
    """The raw loop: read the lowest PENDING batch, take it by a conditional UPDATE (retry
    on a lost race), complete it by another conditional UPDATE; autocommit throughout."""
    out = CycleOutcome()
    q, p = raw.q, raw.p
    pick = (
        f"SELECT {q('id')}, {q('version')} FROM {q(table)} WHERE {q('jobId')} = {p} "
        f"AND {q('status')} = 'PENDING' ORDER BY {q('batchIndex')} LIMIT 1"
    )
    take = (
        f"UPDATE {q(table)} SET {q('status')} = 'PROCESSING', {q('workerId')} = {p}, "
        f"{q('claimedAt')} = {p}, {q('version')} = {q('version')} + 1 "
        f"WHERE {q('id')} = {p} AND {q('version')} = {p} AND {q('status')} = 'PENDING'"
    )
    finish = (
        f"UPDATE {q(table)} SET {q('status')} = 'COMPLETED', {q('processedCount')} = 0, "
        f"{q('failedCount')} = 0, {q('version')} = {q('version')} + 1 WHERE {q('id')} = {p} "
        f"AND {q('workerId')} = {p} AND {q('version')} = {p} AND {q('status')} = 'PROCESSING'"
    )
    try:
        while True:
            row = raw.fetchone(pick, (job_id,))
            if row is None:
                return out
            batch_id, version = row
            now = int(time.time() * 1000)
            if raw.execute(take, (worker_id, now, batch_id, version)) != 1:
                continue
            if raw.execute(finish, (batch_id, worker_id, version + 1)) != 1:
                raise AssertionError("raw complete refused")
            out.cycles += 1
    except Exception as exc:
        out.errors += 1
        out.first_error = f"{type(exc).__name__}: {exc}"
        return out


def noop(record: dict[str, Any], context: Any) -> None:
    """The end-to-end row's processor, on both sides."""
    return None


class RawPipeline:
    """The end-to-end job done by the raw driver: the physical limit of the e2e row.

    Prepare: the job row, one transaction per batch of records (JSON encoded with the raw
    side's encoder), the batch rows and the job update. Work: each process takes the lowest
    PENDING batch by a conditional UPDATE, reads its records, decodes their JSON, calls the
    same no-op processor, encodes the results and writes them in one transaction with the
    fenced completion; the last one finalizes the job by a conditional UPDATE. No leases,
    heartbeats, retries, checks or events: what any implementation must at least do.
    """

    def __init__(self, raw: Raw, prefix: str) -> None:
        self.raw = raw
        q, p = raw.q, raw.p
        self.prefix = prefix
        self.jobs, self.batches = q(f"{prefix}jobs"), q(f"{prefix}batches")
        self.records = f"{prefix}records"  # unquoted: insert_many quotes it
        self.pick = (
            f"SELECT {q('id')}, {q('version')} FROM {self.batches} WHERE {q('jobId')} = {p} "
            f"AND {q('status')} = 'PENDING' ORDER BY {q('batchIndex')} LIMIT 1"
        )
        self.take = (
            f"UPDATE {self.batches} SET {q('status')} = 'PROCESSING', {q('workerId')} = {p}, "
            f"{q('claimedAt')} = {p}, {q('version')} = {q('version')} + 1 "
            f"WHERE {q('id')} = {p} AND {q('version')} = {p} AND {q('status')} = 'PENDING'"
        )
        self.read = (
            f"SELECT {q('recordIndex')}, {q('raw')}, {q('parsed')} FROM {q(self.records)} "
            f"WHERE {q('jobId')} = {p} AND {q('batchId')} = {p}"
        )
        self.finish = (
            f"UPDATE {self.batches} SET {q('status')} = 'COMPLETED', {q('processedCount')} = {p}, "
            f"{q('failedCount')} = 0, {q('version')} = {q('version')} + 1 WHERE {q('id')} = {p} "
            f"AND {q('workerId')} = {p} AND {q('version')} = {p} AND {q('status')} = 'PROCESSING'"
        )
        self.finalize = (
            f"UPDATE {self.jobs} SET {q('status')} = 'COMPLETED', {q('completedAt')} = {p} "
            f"WHERE {q('id')} = {p} AND {q('status')} = 'PROCESSING' AND NOT EXISTS "
            f"(SELECT 1 FROM {self.batches} WHERE {q('jobId')} = {p} "
            f"AND {q('status')} NOT IN ('COMPLETED', 'FAILED'))"
        )
        self.tail = raw.upsert_tail(RECORD_UPSERT_KEY, RECORD_UPSERT_SET)

    def write_job(
        self,
        job_id: str,
        config: str,
        chunks: Iterable[list[tuple[Any, ...]]],
        batch_rows: list[tuple[Any, ...]],
    ) -> int:
        """The job row, one transaction per chunk of record rows, then the batch rows
        (complete once ``chunks`` is exhausted) and the job's start; the records written."""
        raw, q, p = self.raw, self.raw.q, self.raw.p
        raw.execute(
            f"INSERT INTO {self.jobs} ({raw.cols(['id', 'status', 'config', 'batches'])}) "
            f"VALUES ({p}, {p}, {p}, {p})",
            (job_id, "CREATED", config, "[]"),
        )
        total = 0
        for chunk in chunks:
            with raw.transaction():
                raw.insert_many(self.records, RECORD_COLUMNS, chunk)
            total += len(chunk)
        sets = ", ".join(
            f"{q(c)} = {p}" for c in ("status", "totalRecords", "startedAt", "distributed")
        )
        with raw.transaction():
            raw.insert_many(f"{self.prefix}batches", BATCH_COLUMNS, batch_rows)
            raw.execute(
                f"UPDATE {self.jobs} SET {sets} WHERE {q('id')} = {p}",
                ("PROCESSING", total, int(time.time() * 1000), True, job_id),
            )
        return total

    def prepare(self, source: Iterable[dict[str, Any]], batch_size: int) -> tuple[str, int]:
        """What prepare_job does, from the same dicts: ids, JSON, rows, transactions."""
        job_id = str(uuid.uuid4())
        batch_rows: list[tuple[Any, ...]] = []

        def rows(chunk: list[tuple[int, str]]) -> list[tuple[Any, ...]]:
            batch_id = str(uuid.uuid4())
            first, last = chunk[0][0], chunk[-1][0]
            batch_rows.append(
                (batch_id, job_id, len(batch_rows), "PENDING", None, None, first, last, 0, 0, 0)
            )
            return [(job_id, batch_id, i, "pending", t, t, "[]", None) for i, t in chunk]

        def chunks() -> Iterator[list[tuple[Any, ...]]]:
            chunk: list[tuple[int, str]] = []
            for i, record in enumerate(source):
                chunk.append((i, encode(record)))
                if len(chunk) == batch_size:
                    yield rows(chunk)
                    chunk = []
            if chunk:
                yield rows(chunk)

        total = self.write_job(job_id, encode({"batchSize": batch_size}), chunks(), batch_rows)
        return job_id, total

    def take_next(self, job_id: str, worker_id: str) -> tuple[str, int] | tuple[()] | None:
        """The lowest PENDING batch taken by a conditional UPDATE: its id and version;
        () when another worker took it first, None when none is PENDING."""
        row = self.raw.fetchone(self.pick, (job_id,))
        if row is None:
            return None
        batch_id, version = row
        took = self.raw.execute(self.take, (worker_id, int(time.time() * 1000), batch_id, version))
        return (batch_id, version) if took == 1 else ()

    def work(
        self,
        job_id: str,
        worker_id: str,
        in_transaction: Callable[[Raw, list[Any]], object] | None = None,
    ) -> int:
        """Process batches until none is PENDING; the records processed. With
        ``in_transaction``, each record is given to the no-op and the batch's parsed
        records to ``in_transaction(raw, records)`` inside the completion's transaction
        (a transactional batch processor)."""
        raw, processed = self.raw, 0
        while True:
            taken = self.take_next(job_id, worker_id)
            if taken is None:
                break
            if not taken:
                continue  # another worker took it first
            batch_id, version = taken
            raw.cursor.execute(self.read, (job_id, batch_id))
            results = []
            batch = []
            for index, raw_text, parsed_text in raw.cursor.fetchall():
                record, parsed = from_json(raw_text), from_json(parsed_text)
                if in_transaction is None:
                    noop(parsed, None)
                else:
                    batch.append(parsed)
                text = encode(record)
                done = text if parsed == record else encode(parsed)
                results.append((job_id, batch_id, index, "processed", text, done, "[]", None))
            with raw.transaction():
                if in_transaction is not None:
                    in_transaction(raw, batch)
                args = (len(results), batch_id, worker_id, version + 1)
                if raw.execute(self.finish, args) != 1:
                    raise AssertionError("the raw fence refused its own claim")
                raw.insert_many(self.records, RECORD_COLUMNS, results, self.tail)
            processed += len(results)
        raw.execute(self.finalize, (int(time.time() * 1000), job_id, job_id))
        return processed


def source_text(i: int) -> str:
    """``encode(common.source_record(i))``, written as text: the physical limit's records
    arrive with their JSON ready-made (as JSON Lines do), at no encoding cost."""
    return f'{{"email":"user{i}@example.com","name":"User {i}","age":{i % 90},"tags":["a","b"]}}'


class RawMinimal(RawPipeline):
    """The physical limit of a job on the shared tables: each record written the fewest
    times they allow, by the raw driver.

    Prepare: as ``RawPipeline`` (the job row, one transaction per batch of pending rows,
    raw and parsed the same text), from JSON text ready-made. Work: take the lowest PENDING
    batch by a conditional UPDATE, read and decode its raw records, call the no-op, then in
    one transaction the fenced completion and one set-based UPDATE of the batch's records'
    status (parsed already holds the raw text). The last worker finalizes the job.
    """

    def __init__(self, raw: Raw, prefix: str) -> None:
        super().__init__(raw, prefix)
        q, p = raw.q, raw.p
        self.read_raw = (
            f"SELECT {q('recordIndex')}, {q('raw')} FROM {q(self.records)} "
            f"WHERE {q('jobId')} = {p} AND {q('batchId')} = {p}"
        )
        self.mark = (
            f"UPDATE {q(self.records)} SET {q('status')} = 'processed' "
            f"WHERE {q('jobId')} = {p} AND {q('batchId')} = {p}"
        )

    def prepare_texts(self, texts: Iterable[str], batch_size: int) -> tuple[str, int]:
        """The job from records' JSON texts: ids, rows, transactions; no encoding."""
        job_id = str(uuid.uuid4())
        batch_rows: list[tuple[Any, ...]] = []

        def chunks() -> Iterator[list[tuple[Any, ...]]]:
            chunk: list[tuple[Any, ...]] = []
            batch_id = ""
            for i, text in enumerate(texts):
                if not chunk:
                    batch_id = str(uuid.uuid4())
                    batch_rows.append(
                        (batch_id, job_id, len(batch_rows), "PENDING", None, None, i, i, 0, 0, 0)
                    )
                chunk.append((job_id, batch_id, i, "pending", text, text, "[]", None))
                if len(chunk) == batch_size:
                    yield self._closed(batch_rows, chunk)
                    chunk = []
            if chunk:
                yield self._closed(batch_rows, chunk)

        total = self.write_job(job_id, encode({"batchSize": batch_size}), chunks(), batch_rows)
        return job_id, total

    @staticmethod
    def _closed(batch_rows: list[tuple[Any, ...]], chunk: list[tuple[Any, ...]]) -> Any:
        last = batch_rows[-1]
        batch_rows[-1] = (*last[:7], chunk[-1][2], *last[8:])
        return chunk

    def work(
        self,
        job_id: str,
        worker_id: str,
        in_transaction: Callable[[Raw, list[Any]], object] | None = None,
    ) -> int:
        """Process batches until none is PENDING; the records processed."""
        raw, processed = self.raw, 0
        while True:
            taken = self.take_next(job_id, worker_id)
            if taken is None:
                break
            if not taken:
                continue  # another worker took it first
            batch_id, version = taken
            raw.cursor.execute(self.read_raw, (job_id, batch_id))
            count = 0
            for _, text in raw.cursor.fetchall():
                noop(from_json(text), None)
                count += 1
            with raw.transaction():
                if raw.execute(self.finish, (count, batch_id, worker_id, version + 1)) != 1:
                    raise AssertionError("the raw fence refused its own claim")
                if raw.execute(self.mark, (job_id, batch_id)) != count:
                    raise AssertionError("the raw status update missed records")
            processed += count
        raw.execute(self.finalize, (int(time.time() * 1000), job_id, job_id))
        return processed
