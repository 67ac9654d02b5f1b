"""Worker routines for the concurrency tests, run in threads and in spawned processes.

``work`` claims, heartbeats and completes batches until the store says none is left, then
tries to finalize the job; ``hammer`` writes as often as it can. Neither raises: each
reports what it did and saw (which batches it completed, what the distributed status said
right after its last claim, every exception) as a JSON-ready dict for the test to check.
``process_main`` is the ``multiprocessing`` target (spawn) that runs one of them in a process
of its own and writes its report to a file; the CLI children are in child.py.
"""

from __future__ import annotations

import json
import time
import traceback
from typing import Any, Protocol

import peewee as pw

from batchactions_peewee import (
    BatchStatus,
    PeeweeStateStore,
    ProcessedRecord,
    RecordStatus,
)

from .backends import open_database

#: How long "processing" one batch takes: short, but it lets the workers interleave.
WORK_SECONDS = 0.002
#: How many rounds of writes each hammering worker does.
HAMMER_ROUNDS = 25
#: URL prefix of a SQLite file opened with Peewee's defaults instead of ``open_database``.
PLAIN_SQLITE = "plain+sqlite:///"


class Startable(Protocol):
    """A barrier (threading or multiprocessing) all workers wait on before their first claim."""

    def wait(self, timeout: float | None = None) -> int: ...


def work(store: PeeweeStateStore, job_id: str, worker_id: str, start: Startable) -> dict[str, Any]:
    """Claim and complete batches until none is left; report everything."""
    report: dict[str, Any] = {
        "worker": worker_id,
        "completed": [],  # batch indexes for which complete_batch returned True
        "refused": [],  # batch indexes for which complete_batch returned False
        "heartbeats_refused": 0,
        "claims": 0,
        "claim_seconds": 0.0,
        "first_claim": None,
        "last_claim": None,
        "end_reason": None,
        "pending_after_end": None,
        "job_status_after_end": None,
        "finalized": 0,
        "errors": [],
    }
    try:
        start.wait(timeout=120)
        while True:
            began = time.time()
            result = store.claim_batch(job_id, worker_id)
            ended = time.time()
            report["claim_seconds"] += ended - began
            report["first_claim"] = report["first_claim"] or began
            report["last_claim"] = ended
            if not result.claimed:
                report["end_reason"] = result.reason.value if result.reason else None
                # Right after: was nothing really left to claim? (JOB_NOT_PROCESSING is
                # right too for a late worker, once another one has finalized the job.)
                report["pending_after_end"] = store.get_distributed_status(job_id).pending_batches
                job = store.get_job_state(job_id)
                report["job_status_after_end"] = job.status.value if job else None
                break
            report["claims"] += 1
            reservation = result.reservation
            assert reservation is not None
            time.sleep(WORK_SECONDS)  # the batch's processing, during which others claim
            if not store.heartbeat(reservation):
                report["heartbeats_refused"] += 1
            records = [
                ProcessedRecord(
                    index=i,
                    raw={"i": i},
                    parsed={"worker": worker_id, "batch": reservation.batch_index},
                    status=RecordStatus.PROCESSED,
                )
                for i in range(reservation.record_start_index, reservation.record_end_index + 1)
            ]
            done = store.complete_batch(
                reservation,
                status=BatchStatus.COMPLETED,
                processed_count=len(records),
                failed_count=0,
                records=records,
            )
            report["completed" if done else "refused"].append(reservation.batch_index)
        if store.try_finalize_job(job_id):
            report["finalized"] += 1
    except BaseException:
        report["errors"].append(traceback.format_exc())
    return report


def hammer(
    store: PeeweeStateStore, job_id: str, worker_id: str, start: Startable
) -> dict[str, Any]:
    """Write as often as possible, each write a transaction that reads first: claim,
    heartbeat, save records, release, reclaim, and read progress in between."""
    report: dict[str, Any] = {"worker": worker_id, "rounds": 0, "claims": 0, "errors": []}
    try:
        start.wait(timeout=120)
        for _ in range(HAMMER_ROUNDS):
            result = store.claim_batch(job_id, worker_id)
            if result.reservation is not None:
                r = result.reservation
                report["claims"] += 1
                store.heartbeat(r)
                store.save_batch_records(
                    job_id,
                    r.batch_id,
                    [
                        ProcessedRecord(
                            index=r.record_start_index,
                            raw={},
                            parsed={"worker": worker_id},
                            status=RecordStatus.PENDING,
                        )
                    ],
                )
                store._release_reservation(r)
            store.reclaim_stale_batches(job_id, 3_600_000)
            store.get_progress(job_id)
            store.get_distributed_status(job_id)
            report["rounds"] += 1
    except BaseException:
        report["errors"].append(traceback.format_exc())
    return report


ROUTINES = {"work": work, "hammer": hammer}


def process_main(
    url: str,
    table_prefix: str,
    job_id: str,
    worker_id: str,
    force_cas_claim: bool,
    start: Startable,
    report_path: str,
    routine: str = "work",
) -> None:
    """Entry point of a spawned worker process: its own database connection and store."""
    report: dict[str, Any] = {"worker": worker_id, "errors": []}
    try:
        database = (
            # SQLite as a user opens it without tuning: Peewee's defaults, no WAL.
            pw.SqliteDatabase(url.removeprefix(PLAIN_SQLITE))
            if url.startswith(PLAIN_SQLITE)
            else open_database(url)
        )
        store = PeeweeStateStore(database, table_prefix=table_prefix)
        store.force_cas_claim = force_cas_claim
        try:
            report = ROUTINES[routine](store, job_id, worker_id, start)
        finally:
            database.close()
    except BaseException:
        report["errors"].append(traceback.format_exc())
    with open(report_path, "w", encoding="utf-8") as out:
        json.dump(report, out)
