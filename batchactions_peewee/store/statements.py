"""Every statement that decides who wins, each under one name, rendered once per store.

Read this file to audit the coordination protocol. Each deciding statement is a conditional
UPDATE whose row count decides: its comment says why that count is 1 for exactly one
caller. Each has a "landed" probe: after a lost connection a COMMIT may have landed unseen,
and the probe asks whether the row is in exactly the state that this caller's UPDATE, and
no other, leaves behind. The same names run through the layers: ``Coordination.take`` runs
``TAKE``, its probe ``TAKEN``, and so on.

Templates name tables and columns as ``{b}`` (the batches table), ``{b.workerId}`` (a
column, by the shared schema's camelCase name), ``{j}`` (jobs) and ``{p}`` (a bind
parameter); :class:`Statements` renders them with the dialect's quoting and parameter
style and the store's table prefix. Parameters are positional, in the order written.
"""

from __future__ import annotations

from dataclasses import dataclass

import peewee as pw

from ..model import BatchStatus, JobStatus

_COMPLETED = BatchStatus.COMPLETED.value
_FAILED = BatchStatus.FAILED.value

# -- claim ------------------------------------------------------------------------------

#: The job's status: a claim answers JOB_NOT_FOUND or JOB_NOT_PROCESSING from it.
#: (job id)
JOB_STATUS = "SELECT {j.status} FROM {j} WHERE {j.id} = {p}"

#: The lowest-index PENDING batches, the candidates of a compare-and-set claim.
#: (job id, 'PENDING')
PENDING = (
    "SELECT {b.id}, {b.batchIndex}, {b.recordStartIndex}, {b.recordEndIndex}, {b.version} "
    "FROM {b} WHERE {b.jobId} = {p} AND {b.status} = {p} ORDER BY {b.batchIndex} LIMIT 16"
)

#: The lowest-index PENDING batch that no other claimer has locked, locked for this one:
#: concurrent claimers each get a different row instead of queueing on the same one.
#: (job id, 'PENDING')
PENDING_LOCKED = (
    "SELECT {b.id}, {b.batchIndex}, {b.recordStartIndex}, {b.recordEndIndex}, {b.version} "
    "FROM {b} WHERE {b.jobId} = {p} AND {b.status} = {p} ORDER BY {b.batchIndex} "
    "LIMIT 1 FOR UPDATE SKIP LOCKED"
)

#: Is any batch PENDING, locked or not? When every PENDING row was locked by in-flight
#: claims, the claim falls back to compare-and-set, which waits for them. (job id, 'PENDING')
ANY_PENDING = "SELECT 1 FROM {b} WHERE {b.jobId} = {p} AND {b.status} = {p} LIMIT 1"

#: TAKE: PENDING -> PROCESSING, only if the row still has the version the claimer read.
#: Row count 1 for exactly one claimer: the WHERE re-checks version and status on the
#: current row under its row lock, and the SET always changes the version (so rows changed
#: equals rows matched on MySQL too); a rival that claimed and released the batch meanwhile
#: moved the version on, so a stale candidate matches nothing.
#: ('PROCESSING', worker id, now, batch id, version read, 'PENDING')
TAKE = (
    "UPDATE {b} SET {b.status} = {p}, {b.workerId} = {p}, {b.claimedAt} = {p}, "
    "{b.version} = {b.version} + 1 "
    "WHERE {b.id} = {p} AND {b.version} = {p} AND {b.status} = {p}"
)

#: Did TAKE land? Only that UPDATE moves that batch to that version with this worker and
#: this claim time. (batch id, version read + 1, worker id, now, 'PROCESSING')
TAKEN = (
    "SELECT 1 FROM {b} WHERE {b.id} = {p} AND {b.version} = {p} AND {b.workerId} = {p} "
    "AND {b.claimedAt} = {p} AND {b.status} = {p}"
)

# -- the holder's lease -----------------------------------------------------------------

#: RENEW: push the holder's claim time forward. Row count 1 only while the reservation
#: holds (same worker, same version, still PROCESSING); the new claim time always differs
#: from the old one (now, or the old one + 1 if the clock has not moved past it), so MySQL's
#: rows-changed count is 1 whenever the reservation holds. An aborted job renews no lease:
#: the refusal is how its workers learn of the abort.
#: (now, now, batch id, job id, worker id, version, 'PROCESSING', job id)
RENEW = (
    "UPDATE {b} SET {b.claimedAt} = CASE WHEN {b.claimedAt} >= {p} "
    "THEN {b.claimedAt} + 1 ELSE {p} END "
    "WHERE {b.id} = {p} AND {b.jobId} = {p} AND {b.workerId} = {p} AND {b.version} = {p} "
    "AND {b.status} = {p} AND NOT EXISTS (SELECT 1 FROM {j} WHERE {j}.{j.id} = {p} "
    f"AND {{j}}.{{j.status}} = '{JobStatus.ABORTED.value}')"
)

