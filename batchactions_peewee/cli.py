"""The command line: ``batchactions-peewee`` (also ``python -m batchactions_peewee``).

Store commands: ``init``, ``sql``, ``migrate``, ``status``, ``failed``, ``reclaim``, ``jobs``.
Job commands: ``prepare FILE`` splits a CSV or JSON Lines file into a distributed job,
``work JOB_ID`` joins a job as a worker (on any machine that reaches the database), and
``run FILE`` does both on one machine with several worker processes and a progress bar.

Every error the user can cause is one line on stderr and a non-zero exit code: 2 for a
usage error (a bad option, an unknown database scheme, a processor that cannot be
imported), 1 for anything else (a missing file, an unknown job, an unreachable database).
Passwords in database URLs are never printed.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import datetime
import importlib
import json
import logging
import multiprocessing
import os
import queue
import shutil
import signal
import sys
import threading
import time
import urllib.parse
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import IO, Any, TextIO

import peewee as pw
import pydantic
from playhouse import db_url

from . import __version__
from .checks import check_id, check_table_prefix
from .engine import ProcessingContext, Worker, prepare_job
from .engine.sources import FORMATS, detect_format, open_source, with_source_errors
from .engine.validation import check_schema
from .errors import BatchActionsError, InvalidInputError, JobExistsError
from .model import (
    JobProgress,
    JobState,
    JobStatus,
    ProcessedRecord,
    RecordStatus,
)
from .store import PeeweeStateStore
from .store.schema import OFFLINE_DIALECTS, ddl_statements, history_table, migrate, migration_status

PROG = "batchactions-peewee"
URL_ENV = "BATCHACTIONS_DATABASE_URL"
DEFAULT_URL = "sqlite:///batchactions.db"
DEFAULT_PREFIX = "batchactions_"
DEFAULT_BATCH_SIZE = 500
DEFAULT_LEASE_TIMEOUT_MS = 300_000
SQLITE_BUSY_TIMEOUT_MS = 10_000
CONNECT_TIMEOUT_S = 10
POLL_S = 0.5

logger = logging.getLogger(__name__)


class CliError(Exception):
    """A one-line message for the user; exit code 1, or 2 for a usage error."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def usage_error(message: str) -> CliError:
    return CliError(message, exit_code=2)


def validate_only(record: dict[str, Any], context: ProcessingContext) -> None:
    """The default processor: does nothing, so a run only validates (with ``--schema``)."""


# -- database URLs ---------------------------------------------------------------------------


def redact(url: str) -> str:
    """``url`` with its password (``user:pass@``, ``?password=``) shown as ``***``."""
    parts = urllib.parse.urlsplit(url)
    query = urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
    hidden = [k for k, _ in query if k.lower() in ("password", "passwd")]
    if parts.password is None and not hidden:
        return url
    if parts.password is not None:
        userinfo, _, host = parts.netloc.rpartition("@")
        parts = parts._replace(netloc=f"{userinfo.partition(':')[0]}:***@{host}")
    if hidden:
        masked = [(k, "***" if k in hidden else v) for k, v in query]
        parts = parts._replace(query=urllib.parse.urlencode(masked, safe="*"))
    return urllib.parse.urlunsplit(parts)


def _secrets(url: str) -> list[str]:
    parts = urllib.parse.urlsplit(url)
    found = [parts.password] if parts.password else []
    query = urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
    found += [v for k, v in query if k.lower() in ("password", "passwd") and v]
    return found + [urllib.parse.unquote(s) for s in found]


def scrub(text: str, url: str | None) -> str:
    """``text`` with every password of ``url`` replaced by ``***`` (for error messages).

    Drivers do not echo passwords; this is a second line of defence. Passwords shorter
    than 4 characters are left alone, since replacing them would garble every word.
    """
    if url:
        for secret in sorted(_secrets(url), key=len, reverse=True):
            if len(secret) >= 4:
                text = text.replace(secret, "***")
    return text


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0]


