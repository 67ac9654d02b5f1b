"""The job commands: ``prepare FILE`` reads a file into a job, ``work JOB_ID`` runs worker
processes on it, ``run FILE`` does both; and the report printed when the workers end."""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from collections.abc import Iterator
from typing import Any

import peewee as pw
import pydantic

from ..engine import prepare_job
from ..engine.pool import WorkerOutcome, run_workers
from ..engine.sources import detect_format, open_source
from ..errors import BatchActionsError, JobExistsError
from ..model import JobStatus, RecordStatus
from ..store import PeeweeStateStore
from .common import (
    PROG,
    CliError,
    database_url,
    find_job,
    load_schema,
    open_store,
    usage_error,
)
from .render import ProgressBar, duration, print_json, print_rows, progress_bar
from .worker_setup import check_code, worker_settings

logger = logging.getLogger(__name__)


def cmd_prepare(args: argparse.Namespace) -> int:
    """Read FILE into a new distributed job and print its id."""
    file_format(args)
    load_schema(args.schema)
    store = open_store(args, create=True)
    prepared = _prepare(args, store, progress_bar(args))
    if args.json:
        print_json(prepared)
        return 0
    print(
        f"prepared {prepared['totalRecords']} records ({prepared['unreadableRows']} unreadable) "
        f"in {prepared['totalBatches']} batches",
        file=sys.stderr,
    )
    print(prepared["jobId"])
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    """Prepare FILE and process it with local worker processes."""
    file_format(args)
    check_code(args)
    store = open_store(args, create=True)
    prepared = _prepare(args, store, progress_bar(args))
    if not args.json:
        print(
            f"job {prepared['jobId']}: {prepared['totalRecords']} records "
            f"({prepared['unreadableRows']} unreadable) in {prepared['totalBatches']} batches, "
            f"{args.workers} workers",
            file=sys.stderr,
        )
    # An empty file makes a job that is already complete: no worker needed.
    workers = args.workers if prepared["totalBatches"] else 0
    return _work(args, store, prepared["jobId"], workers)


def cmd_work(args: argparse.Namespace) -> int:
    """Join a job as a worker (``--workers`` processes on this machine)."""
    store = open_store(args)
    find_job(store, args.job_id, database_url(args))
    return _work(args, store, args.job_id, args.workers)


# -- prepare ---------------------------------------------------------------------------------


def file_format(args: argparse.Namespace) -> str:
    """FILE's format: ``--format``, else its extension's; a usage error if neither says."""
    file_format = args.format or detect_format(args.file)
    if file_format is None:
        raise usage_error(
            f"cannot tell the format of {args.file} from its extension "
            "(.csv, .jsonl, .ndjson): give --format csv or --format jsonl"
        )
    return file_format


def _prepare(args: argparse.Namespace, store: PeeweeStateStore, bar: ProgressBar) -> dict[str, Any]:
    """Read FILE into a new job; return what ``prepare`` reports."""
    kind = file_format(args)
    schema = load_schema(args.schema)
    bad = 0
    started = time.monotonic()
    with open_source(args.file, kind, delimiter=args.delimiter) as rows:

        def records() -> Iterator[dict[str, Any]]:
            nonlocal bad
            for count, row in enumerate(rows, start=1):
                bad += row.error is not None
                if count % 1000 == 0:
                    bar.note(f"reading {args.file}: {count} rows")
                yield row.as_record()

        try:
            result = prepare_job(
                store,
                records(),
                batch_size=args.batch_size,
                job_id=args.job_id,
                config={"source": os.path.basename(args.file)},
                schema=schema,
            )
        except JobExistsError as exc:
            raise CliError(str(exc)) from None
    bar.close()
    return {
        "jobId": result.job_id,
        "totalRecords": result.total_records,
        "totalBatches": result.total_batches,
        "unreadableRows": bad,
        "elapsedMs": int((time.monotonic() - started) * 1000),
    }


# -- work ------------------------------------------------------------------------------------