#: RELEASE: back to PENDING, only while this worker holds the batch; version + 1 fences
#: the old holder out for good. (batch id, job id, worker id, 'PROCESSING')
RELEASE = (
    "UPDATE {b} SET {b.status} = 'PENDING', {b.workerId} = NULL, {b.claimedAt} = NULL, "
    "{b.version} = {b.version} + 1 "
    "WHERE {b.id} = {p} AND {b.jobId} = {p} AND {b.workerId} = {p} AND {b.status} = {p}"
)

#: RELEASE_FENCED: RELEASE of one reservation: also only while its version holds, so a
#: worker that comes back under the same worker id cannot release its successor's claim.
#: (batch id, job id, worker id, 'PROCESSING', version)
RELEASE_FENCED = f"{RELEASE} AND {{b.version}} = {{p}}"

#: RECLAIM: PROCESSING batches whose lease is older than the cutoff go back to PENDING.
#: Concurrent reclaimers each move a row once: the WHERE re-checks the status under the
#: row lock; version + 1 fences the stale holder out. (job id, 'PROCESSING', cutoff)
RECLAIM = (
    "UPDATE {b} SET {b.status} = 'PENDING', {b.workerId} = NULL, {b.claimedAt} = NULL, "
    "{b.version} = {b.version} + 1 "
    "WHERE {b.jobId} = {p} AND {b.status} = {p} "
    "AND ({b.claimedAt} < {p} OR {b.claimedAt} IS NULL)"
)

# -- the end of a batch and of a job ----------------------------------------------------

#: FINISH: the batch's final state, fenced: row count 1 only while this worker's version
#: still holds and the batch is PROCESSING, and version + 1 (always a change) ends the
#: reservation, so a second FINISH with it matches nothing. The records follow in the
#: same transaction, so they land only with the state.
#: (final status, processed, failed, batch id, job id, worker id, version, 'PROCESSING')
FINISH = (
    "UPDATE {b} SET {b.status} = {p}, {b.processedCount} = {p}, {b.failedCount} = {p}, "
    "{b.version} = {b.version} + 1 "
    "WHERE {b.id} = {p} AND {b.jobId} = {p} AND {b.workerId} = {p} AND {b.version} = {p} "
    "AND {b.status} = {p}"
)

#: Did FINISH land? The state it leaves proves the records too (one transaction).
#: (batch id, job id, worker id, version + 1, final status)
FINISHED = (
    "SELECT 1 FROM {b} WHERE {b.id} = {p} AND {b.jobId} = {p} AND {b.workerId} = {p} "
    "AND {b.version} = {p} AND {b.status} = {p}"
)

#: Is any batch of the job unfinished? A plain read before FINALIZE: while one is, there
#: is nothing to decide (and on SQLite no reason to take the write lock). (job id)
UNFINISHED = (
    "SELECT 1 FROM {b} WHERE {b.jobId} = {p} "
    f"AND {{b.status}} NOT IN ('{_COMPLETED}', '{_FAILED}') LIMIT 1"
)

#: FINALIZE: PROCESSING -> FAILED if any batch failed, else COMPLETED, with the completion
#: time, once the job has a batch and every batch is COMPLETED or FAILED. The row moves out
#: of PROCESSING once, so the row count is 1 for exactly one caller (and the status always
#: changes, so MySQL counts it too).
#: (job id, now, job id, 'PROCESSING', job id, job id)
FINALIZE = (
    "UPDATE {j} SET {j.status} = CASE WHEN EXISTS ("
    f"SELECT 1 FROM {{b}} WHERE {{b}}.{{b.jobId}} = {{p}} AND {{b}}.{{b.status}} = '{_FAILED}'"
    f") THEN '{JobStatus.FAILED.value}' ELSE '{JobStatus.COMPLETED.value}' END, "
    "{j.completedAt} = {p} "
    "WHERE {j.id} = {p} AND {j.status} = {p} "
    "AND EXISTS (SELECT 1 FROM {b} WHERE {b}.{b.jobId} = {p}) "
    "AND NOT EXISTS (SELECT 1 FROM {b} WHERE {b}.{b.jobId} = {p} "
    f"AND {{b}}.{{b.status}} NOT IN ('{_COMPLETED}', '{_FAILED}'))"
)

#: Did FINALIZE land? The job carries this caller's completion time. (A rival finalizing in
#: the same millisecond after our UPDATE rolled back could fool it: where the server can
#: say whether our transaction committed, that answer is asked first.)
#: (job id, completion time)
FINALIZED = (
    "SELECT 1 FROM {j} WHERE {j.id} = {p} "
    f"AND {{j.status}} IN ('{JobStatus.COMPLETED.value}', '{JobStatus.FAILED.value}') "
    "AND {j.completedAt} = {p}"
)