def open_database(url: str, *, must_exist: bool = False) -> pw.Database:
    """Connect to ``url`` (``playhouse.db_url`` form). SQLite gets WAL and a busy timeout;
    MySQL and PostgreSQL a connect timeout, unless the URL sets its own."""
    scheme = urllib.parse.urlsplit(url).scheme
    database_class = db_url.schemes.get(scheme)
    if database_class is None:
        raise usage_error(
            f"--database {redact(url)}: unknown scheme {scheme!r}; use e.g. "
            "sqlite:///file.db, mysql://user@host/db or postgresql://user@host/db"
        )
    given = db_url.parse(url)
    extra: dict[str, Any] = {}
    if issubclass(database_class, pw.SqliteDatabase):
        path = str(given.get("database") or ":memory:")
        if path == ":memory:" or path.startswith("file::memory:"):
            raise usage_error(
                f"--database {url}: an in-memory database vanishes with the command; "
                "name a file, e.g. sqlite:///batchactions.db"
            )
        if must_exist and not Path(path).exists():
            raise CliError(f"no database at {path}: run `{PROG} init` first")
        extra = {
            "pragmas": {"journal_mode": "wal", "busy_timeout": SQLITE_BUSY_TIMEOUT_MS},
            "timeout": SQLITE_BUSY_TIMEOUT_MS / 1000,
        }
    elif issubclass(database_class, (pw.MySQLDatabase, pw.PostgresqlDatabase)):
        extra = {"connect_timeout": CONNECT_TIMEOUT_S}
    extra = {k: v for k, v in extra.items() if k not in given}
    try:
        database: pw.Database = db_url.connect(
            url, unquote_password=True, unquote_user=True, **extra
        )
    except (RuntimeError, ValueError) as exc:
        raise usage_error(f"--database {redact(url)}: {scrub(_first_line(exc), url)}") from None
    try:
        database.connect()
    except pw.ImproperlyConfigured as exc:
        extra_name = "mysql" if issubclass(database_class, pw.MySQLDatabase) else "postgres"
        raise CliError(
            f"cannot use {redact(url)}: {_first_line(exc)} "
            f'(pip install "batchactions-peewee[{extra_name}]")'
        ) from None
    except (pw.PeeweeException, OSError) as exc:
        raise CliError(f"cannot connect to {redact(url)}: {scrub(_first_line(exc), url)}") from None
    return database


# -- user code -------------------------------------------------------------------------------


def load_object(spec: str, option: str) -> Any:
    """Import ``module:name`` from the named module only, the current directory first on
    ``sys.path`` (as ``python -m`` has it)."""
    module_name, _, attribute = spec.partition(":")
    if not module_name or not attribute:
        raise usage_error(f"{option} {spec!r}: expected module:name, e.g. myapp.jobs:process")
    cwd = os.getcwd()
    if cwd not in sys.path:
        sys.path.insert(0, cwd)
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise usage_error(f"{option} {spec}: cannot import {module_name}: {exc}") from None
    except Exception as exc:
        raise usage_error(
            f"{option} {spec}: importing {module_name} raised {type(exc).__name__}: {exc}"
        ) from None
    found: Any = module
    for part in attribute.split("."):
        if not hasattr(found, part):
            raise usage_error(f"{option} {spec}: {module_name} has no {attribute}")
        found = getattr(found, part)
    return found


def load_processor(spec: str | None) -> Callable[[dict[str, Any], ProcessingContext], object]:
    """The ``--processor`` function, or :func:`validate_only`."""
    if spec is None:
        return validate_only
    processor = load_object(spec, "--processor")
    if not callable(processor):
        raise usage_error(f"--processor {spec}: not a function")
    return processor  # type: ignore[no-any-return]


def load_schema(spec: str | None) -> type[pydantic.BaseModel] | None:
    """The ``--schema`` pydantic model class, or None."""
    if spec is None:
        return None
    try:
        return check_schema(load_object(spec, "--schema"))
    except InvalidInputError:
        raise usage_error(f"--schema {spec}: not a pydantic model class") from None


# -- the store -------------------------------------------------------------------------------


def _url(args: argparse.Namespace) -> str:
    return getattr(args, "database", None) or os.environ.get(URL_ENV) or DEFAULT_URL


def _prefix(args: argparse.Namespace) -> str:
    return getattr(args, "table_prefix", None) or DEFAULT_PREFIX


def open_store(args: argparse.Namespace, *, create: bool = False) -> PeeweeStateStore:
    """The store named by ``--database`` / ``--table-prefix``. ``create`` makes missing
    tables; otherwise the tables must exist."""
    url = _url(args)
    database = open_database(url, must_exist=not create)
    store = PeeweeStateStore(database, table_prefix=_prefix(args))
    if create:
        store.create_tables()
        return store
    for model in store.tables.all:
        if not database.table_exists(model._meta.table_name):
            raise CliError(
                f"{redact(url)} has no table {model._meta.table_name}: "
                f"run `{PROG} init` (or `{PROG} migrate`) first"
            )
    return store


