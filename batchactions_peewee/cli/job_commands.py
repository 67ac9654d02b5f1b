"""The job commands: ``prepare FILE`` reads a file into a job, ``work JOB_ID`` runs worker
processes on it, ``run FILE`` does both; and the report printed when the workers end."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import time
from collections.abc import Iterator
from typing import Any

import peewee as pw
import pydantic

from ..engine import prepare_job
from ..engine.pool import POLL_S, Interruption, WorkerOutcome, run_workers
from ..engine.sources import detect_format, open_source
from ..errors import BatchActionsError, JobExistsError
from ..model import JobState, JobStatus
from ..reports import CODE_KEY, figures, figures_of, rate, remembered_code
from ..store import PeeweeStateStore
from .common import (
    CODE_OPTIONS,
    DEFAULT_LEASE_TIMEOUT_MS,
    PROG,
    RIVAL_OPTIONS,
    CliError,
    code_of,
    database_url,
    find_job,
    hint,
    load_schema,
    open_store,
    usage_error,
)
from .render import ProgressBar, duration, print_columns, print_json, print_rows, progress_bar
from .worker_setup import check_code, serve_worker_metrics, worker_settings

logger = logging.getLogger(__name__)


def cmd_prepare(args: argparse.Namespace) -> int:
    """Read FILE into a new distributed job and print its id."""
    file_format(args)
    check_code(args)
    store = open_store(args, create=True)
    prepared = _prepare(args, store, progress_bar(args))
    if args.json:
        print_json(prepared)
        return 0
    print(
        f"prepared {prepared['totalRecords']} records ({prepared['unreadableRows']} unreadable) "
        f"in {prepared['totalBatches']} batches; work them with "
        f"`{hint(args, 'work', prepared['jobId'])}`",
        file=sys.stderr,
    )
    print_columns(prepared["columns"])
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
        print_columns(prepared["columns"])
    # An empty file makes a job that is already complete: no worker needed.
    workers = args.workers if prepared["totalBatches"] else 0
    return _work(args, store, prepared["jobId"], workers)


def cmd_work(args: argparse.Namespace) -> int:
    """Join a job as a worker (``--workers`` processes on this machine)."""
    store = open_store(args)
    job = find_job(store, args.job_id, database_url(args))
    _use_remembered_code(args, job)
    nothing = _nothing_to_do(args, job)
    if nothing is not None:
        message, exit_code = nothing
        if args.json:
            print_json(_run_report(store, job.id, [], 0))
        print(f"{PROG}: {message}", file=sys.stderr)
        return exit_code
    return _work(args, store, args.job_id, args.workers)


def _use_remembered_code(args: argparse.Namespace, job: JobState) -> None:
    """Fill in the ``--processor`` (or ``--batch-processor``) and ``--schema`` that the job
    was prepared with, unless given; an option that overrides the job's own says so, and
    so does a processor of the other kind (one is given, the job remembers the other).
    Either way the code is imported here, so a processor that cannot be imported is a
    usage error before any worker runs."""
    remembered = remembered_code(job)
    taken: list[tuple[str, str]] = []
    args.code_overrides = []
    given_code = {option: getattr(args, a, None) for option, (a, _) in CODE_OPTIONS.items()}
    for option, (attribute, key) in CODE_OPTIONS.items():
        kept, given = remembered.get(key), given_code[option]
        rival = RIVAL_OPTIONS.get(option)
        rival_given = given_code.get(rival) if rival else None
        if given is None and kept is not None and rival_given is not None:
            print(
                f"{PROG}: {rival} {rival_given}, not the job's own {option} {kept}", file=sys.stderr
            )
        elif given is None and kept is not None:
            setattr(args, attribute, kept)
            taken.append((option, kept))
        elif given is not None and given != kept:
            args.code_overrides += [option, given]
            if kept is not None:
                print(f"{PROG}: {option} {given}, not the job's own {kept}", file=sys.stderr)
    try:
        check_code(args)
    except CliError as exc:
        for option, kept in taken:
            if str(exc).startswith(f"{option} "):
                raise usage_error(
                    f"{exc} (job {job.id} was prepared with {option} {kept}; "
                    f"give {option} to use another)"
                ) from None
        raise


def _nothing_to_do(args: argparse.Namespace, job: JobState) -> tuple[str, int] | None:
    """Why ``work`` has nothing to do on ``job``, with its exit code; None if it has."""
    status = JobStatus(job.status)
    if status == JobStatus.COMPLETED:
        return f"job {job.id} is COMPLETED: nothing to do", 0
    if status == JobStatus.FAILED:
        retry = hint(args, "retry", job.id)
        return f"job {job.id} FAILED: nothing to do (its failed records again: `{retry}`)", 1
    if status == JobStatus.ABORTED:
        aborted = EXIT_ABORTED if getattr(args, "until_done", False) else 1
        return f"job {job.id} was aborted: nothing to do", aborted
    if status == JobStatus.CREATED:
        return (
            f"job {job.id} is still being prepared, or its preparation was stopped: "
            f"`{hint(args, 'status', job.id)}` says which",
            1,
        )
    if status == JobStatus.PAUSED:
        print(
            f"{PROG}: job {job.id} is PAUSED: the workers wait for "
            f"`{hint(args, 'resume', job.id)}` (Ctrl-C to leave)",
            file=sys.stderr,
        )
    return None


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
    with open_source(args.file, kind, delimiter=args.delimiter, encoding=args.encoding) as rows:
        if rows.header_warning:
            logger.warning("%s", rows.header_warning)

        def records() -> Iterator[dict[str, Any]]:
            nonlocal bad
            for count, row in enumerate(rows, start=1):
                bad += row.error is not None
                if count % 1000 == 0:
                    bar.note(f"reading {args.file}: {count} rows")
                yield row.as_record()

        try:
            config: dict[str, Any] = {"source": os.path.basename(args.file)}
            code = code_of(args)
            if code:
                config[CODE_KEY] = code
            result = prepare_job(
                store,
                records(),
                batch_size=args.batch_size,
                job_id=args.job_id,
                config=config,
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
        "columns": rows.columns,
        "elapsedMs": int((time.monotonic() - started) * 1000),
    }


# -- work ------------------------------------------------------------------------------------


#: ``work --until-done``'s exit code for a job that was aborted.
EXIT_ABORTED = 3
#: ``work --until-done``'s exit code when one SIGTERM stopped it before the job was over
#: (EX_TEMPFAIL): a Kubernetes Job must not count a drained pod as done.
EXIT_NOT_DONE = 75


def _work(args: argparse.Namespace, store: PeeweeStateStore, job_id: str, workers: int) -> int:
    until_done = getattr(args, "until_done", False)
    if until_done and (args.max_batches or args.max_duration):
        raise usage_error("--until-done excludes --max-batches and --max-duration")
    settings = worker_settings(args, job_id)
    if getattr(args, "metrics_port", None) is not None:
        port = serve_worker_metrics(args.metrics_port)[1]
        print(f"{PROG}: worker metrics at http://127.0.0.1:{port}/metrics", file=sys.stderr)
    bar = progress_bar(args)
    job = store.get_job_state(job_id)

    def stopping(signum: int) -> None:
        bar.close()
        if signum == signal.SIGTERM:
            what = "SIGTERM: stopping after the records in hand (SIGTERM again to stop at once)"
        else:
            what = "stopping after the batches in hand (Ctrl-C again to abort)"
        print(f"{PROG}: {what}", file=sys.stderr)

    started = time.monotonic()
    outcomes: list[WorkerOutcome] = []
    while True:
        ran, interruption = run_workers(
            settings, workers, poll=lambda: _draw(bar, store, job), on_interrupt=stopping, name=PROG
        )
        outcomes += ran
        if not until_done or interruption or any(o.error for o in ran) or _terminal(store, job_id):
            break
        time.sleep(POLL_S)  # the job is not over yet (say, a batch went stale): again
    _draw(bar, store, job)
    bar.close()
    elapsed_ms = int((time.monotonic() - started) * 1000)
    report = _run_report(store, job_id, outcomes, elapsed_ms)
    if args.json:
        print_json(report)
    else:
        _print_run_report(args, report)
    if interruption is not None:
        code = _interrupted(args, job_id, interruption)
        if code == 0 and until_done and not _terminal(store, job_id):
            print(f"{PROG}: job {job_id} is not over yet: exit {EXIT_NOT_DONE}", file=sys.stderr)
            return EXIT_NOT_DONE
        return code
    return _exit_code(args, job_id, report, outcomes)


def _terminal(store: PeeweeStateStore, job_id: str) -> bool:
    job = store.get_job_state(job_id)
    return job is None or job.status in (JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.ABORTED)


def _interrupted(args: argparse.Namespace, job_id: str, interruption: Interruption) -> int:
    """The exit code of a run stopped by a signal: 0 for one SIGTERM (the batches in hand
    were given back or written), 130 for Ctrl-C, 128 + a second signal's number."""
    if interruption.second is not None:
        print(f"{PROG}: stopped at once; resume with `{_work_hint(args, job_id)}`", file=sys.stderr)
        return 128 + interruption.second
    if interruption.first == signal.SIGTERM:
        print(f"{PROG}: stopped on SIGTERM; the batches in hand were given back", file=sys.stderr)
        return 0
    print(f"{PROG}: interrupted; resume with `{_work_hint(args, job_id)}`", file=sys.stderr)
    return 130


