"""Batch reads for reports and the dashboard: a job's batches a page, a status or a column
at a time, so that drawing one screen of a job of 20,000 batches never reads them whole.

Where a job's batches come from is decided as ``Jobs.load`` decides it: the batches table
for a distributed job that has rows there, else the job row's JSON list (jobs saved with
``save_job_state``, or written by the TypeScript adapters).
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import peewee as pw

from ..model import Batch, BatchStatus
from .jobs import batch_from_row, listed_batches
from .session import Session
from .tables import Tables

_FINISHED = [BatchStatus.COMPLETED.value, BatchStatus.FAILED.value]


class BatchReads:
    """Reads of one store's batches; each runs inside the caller's read transaction."""

    def __init__(self, session: Session, tables: Tables) -> None:
        self.session = session
        self.tables = tables

    def _rows(self, query: Any) -> list[tuple[Any, ...]]:
        # Straight from the driver's cursor: Peewee's row wrapper costs more than the read.
        sql, params = query.sql()
        return self.session.rows(sql, params)

    def _listed(self, job_id: str) -> list[Batch] | None:
        """The job's batches from its JSON list, or None when the batches table holds them
        (an unknown job has none)."""
        J, B = self.tables.jobs, self.tables.batches
        head = J.select(J.distributed).where(J.id == job_id).tuples().first()
        if head is None:
            return []
        if head[0] and B.select(B.id).where(B.job_id == job_id).limit(1).exists():
            return None
        row = J.select(J.batches).where(J.id == job_id).first()
        return listed_batches(row)

    def counts(self, job_id: str) -> dict[str, int]:
        """The job's batch counts by status."""
        listed = self._listed(job_id)
        if listed is not None:
            return dict(Counter(b.status.value for b in listed))
        B = self.tables.batches
        query = B.select(B.status, pw.fn.COUNT(B.id)).where(B.job_id == job_id).group_by(B.status)
        return {str(status): int(n) for status, n in self._rows(query)}

    def page(self, job_id: str, status: str | None, offset: int, limit: int) -> list[Batch]:
        """Up to ``limit`` batches (of ``status`` if given) by index, after skipping ``offset``."""
        listed = self._listed(job_id)
        if listed is not None:
            wanted = [b for b in listed if status is None or b.status.value == status]
            return sorted(wanted, key=lambda b: b.index)[offset : offset + limit]
        B = self.tables.batches
        query = B.select().where(B.job_id == job_id)
        if status is not None:
            query = query.where(B.status == status)
        query = query.order_by(B.batch_index).limit(limit).offset(offset)
        return [batch_from_row(b) for b in query]

    def statuses(self, job_id: str) -> list[str]:
        """Every batch's status, by index: one column, not whole rows."""
        listed = self._listed(job_id)
        if listed is not None:
            return [b.status.value for b in sorted(listed, key=lambda b: b.index)]
        B = self.tables.batches
        query = B.select(B.status).where(B.job_id == job_id).order_by(B.batch_index)
        return [str(row[0]) for row in self._rows(query)]

    def timeline(self, job_id: str) -> list[tuple[int, int]]:
        """(last lease time, records done) of each finished batch that has a lease time."""
        listed = self._listed(job_id)
        if listed is not None:
            return [
                (b.claimed_at, b.processed_count + b.failed_count)
                for b in listed
                if b.status.value in _FINISHED and b.claimed_at is not None
            ]
        B = self.tables.batches
        query = B.select(B.claimed_at, B.processed_count + B.failed_count).where(
            B.job_id == job_id, B.status.in_(_FINISHED), B.claimed_at.is_null(False)
        )
        return [(int(at), int(done)) for at, done in self._rows(query)]