def _job(store: PeeweeStateStore, job_id: str, url: str) -> JobState:
    job = store.get_job_state(job_id)
    if job is None:
        raise CliError(f"no job {job_id} in {redact(url)}")
    return job


def failed_records(
    store: PeeweeStateStore, job_id: str, page: int = 500
) -> Iterator[ProcessedRecord]:
    """The job's failed and invalid records by index, read a page at a time."""
    after = -1
    while True:
        records = store.get_failed_records_page(job_id, after_index=after, limit=page)
        yield from records
        if len(records) < page:
            return
        after = records[-1].index


# -- output ----------------------------------------------------------------------------------


def print_json(value: Any) -> None:
    print(json.dumps(value, ensure_ascii=False, indent=2))


def print_rows(rows: Sequence[Sequence[object]], out: TextIO | None = None) -> None:
    """Rows as aligned columns; a column of numbers (below its first row) is right-aligned."""
    out = out or sys.stdout
    cells = [[str(c) for c in row] for row in rows]
    columns = max(len(row) for row in rows)
    widths = [
        max((len(row[i]) for row in cells if i < len(row)), default=0) for i in range(columns)
    ]
    numeric = [
        all(isinstance(row[i], (int, float)) for row in rows[1:] if i < len(row))
        for i in range(columns)
    ]
    for row in cells:
        parts = [
            c.rjust(widths[i]) if numeric[i] else c.ljust(widths[i]) for i, c in enumerate(row)
        ]
        print("  ".join(parts).rstrip(), file=out)


def _when(ms: int | None) -> str:
    if ms is None:
        return "-"
    return datetime.datetime.fromtimestamp(ms / 1000).strftime("%Y-%m-%d %H:%M:%S")


def _duration(ms: float) -> str:
    seconds = ms / 1000
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, seconds = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{seconds:02d}" if hours else f"{minutes}:{seconds:02d}"


def _record_error(record: ProcessedRecord) -> str:
    if record.processing_error is not None:
        return record.processing_error
    return "; ".join(f"{e.field}: {e.message}" if e.field else e.message for e in record.errors)


class ProgressBar:
    """One line on stderr, redrawn in place: records done and failed, rate and ETA.

    Draws nothing unless ``enabled`` (stderr is a terminal and ``--no-progress`` not given).
    """

    def __init__(self, enabled: bool, stream: TextIO | None = None) -> None:
        self.enabled = enabled
        self.stream = stream or sys.stderr
        self._start: tuple[float, int] | None = None
        self._drawn = False

    def update(self, progress: JobProgress) -> None:
        if not self.enabled:
            return
        done = progress.processed_records + progress.failed_records
        now = time.monotonic()
        if self._start is None:
            self._start = (now, done)
        started, done_before = self._start
        rate = (done - done_before) / (now - started) if now > started else 0.0
        left = progress.total_records - done
        eta = _duration(left / rate * 1000) if rate > 0 and left > 0 else "-"
        width = shutil.get_terminal_size((80, 24)).columns
        text = (
            f" {progress.percentage:3d}%  {done}/{progress.total_records} records, "
            f"{progress.failed_records} failed  {rate:.0f}/s  ETA {eta}"
        )
        bar_width = 20  # fixed, so the line does not jitter; cut to the terminal's width
        filled = bar_width * progress.percentage // 100
        line = f"[{'#' * filled}{'.' * (bar_width - filled)}]{text}"
        self.stream.write("\r" + line[: width - 1] + "\x1b[K")
        self.stream.flush()
        self._drawn = True

    def note(self, text: str) -> None:
        """A status line in place of the bar (e.g. while reading the file)."""
        if self.enabled:
            width = shutil.get_terminal_size((80, 24)).columns
            self.stream.write("\r" + text[: width - 1] + "\x1b[K")
            self.stream.flush()
            self._drawn = True

    def close(self) -> None:
        if self._drawn:
            self.stream.write("\n")
            self.stream.flush()
            self._drawn = False


# -- worker processes ------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class WorkerSettings:
    """What a worker process needs to open its own connection and run (picklable)."""

    database_url: str
    table_prefix: str
    job_id: str
    processor: str | None
    schema: str | None
    continue_on_error: bool
    max_retries: int
    retry_delay_ms: int
    lease_timeout_ms: int
    verbose: bool


@dataclasses.dataclass(frozen=True)
class WorkerOutcome:
    """How one worker process ended: its summary, or the error that stopped it."""

    number: int
    summary: dict[str, Any] | None = None
    error: str | None = None


