"""PeeweeStateStore: batch-job state in any Peewee database, shared by many workers.

Every write that must be atomic is one transaction (``_write``); every "only one wins"
decision is a conditional UPDATE whose row count decides. The few statements that carry the
coordination (claim, fenced completion, heartbeat, reclaim, finalize) are grouped below under
"Coordination", each with a comment saying why it is safe.
"""

from __future__ import annotations

import contextlib
import random
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from itertools import chain
from operator import itemgetter
from typing import Any, TypeVar, cast

import peewee as pw

from . import codec
from .codec import check_count, check_id, check_worker_id
from .dialects import Dialect, dialect_for
from .domain import (
    FAILED_RECORD_STATUSES,
    PENDING_RECORD_STATUSES,
    TERMINAL_BATCH_STATUSES,
    Batch,
    BatchReservation,
    BatchState,
    BatchStatus,
    ClaimBatchResult,
    ClaimFailureReason,
    DistributedJobStatus,
    JobConfig,
    JobProgress,
    JobState,
    JobStatus,
    ProcessedRecord,
    RecordStatus,
)
from .encoding import (
    Processed,
    RecordRow,
    batch_json,
    check_completion,
    check_job,
    pending_rows,
    raw_from_row,
    record_from_row,
    record_rows,
    set_batch_in_list,
    status_of,
)
from .errors import (
    InvalidInputError,
    JobNotFoundError,
    SchemaMismatchError,
)
from .ports import (
    distributed_status_of,
    parse_job_status,
    progress_from_records,
    progress_of,
)
from .tables import Tables, build_tables, check_table_prefix, unwrap

T = TypeVar("T")

_MAX_ATTEMPTS = 8
_BACKOFF_BASE_S = 0.01
_BACKOFF_CAP_S = 1.0
_CHUNK_BYTES = 4 * 1024 * 1024  # keep each bulk statement well inside max_allowed_packet
_CLOCK_REFRESH_S = 30.0
_RECORD_COLUMNS = 8  # the length of a RecordRow
# PostgreSQL: from this many rows on, the unnest upsert beats the VALUES list (below, the
# arrays' casts cost more than they spare: 18 % fewer calls/s for one row, even at 10).
_UNNEST_MIN_ROWS = 16
_PENDING_BATCH = BatchStatus.PENDING.value

Clock = Callable[[], int]


class _StaleStatement(pw.ProgrammingError):
    """A statement built once per store no longer fits its table; it has been dropped, and
    the write is run again (once) with one built afresh."""


def _stale(exc: BaseException, attempt: int) -> bool:
    return isinstance(exc, _StaleStatement) and attempt == 1


def backoff_delay(attempt: int) -> float:
    """Seconds to wait before retry ``attempt`` (1-based): exponential, capped, jittered."""
    ceiling = min(_BACKOFF_CAP_S, _BACKOFF_BASE_S * 2 ** (attempt - 1))
    return random.uniform(ceiling / 2, ceiling)


class _DatabaseClock:
    """The database server's clock in epoch ms, read once and carried on a monotonic clock.

    Every worker measures lease ages against the server's clock, so workers on machines
    whose clocks disagree still agree on when a lease is stale. The offset is re-read every
    30 s; between reads a local clock step cannot move it (monotonic base).
    """

    def __init__(self, database: pw.Database, sql: str) -> None:
        self._database = database
        self._sql = sql
        self._lock = threading.Lock()
        self._offset_ms: float | None = None
        self._read_at = 0.0

    def __call__(self) -> int:
        now = time.monotonic()
        with self._lock:
            if self._offset_ms is None or now - self._read_at > _CLOCK_REFRESH_S:
                before = time.monotonic()
                cursor: Any = self._database.execute_sql(self._sql)  # type: ignore[no-untyped-call]
                server_ms = int(cursor.fetchone()[0])
                after = time.monotonic()
                self._offset_ms = server_ms - (before + after) / 2 * 1000
                self._read_at = after
                now = after
            return int(now * 1000 + self._offset_ms)


class _Sql:
    """The statements every claim and completion runs, as SQL text written once per store.

    Building them with Peewee's query builder on every call cost several times what the
    database takes to run them (see benchmarks/RESULTS.md). Each spells out the Peewee
    query it stands for; the comments where they run say why they are safe.
    """

    def __init__(self, database: pw.Database, tables: Tables) -> None:
        left, right = database.quote[0], database.quote[1]
        p = database.param
        J, B, R = tables.jobs, tables.batches, tables.records

        def c(field: Any) -> str:
            return f"{left}{field.column_name}{right}"

        jobs = f"{left}{J._meta.table_name}{right}"
        batches = f"{left}{B._meta.table_name}{right}"
        records = f"{left}{R._meta.table_name}{right}"
        self.job_status = f"SELECT {c(J.status)} FROM {jobs} WHERE {c(J.id)} = {p}"
        pending = (
            f"SELECT {c(B.id)}, {c(B.batch_index)}, {c(B.record_start_index)}, "
            f"{c(B.record_end_index)}, {c(B.version)} FROM {batches} "
            f"WHERE {c(B.job_id)} = {p} AND {c(B.status)} = {p} ORDER BY {c(B.batch_index)}"
        )
        self.pending = f"{pending} LIMIT 16"
        self.pending_locked = f"{pending} LIMIT 1 FOR UPDATE SKIP LOCKED"
        self.take = (
            f"UPDATE {batches} SET {c(B.status)} = {p}, {c(B.worker_id)} = {p}, "
            f"{c(B.claimed_at)} = {p}, {c(B.version)} = {c(B.version)} + 1 "
            f"WHERE {c(B.id)} = {p} AND {c(B.version)} = {p} AND {c(B.status)} = {p}"
        )
        self.finish = (
            f"UPDATE {batches} SET {c(B.status)} = {p}, {c(B.processed_count)} = {p}, "
            f"{c(B.failed_count)} = {p}, {c(B.version)} = {c(B.version)} + 1 "
            f"WHERE {c(B.id)} = {p} AND {c(B.job_id)} = {p} AND {c(B.worker_id)} = {p} "
            f"AND {c(B.version)} = {p} AND {c(B.status)} = {p}"
        )
        self.batch_raw = (
            f"SELECT {c(R.record_index)}, {c(R.raw)} FROM {records} "
            f"WHERE {c(R.job_id)} = {p} AND {c(R.batch_id)} = {p}"
        )


