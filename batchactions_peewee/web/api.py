"""The dashboard's JSON API: one method per route, each reading the store through the
reports and exports the CLI shows, and the actions (pause, resume, abort, reclaim, retry)."""

from __future__ import annotations

import re
import threading
from collections import OrderedDict
from typing import Any

from ..checks import MAX_INT
from ..engine import prepare_retry_job
from ..exports import failed_csv, failed_json, failed_jsonl, failed_records
from ..model import BatchStatus, JobState, JobStatus, RecordStatus
from ..reports import job_summary, status_report, throughput
from ..store import PeeweeStateStore
from .http import HttpError, Request, Response, json_response, text_stream

#: Rows a page of batches, jobs or failed records holds at most.
MAX_PAGE = 1000
#: One letter per batch status in ``GET /api/jobs/{id}/grid``.
GRID_CODES = {
    BatchStatus.PENDING.value: "P",
    BatchStatus.PROCESSING.value: "R",
    BatchStatus.COMPLETED.value: "C",
    BatchStatus.FAILED.value: "F",
}
#: Each control: its store method, the statuses it moves and where to.
CONTROLS: dict[str, tuple[str, tuple[JobStatus, ...], JobStatus]] = {
    "pause": ("pause_job", (JobStatus.PROCESSING,), JobStatus.PAUSED),
    "resume": ("resume_job", (JobStatus.PAUSED,), JobStatus.PROCESSING),
    "abort": (
        "abort_job",
        (JobStatus.CREATED, JobStatus.PROCESSING, JobStatus.PAUSED),
        JobStatus.ABORTED,
    ),
}
ACTIONS = (*CONTROLS, "reclaim", "retry")
_FINAL = (JobStatus.COMPLETED, JobStatus.FAILED)
_TRUE = {"1": True, "true": True, "0": False, "false": False}


class FinishedCounts:
    """The record counts of COMPLETED and FAILED jobs, read once: no worker writes to a
    finalized job, and counting a large job's records is the dearest read of a page."""

    def __init__(self, store: PeeweeStateStore, size: int = 1000) -> None:
        self.store = store
        self.size = size
        self._counts: OrderedDict[tuple[str, int | None], dict[str, int]] = OrderedDict()
        self._lock = threading.Lock()

    def of(self, job: JobState) -> dict[str, int]:
        if job.status not in _FINAL:
            return self.store.record_counts(job.id)
        key = (job.id, job.completed_at)  # a job deleted and made again has another time
        with self._lock:
            if key in self._counts:
                return self._counts[key]
        counts = self.store.record_counts(job.id)
        with self._lock:
            self._counts[key] = counts
            while len(self._counts) > self.size:
                self._counts.popitem(last=False)
        return counts