def _worker_process(
    number: int, settings: WorkerSettings, stop: Any, results: Any
) -> None:  # pragma: no cover - runs in a spawned process
    # Ctrl-C goes to the parent, which asks every worker to stop after its batch in hand.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    configure_logging(settings.verbose)
    try:
        summary = _run_worker(settings, stop)
    except CliError as exc:
        results.put(WorkerOutcome(number, error=str(exc)))
    except Exception as exc:
        logger.debug("worker %d failed", number, exc_info=True)
        message = f"{type(exc).__name__}: {_first_line(exc)}"
        results.put(WorkerOutcome(number, error=scrub(message, settings.database_url)))
    else:
        results.put(WorkerOutcome(number, summary=summary))


def _run_worker(settings: WorkerSettings, stop: Any) -> dict[str, Any]:
    database = open_database(settings.database_url, must_exist=True)
    try:
        store = PeeweeStateStore(database, table_prefix=settings.table_prefix)
        worker = Worker(
            store,
            load_processor(settings.processor),
            schema=with_source_errors(load_schema(settings.schema)),
            continue_on_error=settings.continue_on_error,
            max_retries=settings.max_retries,
            retry_delay_ms=settings.retry_delay_ms,
            lease_timeout_ms=settings.lease_timeout_ms,
        )

        def stop_when_asked() -> None:
            stop.wait()
            worker.stop()

        threading.Thread(target=stop_when_asked, daemon=True).start()
        return dataclasses.asdict(worker.run(settings.job_id))
    finally:
        database.close()


def run_workers(
    settings: WorkerSettings, count: int, store: PeeweeStateStore, bar: ProgressBar
) -> tuple[list[WorkerOutcome], bool]:
    """Run ``count`` worker processes (spawned, each with its own connection) until the job
    is done, drawing ``bar`` from ``store.get_progress``. Returns their outcomes and whether
    the run was interrupted (Ctrl-C: the workers stop after the batch in hand)."""
    context = multiprocessing.get_context("spawn")
    stop = context.Event()
    results = context.Queue()
    processes = [
        context.Process(
            target=_worker_process,
            args=(n, settings, stop, results),
            name=f"{PROG}-worker-{n}",
        )
        for n in range(1, count + 1)
    ]
    for process in processes:
        process.start()
    outcomes: dict[int, WorkerOutcome] = {}
    interrupted = False
    while True:
        try:
            _collect(results, outcomes, wait=POLL_S)
            _draw(bar, store, settings.job_id)
            if not any(p.is_alive() for p in processes):
                break
        except KeyboardInterrupt:
            if interrupted:
                for process in processes:
                    process.terminate()
                break
            interrupted = True
            stop.set()
            bar.close()
            print(
                f"{PROG}: stopping after the batches in hand (Ctrl-C again to abort)",
                file=sys.stderr,
            )
    for process in processes:
        process.join()
    _collect(results, outcomes, wait=0)
    for number, process in enumerate(processes, start=1):
        if number not in outcomes:
            outcomes[number] = WorkerOutcome(
                number, error=f"the worker process ended with exit code {process.exitcode}"
            )
    results.close()
    return [outcomes[n] for n in sorted(outcomes)], interrupted


def _collect(results: Any, outcomes: dict[int, WorkerOutcome], wait: float) -> None:
    deadline = time.monotonic() + wait
    while True:
        try:
            outcome: WorkerOutcome = results.get(timeout=max(0.01, deadline - time.monotonic()))
        except queue.Empty:
            return
        outcomes[outcome.number] = outcome


def _draw(bar: ProgressBar, store: PeeweeStateStore, job_id: str) -> None:
    if not bar.enabled:
        return
    try:
        bar.update(store.get_progress(job_id))
    except (pw.PeeweeException, BatchActionsError):  # the bar waits for the next poll
        logger.debug("could not read the progress", exc_info=True)


# -- commands --------------------------------------------------------------------------------


def cmd_init(args: argparse.Namespace) -> int:
    """Create the three tables where missing."""
    store = open_store(args, create=True)
    tables = [m._meta.table_name for m in store.tables.all]
    if args.json:
        print_json({"database": redact(_url(args)), "tables": tables})
    else:
        print(f"tables ready in {redact(_url(args))}: {', '.join(tables)}")
    return 0


def cmd_sql(args: argparse.Namespace) -> int:
    """Print the DDL of the tables for one dialect."""
    prefix = _prefix(args)
    statements = ddl_statements(args.dialect, prefix)
    if args.json:
        print_json({"dialect": args.dialect, "tablePrefix": prefix, "statements": statements})
        return 0
    print(f"-- {PROG} {__version__}: the tables with prefix {prefix!r}, as create_tables()")
    print("-- creates them on")
    for line in OFFLINE_DIALECTS[args.dialect][1]:
        print(f"-- {line}")
    for statement in statements:
        print(f"{statement};")
    return 0