def _exit_code(
    args: argparse.Namespace, job_id: str, report: dict[str, Any], outcomes: list[WorkerOutcome]
) -> int:
    stopped = {o.summary.get("stopped") for o in outcomes if o.summary}
    aborted = "aborted" in stopped or report["status"] == JobStatus.ABORTED.value
    if aborted:
        print(f"{PROG}: job {job_id} was aborted", file=sys.stderr)
    elif "limit" in stopped and report["status"] == JobStatus.PROCESSING.value:
        print(
            f"{PROG}: stopped at the limit; go on with `{_work_hint(args, job_id)}`",
            file=sys.stderr,
        )
    for outcome in outcomes:
        if outcome.error:
            print(f"{PROG}: error: worker {outcome.number}: {outcome.error}", file=sys.stderr)
    failed = any(o.error for o in outcomes) or report["status"] == JobStatus.FAILED.value
    if failed:
        return 1
    return EXIT_ABORTED if aborted and getattr(args, "until_done", False) else 0


#: Worker options a resume hint repeats when they differ from ``work``'s defaults.
_REPEATED = (
    ("--workers", "workers", 1),
    ("--concurrency", "concurrency", 1),
    ("--lease-timeout", "lease_timeout", DEFAULT_LEASE_TIMEOUT_MS),
    ("--max-retries", "max_retries", 0),
    ("--retry-delay", "retry_delay", 1000),
    ("--concurrency", "concurrency", 1),
)


