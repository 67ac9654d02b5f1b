"""InMemoryStateStore: both ports in memory, the reference and test double.

It keeps the rows ``PeeweeStateStore`` would keep, built by the same functions
(``rows``, ``checks``), so both accept and refuse exactly the same input, read back the
same values and fence the same way.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from . import codec
from .checks import (
    MAX_BIGINT,
    PURGEABLE,
    check_count,
    check_id,
    check_purge,
    check_worker_id,
    parse_job_status,
    status_of,
)
from .errors import InvalidInputError
from .model import (
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
    Processed,
    ProcessedRecord,
    RecordStatus,
    distributed_status_of,
    no_progress,
    progress_from_records,
    progress_of,
)
from .ports import STOOD_IN_FOR, WorkerIO, overrides
from .rows import (
    RecordRow,
    batch_json,
    completion_rows,
    job_texts,
    pending_rows,
    raw_from_row,
    record_from_row,
    record_rows,
    set_batch_in_list,
)


@dataclass
class _BatchRow:
    id: str
    job_id: str
    index: int
    status: str
    worker_id: str | None
    claimed_at: int | None
    start: int
    end: int
    processed: int = 0
    failed: int = 0
    version: int = 0

    def reservation(self, worker_id: str) -> BatchReservation:
        """The reservation of this row, just claimed by ``worker_id``."""
        assert self.claimed_at is not None
        return BatchReservation(
            job_id=self.job_id,
            batch_id=self.id,
            batch_index=self.index,
            worker_id=worker_id,
            claimed_at=self.claimed_at,
            record_start_index=self.start,
            record_end_index=self.end,
            version=self.version,
        )

    def to_batch(self) -> Batch:
        return Batch(
            id=self.id,
            index=self.index,
            status=self.status,
            processed_count=self.processed,
            failed_count=self.failed,
            worker_id=self.worker_id,
            claimed_at=self.claimed_at,
            record_start_index=self.start,
            record_end_index=self.end,
        )


@dataclass
class _JobRow:
    id: str
    status: str
    config: str
    batches: str
    total_records: int
    started_at: int | None
    completed_at: int | None
    distributed: bool

    def list_batches(self, batches: list[_BatchRow]) -> None:
        """The job row's JSON list as the batch rows stand (a job without any keeps its list)."""
        if batches:
            self.batches = codec.dumps([batch_json(b.to_batch()) for b in batches])

    @property
    def finished_at(self) -> int | None:
        """When the job ended, else when it started: the age purge_jobs goes by."""
        return self.completed_at if self.completed_at is not None else self.started_at


def _batch_progress(row: _JobRow, batches: list[_BatchRow], now: int) -> JobProgress:
    """As PeeweeStateStore: a distributed job's counts are its batches' counters."""
    return progress_of(
        total=row.total_records,
        processed=sum(b.processed for b in batches),
        failed=sum(b.failed for b in batches),
        completed_batches=sum(1 for b in batches if b.status == BatchStatus.COMPLETED.value),
        total_batches=len(batches),
        started_at=row.started_at,
        now=now,
    )


def _new_batch_rows(job: JobState, existing: dict[str, _BatchRow]) -> dict[str, _BatchRow]:
    """Rows for the job's batches that have none; an existing row is never reset."""
    new = {b.id for b in job.batches if b.id not in existing}
    indexes = {r.index for r in existing.values() if r.job_id == job.id}
    clash = any(
        (b.id in existing and existing[b.id].job_id != job.id)
        or (b.id in new and b.index in indexes)
        for b in job.batches
    )
    if (
        clash
        or len({b.id for b in job.batches}) != len(job.batches)
        or len({b.index for b in job.batches}) != len(job.batches)
    ):
        raise InvalidInputError(
            f"job {job.id!r}: a batch id is used by another job, or two batches share an id "
            "or an index; batch ids are unique across all jobs"
        )
    return {
        b.id: _BatchRow(
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
        )
        for b in job.batches
        if b.id in new
    }