def cmd_migrate(args: argparse.Namespace) -> int:
    """Apply the pending migrations."""
    url, prefix = _url(args), _prefix(args)
    database = open_database(url)
    applied = migrate(database, prefix=prefix)
    states = migration_status(database, prefix=prefix)
    if args.json:
        print_json(
            {
                "database": redact(url),
                "historyTable": history_table(prefix),
                "applied": applied,
                "migrations": [
                    {
                        "name": s.name,
                        "appliedAt": s.applied_at.isoformat() if s.applied_at else None,
                    }
                    for s in states
                ],
            }
        )
    elif applied:
        for name in applied:
            print(f"applied {name}")
    else:
        print(f"up to date: {len(states)} migration(s) applied ({history_table(prefix)})")
    return 0


def _file_format(args: argparse.Namespace) -> str:
    file_format = args.format or detect_format(args.file)
    if file_format is None:
        raise usage_error(
            f"cannot tell the format of {args.file} from its extension "
            "(.csv, .jsonl, .ndjson): give --format csv or --format jsonl"
        )
    return file_format


def _prepare(args: argparse.Namespace, store: PeeweeStateStore, bar: ProgressBar) -> dict[str, Any]:
    """Read FILE into a new job; return what ``prepare`` reports."""
    file_format = _file_format(args)
    schema = load_schema(args.schema)
    bad = 0
    started = time.monotonic()
    with open_source(args.file, file_format, delimiter=args.delimiter) as rows:

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


def _bar(args: argparse.Namespace) -> ProgressBar:
    return ProgressBar(enabled=sys.stderr.isatty() and not getattr(args, "no_progress", False))


def cmd_prepare(args: argparse.Namespace) -> int:
    """Read FILE into a new distributed job and print its id."""
    _file_format(args)
    load_schema(args.schema)
    store = open_store(args, create=True)
    prepared = _prepare(args, store, _bar(args))
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


def _check_code(args: argparse.Namespace) -> None:
    # Imported here once, so a bad --processor or --schema is a usage error before a job
    # is prepared or a worker process starts.
    load_processor(args.processor)
    load_schema(args.schema)


def _settings(args: argparse.Namespace, job_id: str) -> WorkerSettings:
    _check_code(args)
    return WorkerSettings(
        database_url=_url(args),
        table_prefix=_prefix(args),
        job_id=job_id,
        processor=args.processor,
        schema=args.schema,
        continue_on_error=not args.stop_on_error,
        max_retries=args.max_retries,
        retry_delay_ms=args.retry_delay,
        lease_timeout_ms=args.lease_timeout,
        verbose=args.verbose,
    )


def _work(args: argparse.Namespace, store: PeeweeStateStore, job_id: str, workers: int) -> int:
    settings = _settings(args, job_id)
    bar = _bar(args)
    started = time.monotonic()
    outcomes, interrupted = run_workers(settings, workers, store, bar)
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
    for outcome in outcomes:
        if outcome.error:
            print(f"{PROG}: error: worker {outcome.number}: {outcome.error}", file=sys.stderr)
    failed = any(o.error for o in outcomes) or report["status"] == JobStatus.FAILED.value
    return 1 if failed else 0


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
                f"{_duration(report['elapsedMs'])}" + (f" ({rate:.0f} records/s)" if rate else ""),
            ],
        ]
    )
    if report["invalidRecords"] or report["failedRecords"]:
        print(f"\nfailed records: {PROG} failed {report['jobId']} --output failed.csv")
    print(f"\njob id: {report['jobId']}")


def cmd_run(args: argparse.Namespace) -> int:
    """Prepare FILE and process it with local worker processes."""
    _file_format(args)
    _check_code(args)
    store = open_store(args, create=True)
    prepared = _prepare(args, store, _bar(args))
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
    _job(store, args.job_id, _url(args))
    return _work(args, store, args.job_id, args.workers)


