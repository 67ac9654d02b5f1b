"""Coordination: claim, renew, release, reclaim, finish and finalize, each one named
statement of ``statements`` whose row count decides, run through the session's retries.

The decision and the test of its row count sit together in one short method each; after a
lost connection the statement's "landed" probe says whether the lost attempt committed.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from .. import codec
from ..checks import status_of
from ..model import (
    BatchReservation,
    BatchStatus,
    ClaimBatchResult,
    ClaimFailureReason,
    JobState,
    JobStatus,
)
from ..rows import RecordRow, batch_json
from .dialects import open_connection
from .jobs import Jobs
from .records import Records
from .session import Session
from .statements import Statements

_PENDING = BatchStatus.PENDING.value
_PROCESSING = BatchStatus.PROCESSING.value

#: A candidate batch as PENDING / PENDING_LOCKED read it:
#: (id, batchIndex, recordStartIndex, recordEndIndex, version).
Candidate = tuple[Any, ...]


@dataclass
class _Sent:
    """What the last attempt of a write sent, for its "landed" probe: the attempt that a
    lost connection interrupted is the last one sent."""

    take: tuple[Candidate, int] | None = None  # the candidate and the claim time sent
    stamp: int | None = None
    transaction: object = None
    finished: BatchStatus | None = None  # the status a transactional FINISH sent
    sent_before: list[BatchStatus] = field(default_factory=list)  # earlier attempts sent


class _FencedOff(Exception):
    """Raised inside a transactional FINISH that matched nothing, to roll it back."""


class _LandedBefore(Exception):
    """Raised inside a FINISH that matched nothing because an earlier attempt of it
    landed: rolls back what this attempt's ``produce()`` wrote again."""


#: Record rows as ``records.upsert`` takes them.
Rows = Sequence[RecordRow]