class Api:
    """The routes of ``/api/``, over one store."""

    def __init__(self, store: PeeweeStateStore, *, lease_timeout_ms: int) -> None:
        self.store = store
        self.lease_timeout_ms = lease_timeout_ms
        self.counts = FinishedCounts(store)

    def find(self, job_id: str) -> JobState:
        """The job (without its batches), or 404."""
        job = self.store.get_job_head(job_id)
        if job is None:
            raise HttpError(404, f"no job {job_id}")
        return job

    def jobs(self, request: Request) -> Response:
        """``GET /api/jobs[?status=&limit=]``: recent jobs, as ``jobs --json`` lists them."""
        request.only("status", "limit")
        status = request.choice("status", [s.value for s in JobStatus])
        limit = request.integer("limit", 50, minimum=1, maximum=MAX_PAGE)
        heads = self.store.list_job_heads(status=status, limit=limit)
        now = self.store.now()
        return json_response([job_summary(j, self.counts.of(j), now) for j in heads])

    def job(self, request: Request, job: JobState) -> Response:
        """``GET /api/jobs/{id}``: the fields of ``status --json``."""
        request.only()
        counts = self.counts.of(job)
        return json_response(status_report(self.store, job, self.lease_timeout_ms, counts=counts))

    def batches(self, request: Request, job: JobState) -> Response:
        """``GET /api/jobs/{id}/batches[?offset=&limit=&status=]``: a page of batches."""
        request.only("offset", "limit", "status")
        offset = request.integer("offset", 0)
        limit = request.integer("limit", 100, minimum=1, maximum=MAX_PAGE)
        status = request.choice("status", GRID_CODES)
        page = self.store.get_batches_page(job.id, offset=offset, limit=limit, status=status)
        now = self.store.now()
        batches = []
        for b in page:
            held = b.status == BatchStatus.PROCESSING and b.claimed_at is not None
            age = max(0, now - b.claimed_at) if held and b.claimed_at is not None else None
            first, last = b.record_start_index, b.record_end_index
            batches.append(
                {
                    "index": b.index,
                    "batchId": b.id,
                    "status": b.status.value,
                    "records": last - first + 1 if first is not None and last is not None else None,
                    "recordStartIndex": first,
                    "recordEndIndex": last,
                    "processedCount": b.processed_count,
                    "failedCount": b.failed_count,
                    "workerId": b.worker_id,
                    "claimedAt": b.claimed_at,
                    "heldMs": age,
                    "stale": age is not None and age > self.lease_timeout_ms,
                }
            )
        total = sum(self.store.batch_counts(job.id).values())
        return json_response(
            {"jobId": job.id, "total": total, "offset": offset, "limit": limit, "batches": batches}
        )

    def grid(self, request: Request, job: JobState) -> Response:
        """``GET /api/jobs/{id}/grid``: every batch's status, one letter each, by index."""
        request.only()
        statuses = self.store.batch_statuses(job.id)
        codes = "".join(GRID_CODES.get(s, "?") for s in statuses)
        legend = {code: status for status, code in GRID_CODES.items()}
        return json_response(
            {"jobId": job.id, "total": len(statuses), "statuses": codes, "codes": legend}
        )

    def throughput(self, request: Request, job: JobState) -> Response:
        """``GET /api/jobs/{id}/throughput``: records per second over the job's life."""
        request.only()
        timeline = self.store.batch_timeline(job.id)
        return json_response({"jobId": job.id, **throughput(job, timeline, self.store.now())})

    def failed(self, request: Request, job: JobState) -> Response:
        """``GET /api/jobs/{id}/failed[?format=csv|jsonl&offset=&limit=&after=]``: a page
        of the failed and invalid records, or with ``format`` a download (all of them
        unless ``limit`` is given). ``after``: only records whose index is above it (the
        ``nextAfter`` of the previous page), which stays fast at any depth."""
        request.only("format", "offset", "limit", "after")
        kind = request.choice("format", ["csv", "jsonl"])
        offset = request.integer("offset", 0)
        if kind is not None:
            limit: int | None = request.integer("limit", MAX_INT, minimum=1)
            limit = None if "limit" not in request.query else limit
            name = "failed-" + re.sub(r"[^A-Za-z0-9_.-]", "_", job.id) + "." + kind
            if kind == "csv":
                lines = failed_csv(self.store, job.id, offset=offset, limit=limit)
                return text_stream(lines, "text/csv", name)
            lines = failed_jsonl(self.store, job.id, offset=offset, limit=limit)
            return text_stream(lines, "application/x-ndjson", name)
        size = request.integer("limit", 50, minimum=1, maximum=MAX_PAGE)
        after = request.integer("after", -1)
        read = failed_records(self.store, job.id, offset=offset, limit=size + 1, after_index=after)
        records = list(read)
        more = len(records) > size
        page = {
            "jobId": job.id,
            "offset": offset,
            "limit": size,
            "after": after,
            "more": more,
            "nextAfter": records[size - 1].index if more else None,
        }
        return json_response({**page, "records": [failed_json(r) for r in records[:size]]})

    def act(self, request: Request, job: JobState, action: str) -> Response:
        """``POST /api/jobs/{id}/{pause|resume|abort|reclaim|retry}``."""
        if action == "reclaim":
            request.only("timeout")
            timeout = request.integer("timeout", self.lease_timeout_ms)
            reclaimed = self.store.reclaim_stale_batches(job.id, timeout)
            return json_response({"jobId": job.id, "timeoutMs": timeout, "reclaimed": reclaimed})
        if action == "retry":
            return self._retry(request, job)
        request.only()
        method, movable, target = CONTROLS[action]
        moved = bool(getattr(self.store, method)(job.id))
        after = target if moved else self.find(job.id).status
        if not moved and after != target:
            wanted = " or ".join(s.value for s in movable)
            raise HttpError(409, f"job {job.id} is {after.value}: only a {wanted} job can {action}")
        return json_response({"jobId": job.id, "changed": moved, "status": after.value})

    def _retry(self, request: Request, job: JobState) -> Response:
        request.only("invalid")
        invalid = _TRUE.get(request.choice("invalid", _TRUE) or "0", False)
        statuses = [RecordStatus.FAILED, *([RecordStatus.INVALID] if invalid else [])]
        result = prepare_retry_job(self.store, job.id, statuses=statuses)
        body: dict[str, Any] = {
            "jobId": result.job_id,
            "retryOf": job.id,
            "statuses": [s.value for s in statuses],
            "totalRecords": result.total_records,
            "totalBatches": result.total_batches,
        }
        return json_response(body, 201)