def _status_report(store: PeeweeStateStore, job: JobState, lease_timeout_ms: int) -> dict[str, Any]:
    progress = store.get_progress(job.id)
    now = store.now()
    done = progress.processed_records + progress.failed_records
    remaining = None
    if job.status == JobStatus.PROCESSING and done and progress.pending_records:
        remaining = int(progress.elapsed_ms / done * progress.pending_records)
    leases = [
        {
            "workerId": b.worker_id,
            "batchIndex": b.index,
            "batchId": b.id,
            "claimedAt": b.claimed_at,
            "heldMs": max(0, now - b.claimed_at) if b.claimed_at is not None else None,
            "stale": b.claimed_at is None or now - b.claimed_at > lease_timeout_ms,
        }
        for b in job.batches
        if b.status.value == "PROCESSING"
    ]
    return {
        "jobId": job.id,
        "status": job.status.value,
        "source": (job.config.model_extra or {}).get("source"),
        "startedAt": job.started_at,
        "completedAt": job.completed_at,
        "durationMs": (
            job.completed_at - job.started_at
            if job.completed_at is not None and job.started_at is not None
            else None
        ),
        "progress": progress.model_copy(update={"estimated_remaining_ms": remaining}).model_dump(
            by_alias=True
        ),
        "records": store.record_counts(job.id),
        "batches": dict(Counter(b.status.value for b in job.batches)),
        "leases": leases,
    }


def cmd_status(args: argparse.Namespace) -> int:
    """Show a job's progress, its batches by status and the workers holding leases."""
    store = open_store(args)
    report = _status_report(store, _job(store, args.job_id, _url(args)), args.lease_timeout)
    if args.json:
        print_json(report)
        return 0
    p, records = report["progress"], report["records"]
    eta = p["estimatedRemainingMs"]
    print_rows(
        [
            ["job", report["jobId"]],
            ["status", report["status"]],
            ["source", report["source"] or "-"],
            ["started", _when(report["startedAt"])],
            ["completed", _when(report["completedAt"])],
            ["progress", f"{p['percentage']}% of {p['totalRecords']} records"],
            ["processed", p["processedRecords"]],
            ["invalid", records.get("invalid", 0)],
            ["failed", records.get("failed", 0)],
            ["pending", p["pendingRecords"]],
            [
                "batches",
                ", ".join(f"{n} {s}" for s, n in sorted(report["batches"].items())) or "none",
            ],
            ["took", _duration(report["durationMs"])]
            if report["durationMs"] is not None
            else [
                "elapsed",
                _duration(p["elapsedMs"]) + (f", about {_duration(eta)} left" if eta else ""),
            ],
        ]
    )
    if report["leases"]:
        print()
        rows: list[list[object]] = [["worker", "batch", "held for", ""]]
        for lease in report["leases"]:
            held = _duration(lease["heldMs"]) if lease["heldMs"] is not None else "-"
            stale = f"stale: `{PROG} reclaim {report['jobId']}`" if lease["stale"] else ""
            rows.append([lease["workerId"], lease["batchIndex"], held, stale])
        print_rows(rows)
    return 0


def cmd_failed(args: argparse.Namespace) -> int:
    """Export a job's failed and invalid records with their errors (CSV or JSON Lines)."""
    store = open_store(args)
    _job(store, args.job_id, _url(args))
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
    # Two passes, so the header can hold every column any failed record has while the
    # records themselves are only ever read a page at a time.
    columns: dict[str, None] = {}
    for record in failed_records(store, job_id):
        columns.update(dict.fromkeys(record.raw))
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["recordIndex", "status", "error", *columns])
    count = 0
    for record in failed_records(store, job_id):
        values = [_cell(record.raw.get(c)) for c in columns]
        writer.writerow([record.index, record.status.value, _record_error(record), *values])
        count += 1
    return count


def _cell(value: Any) -> str:
    if value is None:
        return ""
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def _write_failed_jsonl(store: PeeweeStateStore, job_id: str, out: IO[str]) -> int:
    count = 0
    for record in failed_records(store, job_id):
        line = {
            "recordIndex": record.index,
            "status": record.status.value,
            "error": _record_error(record),
            "errors": [e.to_json_dict() for e in record.errors],
            "processingError": record.processing_error,
            "raw": record.raw,
        }
        out.write(json.dumps(line, ensure_ascii=False) + "\n")
        count += 1
    return count


def cmd_reclaim(args: argparse.Namespace) -> int:
    """Return batches whose lease is older than ``--timeout`` ms to PENDING."""
    store = open_store(args)
    _job(store, args.job_id, _url(args))
    reclaimed = store.reclaim_stale_batches(args.job_id, args.timeout)
    if args.json:
        print_json({"jobId": args.job_id, "timeoutMs": args.timeout, "reclaimed": reclaimed})
    else:
        print(f"reclaimed {reclaimed} batch(es) of job {args.job_id}")
    return 0