# -- the job's lifecycle ---------------------------------------------------------------

#: PAUSE: PROCESSING -> PAUSED. The row leaves PROCESSING once and its status always
#: changes, so the row count is 1 for exactly one caller. (job id)
PAUSE = (
    f"UPDATE {{j}} SET {{j.status}} = '{JobStatus.PAUSED.value}' "
    f"WHERE {{j.id}} = {{p}} AND {{j.status}} = '{JobStatus.PROCESSING.value}'"
)

#: RESUME: PAUSED -> PROCESSING, 1 for exactly one caller as PAUSE. (job id)
RESUME = (
    f"UPDATE {{j}} SET {{j.status}} = '{JobStatus.PROCESSING.value}' "
    f"WHERE {{j.id}} = {{p}} AND {{j.status}} = '{JobStatus.PAUSED.value}'"
)

#: ABORT: CREATED, PROCESSING or PAUSED -> ABORTED with the completion time; final, so the
#: row moves once and the row count is 1 for exactly one caller. (now, job id)
ABORT = (
    f"UPDATE {{j}} SET {{j.status}} = '{JobStatus.ABORTED.value}', {{j.completedAt}} = {{p}} "
    f"WHERE {{j.id}} = {{p}} AND {{j.status}} IN ('{JobStatus.CREATED.value}', "
    f"'{JobStatus.PROCESSING.value}', '{JobStatus.PAUSED.value}')"
)

#: ACTIVATE: CREATED -> PROCESSING (COMPLETED for an empty source), the last write of
#: prepare_job, with the batch list and counts. The row leaves CREATED once and its status
#: always changes, so 1 for exactly one caller; a job aborted or deleted while it was being
#: prepared matches nothing, and preparation never brings it back.
#: (status, batch list, total records, started at, completed at, job id)
ACTIVATE = (
    "UPDATE {j} SET {j.status} = {p}, {j.batches} = {p}, {j.totalRecords} = {p}, "
    "{j.startedAt} = {p}, {j.completedAt} = {p}, {j.distributed} = {p} "
    f"WHERE {{j.id}} = {{p}} AND {{j.status}} = '{JobStatus.CREATED.value}'"
)

#: Every statement above, by name, for rendering and the snapshot tests.
TEMPLATES: dict[str, str] = {
    "job_status": JOB_STATUS,
    "pending": PENDING,
    "pending_locked": PENDING_LOCKED,
    "any_pending": ANY_PENDING,
    "take": TAKE,
    "taken": TAKEN,
    "renew": RENEW,
    "release": RELEASE,
    "release_fenced": RELEASE_FENCED,
    "reclaim": RECLAIM,
    "finish": FINISH,
    "finished": FINISHED,
    "unfinished": UNFINISHED,
    "finalize": FINALIZE,
    "finalized": FINALIZED,
    "pause": PAUSE,
    "resume": RESUME,
    "abort": ABORT,
    "activate": ACTIVATE,
}


class _Table:
    """A table in a template: ``{b}`` is its quoted name, ``{b.column}`` a quoted column."""

    def __init__(self, name: str, quote: str) -> None:
        self._name, self._quote = name, quote

    def __format__(self, spec: str) -> str:
        return self._quoted(self._name)

    def __getattr__(self, column: str) -> str:
        return self._quoted(column)

    def _quoted(self, name: str) -> str:
        return f"{self._quote[0]}{name}{self._quote[1]}"


def render(template: str, *, quote: str, param: str, prefix: str) -> str:
    """``template`` as SQL text with ``quote`` (two characters, open and close), the
    parameter placeholder ``param`` and the tables of ``prefix``."""
    return template.format(
        b=_Table(f"{prefix}batches", quote),
        j=_Table(f"{prefix}jobs", quote),
        r=_Table(f"{prefix}records", quote),
        p=param,
    )


@dataclass(frozen=True)
class Statements:
    """The deciding statements of one store, rendered once for its dialect and prefix."""

    job_status: str
    pending: str
    pending_locked: str
    any_pending: str
    take: str
    taken: str
    renew: str
    release: str
    release_fenced: str
    reclaim: str
    finish: str
    finished: str
    unfinished: str
    finalize: str
    finalized: str
    pause: str
    resume: str
    abort: str
    activate: str

    @classmethod
    def for_database(cls, database: pw.Database, prefix: str) -> Statements:
        """Rendered with ``database``'s quoting and parameter style."""
        return cls(
            **{
                name: render(template, quote=database.quote, param=database.param, prefix=prefix)
                for name, template in TEMPLATES.items()
            }
        )