def _work(args: argparse.Namespace, store: PeeweeStateStore, job_id: str, workers: int) -> int:
    settings = worker_settings(args, job_id)
    bar = progress_bar(args)

    def stopping() -> None:
        bar.close()
        print(
            f"{PROG}: stopping after the batches in hand (Ctrl-C again to abort)", file=sys.stderr
        )

    started = time.monotonic()
    outcomes, interrupted = run_workers(
        settings, workers, poll=lambda: _draw(bar, store, job_id), on_interrupt=stopping, name=PROG
    )
    _draw(bar, store, job_id)
    bar.close()
    elapsed_ms = int((time.monotonic() - started) * 1000)
    report = _run_report(store, job_id, outcomes, elapsed_ms)
    if args.json:
        print_json(report)
    else:
        _print_run_report(report, outcomes)
    if interrupted:
        print(f"{PROG}: interrupted; resume with `{PROG} work {job_id}`", file=sys.stderr)
        return 130
    stopped = {o.summary.get("stopped") for o in outcomes if o.summary}
    if "aborted" in stopped:
        print(f"{PROG}: job {job_id} was aborted", file=sys.stderr)
    elif "limit" in stopped and report["status"] == JobStatus.PROCESSING.value:
        print(f"{PROG}: stopped at the limit; go on with `{PROG} work {job_id}`", file=sys.stderr)
    for outcome in outcomes:
        if outcome.error:
            print(f"{PROG}: error: worker {outcome.number}: {outcome.error}", file=sys.stderr)
    failed = any(o.error for o in outcomes) or report["status"] == JobStatus.FAILED.value
    return 1 if failed else 0


def _draw(bar: ProgressBar, store: PeeweeStateStore, job_id: str) -> None:
    if not bar.enabled:
        return
    try:
        bar.update(store.get_progress(job_id))
    except (pw.PeeweeException, BatchActionsError):  # the bar waits for the next poll
        logger.debug("could not read the progress", exc_info=True)


def _run_report(
    store: PeeweeStateStore, job_id: str, outcomes: list[WorkerOutcome], elapsed_ms: int
) -> dict[str, Any]:
    job = store.get_job_state(job_id)
    counts = store.record_counts(job_id)
    done = sum(o.summary["processed"] + o.summary["failed"] for o in outcomes if o.summary)
    return {
        "jobId": job_id,
        "status": job.status.value if job else None,
        "totalRecords": job.total_records if job else 0,
        "processedRecords": counts.get(RecordStatus.PROCESSED.value, 0),
        "invalidRecords": counts.get(RecordStatus.INVALID.value, 0),
        "failedRecords": counts.get(RecordStatus.FAILED.value, 0),
        "totalBatches": len(job.batches) if job else 0,
        "elapsedMs": elapsed_ms,
        "recordsPerSecond": round(done / (elapsed_ms / 1000), 1) if elapsed_ms else None,
        "workers": [
            {"number": o.number, **_camel(o.summary or {}), "error": o.error} for o in outcomes
        ],
    }


def _camel(summary: dict[str, Any]) -> dict[str, Any]:
    return {pydantic.alias_generators.to_camel(k): v for k, v in summary.items()}


def _print_run_report(report: dict[str, Any], outcomes: list[WorkerOutcome]) -> None:
    rows: list[list[object]] = [["worker", "batches", "processed", "failed", ""]]
    for o in outcomes:
        s = o.summary or {}
        note = "finalized the job" if s.get("finalized") else (o.error or "")
        rows.append(
            [
                s.get("worker_id", f"#{o.number}"),
                s.get("batches", 0),
                s.get("processed", 0),
                s.get("failed", 0),
                note,
            ]
        )
    print_rows(rows)
    print()
    rate = report["recordsPerSecond"]
    print_rows(
        [
            ["status", report["status"]],
            ["records", report["totalRecords"]],
            ["processed", report["processedRecords"]],
            ["invalid", report["invalidRecords"]],
            ["failed", report["failedRecords"]],
            ["batches", report["totalBatches"]],
            [
                "time",
                f"{duration(report['elapsedMs'])}" + (f" ({rate:.0f} records/s)" if rate else ""),
            ],
        ]
    )
    if report["invalidRecords"] or report["failedRecords"]:
        print(f"\nfailed records: {PROG} failed {report['jobId']} --output failed.csv")
    print(f"\njob id: {report['jobId']}")