def _work_hint(args: argparse.Namespace, job_id: str) -> str:
    """``work JOB`` with the options of this run that the job does not remember."""
    words = ["work", job_id, *getattr(args, "code_overrides", [])]
    for option, attribute, default in _REPEATED:
        value = getattr(args, attribute, default)
        if value != default:
            words += [option, str(value)]
    if args.stop_on_error:
        words.append("--stop-on-error")
    if args.transactional:
        words.append("--transactional")
    return hint(args, *words)


def _draw(bar: ProgressBar, store: PeeweeStateStore, job: JobState | None) -> None:
    if not bar.enabled or job is None:
        return
    try:
        bar.update(figures_of(job, store.record_counts(job.id), store.now()))
    except (pw.PeeweeException, BatchActionsError):  # the bar waits for the next poll
        logger.debug("could not read the progress", exc_info=True)


def _run_report(
    store: PeeweeStateStore, job_id: str, outcomes: list[WorkerOutcome], elapsed_ms: int
) -> dict[str, Any]:
    """The job's figures, what this run's workers did, and each worker's summary."""
    job = store.get_job_state(job_id)
    if job is None:  # deleted while the workers ran
        raise CliError(f"job {job_id} was deleted while the workers ran")
    workers = [
        {
            "number": o.number,
            **_camel({"processed": 0, "invalid": 0, "failed": 0, **(o.summary or {})}),
            "error": o.error,
        }
        for o in outcomes
    ]
    done = sum(w["processed"] + w["invalid"] + w["failed"] for w in workers)
    return {
        "jobId": job_id,
        "status": job.status.value,
        **figures(store, job).to_json(),
        "totalBatches": len(job.batches),
        "thisRun": {
            "records": done,
            "elapsedMs": elapsed_ms,
            "recordsPerSecond": rate(done, elapsed_ms),
        },
        "workers": workers,
    }


def _camel(summary: dict[str, Any]) -> dict[str, Any]:
    return {pydantic.alias_generators.to_camel(k): v for k, v in summary.items()}


def _print_run_report(args: argparse.Namespace, report: dict[str, Any]) -> None:
    rows: list[list[object]] = [["worker", "batches", "processed", "invalid", "failed", ""]]
    for w in report["workers"]:
        note = "finalized the job" if w.get("finalized") else (w["error"] or "")
        rows.append(
            [
                w.get("workerId") or f"#{w['number']}",
                w.get("batches", 0),
                w["processed"],
                w["invalid"],
                w["failed"],
                note,
            ]
        )
    print_rows(rows)
    print()
    run = report["thisRun"]
    rate = run["recordsPerSecond"]
    running = report["status"] in (JobStatus.PROCESSING.value, JobStatus.PAUSED.value)
    print_rows(
        [
            ["status", report["status"]],
            ["records", report["totalRecords"]],
            ["processed", report["processedRecords"]],
            ["invalid", report["invalidRecords"]],
            ["failed", report["failedRecords"]],
            ["pending", report["pendingRecords"]],
            ["batches", report["totalBatches"]],
            ["elapsed" if running else "took", duration(report["elapsedMs"])],
            [
                "this run",
                f"{run['records']} records in {duration(run['elapsedMs'])}"
                + (f" ({rate:.0f} records/s)" if rate else ""),
            ],
        ]
    )
    if report["invalidRecords"] or report["failedRecords"]:
        export = hint(args, "failed", report["jobId"], "--output", "failed.csv")
        print(f"\nfailed records: {export}")
    print(f"\njob id: {report['jobId']}")
