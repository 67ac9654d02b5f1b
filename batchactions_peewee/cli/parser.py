"""The argument parser of every command: the options shared by all, by the commands that
read a file and by those that run workers, and the checked argument types."""

from __future__ import annotations

import argparse
import math
import os
from collections.abc import Callable
from typing import NoReturn

from .. import __version__
from ..checks import check_id, check_table_prefix, check_worker_id
from ..engine.sources import FORMATS, check_encoding
from ..errors import InvalidInputError
from ..model import JobStatus
from ..store.schema import OFFLINE_DIALECTS
from .common import (
    DEFAULT_BATCH_SIZE,
    DEFAULT_LEASE_TIMEOUT_MS,
    DEFAULT_PREFIX,
    DEFAULT_URL,
    PROG,
    URL_ENV,
)
from .control_commands import cmd_abort, cmd_delete, cmd_pause, cmd_purge, cmd_resume
from .dashboard_command import (
    add_dashboard_options,
    add_metrics_options,
    cmd_dashboard,
    cmd_metrics,
    parse_port,
)
from .job_commands import cmd_prepare, cmd_run, cmd_work
from .report_commands import cmd_failed, cmd_jobs, cmd_reclaim, cmd_status
from .retry_commands import cmd_preview, cmd_retry
from .schema_commands import cmd_init, cmd_migrate, cmd_sql
from .watch import DEFAULT_INTERVAL_S
from .worker_setup import WORKER_ID_ENV


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


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not 0 < value < math.inf:  # also refuses nan
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds, got {text}")
    return value


_UNITS_MS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}


def _duration_ms(text: str) -> int:
    number = text.rstrip("abcdefghijklmnopqrstuvwxyz")
    unit = text[len(number) :] or "ms"
    if not number.isdigit() or unit not in _UNITS_MS:
        raise argparse.ArgumentTypeError(
            f"expected a whole number with d, h, m, s or ms (7d, 12h, 30m), got {text!r}"
        )
    return int(number) * _UNITS_MS[unit]


def _job_id(text: str) -> str:
    try:
        return check_id(text, "job id")
    except InvalidInputError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _worker_id(text: str) -> str:
    try:
        return check_worker_id(text)
    except InvalidInputError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _table_prefix(text: str) -> str:
    try:
        return check_table_prefix(text)
    except InvalidInputError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


#: The names ``--delimiter`` takes besides one character; ``\\t`` as typed is a tab too.
DELIMITER_NAMES = {
    "tab": "\t",
    "\\t": "\t",
    "comma": ",",
    "semicolon": ";",
    "pipe": "|",
    "space": " ",
}
_NOT_DELIMITERS = {"\n", "\r", '"', "\0"}


def _delimiter(text: str) -> str:
    delimiter = DELIMITER_NAMES.get(text.lower(), text)
    if len(delimiter) != 1:
        names = ", ".join(n for n in DELIMITER_NAMES if n != "\\t")
        raise argparse.ArgumentTypeError(
            f"expected one character, \\t or a name ({names}), got {text!r}"
        )
    if delimiter in _NOT_DELIMITERS:
        raise argparse.ArgumentTypeError(f"{text!r} cannot separate CSV fields")
    return delimiter


def _encoding(text: str) -> str:
    try:
        return check_encoding(text)
    except InvalidInputError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


class _Parser(argparse.ArgumentParser):
    """An argument parser whose usage errors are two lines, not the whole usage."""

    def error(self, message: str) -> NoReturn:
        operands = " ".join(
            a.metavar if isinstance(a.metavar, str) else a.dest
            for a in self._get_positional_actions()
        )
        usage = " ".join(filter(None, [self.prog, operands, "[options]"]))
        self.exit(
            2,
            f"{self.prog}: error: {message}\nusage: {usage} (see {self.prog} --help)\n",
        )


def _common_options() -> _Parser:
    # SUPPRESS: given before or after the command, an option is set once and not reset.
    common = _Parser(add_help=False)
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


def _file_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "file", metavar="FILE", help="CSV (with a header) or JSON Lines; - is stdin"
    )
    parser.add_argument(
        "--format", choices=FORMATS, help="the file's format (default: from its extension)"
    )
    parser.add_argument(
        "--delimiter",
        type=_delimiter,
        default=",",
        help="CSV delimiter: one character, \\t, or tab, comma, semicolon, pipe, space (default ,)",
    )
    parser.add_argument(
        "--encoding",
        type=_encoding,
        default="utf-8",
        help="the file's text encoding, e.g. latin-1 or cp1252 (default utf-8)",
    )


