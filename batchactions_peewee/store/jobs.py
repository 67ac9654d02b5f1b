"""Jobs: the job rows with their batch rows, read and written as whole ``JobState`` s, and
the figures computed from them (progress, distributed status)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import peewee as pw

from .. import codec
from ..checks import status_of
from ..errors import InvalidInputError
from ..model import (
    Batch,
    BatchStatus,
    JobConfig,
    JobProgress,
    JobState,
    JobStatus,
    no_progress,
    progress_from_records,
    progress_of,
)
from ..rows import RecordRow, set_batch_in_list
from .records import Records, chunked, text_bytes
from .session import Session
from .tables import Tables


class Jobs:
    """The jobs and batches tables of one store, outside the claim protocol."""

    def __init__(self, session: Session, tables: Tables, records: Records) -> None:
        self.session = session
        self.tables = tables
        self.records = records

    # -- writes ---------------------------------------------------------------------------

    def save(
        self, job: JobState, config: str, batches_json: str, rows: Sequence[RecordRow]
    ) -> None:
        """Upsert the job; for a distributed job insert its missing batch rows; upsert the
        records it carries. Runs inside the caller's write transaction."""
        J = self.tables.jobs
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
        target = [J.id] if self.session.dialect.upsert_names_target else None
        J.insert(values).on_conflict(conflict_target=target, preserve=list(values)[1:]).execute()
        if job.distributed and job.batches:
            self.insert_missing_batches(job)
        if rows:
            self.records.upsert(rows)

    def insert_missing_batches(self, job: JobState) -> None:
        B = self.tables.batches
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
        max_rows = self.session.dialect.max_params // len(fields)
        for chunk in chunked(rows, max_rows, text_bytes):
            # Existing rows win: a re-saved job must not undo claims made in the meantime.
            B.insert_many(chunk, fields=fields).on_conflict_ignore().execute()
        ids = [b.id for b in job.batches]
        owned = 0
        for chunk_ids in chunked(ids, self.session.dialect.max_params, len):
            owned += B.select().where(B.job_id == job.id, B.id.in_(list(chunk_ids))).count()
        if owned != len(set(ids)):
            raise InvalidInputError(
                f"job {job.id!r}: a batch id is used by another job, or two batches share an "
                "id or an index; batch ids are unique across all jobs"
            )

    def update_batch(
        self, job_id: str, batch_id: str, status: str, processed: int, failed: int
    ) -> None:
        """Set a batch's status and counts in its row and in the job row's JSON list."""
        J, B = self.tables.jobs, self.tables.batches
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
        if self.session.dialect.row_locks:
            query = query.for_update()
        row = query.first()
        if row is None:
            return  # as the reference adapters: nothing to update
        batches = codec.loads(row.batches) or []
        if not set_batch_in_list(batches, batch_id, status, processed, failed):
            if changed:
                return  # a batch the list does not hold: the batches table is the truth
            raise InvalidInputError(f"job {job_id!r} has no batch {batch_id!r}")
        J.update(batches=codec.dumps(batches)).where(J.id == job_id).execute()

    def delete(self, job_id: str) -> bool:
        """Delete a job with its batches and records; True if the job existed."""
        t = self.tables
        t.records.delete().where(t.records.job_id == job_id).execute()
        t.batches.delete().where(t.batches.job_id == job_id).execute()
        return bool(t.jobs.delete().where(t.jobs.id == job_id).execute())

    def purge_candidates(self, statuses: list[str], cutoff: int, limit: int) -> list[str]:
        """Ids of jobs in ``statuses`` finished (else started) before ``cutoff``."""
        J = self.tables.jobs
        finished = pw.fn.COALESCE(J.completed_at, J.started_at)
        query: Any = (
            J.select(J.id)
            .where(J.status.in_(statuses), finished < cutoff)
            .order_by(J.id)
            .limit(limit)
            .tuples()
        )
        return [str(row[0]) for row in query]

    def delete_some(self, model: type[pw.Model], job_id: str, limit: int) -> int:
        """Delete up to ``limit`` rows of ``model`` (records or batches) of the job: a
        bounded statement, so that no transaction locks a million rows."""
        column: Any = getattr(model, "job_id")  # noqa: B009 - both models have it
        if self.session.dialect.delete_limit:
            sql = f"{model.delete().where(column == job_id).sql()[0]} LIMIT {int(limit)}"
            return self.session.changed(sql, (job_id,))
        key: Any = getattr(model, "id")  # noqa: B009
        some = model.select(key).where(column == job_id).limit(limit)
        return int(model.delete().where(key.in_(some)).execute())

    def delete_if(self, job_id: str, statuses: list[str]) -> bool:
        """Delete the job row while its status is one of ``statuses``."""
        J = self.tables.jobs
        return bool(J.delete().where(J.id == job_id, J.status.in_(statuses)).execute())

    # -- reads ----------------------------------------------------------------------------

    def load(self, job_id: str) -> JobState | None:
        """The job, its distributed batches read live from the batches table."""
        J = self.tables.jobs
        row = J.select().where(J.id == job_id).first()
        if row is None:
            return None
        live = self.batches([job_id]).get(job_id) if row.distributed else None
        return _job_from_row(row, live)

    def head(self, job_id: str) -> JobState | None:
        """The job without its batches (``batches`` empty); the batch list is not read."""
        J = self.tables.jobs
        row = J.select(*_head_columns(J)).where(J.id == job_id).first()
        return None if row is None else _head_from_row(row)

    def list_jobs(self, status: JobStatus | None, limit: int) -> list[JobState]:
        """Jobs, most recently started first (then by id), optionally of one status."""
        rows = list(self._recent(self.tables.jobs.select(), status, limit))
        live = self.batches([r.id for r in rows if r.distributed]) if rows else {}
        return [_job_from_row(r, live.get(r.id)) for r in rows]

    def list_heads(self, status: JobStatus | None, limit: int) -> list[JobState]:
        """``list_jobs`` without their batches."""
        J = self.tables.jobs
        return [_head_from_row(r) for r in self._recent(J.select(*_head_columns(J)), status, limit)]

    def status_counts(self) -> dict[str, int]:
        """How many jobs there are of each status."""
        J = self.tables.jobs
        query: Any = J.select(J.status, pw.fn.COUNT(J.id)).group_by(J.status).tuples()
        return {str(status): int(n) for status, n in query}

    def _recent(self, query: Any, status: JobStatus | None, limit: int) -> Any:
        J = self.tables.jobs
        query = query.order_by(J.started_at.desc(nulls="LAST"), J.id).limit(limit)
        return query if status is None else query.where(J.status == status.value)

    def batches(self, job_ids: list[str]) -> dict[str, list[Batch]]:
        """The batch rows of ``job_ids``, by job, in batch order."""
        B = self.tables.batches
        found: dict[str, list[Batch]] = {}
        query = B.select().where(B.job_id.in_(job_ids)).order_by(B.job_id, B.batch_index)
        for b in query:
            found.setdefault(b.job_id, []).append(batch_from_row(b))
        return found

    def progress(self, job_id: str) -> JobProgress:
        """Counts and timing of a job (inside a read transaction).

        A distributed job's counts are the sums of its batches' counters, which the fenced
        completion (and ``update_batch_state``) write, so the cost grows with the number of
        batches, not of records. Other jobs count their records by status.
        """
        J, B = self.tables.jobs, self.tables.batches
        head = (
            J.select(J.total_records, J.started_at, J.distributed)
            .where(J.id == job_id)
            .tuples()
            .first()
        )
        if head is None:
            return no_progress()
        total, started_at, distributed = head
        if distributed:
            # Literals, not parameters: asyncpg would type untyped parameters as text.
            done = B.status == BatchStatus.COMPLETED.value
            completed = pw.Case(None, [(done, pw.SQL("1"))], pw.SQL("0"))
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
                    now=self.session.now(),
                )
        job = self.load(job_id)
        assert job is not None
        return progress_from_records(job, self.records.counts(job_id), self.session.now())

    def batch_counts(self, job_id: str) -> dict[str, int]:
        """The job's batch counts by status."""
        B = self.tables.batches
        query: Any = (
            B.select(B.status, pw.fn.COUNT(B.id))
            .where(B.job_id == job_id)
            .group_by(B.status)
            .tuples()
        )
        return {status: int(n) for status, n in query}


def batch_from_row(b: Any) -> Batch:
    """A ``Batch`` of a batches-table row."""
    return Batch(
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


def listed_batches(row: Any) -> list[Batch]:
    """The batches of the job row's JSON list."""
    return [Batch.model_validate(b) for b in codec.loads(row.batches) or []]


def _job_from_row(row: Any, live_batches: list[Batch] | None) -> JobState:
    return _head_from_row(row, live_batches if live_batches else listed_batches(row))


def _head_columns(J: Any) -> list[Any]:
    # Every column but the batch list, which holds every batch of a distributed job.
    return [J.id, J.status, J.config, J.total_records, J.started_at, J.completed_at, J.distributed]


def _head_from_row(row: Any, batches: Sequence[Batch] = ()) -> JobState:
    return JobState(
        id=row.id,
        config=JobConfig.model_validate(codec.loads(row.config)),
        status=row.status,
        batches=list(batches),
        total_records=int(row.total_records),
        started_at=None if row.started_at is None else int(row.started_at),
        completed_at=None if row.completed_at is None else int(row.completed_at),
        distributed=bool(row.distributed),
    )