def cmd_jobs(args: argparse.Namespace) -> int:
    """List recent jobs with their status and progress."""
    store = open_store(args)
    jobs = store.list_jobs(status=args.status, limit=args.limit)
    listed: list[dict[str, Any]] = []
    for job in jobs:
        progress = store.get_progress(job.id)
        listed.append(
            {
                "jobId": job.id,
                "status": job.status.value,
                "source": (job.config.model_extra or {}).get("source"),
                "totalRecords": progress.total_records,
                "processedRecords": progress.processed_records,
                "failedRecords": progress.failed_records,
                "percentage": progress.percentage,
                "startedAt": job.started_at,
                "completedAt": job.completed_at,
            }
        )
    if args.json:
        print_json(listed)
        return 0
    if not listed:
        print("no jobs")
        return 0
    rows: list[list[object]] = [["job", "status", "records", "done", "failed", "started", "source"]]
    for j in listed:
        rows.append(
            [
                j["jobId"],
                j["status"],
                j["totalRecords"],
                f"{j['percentage']}%",
                j["failedRecords"],
                _when(j["startedAt"]),
                j["source"] or "",
            ]
        )
    print_rows(rows)
    return 0


# -- parser ----------------------------------------------------------------------------------


def _whole_number(minimum: int, too_small: str) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be {too_small}, got {value}")
        return value

    return parse


_positive = _whole_number(1, "at least 1")
_non_negative = _whole_number(0, "0 or more")


def _job_id(text: str) -> str:
    try:
        return check_id(text, "job id")
    except InvalidInputError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _table_prefix(text: str) -> str:
    try:
        return check_table_prefix(text)
    except InvalidInputError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _common_options() -> argparse.ArgumentParser:
    # SUPPRESS: given before or after the command, an option is set once and not reset.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--database",
        metavar="URL",
        default=argparse.SUPPRESS,
        help=f"database URL, playhouse.db_url form (env {URL_ENV}; default {DEFAULT_URL})",
    )
    common.add_argument(
        "--table-prefix",
        type=_table_prefix,
        default=argparse.SUPPRESS,
        help=f"prefix of the table names (default {DEFAULT_PREFIX})",
    )
    common.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        default=argparse.SUPPRESS,
        help="log more, with tracebacks",
    )
    return common


def _json_option(parser: argparse.ArgumentParser, text: str = "print JSON") -> None:
    parser.add_argument("--json", action="store_true", help=text)


def _source_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "file", metavar="FILE", help="CSV (with a header) or JSON Lines; - is stdin"
    )
    parser.add_argument(
        "--format", choices=FORMATS, help="the file's format (default: from its extension)"
    )
    parser.add_argument("--delimiter", default=",", help="CSV delimiter (default ,)")
    parser.add_argument(
        "--batch-size",
        type=_positive,
        default=DEFAULT_BATCH_SIZE,
        help=f"records per batch (default {DEFAULT_BATCH_SIZE})",
    )
    parser.add_argument("--job-id", type=_job_id, help="the job's id (default: a new uuid)")
    parser.add_argument(
        "--schema", metavar="MODULE:MODEL", help="pydantic model class the records must fit"
    )