def _source_options(parser: argparse.ArgumentParser) -> None:
    _file_options(parser)
    parser.add_argument(
        "--batch-size",
        type=_positive,
        default=DEFAULT_BATCH_SIZE,
        help=f"records per batch (default {DEFAULT_BATCH_SIZE})",
    )
    parser.add_argument("--job-id", type=_job_id, help="the job's id (default: a new uuid)")
    parser.add_argument(
        "--schema",
        metavar="MODULE:MODEL",
        help="pydantic model class the records must fit; the job remembers it",
    )


def _watch_options(parser: argparse.ArgumentParser, until: str) -> None:
    parser.add_argument(
        "--watch", action="store_true", help=f"show it again every --interval seconds, {until}"
    )
    parser.add_argument(
        "--interval",
        metavar="S",
        type=_seconds,
        help=f"seconds between refreshes of --watch (default {DEFAULT_INTERVAL_S:g})",
    )


def _worker_options(parser: argparse.ArgumentParser, default_workers: int) -> None:
    parser.add_argument(
        "--processor",
        metavar="MODULE:FUNCTION",
        help="called as function(record, context) for each valid record (default: the one "
        "the job was prepared with, else none: the run only validates)",
    )
    parser.add_argument(
        "--batch-processor",
        metavar="MODULE:FUNCTION",
        help="instead of --processor: called as function(records, context) once per batch "
        "with its valid records (default: the one the job was prepared with)",
    )
    parser.add_argument(
        "--transactional",
        action="store_true",
        help="run the --batch-processor and the batch's completion in one transaction: "
        "what it writes to this database through context.database commits exactly once",
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
        "--concurrency",
        metavar="N",
        type=_positive,
        default=1,
        help="records in flight at once in each worker, for processors that wait on I/O: "
        "threads for a function, one event loop for an async def (default 1)",
    )
    parser.add_argument(
        "--stop-on-error",
        action="store_true",
        help="a failed or invalid record fails its batch and the job",
    )
    parser.add_argument(
        "--worker-id",
        metavar="ID",
        type=_worker_id,
        default=os.environ.get(WORKER_ID_ENV) or None,
        help=f"the worker's name, e.g. a pod's, at most 128 characters (default ${WORKER_ID_ENV}, "
        "else host-pid-random); with --workers N the workers are ID-1 .. ID-N",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


#: Adds one command: ``command(name, handler, help text)`` returns its subparser.
_AddCommand = Callable[[str, Callable[[argparse.Namespace], int], str], argparse.ArgumentParser]


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every command."""
    common = _common_options()
    parser = _Parser(
        prog=PROG,
        parents=[common],
        description="Batch jobs in any Peewee database, shared by many worker processes.",
    )
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def command(
        name: str, handler: Callable[[argparse.Namespace], int], text: str
    ) -> argparse.ArgumentParser:
        sub: argparse.ArgumentParser = commands.add_parser(
            name, parents=[common], help=text, description=text
        )
        sub.set_defaults(handler=handler)
        return sub

    # In this order in --help.
    _job_commands(command)
    _control_commands(command)
    _report_commands(command)
    _table_commands(command)
    return parser


def _job_commands(command: _AddCommand) -> None:
    sub = command("run", cmd_run, "prepare FILE and process it with local worker processes")
    _source_options(sub)
    _worker_options(sub, default_workers=os.cpu_count() or 1)
    _json_option(sub)

    sub = command("prepare", cmd_prepare, "read FILE into a new job and print its id")
    _source_options(sub)
    sub.add_argument(
        "--processor",
        metavar="MODULE:FUNCTION",
        help="the function `work` calls for each valid record; the job remembers it",
    )
    sub.add_argument(
        "--batch-processor",
        metavar="MODULE:FUNCTION",
        help="instead of --processor: the function `work` calls once per batch with its "
        "valid records; the job remembers it",
    )
    _json_option(sub)

    sub = command("retry", cmd_retry, "a new job of a job's failed records; print its id")
    sub.add_argument("job_id", metavar="JOB_ID", type=_job_id)
    sub.add_argument("--invalid", action="store_true", help="its invalid records too")
    sub.add_argument(
        "--batch-size", type=_positive, help="records per batch (default: the job's own)"
    )
    _json_option(sub)

    sub = command("preview", cmd_preview, "try --schema on the first records of FILE; no writes")
    _file_options(sub)
    sub.add_argument("--schema", metavar="MODULE:MODEL", help="pydantic model class (required)")
    sub.add_argument("--limit", type=_positive, default=1000, help="records to read (default 1000)")
    _json_option(sub)

    sub = command("work", cmd_work, "join a job as a worker (any machine that reaches the db)")
    sub.add_argument("job_id", metavar="JOB_ID", type=_job_id)
    sub.add_argument(
        "--schema",
        metavar="MODULE:MODEL",
        help="pydantic model class (default: the one the job was prepared with)",
    )
    _worker_options(sub, default_workers=1)
    sub.add_argument(
        "--max-batches",
        metavar="N",
        type=_positive,
        help="each worker stops after N batches (at a batch boundary)",
    )
    sub.add_argument(
        "--max-duration",
        metavar="MS",
        type=_positive,
        help="each worker stops at the first batch boundary after MS milliseconds",
    )
    sub.add_argument(
        "--metrics-port",
        metavar="PORT",
        type=parse_port,
        help="serve the worker's Prometheus counters (WorkerMetrics) at "
        "http://127.0.0.1:PORT/metrics while it works (0: any free port; --workers 1; "
        "extra [prometheus])",
    )
    sub.add_argument(
        "--until-done",
        action="store_true",
        help="exit only once the job is COMPLETED (0) or FAILED (1), waiting while other "
        "workers hold batches; 3 if it is aborted, 75 if a SIGTERM stopped it first "
        "(for a Kubernetes Job)",
    )
    _json_option(sub)


def _control_commands(command: _AddCommand) -> None:
    for name, handler, text in (
        ("pause", cmd_pause, "pause a job: its workers finish the batch in hand, then wait"),
        ("resume", cmd_resume, "let the workers of a paused job go on"),
        ("abort", cmd_abort, "end a job for good: its workers give back their batches"),
    ):
        sub = command(name, handler, text)
        sub.add_argument("job_id", metavar="JOB_ID", type=_job_id)
        _json_option(sub)
    sub = command("purge", cmd_purge, "delete old finished jobs with their batches and records")
    sub.add_argument(
        "--older-than",
        metavar="DURATION",
        type=_duration_ms,
        required=True,
        help="finished longer ago than this: 7d, 12h, 30m, 45s or milliseconds",
    )
    sub.add_argument(
        "--status",
        action="append",
        choices=[s.value for s in (JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.ABORTED)]
        + [JobStatus.CREATED.value],
        help="only jobs of this status (repeatable; default COMPLETED, FAILED and ABORTED; "
        "CREATED: jobs whose preparation never finished)",
    )
    sub.add_argument("--dry-run", action="store_true", help="list the jobs, delete nothing")
    _json_option(sub)

    sub = command("delete", cmd_delete, "delete a job with its batches and records")
    sub.add_argument("job_id", metavar="JOB_ID", type=_job_id)
    sub.add_argument("--force", action="store_true", help="even while it is PROCESSING or PAUSED")
    _json_option(sub)


def _report_commands(command: _AddCommand) -> None:
    sub = command("status", cmd_status, "a job's progress, batches and the workers' leases")
    sub.add_argument("job_id", metavar="JOB_ID", type=_job_id)
    sub.add_argument(
        "--lease-timeout",
        metavar="MS",
        type=_positive,
        default=DEFAULT_LEASE_TIMEOUT_MS,
        help="leases older than this are shown as stale",
    )
    _watch_options(sub, "until the job ends (exit 0 if it completed, 1 if not)")
    _json_option(sub, "print JSON (with --watch: one object per line per refresh)")

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
    _watch_options(sub, "until Ctrl-C")
    _json_option(sub, "print JSON (with --watch: one array per line per refresh)")

    sub = command("dashboard", cmd_dashboard, "serve a web page of the jobs, live, and their API")
    add_dashboard_options(sub)
    sub = command("metrics", cmd_metrics, "serve the jobs' Prometheus metrics at /metrics")
    add_metrics_options(sub)


def _table_commands(command: _AddCommand) -> None:
    sub = command("init", cmd_init, "create the tables where missing")
    _json_option(sub)

    sub = command("sql", cmd_sql, "print the tables' DDL for a dialect (no server needed)")
    sub.add_argument("--dialect", choices=sorted(OFFLINE_DIALECTS), required=True)
    _json_option(sub)

    sub = command("migrate", cmd_migrate, "apply the pending migrations")
    _json_option(sub)
