"""What every command shares: the constants, the one-line errors, database URLs (opened
with ``playhouse.db_url``, passwords never printed), the store named by the options, the
user's ``--processor``, ``--batch-processor`` and ``--schema`` code, and the logging setup."""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import shlex
import sys
import urllib.parse
from collections.abc import Callable
from pathlib import Path
from typing import Any

import peewee as pw
import pydantic
from playhouse import db_url

from ..engine import BatchProcessor, ProcessingContext
from ..engine.validation import check_schema
from ..errors import InvalidInputError
from ..model import JobState
from ..store import PeeweeStateStore

PROG = "batchactions-peewee"
URL_ENV = "BATCHACTIONS_DATABASE_URL"
DEFAULT_URL = "sqlite:///batchactions.db"
DEFAULT_PREFIX = "batchactions_"
DEFAULT_BATCH_SIZE = 500
DEFAULT_LEASE_TIMEOUT_MS = 300_000
SQLITE_BUSY_TIMEOUT_MS = 10_000
CONNECT_TIMEOUT_S = 10


class CliError(Exception):
    """A one-line message for the user; exit code 1, or 2 for a usage error."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def usage_error(message: str) -> CliError:
    return CliError(message, exit_code=2)


def first_line(exc: BaseException) -> str:
    """The first line of ``exc``'s message, or its type's name if it has none."""
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0]


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
    extra = _connect_settings(url, database_class, given, must_exist)
    try:
        database: pw.Database = db_url.connect(
            url, unquote_password=True, unquote_user=True, **extra
        )
    except (RuntimeError, ValueError) as exc:
        raise usage_error(f"--database {redact(url)}: {scrub(first_line(exc), url)}") from None
    try:
        database.connect()
    except pw.ImproperlyConfigured as exc:
        extra_name = "mysql" if issubclass(database_class, pw.MySQLDatabase) else "postgres"
        raise CliError(
            f"cannot use {redact(url)}: {first_line(exc)} "
            f'(pip install "batchactions-peewee[{extra_name}]")'
        ) from None
    except (pw.PeeweeException, OSError) as exc:
        raise CliError(f"cannot connect to {redact(url)}: {scrub(first_line(exc), url)}") from None
    return database


def _connect_settings(
    url: str, database_class: type[pw.Database], given: dict[str, Any], must_exist: bool
) -> dict[str, Any]:
    """Our connection defaults for ``database_class``, less those the URL sets itself."""
    extra: dict[str, Any] = {}
    if issubclass(database_class, pw.SqliteDatabase):
        path = str(given.get("database") or ":memory:")
        if path == ":memory:" or path.startswith("file::memory:"):
            raise usage_error(
                f"--database {url}: an in-memory database vanishes with the command; "
                "name a file, e.g. sqlite:///batchactions.db"
            )
        if must_exist and not Path(path).exists():
            init = shlex.join([PROG, "init", "--database", redact(url)])
            raise CliError(f"no database at {path}: run `{init}` first")
        extra = {
            "pragmas": {"journal_mode": "wal", "busy_timeout": SQLITE_BUSY_TIMEOUT_MS},
            "timeout": SQLITE_BUSY_TIMEOUT_MS / 1000,
        }
    elif issubclass(database_class, (pw.MySQLDatabase, pw.PostgresqlDatabase)):
        extra = {"connect_timeout": CONNECT_TIMEOUT_S}
    return {k: v for k, v in extra.items() if k not in given}


# -- the store -------------------------------------------------------------------------------


def database_url(args: argparse.Namespace) -> str:
    """``--database``, else ``$BATCHACTIONS_DATABASE_URL``, else the default SQLite file."""
    return getattr(args, "database", None) or os.environ.get(URL_ENV) or DEFAULT_URL


def table_prefix(args: argparse.Namespace) -> str:
    return getattr(args, "table_prefix", None) or DEFAULT_PREFIX


def open_store(args: argparse.Namespace, *, create: bool = False) -> PeeweeStateStore:
    """The store named by ``--database`` / ``--table-prefix``. ``create`` makes missing
    tables; otherwise the tables must exist."""
    url = database_url(args)
    database = open_database(url, must_exist=not create)
    store = PeeweeStateStore(database, table_prefix=table_prefix(args))
    if create:
        store.create_tables()
        return store
    missing = store.missing_tables()
    if missing:
        raise CliError(
            f"{redact(url)} has no table {missing[0]}: "
            f"run `{hint(args, 'init')}` (or `{hint(args, 'migrate')}`) first"
        )
    return store


def find_job(store: PeeweeStateStore, job_id: str, url: str) -> JobState:
    """The job ``job_id``; a :class:`CliError` naming the database if there is none."""
    job = store.get_job_state(job_id)
    if job is None:
        raise CliError(f"no job {job_id} in {redact(url)}")
    return job


def hint(args: argparse.Namespace, *words: str) -> str:
    """A command to paste: ``PROG words...`` with the ``--database`` (its password as
    ``***``) and ``--table-prefix`` that the user gave, quoted for a POSIX shell."""
    parts = [PROG, *words]
    given = getattr(args, "database", None)
    if given:
        parts += ["--database", redact(given)]
    prefix = getattr(args, "table_prefix", None)
    if prefix:
        parts += ["--table-prefix", prefix]
    return shlex.join(parts)


# -- user code -------------------------------------------------------------------------------

#: The key of a job's config under which ``run`` and ``prepare`` keep the ``--processor``,
#: ``--schema`` and ``--batch-processor`` they were given.
#: Option name -> its attribute on the parsed arguments and its key under ``CODE_KEY``.
CODE_OPTIONS = {
    "--processor": ("processor", "processor"),
    "--schema": ("schema", "schema"),
    "--batch-processor": ("batch_processor", "batchProcessor"),
}
#: The options of which a worker takes one at most: a record or a batch processor.
RIVAL_OPTIONS = {"--processor": "--batch-processor", "--batch-processor": "--processor"}


def code_of(args: argparse.Namespace) -> dict[str, str]:
    """The code options given, as a job's config keeps them."""
    code = {}
    for attribute, key in CODE_OPTIONS.values():
        value = getattr(args, attribute, None)
        if value is not None:
            code[key] = value
    return code