def _rows(database: pw.Database, sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
    cursor: Any = database.execute_sql(sql, params)  # type: ignore[no-untyped-call]
    return list(cursor.fetchall())


def _changed(database: pw.Database, sql: str, params: Sequence[Any]) -> int:
    cursor: Any = database.execute_sql(sql, params)  # type: ignore[no-untyped-call]
    return int(cursor.rowcount)


class _Resolved:
    """What a store learns about its database once: dialect, models and clock."""

    def __init__(self, database: pw.Database | pw.DatabaseProxy, prefix: str) -> None:
        real = unwrap(database)
        self.database = real
        self.dialect: Dialect = dialect_for(real)
        self.tables: Tables = build_tables(
            database, prefix, table_settings=self.dialect.table_settings()
        )
        self.clock: Clock | None = (
            _DatabaseClock(real, self.dialect.now_sql) if self.dialect.now_sql else None
        )
        self._skip_locked: bool | None = None
        self.sql = _Sql(real, self.tables)

    def skip_locked(self) -> bool:
        if self._skip_locked is None:
            self.database.connect(reuse_if_open=True)  # the server version is known once connected
            self._skip_locked = self.dialect.supports_skip_locked()
        return self._skip_locked


class PeeweeStateStore:
    """Persists batch jobs in a Peewee database and coordinates workers through it.

    ``database`` is any Peewee ``Database`` (SQLite, MySQL/MariaDB, PostgreSQL, pooled
    variants) or a ``DatabaseProxy``; the store binds models of its own to it and never
    alters the caller's models or settings. ``clock`` returns epoch ms; ``None`` means the
    database server's clock (this machine's for SQLite), so lease timing does not depend on
    several machines' clocks agreeing.
    """

    def __init__(
        self,
        database: pw.Database | pw.DatabaseProxy,
        *,
        table_prefix: str = "batchactions_",
        clock: Clock | None = None,
    ) -> None:
        if not isinstance(database, (pw.Database, pw.DatabaseProxy)):
            kind = type(database).__name__
            raise InvalidInputError(f"database must be a peewee Database or DatabaseProxy: {kind}")
        self.database = database
        self.table_prefix = check_table_prefix(table_prefix)
        self._clock = clock
        self._resolved: _Resolved | None = None
        self._upsert_sql_cache: dict[int, str] = {}
        self._unnest_sql_text: str | None = None  # built from the table's column types
        self._resolve_lock = threading.Lock()
        #: Forces the portable compare-and-set claim even where SKIP LOCKED exists (tests).
        self.force_cas_claim = False

    # -- plumbing -------------------------------------------------------------------------

    @property
    def _r(self) -> _Resolved:
        # Resolved on first use, so a DatabaseProxy may be initialized after construction.
        if self._resolved is None:
            with self._resolve_lock:
                if self._resolved is None:
                    self._resolved = _Resolved(self.database, self.table_prefix)
        return self._resolved

    @property
    def tables(self) -> Tables:
        """This store's three Peewee models (bound to ``database`` with ``table_prefix``)."""
        return self._r.tables

    @property
    def dialect(self) -> Dialect:
        """What this store knows about its kind of database."""
        return self._r.dialect

    def now(self) -> int:
        """The store's clock in epoch ms: the injected ``clock``, else the database's."""
        if self._clock is not None:
            return int(self._clock())
        clock = self._r.clock
        if clock is None:
            return int(time.time() * 1000)
        # The server's clock is a query: a lost connection is retried like any read (inside
        # a transaction _retrying re-raises, and the caller's retry re-runs the whole write).
        return self._retrying(clock, transaction=False)

    def _retrying(
        self,
        operation: Callable[[], T],
        *,
        transaction: bool = True,
        recover: Callable[[], T | None] | None = None,
    ) -> T:
        """Run ``operation`` (in a write transaction), re-running it after transient errors.

        Retried: errors after which the database rolled the whole transaction back (SQLite
        busy, MySQL deadlock / lock wait timeout, PostgreSQL serialization failure /
        deadlock), and lost connections. After a lost connection a COMMIT may have landed
        unseen, so ``recover`` (when given) first checks whether it did and returns that
        outcome; every other operation is idempotent (upserts keyed by job and record index,
        updates that set values). Inside a caller's own transaction nothing is retried: the
        caller's transaction is what failed.
        """
        r = self._r
        nested = r.database.in_transaction()
        attempt, check_landed = 0, False
        while True:
            try:
                if check_landed and recover is not None:
                    landed = recover()
                    if landed is not None:
                        return landed
                if not transaction:
                    return operation()
                with r.dialect.write_transaction():
                    return operation()
            except (pw.DatabaseError, pw.InterfaceError) as exc:
                attempt += 1
                disconnected = r.dialect.is_disconnect(exc)
                if nested or attempt >= _MAX_ATTEMPTS:
                    if disconnected and not nested:
                        self._drop_connection()  # the next call starts on a new connection
                    raise
                if not (disconnected or r.dialect.is_transient(exc) or _stale(exc, attempt)):
                    raise
                if disconnected:
                    self._drop_connection()
                    check_landed = True
            time.sleep(backoff_delay(attempt))

    def _drop_connection(self) -> None:
        """Forget this thread's dead connection; the next query opens a new one."""
        with contextlib.suppress(Exception):  # a dead connection may fail to close: it is gone
            self._r.database.close()

    def _read(self, operation: Callable[[], T]) -> T:
        """Run several reads in one transaction, so they see one consistent state."""
        r = self._r

        def in_transaction() -> T:
            with r.database.atomic():
                return operation()

        return self._retrying(in_transaction, transaction=False)

    def _chunks(
        self,
        rows: Sequence[tuple[Any, ...]],
        columns: int,
        weigh: Callable[[Any], int] | None = None,
    ) -> Iterator[Sequence[Any]]:
        """Split a bulk write to the dialect's parameter limit and a few MiB per statement."""
        limit = max(1, self._r.dialect.max_params // columns)
        weigh = weigh or _text_bytes
        start, size = 0, 0
        for i, row in enumerate(rows):
            size += weigh(row)
            if i + 1 - start >= limit or size >= _CHUNK_BYTES:
                yield rows[start : i + 1]
                start, size = i + 1, 0
        if start < len(rows):
            yield rows[start:]

    # -- schema ---------------------------------------------------------------------------

    def create_tables(self) -> None:
        """Create the three tables and their indexes where missing (idempotent).

        A table that exists, ours or one the TypeScript adapters created, is left as it is,
        provided it has every column we use; an index is created only if no index of that
        name or of those columns exists. Safe to run from several processes at once.
        """
        self._unnest_sql_text = None  # the column types may change
        for model in self._r.tables.all:
            self._create_table(model)
            for index in model._meta.fields_to_index():
                self._create_index(model, index)

    def _create_table(self, model: type[pw.Model]) -> None:
        database, name = self._r.database, model._meta.table_name
        if database.table_exists(name):
            self._check_columns(model)
            return
        try:
            model.create_table(safe=False)
        except pw.DatabaseError:
            if not database.table_exists(name):  # else another process got there first
                raise

    def _create_index(self, model: type[pw.Model], index: Any) -> None:
        database, name = self._r.database, model._meta.table_name
        columns = [f.column_name for f in index._expressions]

        def present() -> bool:
            return any(
                i.name == index._name or i.columns == columns for i in database.get_indexes(name)
            )

        if present():
            return
        try:
            query: Any = cast(Any, model)._schema._create_index(index)
            database.execute(query)  # type: ignore[no-untyped-call]
        except pw.DatabaseError:
            if not present():  # else another process got there first
                raise

    def _check_columns(self, model: type[pw.Model]) -> None:
        table = model._meta.table_name
        found = {c.name for c in self._r.database.get_columns(table)}
        missing = [f.column_name for f in model._meta.sorted_fields if f.column_name not in found]
        if missing:
            raise SchemaMismatchError(
                f"table {table!r} exists but lacks columns {missing}: it is not a batchactions "
                "table (choose another table_prefix) or needs `batchactions-peewee migrate`"
            )

    def drop_tables(self) -> None:
        """Drop the three tables where present (idempotent)."""
        r = self._r
        self._unnest_sql_text = None
        r.database.drop_tables(r.tables.all, safe=True)

    # -- records -------------------------------------------------------------------------

    def _upsert_records(self, rows: Sequence[RecordRow]) -> None:
        """Insert or replace records keyed by (job, record index): idempotent, so re-runnable.

        One multi-row INSERT per chunk (the fastest form on all three databases: see
        benchmarks/profiles/bulk-statement-forms.txt), its SQL built by Peewee once per
        chunk length and reused: building it per call cost more than the database's work.
        """
        database = self._r.database
        if self._r.dialect.name == "postgres" and len(rows) >= _UNNEST_MIN_ROWS:
            # One row of eight arrays: see _unnest_sql.
            for chunk in self._record_chunks(rows, 1):
                cached = self._unnest_sql_text is not None
                try:
                    database.execute_sql(self._unnest_sql(), _unnest_params(chunk))  # type: ignore[no-untyped-call]
                except pw.ProgrammingError as exc:
                    if not cached:
                        raise
                    # Built from column types that may have changed since (the table made
                    # again by another process): build it afresh and run the write again.
                    self._unnest_sql_text = None
                    raise _StaleStatement(str(exc)) from exc
            return
        for chunk in self._record_chunks(rows, _RECORD_COLUMNS):
            params = list(chain.from_iterable(chunk))
            database.execute_sql(self._upsert_sql(len(chunk)), params)  # type: ignore[no-untyped-call]

    def _record_chunks(
        self, rows: Sequence[RecordRow], params_per_row: int
    ) -> Iterable[Sequence[RecordRow]]:
        if len(rows) == 1 or (
            len(rows) <= self._r.dialect.max_params // params_per_row
            and _records_bytes(rows) < _CHUNK_BYTES
        ):
            return (rows,)  # one row cannot be split; the common case is weighed in C
        return self._chunks(rows, params_per_row, weigh=_record_bytes)

    def _unnest_sql(self) -> str:
        """PostgreSQL's records upsert: eight arrays, one per column, unnested into rows.

        The server parses eight array literals faster than a VALUES list of thousands of
        parameters, and a parsed form equal to the raw one (most records) is sent once, as
        NULL, and copied by COALESCE (benchmarks/profiles/bulk-statement-forms.txt: a
        quarter less time than the multi-row VALUES upsert). The arrays are cast to the
        table's own column types, which are jsonb in tables Prisma created.
        """
        sql = self._unnest_sql_text
        if sql is None:
            R = self._r.tables.records
            table = R._meta.table_name
            types = self._r.dialect.column_types(table)
            fields = _record_fields(R)
            names = [f'"{f.column_name}"' for f in fields]
            arrays = ", ".join(f"%s::{types.get(f.column_name, 'text')}[]" for f in fields)
            keys = {R.job_id.column_name, R.record_index.column_name}
            sets = ", ".join(
                f"{n} = EXCLUDED.{n}"
                for f, n in zip(fields, names, strict=True)
                if f.column_name not in keys
            )
            sql = (
                f'INSERT INTO "{table}" ({", ".join(names)}) '
                "SELECT u.j, u.b, u.i, u.s, u.r, COALESCE(u.p, u.r), u.e, u.x "
                f"FROM unnest({arrays}) AS u(j, b, i, s, r, p, e, x) "
                f'ON CONFLICT ("{R.job_id.column_name}", "{R.record_index.column_name}") '
                f"DO UPDATE SET {sets}"
            )
            if types:
                self._unnest_sql_text = sql
        return sql

    def _upsert_sql(self, rows: int) -> str:
        """The SQL of the records upsert for ``rows`` rows, with placeholders."""
        sql = self._upsert_sql_cache.get(rows)
        if sql is None:
            R = self._r.tables.records
            key = [R.job_id, R.record_index]
            rest = [R.batch_id, R.status, R.raw, R.parsed, R.errors, R.processing_error]
            fields = _record_fields(R)
            target = None if self._r.dialect.name == "mysql" else key
            placeholder = ("", "", 0, "", "", "", "", "")
            query = R.insert_many([placeholder] * rows, fields=fields).on_conflict(
                conflict_target=target, preserve=rest
            )
            sql, params = query.sql()
            assert len(params) == rows * len(fields), "every value must be a placeholder"
            self._upsert_sql_cache[rows] = sql
        return sql

    def _select_records(self, *where: Any) -> list[ProcessedRecord]:
        R = self._r.tables.records
        query: Any = R.select(
            R.record_index, R.status, R.raw, R.parsed, R.errors, R.processing_error
        ).where(*where)
        # No ORDER BY: with one, SQLite walks the (jobId, recordIndex) index over the whole
        # job to spare a sort, instead of using the index of the filter (batch or status).
        # Sorting the rows here costs little. Rows come straight from the driver's cursor:
        # Peewee's row-by-row wrapper cost more than the query itself.
        sql, params = query.sql()

        def read() -> list[ProcessedRecord]:
            cursor: Any = self._r.database.execute_sql(sql, params)  # type: ignore[no-untyped-call]
            rows = sorted(cursor.fetchall(), key=lambda row: int(row[0]))
            return [record_from_row(row) for row in rows]

        return self._read(read)

    # -- StateStore port ------------------------------------------------------------------

    def save_job_state(self, job: JobState) -> None:
        """Upsert the job. For a distributed job, insert a batches row for every batch that
        has none; an existing row is never reset (re-saving must not undo live claims).

        Records carried inside ``job.batches`` are upserted into the records table; like the
        TypeScript adapters, ``get_job_state`` returns batches without their records.
        """
        config, batches_json = check_job(job)
        rows = [row for b in job.batches for row in record_rows(job.id, b.id, b.records)]
        self._retrying(lambda: self._save_job(job, config, batches_json, rows))

    def _save_job(
        self, job: JobState, config: str, batches_json: str, rows: Sequence[RecordRow]
    ) -> None:
        J = self._r.tables.jobs
        values = {
            J.id: job.id,
            J.status: status_of(JobStatus, job.status).value,
            J.config: config,
            J.batches: batches_json,
            J.total_records: job.total_records,
            J.started_at: job.started_at,
            J.completed_at: job.completed_at,
            J.distributed: job.distributed,
        }
        target = None if self._r.dialect.name == "mysql" else [J.id]
        J.insert(values).on_conflict(conflict_target=target, preserve=list(values)[1:]).execute()
        if job.distributed and job.batches:
            self._insert_missing_batches(job)
        if rows:
            self._upsert_records(rows)

    def _insert_missing_batches(self, job: JobState) -> None:
        B = self._r.tables.batches
        fields = [
            B.id,
            B.job_id,
            B.batch_index,
            B.status,
            B.worker_id,
            B.claimed_at,
            B.record_start_index,
            B.record_end_index,
            B.processed_count,
            B.failed_count,
            B.version,
        ]
        rows = [
            (
                b.id,
                job.id,
                b.index,
                status_of(BatchStatus, b.status).value,
                b.worker_id,
                b.claimed_at,
                b.record_start_index or 0,
                b.record_end_index or 0,
                b.processed_count,
                b.failed_count,
                0,
            )
            for b in job.batches
        ]
        for chunk in self._chunks(rows, len(fields)):
            # Existing rows win: a re-saved job must not undo claims made in the meantime.
            B.insert_many(chunk, fields=fields).on_conflict_ignore().execute()
        ids = [b.id for b in job.batches]
        owned = 0
        for chunk_ids in self._chunks([(i,) for i in ids], 1):
            owned += (
                B.select().where(B.job_id == job.id, B.id.in_([c[0] for c in chunk_ids])).count()
            )
        if owned != len(set(ids)):
            raise InvalidInputError(
                f"job {job.id!r}: a batch id is used by another job, or two batches share an "
                "id or an index; batch ids are unique across all jobs"
            )

    def get_job_state(self, job_id: str) -> JobState | None:
        """The job, or None. A distributed job's batches are read live from the batches table."""
        check_id(job_id, "job id")
        return self._read(lambda: self._load_job(job_id))

    def _load_job(self, job_id: str) -> JobState | None:
        J = self._r.tables.jobs
        row = J.select().where(J.id == job_id).first()
        if row is None:
            return None
        live = self._batch_rows([job_id]).get(job_id) if row.distributed else None
        return self._job_from_row(row, live)

    def _batch_rows(self, job_ids: list[str]) -> dict[str, list[Batch]]:
        B = self._r.tables.batches
        found: dict[str, list[Batch]] = {}
        query = B.select().where(B.job_id.in_(job_ids)).order_by(B.job_id, B.batch_index)
        for b in query:
            found.setdefault(b.job_id, []).append(
                Batch(
                    id=b.id,
                    index=int(b.batch_index),
                    status=b.status,
                    processed_count=int(b.processed_count),
                    failed_count=int(b.failed_count),
                    worker_id=b.worker_id,
                    claimed_at=None if b.claimed_at is None else int(b.claimed_at),
                    record_start_index=int(b.record_start_index),
                    record_end_index=int(b.record_end_index),
                )
            )
        return found

    @staticmethod
    def _job_from_row(row: Any, live_batches: list[Batch] | None) -> JobState:
        batches = (
            live_batches
            if live_batches
            else [Batch.model_validate(b) for b in codec.loads(row.batches) or []]
        )
        return JobState(
            id=row.id,
            config=JobConfig.model_validate(codec.loads(row.config)),
            status=row.status,
            batches=batches,
            total_records=int(row.total_records),
            started_at=None if row.started_at is None else int(row.started_at),
            completed_at=None if row.completed_at is None else int(row.completed_at),
            distributed=bool(row.distributed),
        )

    def update_batch_state(self, job_id: str, batch_id: str, state: BatchState) -> None:
        """Set a batch's status and counts: in the batches table for a distributed job, in
        the job's batch list otherwise."""
        check_id(job_id, "job id")
        check_id(batch_id, "batch id")
        status = status_of(BatchStatus, state.status).value
        processed = check_count(state.processed_count, "processed_count")
        failed = check_count(state.failed_count, "failed_count")
        self._retrying(lambda: self._update_batch(job_id, batch_id, status, processed, failed))

    def _update_batch(
        self, job_id: str, batch_id: str, status: str, processed: int, failed: int
    ) -> None:
        t = self._r.tables
        J, B = t.jobs, t.batches
        changed = (
            B.update(
                status=status, processed_count=processed, failed_count=failed, version=B.version + 1
            )
            .where(B.id == batch_id, B.job_id == job_id)
            .execute()
        )
        # The job row's JSON list follows too, as the TypeScript adapters keep it: their
        # getJobState and getProgress read batches from it. The row lock keeps concurrent
        # updates of one job's list from losing each other.
        query = J.select(J.batches).where(J.id == job_id)
        if self._r.dialect.name != "sqlite":
            query = query.for_update()  # SQLite's write lock is already held (BEGIN IMMEDIATE)
        row = query.first()
        if row is None:
            if changed:
                return
            raise JobNotFoundError(f"job {job_id!r} does not exist")
        batches = codec.loads(row.batches) or []
        if not set_batch_in_list(batches, batch_id, status, processed, failed):
            if changed:
                return  # a batch the list does not hold: the batches table is the truth
            raise InvalidInputError(f"job {job_id!r} has no batch {batch_id!r}")
        J.update(batches=codec.dumps(batches)).where(J.id == job_id).execute()

    def save_processed_record(self, job_id: str, batch_id: str, record: ProcessedRecord) -> None:
        """Insert or replace one record (keyed by job and record index) in ONE statement."""
        rows = record_rows(job_id, batch_id, [record])
        self._retrying(lambda: self._upsert_records(rows), transaction=False)

    def get_failed_records(self, job_id: str) -> list[ProcessedRecord]:
        """Records with status failed or invalid, by record index."""
        R = self.tables.records
        return self._select_records(
            R.job_id == check_id(job_id, "job id"), R.status.in_(FAILED_RECORD_STATUSES)
        )

    def get_pending_records(self, job_id: str) -> list[ProcessedRecord]:
        """Records with status pending or valid, by record index."""
        R = self.tables.records
        return self._select_records(
            R.job_id == check_id(job_id, "job id"), R.status.in_(PENDING_RECORD_STATUSES)
        )

    def get_processed_records(self, job_id: str) -> list[ProcessedRecord]:
        """Records with status processed, by record index."""
        R = self.tables.records
        return self._select_records(
            R.job_id == check_id(job_id, "job id"), R.status == RecordStatus.PROCESSED.value
        )

    def get_progress(self, job_id: str) -> JobProgress:
        """Counts and timing of a job as SPEC §3 defines them.

        A distributed job's counts are the sums of its batches' counters, which the fenced
        ``complete_batch`` (and ``update_batch_state``) write, so the cost grows with the
        number of batches, not of records. A batch's records count once its completion is
        written. Other jobs count their records by status.
        """
        check_id(job_id, "job id")
        return self._read(lambda: self._progress(job_id))

    def _progress(self, job_id: str) -> JobProgress:
        t = self._r.tables
        J, B = t.jobs, t.batches
        head = (
            J.select(J.total_records, J.started_at, J.distributed)
            .where(J.id == job_id)
            .tuples()
            .first()
        )
        if head is None:
            raise JobNotFoundError(f"job {job_id!r} does not exist")
        total, started_at, distributed = head
        if distributed:
            completed = pw.Case(None, [(B.status == BatchStatus.COMPLETED.value, 1)], 0)
            sums: Any = (
                B.select(
                    pw.fn.COUNT(B.id),
                    pw.fn.SUM(completed),
                    pw.fn.SUM(B.processed_count),
                    pw.fn.SUM(B.failed_count),
                )
                .where(B.job_id == job_id)
                .tuples()
                .first()
            )
            batches, completed_batches, processed, failed = (int(v or 0) for v in sums)
            if batches:
                return progress_of(
                    total=int(total),
                    processed=processed,
                    failed=failed,
                    completed_batches=completed_batches,
                    total_batches=batches,
                    started_at=None if started_at is None else int(started_at),
                    now=self.now(),
                )
        job = self._load_job(job_id)
        assert job is not None
        return progress_from_records(job, self._record_counts(job_id), self.now())

    def _record_counts(self, job_id: str) -> dict[str, int]:
        R = self._r.tables.records
        query: Any = (
            R.select(R.status, pw.fn.COUNT(R.id))
            .where(R.job_id == job_id)
            .group_by(R.status)
            .tuples()
        )
        return {status: int(count) for status, count in query}

    # -- DistributedStateStore port: coordination -----------------------------------------

    def claim_batch(self, job_id: str, worker_id: str) -> ClaimBatchResult:
        """Claim the lowest-index PENDING batch of a PROCESSING job for ``worker_id``.

        A worker that loses a race moves on to the next candidate; NO_PENDING_BATCHES only
        when no PENDING batch is left.
        """
        check_id(job_id, "job id")
        check_worker_id(worker_id)
        r = self._r
        # The last UPDATE tried: a lost connection may hide that it landed.
        attempts: list[tuple[tuple[Any, ...], int]] = []

        def landed() -> ClaimBatchResult | None:
            return self._claim_landed(job_id, worker_id, *attempts[-1]) if attempts else None

        if r.dialect.name == "sqlite":
            # One IMMEDIATE transaction holds SQLite's only write lock: nobody can race us.
            return self._retrying(
                lambda: self._claim_cas(job_id, worker_id, attempts), recover=landed
            )
        if r.skip_locked() and not self.force_cas_claim:
            result = self._retrying(
                lambda: self._claim_skip_locked(job_id, worker_id, attempts), recover=landed
            )
            if result is not None:
                return result
            # Every PENDING row we saw was locked by an in-flight claim: let the
            # compare-and-set path wait for those and give the definitive answer.
        return self._retrying(
            lambda: self._claim_cas(job_id, worker_id, attempts), transaction=False, recover=landed
        )

    def _claim_landed(
        self, job_id: str, worker_id: str, row: tuple[Any, ...], now: int
    ) -> ClaimBatchResult | None:
        """The claim of ``row`` at ``now`` if it committed unseen, else None.

        Exact: only that UPDATE moves that batch to that version with this worker and stamp.
        """
        B = self._r.tables.batches
        batch_id, _, _, _, version = row
        taken = B.select().where(
            B.id == batch_id,
            B.version == version + 1,
            B.worker_id == worker_id,
            B.claimed_at == now,
            B.status == BatchStatus.PROCESSING.value,
        )
        return _claimed(job_id, worker_id, row, now) if taken.exists() else None

    def _job_status(self, job_id: str) -> ClaimFailureReason | None:
        r = self._r
        found = _rows(r.database, r.sql.job_status, (job_id,))
        status = found[0][0] if found else None
        if status is None:
            return ClaimFailureReason.JOB_NOT_FOUND
        if status != JobStatus.PROCESSING.value:
            return ClaimFailureReason.JOB_NOT_PROCESSING
        return None

    def _take(
        self,
        job_id: str,
        worker_id: str,
        row: tuple[Any, ...],
        now: int,
        attempts: list[tuple[tuple[Any, ...], int]],
    ) -> bool:
        """CLAIM: PENDING -> PROCESSING only if the row still has the version we read.

        Safe because the WHERE re-checks version and status on the current row under its
        row lock, and the SET always changes ``version``, so the row count (rows changed on
        MySQL, rows matched elsewhere) is 1 for exactly one claimer.
        """
        r = self._r
        batch_id, _, _, _, version = row
        attempts.append((row, now))
        params = (BatchStatus.PROCESSING.value, worker_id, now, batch_id, version, _PENDING_BATCH)
        return _changed(r.database, r.sql.take, params) == 1

    def _pending_columns(self) -> Any:
        B = self._r.tables.batches
        return B.select(B.id, B.batch_index, B.record_start_index, B.record_end_index, B.version)

    def _pending_query(self, job_id: str) -> Any:
        B = self._r.tables.batches
        return (
            self._pending_columns()
            .where(B.job_id == job_id, B.status == BatchStatus.PENDING.value)
            .order_by(B.batch_index)
        )

    def _claim_skip_locked(
        self, job_id: str, worker_id: str, attempts: list[tuple[tuple[Any, ...], int]]
    ) -> ClaimBatchResult | None:
        # Inside one transaction: FOR UPDATE SKIP LOCKED hands each claimer a different row,
        # so claimers do not queue behind each other on the lowest PENDING batch.
        failure = self._job_status(job_id)
        if failure is not None:
            return ClaimBatchResult(claimed=False, reason=failure)
        r = self._r
        found = _rows(r.database, r.sql.pending_locked, (job_id, _PENDING_BATCH))
        row = found[0] if found else None
        if row is None:
            return None if self._pending_query(job_id).exists() else _no_pending()
        now = self.now()
        if not self._take(job_id, worker_id, row, now, attempts):
            return None
        return _claimed(job_id, worker_id, row, now)

    def _claim_cas(
        self, job_id: str, worker_id: str, attempts: list[tuple[tuple[Any, ...], int]]
    ) -> ClaimBatchResult:
        # Portable path: read candidates, take the first whose version still matches. Each
        # loss means another worker took that batch, so the loop ends when batches run out.
        while True:
            failure = self._job_status(job_id)
            if failure is not None:
                return ClaimBatchResult(claimed=False, reason=failure)
            candidates = _rows(self._r.database, self._r.sql.pending, (job_id, _PENDING_BATCH))
            if not candidates:
                return _no_pending()
            now = self.now()
            for row in candidates:
                if self._take(job_id, worker_id, row, now, attempts):
                    return _claimed(job_id, worker_id, row, now)

    def release_batch(self, job_id: str, batch_id: str, worker_id: str) -> None:
        """Return the batch to PENDING, only while ``worker_id`` still holds it."""
        self._release(job_id, batch_id, worker_id, version=None)

    def release(self, reservation: BatchReservation) -> bool:
        """Release a reservation (fenced by its version); True if it still held."""
        return self._release(
            reservation.job_id, reservation.batch_id, reservation.worker_id, reservation.version
        )

    def _release(self, job_id: str, batch_id: str, worker_id: str, version: int | None) -> bool:
        check_id(job_id, "job id")
        check_id(batch_id, "batch id")
        check_worker_id(worker_id)
        B = self.tables.batches
        where = [
            B.id == batch_id,
            B.job_id == job_id,
            B.worker_id == worker_id,
            B.status == BatchStatus.PROCESSING.value,
        ]
        if version is not None:
            where.append(B.version == version)
        # Safe: conditional on the holder; version + 1 fences the old holder out for good.
        query = B.update(
            status=BatchStatus.PENDING.value, worker_id=None, claimed_at=None, version=B.version + 1
        ).where(*where)
        return bool(self._retrying(query.execute))

    def reclaim_stale_batches(self, job_id: str, timeout_ms: int) -> int:
        """Return PROCESSING batches claimed more than ``timeout_ms`` ago to PENDING.

        Returns how many. Safe concurrently: each row moves once (the UPDATE re-checks the
        status under the row lock), and version + 1 fences out the stale holder.
        """
        check_id(job_id, "job id")
        check_count(timeout_ms, "timeout_ms", codec.MAX_BIGINT // 2)
        B = self.tables.batches

        def reclaim() -> int:
            cutoff = self.now() - timeout_ms
            return int(
                B.update(
                    status=BatchStatus.PENDING.value,
                    worker_id=None,
                    claimed_at=None,
                    version=B.version + 1,
                )
                .where(
                    B.job_id == job_id,
                    B.status == BatchStatus.PROCESSING.value,
                    (B.claimed_at < cutoff) | B.claimed_at.is_null(),
                )
                .execute()
            )

        return self._retrying(reclaim)

    def heartbeat(self, reservation: BatchReservation) -> bool:
        """Renew the lease while the reservation holds (same worker, version, PROCESSING)."""
        B = self.tables.batches

        def renew() -> int:
            now = self.now()
            # The new claimedAt always differs from the old one, so MySQL's "rows changed"
            # count is 1 whenever the reservation holds.
            renewed = pw.Case(None, [(B.claimed_at >= now, B.claimed_at + 1)], now)
            return int(B.update(claimed_at=renewed).where(*self._holds(reservation)).execute())

        return self._retrying(renew) == 1

    def _holds(self, reservation: BatchReservation) -> list[Any]:
        B = self._r.tables.batches
        check_id(reservation.job_id, "job id")
        check_id(reservation.batch_id, "batch id")
        check_worker_id(reservation.worker_id)
        return [
            B.id == reservation.batch_id,
            B.job_id == reservation.job_id,
            B.worker_id == reservation.worker_id,
            B.version == reservation.version,
            B.status == BatchStatus.PROCESSING.value,
        ]

    def complete_batch(
        self,
        reservation: BatchReservation,
        *,
        status: BatchStatus = BatchStatus.COMPLETED,
        processed_count: int,
        failed_count: int,
        records: Iterable[ProcessedRecord] = (),
    ) -> bool:
        """Write the batch's final state and its records in one transaction, only while the
        reservation still holds; return False and write nothing otherwise."""
        return self._complete(reservation, status, processed_count, failed_count, records, ())

    def complete_batch_processed(
        self,
        reservation: BatchReservation,
        *,
        status: BatchStatus = BatchStatus.COMPLETED,
        processed_count: int,
        failed_count: int,
        processed: Iterable[Processed],
        records: Iterable[ProcessedRecord] = (),
    ) -> bool:
        """``complete_batch`` with the records processed without error given as (index,
        raw, parsed) in ``processed``, and only the others as ProcessedRecords (see
        ``ProcessedRecordsWriter``): the worker's completion."""
        return self._complete(
            reservation, status, processed_count, failed_count, records, processed
        )

    def _complete(
        self,
        reservation: BatchReservation,
        status: BatchStatus | str,
        processed_count: int,
        failed_count: int,
        records: Iterable[ProcessedRecord],
        done: Iterable[Processed],
    ) -> bool:
        status, rows = check_completion(
            reservation, status, processed_count, failed_count, records, done
        )
        self._holds(reservation)  # checks the reservation's ids
        B = self.tables.batches
        r = self._r
        fence = (
            status.value,
            processed_count,
            failed_count,
            reservation.batch_id,
            reservation.job_id,
            reservation.worker_id,
            reservation.version,
            BatchStatus.PROCESSING.value,
        )

        def complete() -> bool:
            # Fenced: the UPDATE matches only while this worker's version still holds; the
            # records follow in the same transaction, so they land only with the state.
            if _changed(r.database, r.sql.finish, fence) != 1:
                return False
            if rows:
                self._upsert_records(rows)
            return True

        def landed() -> bool | None:
            # The fenced UPDATE and the records commit together: the state proves both.
            done = B.select().where(
                B.id == reservation.batch_id,
                B.job_id == reservation.job_id,
                B.worker_id == reservation.worker_id,
                B.version == reservation.version + 1,
                B.status == status.value,
            )
            return True if done.exists() else None

        return self._retrying(complete, recover=landed)

    def try_finalize_job(self, job_id: str) -> bool:
        """Finish the job: True for exactly one caller, when the job is PROCESSING, has at
        least one batch and every batch is COMPLETED or FAILED. Sets FAILED if any batch
        failed, else COMPLETED, and ``completed_at``."""
        check_id(job_id, "job id")
        t = self.tables
        J, B = t.jobs, t.batches

        def batches_where(*conditions: Any) -> Any:
            return B.select(pw.SQL("1")).where(B.job_id == job_id, *conditions)

        won: list[tuple[int, object]] = []  # (stamp, transaction id) of an UPDATE that matched

        def finalize() -> bool:
            now = self.now()
            # One conditional UPDATE decides: the row moves out of PROCESSING once, so the
            # row count is 1 for exactly one caller.
            final = pw.Case(
                None,
                [
                    (
                        pw.fn.EXISTS(batches_where(B.status == BatchStatus.FAILED.value)),
                        JobStatus.FAILED.value,
                    )
                ],
                JobStatus.COMPLETED.value,
            )
            changed = (
                J.update(status=final, completed_at=now)
                .where(
                    J.id == job_id,
                    J.status == JobStatus.PROCESSING.value,
                    pw.fn.EXISTS(batches_where()),
                    ~pw.fn.EXISTS(batches_where(B.status.not_in(TERMINAL_BATCH_STATUSES))),
                )
                .execute()
            )
            if changed != 1:
                return False
            won.append((now, self._r.dialect.transaction_id()))
            batches = self._batch_rows([job_id]).get(job_id, [])
            J.update(batches=codec.dumps([batch_json(b) for b in batches])).where(
                J.id == job_id
            ).execute()
            return True

        def landed() -> bool | None:
            # Only an attempt whose UPDATE matched can have won. Where the server can say
            # whether that transaction committed (PostgreSQL), it decides; elsewhere the
            # job carrying our stamp does (a rival finalizing in the same millisecond,
            # after our matched UPDATE rolled back with the lost connection, could fool it).
            if not won:
                return None
            stamp, transaction = won.pop()
            committed = self._r.dialect.committed(transaction)
            if committed is not None:
                return True if committed else None
            finalized = J.select().where(
                J.id == job_id,
                J.status.in_([JobStatus.COMPLETED.value, JobStatus.FAILED.value]),
                J.completed_at == stamp,
            )
            return True if finalized.exists() else None

        # A plain read first: while a batch is unfinished there is nothing to decide, and
        # workers call this after every batch; on SQLite the write transaction would take the
        # database's only write lock for nothing. The conditional UPDATE still decides.
        if self._retrying(
            batches_where(B.status.not_in(TERMINAL_BATCH_STATUSES)).exists, transaction=False
        ):
            return False
        return self._retrying(finalize, recover=landed)

    # -- DistributedStateStore port: records and status -----------------------------------

    def save_batch_records(
        self, job_id: str, batch_id: str, records: Iterable[ProcessedRecord]
    ) -> None:
        """Bulk upsert a batch's records (keyed by job and record index)."""
        rows = record_rows(job_id, batch_id, records)
        if rows:
            self._retrying(lambda: self._upsert_records(rows))

    def save_pending_records(
        self, job_id: str, batch_id: str, first_index: int, records: Iterable[Mapping[str, Any]]
    ) -> None:
        """Bulk upsert of source records not processed yet, in one transaction: what
        ``save_batch_records`` does with PENDING ProcessedRecords whose raw and parsed forms
        are the given dicts, indexed from ``first_index``; ``prepare_job``'s bulk path."""
        rows = pending_rows(job_id, batch_id, first_index, records)
        if rows:
            self._retrying(lambda: self._upsert_records(rows))

    def save_processed_records(
        self, job_id: str, batch_id: str, records: Iterable[ProcessedRecord]
    ) -> None:
        """Bulk upsert of processed records, in one transaction."""
        self.save_batch_records(job_id, batch_id, records)

    def get_batch_records(self, job_id: str, batch_id: str) -> list[ProcessedRecord]:
        """A batch's records, by record index."""
        R = self.tables.records
        return self._select_records(
            R.job_id == check_id(job_id, "job id"), R.batch_id == check_id(batch_id, "batch id")
        )

    def get_batch_raw(self, job_id: str, batch_id: str) -> list[tuple[int, dict[str, Any]]]:
        """``get_batch_records`` as (index, raw) pairs (see ``RawRecordsReader``): the
        worker's read, which decodes no other column."""
        params = (check_id(job_id, "job id"), check_id(batch_id, "batch id"))

        def read() -> list[tuple[int, dict[str, Any]]]:
            rows = _rows(self._r.database, self._r.sql.batch_raw, params)
            return sorted((raw_from_row(index, raw) for index, raw in rows), key=itemgetter(0))

        return self._retrying(read, transaction=False)

    def get_distributed_status(self, job_id: str) -> DistributedJobStatus:
        """Batch counts by status, from the batches table."""
        check_id(job_id, "job id")
        B = self.tables.batches

        def read() -> dict[str, int]:
            query: Any = (
                B.select(B.status, pw.fn.COUNT(B.id))
                .where(B.job_id == job_id)
                .group_by(B.status)
                .tuples()
            )
            return {status: int(n) for status, n in query}

        counts = self._read(read)
        if not counts and self.get_job_state(job_id) is None:
            raise JobNotFoundError(f"job {job_id!r} does not exist")
        return distributed_status_of(job_id, counts)

    # -- beyond the ports -----------------------------------------------------------------

    def delete_job(self, job_id: str) -> bool:
        """Delete a job with its batches and records; True if the job existed."""
        check_id(job_id, "job id")
        t = self.tables

        def delete() -> bool:
            t.records.delete().where(t.records.job_id == job_id).execute()
            t.batches.delete().where(t.batches.job_id == job_id).execute()
            return bool(t.jobs.delete().where(t.jobs.id == job_id).execute())

        return self._retrying(delete)

    def list_jobs(self, status: JobStatus | str | None = None, limit: int = 100) -> list[JobState]:
        """Jobs, most recently started first (then by id), optionally of one status."""
        J = self.tables.jobs
        check_count(limit, "limit", codec.MAX_BIGINT)
        query = J.select().order_by(J.started_at.desc(nulls="LAST"), J.id).limit(limit)
        if status is not None:
            query = query.where(J.status == parse_job_status(status).value)

        def read() -> list[JobState]:
            rows = list(query)
            live = self._batch_rows([r.id for r in rows if r.distributed]) if rows else {}
            return [self._job_from_row(r, live.get(r.id)) for r in rows]

        return self._read(read)


def _text_bytes(row: tuple[Any, ...]) -> int:
    return sum(len(v) for v in row if isinstance(v, str))


def _record_fields(R: Any) -> list[Any]:
    """The records model's fields in the order of a RecordRow."""
    return [
        R.job_id,
        R.batch_id,
        R.record_index,
        R.status,
        R.raw,
        R.parsed,
        R.errors,
        R.processing_error,
    ]


def _unnest_params(rows: Sequence[RecordRow]) -> list[list[Any]]:
    """The columns of ``rows`` as eight lists, for ``_unnest_sql``: a parsed form equal to
    the raw one is sent as None."""
    columns = [list(column) for column in zip(*rows, strict=True)]
    columns[5] = [
        None if parsed == raw else parsed
        for raw, parsed in zip(columns[4], columns[5], strict=True)
    ]
    return columns


def _records_bytes(rows: Sequence[RecordRow]) -> int:
    """What ``_record_bytes`` sums to over ``rows``, without a Python call per row."""
    texts = sum(sum(map(len, map(itemgetter(c), rows))) for c in (4, 5, 6))
    return texts + sum(map(len, filter(None, map(itemgetter(7), rows))))


def _record_bytes(row: RecordRow) -> int:
    # Only the JSON and text columns can be long: weigh those, not every value.
    return len(row[4]) + len(row[5]) + len(row[6]) + len(row[7] or "")


def _no_pending() -> ClaimBatchResult:
    return ClaimBatchResult(claimed=False, reason=ClaimFailureReason.NO_PENDING_BATCHES)


def _claimed(job_id: str, worker_id: str, row: tuple[Any, ...], now: int) -> ClaimBatchResult:
    batch_id, index, start, end, version = row
    return ClaimBatchResult(
        claimed=True,
        reservation=BatchReservation(
            job_id=job_id,
            batch_id=batch_id,
            batch_index=int(index),
            worker_id=worker_id,
            claimed_at=now,
            record_start_index=int(start),
            record_end_index=int(end),
            version=int(version) + 1,
        ),
    )


__all__ = ["PeeweeStateStore"]
