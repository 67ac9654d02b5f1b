"""PeeweeStateStore: batch-job state in any Peewee database, shared by many workers.

A thin facade: each method checks its input (``checks``, ``rows``), then delegates to the
part that owns the concern: ``jobs``, ``records``, ``coordination`` (every "only one wins"
decision, whose statements are in ``statements``), ``session`` (transactions, retries, the
clock) and ``schema``.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Mapping
from functools import partial
from typing import Any

import peewee as pw

from ..checks import (
    MAX_BIGINT,
    MAX_INT,
    PURGEABLE,
    check_count,
    check_id,
    check_purge,
    check_table_prefix,
    check_worker_id,
    parse_job_status,
    status_of,
)
from ..model import (
    FAILED_RECORD_STATUSES,
    PENDING_RECORD_STATUSES,
    Batch,
    BatchReservation,
    BatchState,
    BatchStatus,
    ClaimBatchResult,
    DistributedJobStatus,
    JobProgress,
    JobState,
    JobStatus,
    Processed,
    ProcessedRecord,
    RecordStatus,
    distributed_status_of,
)
from ..ports import STOOD_IN_FOR, Completion, WorkerIO, overrides
from ..rows import completion_rows, job_texts, pending_rows, record_rows
from . import schema
from .batch_reads import BatchReads
from .coordination import Coordination
from .dialects import Dialect, check_database, dialect_for, unwrap
from .jobs import Jobs
from .records import Records
from .session import THREADS, Clock, Session, Waits
from .statements import Statements
from .tables import Tables, build_tables

#: Jobs listed, and records or batches deleted, per statement of ``purge_jobs``.
PURGE_CHUNK = 10_000


class _Parts:
    """What a store builds once it knows its database: the dialect and the parts."""

    def __init__(
        self,
        database: pw.Database | pw.DatabaseProxy,
        prefix: str,
        clock: Clock | None,
        waits: Waits,
    ) -> None:
        real = unwrap(database)
        self.dialect: Dialect = dialect_for(real)
        self.session = Session(real, self.dialect, clock, waits)
        # MySQL's table settings depend on the server version: a query, retried as one.
        settings = self.session.run(self.dialect.table_settings)
        self.tables: Tables = build_tables(database, prefix, table_settings=settings)
        self.records = Records(self.session, self.tables)
        self.jobs = Jobs(self.session, self.tables, self.records)
        self.batch_reads = BatchReads(self.session, self.tables)
        self.coordination = Coordination(
            self.session, Statements.for_database(real, prefix), self.jobs, self.records
        )


class PeeweeStateStore:
    """Persists batch jobs in a Peewee database and coordinates workers through it.

    ``database`` is any Peewee ``Database`` (SQLite, MySQL/MariaDB, PostgreSQL, pooled
    variants) or a ``DatabaseProxy``; the store binds models of its own to it and never
    alters the caller's models or settings. ``clock`` returns epoch ms; ``None`` means the
    database server's clock (this machine's for SQLite), so lease timing does not depend on
    several machines' clocks agreeing. Bad input raises an error of
    ``batchactions_peewee.errors`` before anything is written; a database that stays
    unreachable through the store's bounded retries raises ``StoreUnavailable``.
    """

    #: How the store waits between attempts (``AsyncPeeweeStateStore`` waits on its loop).
    _waits: Waits = THREADS

    def __init__(
        self,
        database: pw.Database | pw.DatabaseProxy,
        *,
        table_prefix: str = "batchactions_",
        clock: Clock | None = None,
    ) -> None:
        self.database = check_database(database)
        self.table_prefix = check_table_prefix(table_prefix)
        self._clock = clock
        self._built: _Parts | None = None
        self._build_lock = threading.Lock()
        #: Forces the portable compare-and-set claim even where SKIP LOCKED exists (tests).
        self.force_cas_claim = False

    @property
    def _parts(self) -> _Parts:
        # Built on first use, so a DatabaseProxy may be initialized after construction.
        if self._built is None:
            with self._build_lock:
                if self._built is None:
                    self._built = _Parts(self.database, self.table_prefix, self._clock, self._waits)
        return self._built

    @property
    def tables(self) -> Tables:
        """This store's three Peewee models (bound to ``database`` with ``table_prefix``)."""
        return self._parts.tables

    @property
    def dialect(self) -> Dialect:
        """What this store knows about its kind of database."""
        return self._parts.dialect

    def now(self) -> int:
        """The store's clock in epoch ms: the injected ``clock``, else the database's."""
        return self._parts.session.now()

    # -- schema ---------------------------------------------------------------------------

    def create_tables(self) -> None:
        """Create the three tables and their indexes where missing (idempotent).

        A table that exists, ours or one the TypeScript adapters created, is left as it is,
        provided it has every column we use. Safe to run from several processes at once.
        """
        parts = self._parts
        parts.records.forget_statements()  # the column types may change
        schema.create_tables(parts.session.database, parts.tables)

    def table_names(self) -> list[str]:
        """The names of the three tables: jobs, records, batches."""
        return [model._meta.table_name for model in self.tables.all]

    def missing_tables(self) -> list[str]:
        """The names of this store's tables that its database lacks, in ``table_names``
        order: empty once ``create_tables()`` (or ``migrate``) has run."""
        session = self._parts.session
        return session.run(
            lambda: [n for n in self.table_names() if not session.database.table_exists(n)]
        )

    def drop_tables(self) -> None:
        """Drop the three tables where present (idempotent)."""
        parts = self._parts
        parts.records.forget_statements()
        schema.drop_tables(parts.session.database, parts.tables)

    # -- StateStore port ------------------------------------------------------------------

    def save_job_state(self, job: JobState) -> None:
        """Upsert the job. For a distributed job, insert a batches row for every batch that
        has none; an existing row is never reset (re-saving must not undo live claims).

        Records carried inside ``job.batches`` are upserted into the records table; like the
        TypeScript adapters, ``get_job_state`` returns batches without their records.
        """
        config, batches_json = job_texts(job)
        rows = [row for b in job.batches for row in record_rows(job.id, b.id, b.records)]
        jobs = self._parts.jobs
        self._parts.session.write(lambda: jobs.save(job, config, batches_json, rows))

    def get_job_state(self, job_id: str) -> JobState | None:
        """The job, or None. A distributed job's batches are read live from the batches table."""
        check_id(job_id, "job id")
        jobs = self._parts.jobs
        return self._parts.session.read(lambda: jobs.load(job_id))

    def update_batch_state(self, job_id: str, batch_id: str, state: BatchState) -> None:
        """Set a batch's status and counts: in the batches table for a distributed job, in
        the job's batch list otherwise. A job that does not exist is left alone (no error),
        as the reference adapters do."""
        check_id(job_id, "job id")
        check_id(batch_id, "batch id")
        status = status_of(BatchStatus, state.status).value
        processed = check_count(state.processed_count, "processed_count")
        failed = check_count(state.failed_count, "failed_count")
        jobs = self._parts.jobs
        self._parts.session.write(
            lambda: jobs.update_batch(job_id, batch_id, status, processed, failed)
        )

    def save_processed_record(self, job_id: str, batch_id: str, record: ProcessedRecord) -> None:
        """Insert or replace one record (keyed by job and record index) in one statement."""
        rows = record_rows(job_id, batch_id, [record])
        records = self._parts.records
        self._parts.session.run(lambda: records.upsert(rows))

    def get_failed_records(self, job_id: str) -> list[ProcessedRecord]:
        """Records with status failed or invalid, by record index."""
        R = self.tables.records
        return self._parts.records.select(
            R.job_id == check_id(job_id, "job id"), R.status.in_(FAILED_RECORD_STATUSES)
        )

    def get_pending_records(self, job_id: str) -> list[ProcessedRecord]:
        """Records with status pending or valid, by record index."""
        R = self.tables.records
        return self._parts.records.select(
            R.job_id == check_id(job_id, "job id"), R.status.in_(PENDING_RECORD_STATUSES)
        )

    def get_processed_records(self, job_id: str) -> list[ProcessedRecord]:
        """Records with status processed, by record index."""
        R = self.tables.records
        return self._parts.records.select(
            R.job_id == check_id(job_id, "job id"), R.status == RecordStatus.PROCESSED.value
        )

    def get_progress(self, job_id: str) -> JobProgress:
        """The job's record and batch counts, percentage and elapsed time (all zeros for a
        job that does not exist).

        A distributed job's counts are the sums of its batches' counters, so a batch's
        records count once its completion is written; other jobs count their records.
        """
        check_id(job_id, "job id")
        jobs = self._parts.jobs
        return self._parts.session.read(lambda: jobs.progress(job_id))

    # -- DistributedStateStore port -------------------------------------------------------

    def claim_batch(self, job_id: str, worker_id: str) -> ClaimBatchResult:
        """Claim the lowest-index PENDING batch of a PROCESSING job for ``worker_id``.

        A worker that loses a race moves on to the next candidate; NO_PENDING_BATCHES only
        when no PENDING batch is left.
        """
        check_id(job_id, "job id")
        check_worker_id(worker_id)
        return self._parts.coordination.claim(job_id, worker_id, force_cas=self.force_cas_claim)

    def release_batch(self, job_id: str, batch_id: str, worker_id: str) -> None:
        """Return the batch to PENDING, only while ``worker_id`` still holds it."""
        check_id(job_id, "job id")
        check_id(batch_id, "batch id")
        check_worker_id(worker_id)
        self._parts.coordination.release(job_id, batch_id, worker_id, version=None)

    def reclaim_stale_batches(self, job_id: str, timeout_ms: int) -> int:
        """Return PROCESSING batches claimed more than ``timeout_ms`` ago to PENDING.

        Returns how many. Safe concurrently: each row moves once, and version + 1 fences
        out the stale holder.
        """
        check_id(job_id, "job id")
        check_count(timeout_ms, "timeout_ms", MAX_BIGINT // 2)
        return self._parts.coordination.reclaim(job_id, timeout_ms)

    def save_batch_records(
        self, job_id: str, batch_id: str, records: Iterable[ProcessedRecord]
    ) -> None:
        """Bulk upsert a batch's records (keyed by job and record index)."""
        self._upsert(record_rows(job_id, batch_id, records))

    def get_batch_records(self, job_id: str, batch_id: str) -> list[ProcessedRecord]:
        """A batch's records, by record index."""
        R = self.tables.records
        return self._parts.records.select(
            R.job_id == check_id(job_id, "job id"), R.batch_id == check_id(batch_id, "batch id")
        )

    def get_distributed_status(self, job_id: str) -> DistributedJobStatus:
        """Batch counts by status, from the batches table (all zeros, not complete, for a
        job that does not exist)."""
        check_id(job_id, "job id")
        jobs = self._parts.jobs
        counts = self._parts.session.read(lambda: jobs.batch_counts(job_id))
        return distributed_status_of(job_id, counts)

    def try_finalize_job(self, job_id: str) -> bool:
        """Finish the job: True for exactly one caller, when the job is PROCESSING, has at
        least one batch and every batch is COMPLETED or FAILED. Sets FAILED if any batch
        failed, else COMPLETED, and ``completed_at``."""
        check_id(job_id, "job id")
        return self._parts.coordination.finalize(job_id)

    # -- the job's lifecycle --------------------------------------------------------------

    def pause_job(self, job_id: str) -> bool:
        """PROCESSING -> PAUSED: claims answer JOB_NOT_PROCESSING until ``resume_job``;
        workers finish the batch in hand, then wait. True only for the caller that moved it."""
        check_id(job_id, "job id")
        return self._parts.coordination.pause(job_id)

    def resume_job(self, job_id: str) -> bool:
        """PAUSED -> PROCESSING; True only for the caller that moved it."""
        check_id(job_id, "job id")
        return self._parts.coordination.resume(job_id)

    def abort_job(self, job_id: str) -> bool:
        """CREATED, PROCESSING or PAUSED -> ABORTED, with ``completed_at``: final. Workers
        stop before their next record and give their batch back; nobody finalizes the job.
        True only for the caller that moved it."""
        check_id(job_id, "job id")
        return self._parts.coordination.abort(job_id)

    def purge_jobs(
        self,
        *,
        older_than_ms: int,
        statuses: Iterable[JobStatus | str] = PURGEABLE,
    ) -> int:
        """Delete the jobs in ``statuses`` (terminal ones; CREATED too, if asked: a job left
        by a killed prepare) finished, or for CREATED started, more than ``older_than_ms``
        ago, with their records and batches; return how many jobs. Rows go in bounded
        chunks, one transaction each; the job row goes last, so a purge cut short leaves a
        job that the next purge finishes. A PROCESSING or PAUSED job is never touched."""
        wanted = check_purge(older_than_ms, statuses)
        parts = self._parts
        jobs, session = parts.jobs, parts.session
        cutoff = session.now() - older_than_ms
        purged = 0
        while True:
            ids = session.read(partial(jobs.purge_candidates, wanted, cutoff, PURGE_CHUNK))
            for job_id in ids:
                for model in (parts.tables.records, parts.tables.batches):
                    delete = partial(jobs.delete_some, model, job_id, PURGE_CHUNK)
                    while session.write(delete) == PURGE_CHUNK:
                        pass  # a full chunk: there may be more
                purged += session.write(partial(jobs.delete_if, job_id, wanted))
            if len(ids) < PURGE_CHUNK:
                return purged

    def purge_candidates(
        self, *, older_than_ms: int, statuses: Iterable[JobStatus | str] = PURGEABLE
    ) -> list[str]:
        """The ids of the jobs ``purge_jobs`` would delete now, by id (a dry run)."""
        wanted = check_purge(older_than_ms, statuses)
        session, jobs = self._parts.session, self._parts.jobs
        cutoff = session.now() - older_than_ms
        return session.read(partial(jobs.purge_candidates, wanted, cutoff, MAX_INT))

    # -- beyond the ports -----------------------------------------------------------------

    def heartbeat(self, reservation: BatchReservation) -> bool:
        """Renew the lease while the reservation holds (same worker, version, PROCESSING)
        and its job is not aborted."""
        _check_reservation(reservation)
        return self._parts.coordination.renew(reservation)

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
        return self._complete_batch_processed(
            reservation,
            status=status,
            processed_count=processed_count,
            failed_count=failed_count,
            processed=(),
            records=records,
        )

    def save_processed_records(
        self, job_id: str, batch_id: str, records: Iterable[ProcessedRecord]
    ) -> None:
        """Bulk upsert of processed records, in one transaction."""
        self.save_batch_records(job_id, batch_id, records)

    def delete_job(self, job_id: str) -> bool:
        """Delete a job with its batches and records; True if the job existed."""
        check_id(job_id, "job id")
        jobs = self._parts.jobs
        return self._parts.session.write(lambda: jobs.delete(job_id))

    def list_jobs(self, status: JobStatus | str | None = None, limit: int = 100) -> list[JobState]:
        """Jobs, most recently started first (then by id), optionally of one status."""
        check_count(limit, "limit", MAX_BIGINT)
        wanted = parse_job_status(status) if status is not None else None
        jobs = self._parts.jobs
        return self._parts.session.read(lambda: jobs.list_jobs(wanted, limit))

    def record_counts(self, job_id: str) -> dict[str, int]:
        """The job's record counts by record status (for reports)."""
        check_id(job_id, "job id")
        records = self._parts.records
        return self._parts.session.read(lambda: records.counts(job_id))

    def get_failed_records_page(
        self, job_id: str, *, after_index: int = -1, limit: int = 500, offset: int = 0
    ) -> list[ProcessedRecord]:
        """Up to ``limit`` failed or invalid records whose index is above ``after_index``,
        by record index, the first ``offset`` of them skipped: ``get_failed_records`` a
        page at a time, for jobs too large to read at once."""
        check_id(job_id, "job id")
        if after_index != -1:
            check_count(after_index, "after_index")
        check_count(limit, "limit")
        check_count(offset, "offset")
        return self._parts.records.failed_page(job_id, after_index, limit, offset)

    # -- reads of a job with many batches (reports, the dashboard) ------------------------

    def get_job_head(self, job_id: str) -> JobState | None:
        """The job without its batches (``batches`` empty), or None: its status, config,
        counts and times, read without its batch list."""
        check_id(job_id, "job id")
        jobs = self._parts.jobs
        return self._parts.session.read(lambda: jobs.head(job_id))

    def list_job_heads(
        self, status: JobStatus | str | None = None, limit: int = 100
    ) -> list[JobState]:
        """``list_jobs`` without their batches (``batches`` empty)."""
        check_count(limit, "limit", MAX_BIGINT)
        wanted = parse_job_status(status) if status is not None else None
        jobs = self._parts.jobs
        return self._parts.session.read(lambda: jobs.list_heads(wanted, limit))

    def job_counts(self) -> dict[str, int]:
        """How many jobs the store holds of each status (statuses with none left out)."""
        jobs = self._parts.jobs
        return self._parts.session.read(jobs.status_counts)

    def batch_counts(self, job_id: str) -> dict[str, int]:
        """The job's batch counts by batch status (those of ``get_job_state(...).batches``)."""
        check_id(job_id, "job id")
        reads = self._parts.batch_reads
        return self._parts.session.read(lambda: reads.counts(job_id))

    def get_batches_page(
        self,
        job_id: str,
        *,
        offset: int = 0,
        limit: int = 500,
        status: BatchStatus | str | None = None,
    ) -> list[Batch]:
        """Up to ``limit`` of the job's batches (of ``status`` if given) by index, the
        first ``offset`` of them skipped; without their records."""
        check_id(job_id, "job id")
        check_count(offset, "offset")
        check_count(limit, "limit")
        wanted = status_of(BatchStatus, status).value if status is not None else None
        reads = self._parts.batch_reads
        return self._parts.session.read(lambda: reads.page(job_id, wanted, offset, limit))

    def batch_statuses(self, job_id: str) -> list[str]:
        """The status of each of the job's batches, by batch index."""
        check_id(job_id, "job id")
        reads = self._parts.batch_reads
        return self._parts.session.read(lambda: reads.statuses(job_id))

    def batch_timeline(self, job_id: str) -> list[tuple[int, int]]:
        """(``claimed_at``, processed + failed count) of each COMPLETED or FAILED batch
        with a ``claimed_at``: its last lease time (claim or renewal) and records done."""
        check_id(job_id, "job id")
        reads = self._parts.batch_reads
        return self._parts.session.read(lambda: reads.timeline(job_id))

    # -- the engine's bulk forms (ports.WorkerIO) -----------------------------------------

    def _worker_io(self) -> WorkerIO | None:
        """This store's bulk forms, unless a subclass overrides the port methods they
        stand in for."""
        return None if overrides(self, PeeweeStateStore, STOOD_IN_FOR) else self

    def _save_pending_records(
        self, job_id: str, batch_id: str, first_index: int, records: Iterable[Mapping[str, Any]]
    ) -> None:
        self._upsert(pending_rows(job_id, batch_id, first_index, records))

    def _get_batch_raw(self, job_id: str, batch_id: str) -> list[tuple[int, dict[str, Any]]]:
        check_id(job_id, "job id")
        check_id(batch_id, "batch id")
        return self._parts.records.batch_raw(job_id, batch_id)

    def _complete_batch_processed(
        self,
        reservation: BatchReservation,
        *,
        status: BatchStatus = BatchStatus.COMPLETED,
        processed_count: int,
        failed_count: int,
        processed: Iterable[Processed],
        records: Iterable[ProcessedRecord] = (),
    ) -> bool:
        final, rows = completion_rows(
            reservation, status, processed_count, failed_count, records, processed
        )
        _check_reservation(reservation)
        return self._parts.coordination.finish(
            reservation, final, processed_count, failed_count, rows
        )

    def _complete_batch_in_transaction(
        self, reservation: BatchReservation, produce: Callable[[], Completion]
    ) -> bool:
        """``produce()`` and the fenced completion it returns, in one transaction of this
        store's database: a completion fenced off rolls back whatever ``produce`` wrote
        through the database (``Worker(transactional=True)``). False then. ``produce``
        may run more than once, each time in a new transaction, after transient errors."""
        _check_reservation(reservation)

        def rows() -> tuple[BatchStatus, int, int, list[Any]]:
            c = produce()
            final, rows = completion_rows(
                reservation, c.status, c.processed_count, c.failed_count, c.records, c.processed
            )
            return final, c.processed_count, c.failed_count, rows

        return self._parts.coordination.finish_with(reservation, rows)

    def _release_reservation(self, reservation: BatchReservation) -> bool:
        _check_reservation(reservation)
        r = reservation
        return self._parts.coordination.release(r.job_id, r.batch_id, r.worker_id, r.version)

    def _activate_job(self, job: JobState) -> bool:
        check_id(job.id, "job id")
        _, batches_json = job_texts(job)
        return self._parts.coordination.activate(job, batches_json)

    def _job_status(self, job_id: str) -> JobStatus | None:
        check_id(job_id, "job id")
        status = self._parts.coordination.job_status(job_id)
        return None if status is None else JobStatus(status)

    def _close_connection(self) -> None:
        database = self.database
        if not database.is_closed():
            database.close()

    def _upsert(self, rows: list[Any]) -> None:
        if rows:
            records = self._parts.records
            self._parts.session.write(lambda: records.upsert(rows))


def _check_reservation(reservation: BatchReservation) -> None:
    check_id(reservation.job_id, "job id")
    check_id(reservation.batch_id, "batch id")
    check_worker_id(reservation.worker_id)