def validate_only(record: dict[str, Any], context: ProcessingContext) -> None:
    """The default processor: does nothing, so a run only validates (with ``--schema``)."""


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


def load_batch_processor(spec: str | None) -> BatchProcessor | None:
    """The ``--batch-processor`` function, or None."""
    if spec is None:
        return None
    batch_processor = load_object(spec, "--batch-processor")
    if not callable(batch_processor):
        raise usage_error(f"--batch-processor {spec}: not a function")
    return batch_processor  # type: ignore[no-any-return]


def no_processor() -> None:
    """The record processor of a worker given a ``--batch-processor``: none."""


def load_schema(spec: str | None) -> type[pydantic.BaseModel] | None:
    """The ``--schema`` pydantic model class, or None."""
    if spec is None:
        return None
    found = load_object(spec, "--schema")
    try:
        return check_schema(found)
    except InvalidInputError as exc:
        # A model without fields is a model class all the same: say what is wrong with it.
        fieldless = (
            isinstance(found, type)
            and issubclass(found, pydantic.BaseModel)
            and not issubclass(found, pydantic.RootModel)
            and found is not pydantic.BaseModel
        )
        reason = str(exc).removeprefix("schema ") if fieldless else "not a pydantic model class"
        raise usage_error(f"--schema {spec}: {reason}") from None


# -- logging ---------------------------------------------------------------------------------


class _OneLineFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        if record.exc_info and record.exc_info[1] is not None:
            message += f": {first_line(record.exc_info[1])}"
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