def _worker_options(parser: argparse.ArgumentParser, default_workers: int) -> None:
    parser.add_argument(
        "--processor",
        metavar="MODULE:FUNCTION",
        help="called as function(record, context) for each valid record "
        "(default: none, the run only validates)",
    )
    parser.add_argument(
        "--workers",
        type=_positive,
        default=default_workers,
        help=f"worker processes on this machine (default {default_workers})",
    )
    parser.add_argument(
        "--lease-timeout",
        metavar="MS",
        type=_positive,
        default=DEFAULT_LEASE_TIMEOUT_MS,
        help="a batch whose worker is silent this long is taken over "
        f"(default {DEFAULT_LEASE_TIMEOUT_MS})",
    )
    parser.add_argument(
        "--max-retries",
        type=_non_negative,
        default=0,
        help="retries of a record whose processor raised (default 0)",
    )
    parser.add_argument(
        "--retry-delay",
        metavar="MS",
        type=_non_negative,
        default=1000,
        help="wait before the first retry, doubled each time (default 1000)",
    )
    parser.add_argument(
        "--stop-on-error",
        action="store_true",
        help="a failed or invalid record fails its batch and the job",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every command."""
    common = _common_options()
    parser = argparse.ArgumentParser(
        prog=PROG,
        parents=[common],
        description="Batch jobs in any Peewee database, shared by many worker processes.",
    )
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def command(name: str, handler: Callable[[argparse.Namespace], int], text: str) -> Any:
        sub = commands.add_parser(name, parents=[common], help=text, description=text)
        sub.set_defaults(handler=handler)
        return sub

    sub = command("run", cmd_run, "prepare FILE and process it with local worker processes")
    _source_options(sub)
    _worker_options(sub, default_workers=os.cpu_count() or 1)
    _json_option(sub)

    sub = command("prepare", cmd_prepare, "read FILE into a new job and print its id")
    _source_options(sub)
    _json_option(sub)

    sub = command("work", cmd_work, "join a job as a worker (any machine that reaches the db)")
    sub.add_argument("job_id", metavar="JOB_ID", type=_job_id)
    sub.add_argument("--schema", metavar="MODULE:MODEL", help="pydantic model class")
    _worker_options(sub, default_workers=1)
    _json_option(sub)

    sub = command("status", cmd_status, "a job's progress, batches and the workers' leases")
    sub.add_argument("job_id", metavar="JOB_ID", type=_job_id)
    sub.add_argument(
        "--lease-timeout",
        metavar="MS",
        type=_positive,
        default=DEFAULT_LEASE_TIMEOUT_MS,
        help="leases older than this are shown as stale",
    )
    _json_option(sub)

    sub = command("failed", cmd_failed, "export failed and invalid records with their errors")
    sub.add_argument("job_id", metavar="JOB_ID", type=_job_id)
    sub.add_argument("--format", choices=("csv", "jsonl"), default="csv")
    sub.add_argument("--output", metavar="FILE", help="write here (default: stdout)")
    _json_option(sub, "same as --format jsonl")

    sub = command("reclaim", cmd_reclaim, "return batches with stale leases to PENDING")
    sub.add_argument("job_id", metavar="JOB_ID", type=_job_id)
    sub.add_argument(
        "--timeout",
        metavar="MS",
        type=_non_negative,
        default=DEFAULT_LEASE_TIMEOUT_MS,
        help=f"lease age in ms (default {DEFAULT_LEASE_TIMEOUT_MS})",
    )
    _json_option(sub)

    sub = command("jobs", cmd_jobs, "recent jobs with their status and progress")
    sub.add_argument("--status", choices=[s.value for s in JobStatus])
    sub.add_argument("--limit", type=_positive, default=20)
    _json_option(sub)

    sub = command("init", cmd_init, "create the tables where missing")
    _json_option(sub)

    sub = command("sql", cmd_sql, "print the tables' DDL for a dialect (no server needed)")
    sub.add_argument("--dialect", choices=sorted(OFFLINE_DIALECTS), required=True)
    _json_option(sub)

    sub = command("migrate", cmd_migrate, "apply the pending migrations")
    _json_option(sub)
    return parser


# -- main ------------------------------------------------------------------------------------


class _OneLineFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        if record.exc_info and record.exc_info[1] is not None:
            message += f": {_first_line(record.exc_info[1])}"
        return f"{PROG}: {record.levelname.lower()}: {message}"


def configure_logging(verbose: bool) -> None:
    """WARNING and up as one line each; with ``--verbose`` INFO and up, with tracebacks."""
    handler = logging.StreamHandler(sys.stderr)
    if not verbose:
        handler.setFormatter(_OneLineFormatter())
    root = logging.getLogger("batchactions_peewee")
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO if verbose else logging.WARNING)
    root.propagate = False


def _fail(message: str, exit_code: int, url: str | None) -> int:
    print(f"{PROG}: error: {scrub(message, url)}", file=sys.stderr)
    return exit_code


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; return its exit code."""
    args = build_parser().parse_args(argv)
    args.verbose = getattr(args, "verbose", False)
    configure_logging(args.verbose)
    url = _url(args)
    handler: Callable[[argparse.Namespace], int] = args.handler
    try:
        return handler(args)
    except CliError as exc:
        return _fail(str(exc), exc.exit_code, url)
    except BatchActionsError as exc:  # SourceError, JobNotFoundError, ...
        return _fail(_first_line(exc), 1, url)
    except pw.PeeweeException as exc:
        return _fail(f"database error: {_first_line(exc)}", 1, url)
    except BrokenPipeError:
        # The reader went away (e.g. `| head`): stop quietly, as other tools do.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 1
    except OSError as exc:
        return _fail(_first_line(exc), 1, url)
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        if args.verbose:
            raise
        return _fail(
            f"unexpected {type(exc).__name__}: {_first_line(exc)} (--verbose shows where)",
            1,
            url,
        )


__all__ = ["build_parser", "ddl_statements", "main", "open_database", "redact"]