class InMemoryStateStore:
    """Both ports in memory, thread-safe, with the semantics of ``PeeweeStateStore``."""

    def __init__(self, *, clock: Callable[[], int] | None = None) -> None:
        self._clock = clock
        self._lock = threading.RLock()
        self._jobs: dict[str, _JobRow] = {}
        self._records: dict[tuple[str, int], RecordRow] = {}
        self._batches: dict[str, _BatchRow] = {}

    def now(self) -> int:
        """The injected clock, else this machine's, in epoch ms."""
        return int(self._clock()) if self._clock is not None else int(time.time() * 1000)

    def _worker_io(self) -> WorkerIO | None:
        """This store's bulk forms (``ports.WorkerIO``), unless a subclass overrides the port
        methods they stand in for."""
        return None if overrides(self, InMemoryStateStore, STOOD_IN_FOR) else self

    def _close_connection(self) -> None:
        """Nothing to close: no connections."""

    def _job_status(self, job_id: str) -> JobStatus | None:
        check_id(job_id, "job id")
        with self._lock:
            job = self._jobs.get(job_id)
            return None if job is None else JobStatus(job.status)

    # -- StateStore ---------------------------------------------------------------------

    def save_job_state(self, job: JobState) -> None:
        config, batches = job_texts(job)
        rows = [row for b in job.batches for row in record_rows(job.id, b.id, b.records)]
        with self._lock:
            if job.distributed:
                self._batches.update(_new_batch_rows(job, self._batches))
            self._jobs[job.id] = _JobRow(
                job.id,
                status_of(JobStatus, job.status).value,
                config,
                batches,
                job.total_records,
                job.started_at,
                job.completed_at,
                job.distributed,
            )
            self._put_records(rows)

    def _put_records(self, rows: list[RecordRow]) -> None:
        for row in rows:
            self._records[(row[0], row[2])] = row

    def _job_batches(self, job_id: str) -> list[_BatchRow]:
        return sorted(
            (b for b in self._batches.values() if b.job_id == job_id), key=lambda b: b.index
        )

    def get_job_state(self, job_id: str) -> JobState | None:
        check_id(job_id, "job id")
        with self._lock:
            row = self._jobs.get(job_id)
            if row is None:
                return None
            live = [b.to_batch() for b in self._job_batches(job_id)] if row.distributed else []
            return JobState(
                id=row.id,
                config=JobConfig.model_validate(codec.loads(row.config)),
                status=row.status,
                batches=live or [Batch.model_validate(b) for b in codec.loads(row.batches)],
                total_records=row.total_records,
                started_at=row.started_at,
                completed_at=row.completed_at,
                distributed=row.distributed,
            )

    def update_batch_state(self, job_id: str, batch_id: str, state: BatchState) -> None:
        check_id(job_id, "job id")
        check_id(batch_id, "batch id")
        status = status_of(BatchStatus, state.status).value
        processed = check_count(state.processed_count, "processed_count")
        failed = check_count(state.failed_count, "failed_count")
        with self._lock:
            b = self._batches.get(batch_id)
            changed = b is not None and b.job_id == job_id
            if b is not None and changed:
                b.status, b.processed, b.failed = status, processed, failed
                b.version += 1
            job = self._jobs.get(job_id)
            if job is None:
                return  # as the reference adapters: nothing to update
            batches = codec.loads(job.batches)
            if not set_batch_in_list(batches, batch_id, status, processed, failed):
                if changed:
                    return
                raise InvalidInputError(f"job {job_id!r} has no batch {batch_id!r}")
            job.batches = codec.dumps(batches)

    def save_processed_record(self, job_id: str, batch_id: str, record: ProcessedRecord) -> None:
        rows = record_rows(job_id, batch_id, [record])
        with self._lock:
            self._put_records(rows)

    def _select(self, job_id: str, keep: Callable[[RecordRow], bool]) -> list[ProcessedRecord]:
        return [record_from_row(r[2:]) for r in self._rows(job_id, keep)]

    def _rows(self, job_id: str, keep: Callable[[RecordRow], bool]) -> list[RecordRow]:
        """The job's record rows that ``keep`` keeps, by record index."""
        check_id(job_id, "job id")
        with self._lock:
            return sorted(
                (r for r in self._records.values() if r[0] == job_id and keep(r)),
                key=lambda r: r[2],
            )

    def get_failed_records(self, job_id: str) -> list[ProcessedRecord]:
        return self._select(job_id, lambda r: r[3] in FAILED_RECORD_STATUSES)

    def get_pending_records(self, job_id: str) -> list[ProcessedRecord]:
        return self._select(job_id, lambda r: r[3] in PENDING_RECORD_STATUSES)

    def get_processed_records(self, job_id: str) -> list[ProcessedRecord]:
        return self._select(job_id, lambda r: r[3] == RecordStatus.PROCESSED.value)

    def get_progress(self, job_id: str) -> JobProgress:
        check_id(job_id, "job id")
        with self._lock:
            row = self._jobs.get(job_id)
            if row is None:
                return no_progress()
            batches = self._job_batches(job_id) if row.distributed else []
            if batches:
                return _batch_progress(row, batches, self.now())
            job = self.get_job_state(job_id)
            assert job is not None
            counts = self.record_counts(job_id)
        return progress_from_records(job, counts, self.now())

    # -- DistributedStateStore ----------------------------------------------------------

    def claim_batch(self, job_id: str, worker_id: str) -> ClaimBatchResult:
        check_id(job_id, "job id")
        check_worker_id(worker_id)
        with self._lock:
            job = self._jobs.get(job_id)
            if job is None:
                return ClaimBatchResult(claimed=False, reason=ClaimFailureReason.JOB_NOT_FOUND)
            if job.status != JobStatus.PROCESSING.value:
                return ClaimBatchResult(claimed=False, reason=ClaimFailureReason.JOB_NOT_PROCESSING)
            for b in self._job_batches(job_id):
                if b.status == BatchStatus.PENDING.value:
                    now = self.now()
                    b.status, b.worker_id, b.claimed_at = (
                        BatchStatus.PROCESSING.value,
                        worker_id,
                        now,
                    )
                    b.version += 1
                    return ClaimBatchResult(claimed=True, reservation=b.reservation(worker_id))
            return ClaimBatchResult(claimed=False, reason=ClaimFailureReason.NO_PENDING_BATCHES)

    def _held(
        self, job_id: str, batch_id: str, worker_id: str, version: int | None
    ) -> _BatchRow | None:
        check_id(job_id, "job id")
        check_id(batch_id, "batch id")
        check_worker_id(worker_id)
        b = self._batches.get(batch_id)
        if (
            b is None
            or b.job_id != job_id
            or b.worker_id != worker_id
            or b.status != BatchStatus.PROCESSING.value
            or (version is not None and b.version != version)
        ):
            return None
        return b

    def release_batch(self, job_id: str, batch_id: str, worker_id: str) -> None:
        with self._lock:
            self._release(self._held(job_id, batch_id, worker_id, None))

    def _release_reservation(self, reservation: BatchReservation) -> bool:
        with self._lock:
            r = reservation
            return self._release(self._held(r.job_id, r.batch_id, r.worker_id, r.version))

    @staticmethod
    def _release(b: _BatchRow | None) -> bool:
        if b is None:
            return False
        b.status, b.worker_id, b.claimed_at = BatchStatus.PENDING.value, None, None
        b.version += 1
        return True

    def reclaim_stale_batches(self, job_id: str, timeout_ms: int) -> int:
        check_id(job_id, "job id")
        check_count(timeout_ms, "timeout_ms", MAX_BIGINT // 2)
        with self._lock:
            cutoff = self.now() - timeout_ms
            stale = [
                b
                for b in self._job_batches(job_id)
                if b.status == BatchStatus.PROCESSING.value
                and (b.claimed_at is None or b.claimed_at < cutoff)
            ]
            for b in stale:
                self._release(b)
            return len(stale)

    def heartbeat(self, reservation: BatchReservation) -> bool:
        r = reservation
        with self._lock:
            b = self._held(r.job_id, r.batch_id, r.worker_id, r.version)
            job = self._jobs.get(r.job_id)
            if b is None or (job is not None and job.status == JobStatus.ABORTED.value):
                return False
            now = self.now()
            b.claimed_at = (
                b.claimed_at + 1 if b.claimed_at is not None and b.claimed_at >= now else now
            )
            return True

    def complete_batch(
        self,
        reservation: BatchReservation,
        *,
        status: BatchStatus = BatchStatus.COMPLETED,
        processed_count: int,
        failed_count: int,
        records: Iterable[ProcessedRecord] = (),
    ) -> bool:
        return self._complete_batch_processed(
            reservation,
            status=status,
            processed_count=processed_count,
            failed_count=failed_count,
            processed=(),
            records=records,
        )

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
        r = reservation
        with self._lock:
            b = self._held(r.job_id, r.batch_id, r.worker_id, r.version)
            if b is None:
                return False
            b.status, b.processed, b.failed = final.value, processed_count, failed_count
            b.version += 1
            self._put_records(rows)
            return True

    def try_finalize_job(self, job_id: str) -> bool:
        check_id(job_id, "job id")
        with self._lock:
            job = self._jobs.get(job_id)
            batches = self._job_batches(job_id)
            if (
                job is None
                or job.status != JobStatus.PROCESSING.value
                or not batches
                or any(b.status not in TERMINAL_BATCH_STATUSES for b in batches)
            ):
                return False
            failed = any(b.status == BatchStatus.FAILED.value for b in batches)
            job.status = (JobStatus.FAILED if failed else JobStatus.COMPLETED).value
            job.completed_at = self.now()
            job.list_batches(batches)
            return True

    def save_batch_records(
        self, job_id: str, batch_id: str, records: Iterable[ProcessedRecord]
    ) -> None:
        rows = record_rows(job_id, batch_id, records)
        with self._lock:
            self._put_records(rows)

    def _save_pending_records(
        self, job_id: str, batch_id: str, first_index: int, records: Iterable[Mapping[str, Any]]
    ) -> None:
        rows = pending_rows(job_id, batch_id, first_index, records)
        with self._lock:
            self._put_records(rows)

    def save_processed_records(
        self, job_id: str, batch_id: str, records: Iterable[ProcessedRecord]
    ) -> None:
        """Bulk upsert of processed records."""
        self.save_batch_records(job_id, batch_id, records)

    def get_batch_records(self, job_id: str, batch_id: str) -> list[ProcessedRecord]:
        check_id(batch_id, "batch id")
        return self._select(job_id, lambda r: r[1] == batch_id)

    def _activate_job(self, job: JobState) -> bool:
        with self._lock:
            row = self._jobs.get(job.id)
            if row is None or row.status != JobStatus.CREATED.value:
                return False
            self.save_job_state(job)
            return True

    def _get_batch_raw(self, job_id: str, batch_id: str) -> list[tuple[int, dict[str, Any]]]:
        check_id(batch_id, "batch id")
        return [raw_from_row(r[2], r[4]) for r in self._rows(job_id, lambda r: r[1] == batch_id)]

    def get_distributed_status(self, job_id: str) -> DistributedJobStatus:
        check_id(job_id, "job id")
        with self._lock:
            counts = Counter(b.status for b in self._job_batches(job_id))
        return distributed_status_of(job_id, dict(counts))

    # -- the job's lifecycle --------------------------------------------------------------

    def pause_job(self, job_id: str) -> bool:
        """PROCESSING -> PAUSED; True only for the caller that moved it."""
        return self._move(job_id, (JobStatus.PROCESSING,), JobStatus.PAUSED)

    def resume_job(self, job_id: str) -> bool:
        """PAUSED -> PROCESSING; True only for the caller that moved it."""
        return self._move(job_id, (JobStatus.PAUSED,), JobStatus.PROCESSING)

    def abort_job(self, job_id: str) -> bool:
        """CREATED, PROCESSING or PAUSED -> ABORTED, with ``completed_at``; final."""
        movable = (JobStatus.CREATED, JobStatus.PROCESSING, JobStatus.PAUSED)
        return self._move(job_id, movable, JobStatus.ABORTED)

    def _move(self, job_id: str, movable: tuple[JobStatus, ...], to: JobStatus) -> bool:
        check_id(job_id, "job id")
        with self._lock:
            job = self._jobs.get(job_id)
            if job is None or job.status not in {s.value for s in movable}:
                return False
            job.status = to.value
            if to == JobStatus.ABORTED:
                job.completed_at = self.now()
                job.list_batches(self._job_batches(job_id))
            return True

    def purge_jobs(
        self, *, older_than_ms: int, statuses: Iterable[JobStatus | str] = PURGEABLE
    ) -> int:
        """Delete the jobs in ``statuses`` finished (CREATED: started) more than
        ``older_than_ms`` ago, with their records and batches; return how many."""
        doomed = self.purge_candidates(older_than_ms=older_than_ms, statuses=statuses)
        return sum(self.delete_job(job_id) for job_id in doomed)

    def purge_candidates(
        self, *, older_than_ms: int, statuses: Iterable[JobStatus | str] = PURGEABLE
    ) -> list[str]:
        """The ids of the jobs ``purge_jobs`` would delete now, by id."""
        wanted = check_purge(older_than_ms, statuses)
        cutoff = self.now() - older_than_ms
        with self._lock:
            return sorted(
                j.id
                for j in self._jobs.values()
                if j.status in wanted and j.finished_at is not None and j.finished_at < cutoff
            )

    # -- beyond the ports -----------------------------------------------------------------

    def delete_job(self, job_id: str) -> bool:
        """Delete a job with its batches and records; True if the job existed."""
        check_id(job_id, "job id")
        with self._lock:
            for record_key in [k for k in self._records if k[0] == job_id]:
                del self._records[record_key]
            for batch_key in [k for k, b in self._batches.items() if b.job_id == job_id]:
                del self._batches[batch_key]
            return self._jobs.pop(job_id, None) is not None

    def record_counts(self, job_id: str) -> dict[str, int]:
        """The job's record counts by record status (for reports)."""
        return dict(Counter(row[3] for row in self._rows(job_id, lambda r: True)))

    def get_failed_records_page(
        self, job_id: str, *, after_index: int = -1, limit: int = 500, offset: int = 0
    ) -> list[ProcessedRecord]:
        """Up to ``limit`` failed or invalid records whose index is above ``after_index``,
        by record index, the first ``offset`` of them skipped."""
        if after_index != -1:
            check_count(after_index, "after_index")
        check_count(limit, "limit")
        check_count(offset, "offset")
        rows = self._rows(job_id, lambda r: r[3] in FAILED_RECORD_STATUSES and r[2] > after_index)
        return [record_from_row(r[2:]) for r in rows[offset : offset + limit]]

    def list_jobs(self, status: JobStatus | str | None = None, limit: int = 100) -> list[JobState]:
        """Jobs, most recently started first (then by id), optionally of one status."""
        check_count(limit, "limit", MAX_BIGINT)
        wanted = parse_job_status(status).value if status is not None else None
        with self._lock:
            rows = [j for j in self._jobs.values() if wanted is None or j.status == wanted]
            rows.sort(key=lambda j: j.id)
            rows.sort(key=lambda j: (j.started_at is None, -(j.started_at or 0)))
            jobs = [self.get_job_state(j.id) for j in rows[:limit]]
        return [j for j in jobs if j is not None]