class Coordination:
    """The claim protocol of one store."""

    def __init__(
        self, session: Session, statements: Statements, jobs: Jobs, records: Records
    ) -> None:
        self.session = session
        self.sql = statements
        self.jobs = jobs
        self.records = records
        self._skip_locked: bool | None = None

    def skip_locked(self) -> bool:
        """Whether claims may use ``SELECT ... FOR UPDATE SKIP LOCKED`` on this server."""
        # Asked without a lock: pwasyncio's tasks share one thread, and a lock held across
        # the query would block them all. Two first claims at once both ask; same answer.
        if self._skip_locked is None:
            self._skip_locked = self.session.run(self._server_skips_locked)
        return self._skip_locked

    def _server_skips_locked(self) -> bool:
        open_connection(self.session.database)  # the server version is known then
        return self.session.dialect.supports_skip_locked()

    # -- claim ----------------------------------------------------------------------------

    def claim(self, job_id: str, worker_id: str, *, force_cas: bool) -> ClaimBatchResult:
        """The lowest-index PENDING batch for ``worker_id``; a worker that loses a race moves
        on to the next candidate, so NO_PENDING_BATCHES only when none is left."""
        sent = _Sent()

        def landed() -> ClaimBatchResult | None:
            return self._taken(job_id, worker_id, sent)

        session = self.session
        if session.dialect.single_writer:
            # One write transaction holds the only write lock: nobody can race us.
            return session.write(lambda: self._claim_cas(job_id, worker_id, sent), landed=landed)
        if self.skip_locked() and not force_cas:
            result = session.write(
                lambda: self._claim_skip_locked(job_id, worker_id, sent), landed=landed
            )
            if result is not None:
                return result
            # Every PENDING row we saw was locked by an in-flight claim: compare-and-set
            # waits for those and gives the definitive answer.
        return session.run(lambda: self._claim_cas(job_id, worker_id, sent), landed=landed)

    def _claim_cas(self, job_id: str, worker_id: str, sent: _Sent) -> ClaimBatchResult:
        # Read candidates, take the first whose version still matches. Each loss means
        # another worker took that batch, so the loop ends when batches run out.
        while True:
            failure = self._job_failure(job_id)
            if failure is not None:
                return ClaimBatchResult(claimed=False, reason=failure)
            candidates = self.session.rows(self.sql.pending, (job_id, _PENDING))
            if not candidates:
                return _no_pending()
            now = self.session.now()
            for candidate in candidates:
                if self._take(worker_id, candidate, now, sent):
                    return _claimed(job_id, worker_id, candidate, now)

    def _claim_skip_locked(
        self, job_id: str, worker_id: str, sent: _Sent
    ) -> ClaimBatchResult | None:
        # Inside one transaction: the row PENDING_LOCKED returns stays locked for us.
        failure = self._job_failure(job_id)
        if failure is not None:
            return ClaimBatchResult(claimed=False, reason=failure)
        found = self.session.rows(self.sql.pending_locked, (job_id, _PENDING))
        if not found:
            if self.session.exists(self.sql.any_pending, (job_id, _PENDING)):
                return None
            return _no_pending()
        now = self.session.now()
        if not self._take(worker_id, found[0], now, sent):
            return None
        return _claimed(job_id, worker_id, found[0], now)

    def job_status(self, job_id: str) -> str | None:
        """JOB_STATUS: the job's status alone (None: no such job)."""

        def read() -> str | None:
            found = self.session.rows(self.sql.job_status, (job_id,))
            return str(found[0][0]) if found else None

        return self.session.run(read)

    def _job_failure(self, job_id: str) -> ClaimFailureReason | None:
        found = self.session.rows(self.sql.job_status, (job_id,))
        if not found:
            return ClaimFailureReason.JOB_NOT_FOUND
        if found[0][0] != JobStatus.PROCESSING.value:
            return ClaimFailureReason.JOB_NOT_PROCESSING
        return None

    def _take(self, worker_id: str, candidate: Candidate, now: int, sent: _Sent) -> bool:
        """TAKE: True for exactly one claimer of ``candidate`` (see ``statements.TAKE``)."""
        batch_id, _, _, _, version = candidate
        sent.take = (candidate, now)
        params = (_PROCESSING, worker_id, now, batch_id, version, _PENDING)
        return self.session.changed(self.sql.take, params) == 1

    def _taken(self, job_id: str, worker_id: str, sent: _Sent) -> ClaimBatchResult | None:
        """TAKEN: the claim of the last candidate sent, if it committed unseen."""
        if sent.take is None:
            return None
        candidate, stamp = sent.take
        batch_id, _, _, _, version = candidate
        params = (batch_id, version + 1, worker_id, stamp, _PROCESSING)
        if not self.session.exists(self.sql.taken, params):
            return None
        return _claimed(job_id, worker_id, candidate, stamp)

    # -- the holder's lease ---------------------------------------------------------------

    def renew(self, r: BatchReservation) -> bool:
        """RENEW: True while the reservation holds and the job is not aborted."""

        def renew() -> int:
            now = self.session.now()
            params = (now, now, r.batch_id, r.job_id, r.worker_id, r.version, _PROCESSING, r.job_id)
            return self.session.changed(self.sql.renew, params)

        return self.session.write(renew) == 1

    def release(self, job_id: str, batch_id: str, worker_id: str, version: int | None) -> bool:
        """RELEASE (or RELEASE_FENCED, given a version): True if the holder still held it."""
        params: tuple[object, ...]
        if version is None:
            sql, params = self.sql.release, (batch_id, job_id, worker_id, _PROCESSING)
        else:
            sql = self.sql.release_fenced
            params = (batch_id, job_id, worker_id, _PROCESSING, version)
        self.records.forget_read(job_id, batch_id)
        return self.session.write(lambda: self.session.changed(sql, params)) == 1

    def reclaim(self, job_id: str, timeout_ms: int) -> int:
        """RECLAIM: how many stale batches went back to PENDING."""

        def reclaim() -> int:
            cutoff = self.session.now() - timeout_ms
            return self.session.changed(self.sql.reclaim, (job_id, _PROCESSING, cutoff))

        return self.session.write(reclaim)

    # -- the end of a batch and of a job --------------------------------------------------

    def finish(
        self,
        r: BatchReservation,
        status: BatchStatus,
        processed: int,
        failed: int,
        rows: Sequence[RecordRow],
    ) -> bool:
        """FINISH: the fenced state, then the records, in one transaction; False (nothing
        written) once the reservation no longer holds."""
        return self.finish_with(r, lambda: (status, processed, failed, rows))

    def finish_with(
        self, r: BatchReservation, produce: Callable[[], tuple[BatchStatus, int, int, Rows]]
    ) -> bool:
        """``produce()`` (a batch processor writing through this store's database, which
        returns the batch's status, counts and record rows), then FINISH, in one
        transaction: once the reservation no longer holds, FINISH matches nothing and the
        transaction rolls back with everything ``produce`` wrote. False then."""
        sent = _Sent()

        def finish() -> bool:
            status, processed, failed, rows = produce()
            if sent.finished is not None:
                sent.sent_before.append(sent.finished)
            sent.finished = None
            fence = (
                status.value,
                processed,
                failed,
                r.batch_id,
                r.job_id,
                r.worker_id,
                r.version,
                _PROCESSING,
            )
            if self.session.changed(self.sql.finish, fence) != 1:
                if any(landed_as(before) for before in sent.sent_before):
                    # An earlier attempt's COMMIT landed after its connection was lost,
                    # later than the probe that looked for it.
                    raise _LandedBefore
                raise _FencedOff  # rolls back what produce() wrote
            if rows:
                self.records.complete(r.job_id, r.batch_id, rows)
            sent.finished = status
            return True

        def landed_as(status: BatchStatus) -> bool:
            params = (r.batch_id, r.job_id, r.worker_id, r.version + 1, status.value)
            return self.session.exists(self.sql.finished, params)

        def finished() -> bool | None:
            if sent.finished is None:
                return None
            return True if landed_as(sent.finished) else None

        try:
            # The processor's Python work before its first write runs without SQLite's
            # one write lock (see SqliteDialect.write_transaction).
            written = self.session.write(finish, landed=finished, lock_first=False)
        except _FencedOff:
            written = False
        except _LandedBefore:
            written = True
        # Kept after an error: a batch processor that raised runs again, with this batch.
        self.records.forget_read(r.job_id, r.batch_id)
        return written

    def finalize(self, job_id: str) -> bool:
        """FINALIZE: True for exactly one caller, once every batch is COMPLETED or FAILED."""
        if self.session.run(lambda: self.session.exists(self.sql.unfinished, (job_id,))):
            return False  # nothing to decide yet: a plain read, no write lock
        sent = _Sent()
        dialect = self.session.dialect

        def finalize() -> bool:
            now = self.session.now()
            params = (job_id, now, job_id, JobStatus.PROCESSING.value, job_id, job_id)
            if self.session.changed(self.sql.finalize, params) != 1:
                return False
            sent.stamp, sent.transaction = now, dialect.transaction_id()
            self._write_batch_list(job_id)
            return True

        def finalized() -> bool | None:
            # Only an attempt whose UPDATE matched can have won; where the server can say
            # whether that transaction committed, it decides.
            if sent.stamp is None:
                return None
            stamp, transaction = sent.stamp, sent.transaction
            sent.stamp, sent.transaction = None, None
            committed = dialect.committed(transaction)
            if committed is not None:
                return True if committed else None
            return True if self.session.exists(self.sql.finalized, (job_id, stamp)) else None

        return self.session.write(finalize, landed=finalized)

    # -- the job's lifecycle ------------------------------------------------------------

    def pause(self, job_id: str) -> bool:
        """PAUSE: True for the one caller that moved the job out of PROCESSING."""
        return self._move(self.sql.pause, (job_id,))

    def resume(self, job_id: str) -> bool:
        """RESUME: True for the one caller that moved the job back to PROCESSING."""
        return self._move(self.sql.resume, (job_id,))

    def abort(self, job_id: str) -> bool:
        """ABORT: True for the one caller that ended the job; its batch list follows."""

        def after() -> None:
            self._write_batch_list(job_id)

        return self._move(self.sql.abort, (self.session.now(), job_id), after=after)

    def activate(self, job: JobState, batches_json: str) -> bool:
        """ACTIVATE: True if the job was still CREATED; its batch rows are written in the
        same transaction, so a claimable job always has all of them."""
        status = status_of(JobStatus, job.status).value
        params = (
            status,
            batches_json,
            job.total_records,
            job.started_at,
            job.completed_at,
            job.distributed,
            job.id,
        )

        def after() -> None:
            if job.distributed and job.batches:
                self.jobs.insert_missing_batches(job)

        return self._move(self.sql.activate, params, after=after)

    def _move(
        self, sql: str, params: tuple[object, ...], after: Callable[[], None] | None = None
    ) -> bool:
        """One conditional UPDATE of a job's status, in one transaction. After a lost
        connection, a server that can say whether the lost attempt committed (PostgreSQL)
        decides; elsewhere the caller is told False, as for a rival's move: the job has
        moved either way, and True stays the answer of at most one caller."""
        sent = _Sent()
        dialect = self.session.dialect

        def move() -> bool:
            if self.session.changed(sql, params) != 1:
                return False
            sent.transaction = dialect.transaction_id()
            if after is not None:
                after()
            return True

        def moved() -> bool | None:
            transaction, sent.transaction = sent.transaction, None
            committed = dialect.committed(transaction) if transaction is not None else None
            return True if committed else None

        return self.session.write(move, landed=moved)

    def _write_batch_list(self, job_id: str) -> None:
        # The job row's JSON list, as the TypeScript adapters read it, from the batch rows
        # (a job without batch rows keeps the list it has).
        batches = self.jobs.batches([job_id]).get(job_id, [])
        if not batches:
            return
        J = self.jobs.tables.jobs
        J.update(batches=codec.dumps([batch_json(b) for b in batches])).where(
            J.id == job_id
        ).execute()


def _no_pending() -> ClaimBatchResult:
    return ClaimBatchResult(claimed=False, reason=ClaimFailureReason.NO_PENDING_BATCHES)


def _claimed(job_id: str, worker_id: str, candidate: Candidate, now: int) -> ClaimBatchResult:
    batch_id, index, start, end, version = candidate
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
