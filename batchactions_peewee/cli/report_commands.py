"""The commands that report on jobs: ``status`` (progress, batches, the workers' leases),
``failed`` (an export of failed and invalid records), ``jobs`` (recent jobs); and
``reclaim``, which gives stale leases back to the other workers. ``status --watch`` and
``jobs --watch`` are in ``watch``."""

from __future__ import annotations

import argparse
import sys
from typing import IO, Any

from ..exports import failed_csv, failed_jsonl
from ..model import JobStatus
from ..reports import jobs_report, status_report
from ..store import PeeweeStateStore
from .common import (
    DEFAULT_LEASE_TIMEOUT_MS,
    CliError,
    database_url,
    find_job,
    hint,
    open_store,
)
from .render import duration, jobs_table, print_json, print_rows, when
from .watch import watch_jobs, watch_requested, watch_status


def cmd_status(args: argparse.Namespace) -> int:
    """Show a job's progress, its batches by status and the workers holding leases."""
    watching = watch_requested(args)
    store = open_store(args)
    job = find_job(store, args.job_id, database_url(args))
    if watching:
        return watch_status(args, store, job)
    report = status_report(store, job, args.lease_timeout)
    if args.json:
        print_json(report)
        return 0
    if job.status == JobStatus.CREATED:
        _print_unprepared(args, report)
        return 0
    eta = report["estimatedRemainingMs"]
    running = job.status in (JobStatus.PROCESSING, JobStatus.PAUSED)
    code = report["code"]
    print_rows(
        [
            ["job", report["jobId"]],
            ["status", report["status"]],
            ["source", report["source"] or "-"],
            *([["retry of", report["retryOf"]]] if report["retryOf"] else []),
            *[[name, spec] for name, spec in code.items()],
            ["started", when(report["startedAt"])],
            ["completed", when(report["completedAt"])],
            ["progress", f"{report['percentage']}% of {report['totalRecords']} records"],
            ["processed", report["processedRecords"]],
            ["invalid", report["invalidRecords"]],
            ["failed", report["failedRecords"]],
            ["pending", report["pendingRecords"]],
            [
                "batches",
                ", ".join(f"{n} {s}" for s, n in sorted(report["batches"].items())) or "none",
            ],
            [
                "elapsed" if running else "took",
                duration(report["elapsedMs"]) + (f", about {duration(eta)} left" if eta else ""),
            ],
        ]
    )
    if report["leases"]:
        print()
        reclaim = ["reclaim", report["jobId"]]
        if args.lease_timeout != DEFAULT_LEASE_TIMEOUT_MS:
            reclaim += ["--timeout", str(args.lease_timeout)]
        rows: list[list[object]] = [["worker", "batch", "held for", ""]]
        for lease in report["leases"]:
            held = duration(lease["heldMs"]) if lease["heldMs"] is not None else "-"
            stale = f"stale: `{hint(args, *reclaim)}`" if lease["stale"] else ""
            rows.append([lease["workerId"], lease["batchIndex"], held, stale])
        print_rows(rows)
    return 0


def _print_unprepared(args: argparse.Namespace, report: dict[str, Any]) -> None:
    """A CREATED job: its preparation runs still, or was stopped before it finished."""
    print_rows(
        [
            ["job", report["jobId"]],
            ["status", report["status"]],
            ["source", report["source"] or "-"],
            ["started", when(report["startedAt"])],
            ["written", f"{report['writtenRecords']} records so far"],
        ]
    )
    print(
        f"\nits preparation did not finish: it is still running, or it was stopped. No worker "
        f"takes a batch of it. If no prepare is running, delete it with "
        f"`{hint(args, 'delete', report['jobId'])}`"
    )


def cmd_failed(args: argparse.Namespace) -> int:
    """Export a job's failed and invalid records with their errors (CSV or JSON Lines)."""
    store = open_store(args)
    find_job(store, args.job_id, database_url(args))
    file_format = "jsonl" if args.json else args.format
    out: IO[str]
    if args.output:
        try:
            out = open(args.output, "w", encoding="utf-8", newline="")  # noqa: SIM115
        except OSError as exc:
            raise CliError(f"cannot write {args.output}: {exc.strerror or exc}") from None
    else:
        out = sys.stdout
    try:
        if file_format == "csv":
            count = _write_failed_csv(store, args.job_id, out)
        else:
            count = _write_failed_jsonl(store, args.job_id, out)
    finally:
        if out is not sys.stdout:
            out.close()
    if args.output:
        print(f"wrote {count} failed records to {args.output}", file=sys.stderr)
    return 0


def _write_failed_csv(store: PeeweeStateStore, job_id: str, out: IO[str]) -> int:
    lines = -1  # the header is no record
    for lines, line in enumerate(failed_csv(store, job_id)):  # noqa: B007
        out.write(line)
    return lines


def _write_failed_jsonl(store: PeeweeStateStore, job_id: str, out: IO[str]) -> int:
    count = 0
    for line in failed_jsonl(store, job_id):
        out.write(line)
        count += 1
    return count


def cmd_reclaim(args: argparse.Namespace) -> int:
    """Return batches whose lease is older than ``--timeout`` ms to PENDING."""
    store = open_store(args)
    find_job(store, args.job_id, database_url(args))
    reclaimed = store.reclaim_stale_batches(args.job_id, args.timeout)
    if args.json:
        print_json({"jobId": args.job_id, "timeoutMs": args.timeout, "reclaimed": reclaimed})
    else:
        print(f"reclaimed {reclaimed} batch(es) of job {args.job_id}")
    return 0


def cmd_jobs(args: argparse.Namespace) -> int:
    """List recent jobs with their status and progress."""
    watching = watch_requested(args)
    store = open_store(args)
    if watching:
        return watch_jobs(args, store)
    listed = jobs_report(store, args.status, args.limit)
    if args.json:
        print_json(listed)
        return 0
    if not listed:
        print("no jobs")
        return 0
    print_rows(jobs_table(listed))
    if any(j["status"] == JobStatus.CREATED.value for j in listed):
        print(f"\npreparing: the preparation did not finish; `{hint(args, 'status', 'JOB_ID')}`")
    return 0
