"""Workers as Celery tasks (extra ``[celery]``): ``work_job`` runs one ``Worker`` on a job
in a Celery worker, ``dispatch`` sends ``workers`` of them as one Celery group.

Celery arguments travel as JSON, so a task gets the database URL and the user's code as
``module:attr`` strings; it opens its own database from the URL and imports the code in the
Celery worker process, as the CLI's worker processes do. The task is ``acks_late`` and
``reject_on_worker_lost``: a task whose worker process died goes back on the queue, and
running it again is harmless, since a job's batches are claimed by lease: the dead worker's
batch is reclaimed once its lease runs out, and its late writes are fenced off by version.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import socket
from collections.abc import Iterator, Mapping
from typing import Any

try:
    import celery
except ImportError as exc:  # pragma: no cover - tested in a process without Celery
    raise ImportError(
        'batchactions_peewee.contrib.celery needs Celery: pip install "batchactions-peewee[celery]"'
    ) from exc

from ..cli.common import (
    DEFAULT_PREFIX,
    CliError,
    load_batch_processor,
    load_processor,
    load_schema,
    open_database,
    redact,
    validate_only,
)
from ..engine import BatchContext, Worker
from ..engine.sources import with_source_errors
from ..engine.supervision import pool_worker_ids
from ..errors import InvalidInputError, InvalidValueError, JobNotFoundError, StoreUnavailable
from ..model import JobState
from ..reports import remembered_code
from ..store import PeeweeStateStore

__all__ = ["TASK_NAME", "WORKER_OPTIONS", "dispatch", "run_job", "work_job"]

logger = logging.getLogger(__name__)

TASK_NAME = "batchactions_peewee.work_job"
#: The ``**worker_options`` a task takes: ``Worker``'s settings that JSON can carry, and
#: ``Worker.run``'s limits (``RUN_OPTIONS``).
WORKER_OPTIONS = frozenset(
    {
        "worker_id",
        "continue_on_error",
        "max_retries",
        "retry_delay_ms",
        "lease_timeout_ms",
        "concurrency",
        "transactional",
        "max_batches",
        "max_duration_ms",
    }
)
RUN_OPTIONS = ("max_batches", "max_duration_ms")


@dataclasses.dataclass(frozen=True)
class JobCode:
    """The ``module:attr`` specs a worker on a job imports (None: not used)."""

    processor: str | None
    schema: str | None
    batch_processor: str | None


def _work_job(
    task: Any,
    job_id: str,
    database_url: str,
    *,
    table_prefix: str = DEFAULT_PREFIX,
    processor: str | None = None,
    schema: str | None = None,
    batch_processor: str | None = None,
    **worker_options: Any,
) -> dict[str, Any]:
    """Run one worker on ``job_id`` until no batch is left; return its ``WorkerSummary``
    as a dict. ``processor``, ``schema`` and ``batch_processor`` are ``module:attr``
    strings, by default those the job was prepared with; ``worker_options`` are
    ``Worker``'s (``lease_timeout_ms``, ``max_retries``, ...) and ``Worker.run``'s
    (``max_batches``, ``max_duration_ms``). The worker is ``celery-HOST-PID-TASK`` unless
    ``worker_id`` is given."""
    if worker_options.get("worker_id") is None:
        worker_options["worker_id"] = celery_worker_id(task.request.id)
    return run_job(
        job_id,
        database_url,
        table_prefix=table_prefix,
        processor=processor,
        schema=schema,
        batch_processor=batch_processor,
        **worker_options,
    )


work_job: Any = celery.shared_task(
    bind=True, acks_late=True, reject_on_worker_lost=True, name=TASK_NAME
)(_work_job)


def dispatch(
    job_id: str,
    database_url: str,
    *,
    workers: int,
    queue: str | None = None,
    table_prefix: str = DEFAULT_PREFIX,
    processor: str | None = None,
    schema: str | None = None,
    batch_processor: str | None = None,
    **worker_options: Any,
) -> Any:
    """Send ``workers`` ``work_job`` tasks on ``job_id`` as one Celery group (to ``queue``,
    else the app's default) and return its ``GroupResult``. The other arguments are the
    task's. The URL's password is shown as ``***`` in Celery's logs and events.

    Checked before anything is sent: ``workers`` (InvalidValueError below 1), the job
    (JobNotFoundError), the code specs and worker options (InvalidInputError), a
    ``worker_id`` (with several workers they are ``ID-1`` .. ``ID-N``). The code itself is
    imported by the Celery workers, not here. A database that cannot be reached raises
    StoreUnavailable."""
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise InvalidValueError(f"workers must be a positive integer, got {workers!r}")
    ids = pool_worker_ids(worker_options.pop("worker_id", None), workers)
    with _open_store(database_url, table_prefix) as store:
        code = job_code(_find_job(store, job_id, database_url), processor, schema, batch_processor)
        check_worker_options(worker_options, store, code)
    kwargs: dict[str, Any] = {
        "table_prefix": table_prefix,
        "processor": processor,
        "schema": schema,
        "batch_processor": batch_processor,
        **worker_options,
    }
    try:
        json.dumps(kwargs, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise InvalidValueError(f"worker options must be JSON values: {exc}") from None
    tasks = work_signatures(job_id, database_url, ids, kwargs, queue=queue)
    result = celery.group(tasks).apply_async()
    logger.info("sent %d workers for job %s on %s", workers, job_id, redact(database_url))
    return result


def work_signatures(
    job_id: str,
    database_url: str,
    worker_ids: list[str | None],
    kwargs: Mapping[str, Any],
    *,
    queue: str | None = None,
) -> list[Any]:
    """One ``work_job`` signature per worker id (None: the task names itself), whose
    ``argsrepr`` (what Celery logs and shows) has the URL's password as ``***``."""
    options: dict[str, Any] = {"argsrepr": repr((job_id, redact(database_url)))}
    if queue is not None:
        options["queue"] = queue
    tasks = []
    for worker_id in worker_ids:
        each = dict(kwargs) if worker_id is None else {**kwargs, "worker_id": worker_id}
        tasks.append(
            work_job.signature((job_id, database_url), each, kwargsrepr=repr(each), **options)
        )
    return tasks


def run_job(
    job_id: str,
    database_url: str,
    *,
    table_prefix: str = DEFAULT_PREFIX,
    processor: str | None = None,
    schema: str | None = None,
    batch_processor: str | None = None,
    **worker_options: Any,
) -> dict[str, Any]:
    """What ``work_job`` does, without Celery: open the database, run a ``Worker`` on the
    job with the code it names (or the job remembers), close the database."""
    if unknown := sorted(set(worker_options) - WORKER_OPTIONS):
        raise InvalidInputError(_unknown_options(unknown))
    settings = {k: v for k, v in worker_options.items() if k not in RUN_OPTIONS}
    limits = {k: v for k, v in worker_options.items() if k in RUN_OPTIONS}
    with _open_store(database_url, table_prefix) as store:
        code = job_code(_find_job(store, job_id, database_url), processor, schema, batch_processor)
        worker = Worker(
            store,
            _load_processor(code),
            batch_processor=_user_code(load_batch_processor, code.batch_processor),
            schema=with_source_errors(_user_code(load_schema, code.schema)),
            **settings,
        )
        summary = worker.run(job_id, **limits)
    logger.info(
        "worker %s on job %s: %d batches, %d processed, %d failed (%s)",
        summary.worker_id,
        job_id,
        summary.batches,
        summary.processed,
        summary.failed,
        summary.stopped,
    )
    return dataclasses.asdict(summary)


def celery_worker_id(task_id: str | None) -> str:
    """``celery-HOST-PID-TASK``: the host, this process and the task id's first 8
    characters, so tasks sharing a process (thread pools) or re-run elsewhere differ."""
    host = socket.gethostname()[:80] or "worker"
    return f"celery-{host}-{os.getpid()}-{(task_id or 'task')[:8]}"


def job_code(
    job: JobState, processor: str | None, schema: str | None, batch_processor: str | None
) -> JobCode:
    """The code a worker on ``job`` imports: the specs given, else those the job was
    prepared with (a processor of either kind given replaces the job's of both kinds)."""
    for spec, what in (
        (processor, "processor"),
        (schema, "schema"),
        (batch_processor, "batch_processor"),
    ):
        _check_spec(spec, what)
    if processor is not None and batch_processor is not None:
        raise InvalidInputError(
            "processor and batch_processor exclude each other: give one (per record, or per batch)"
        )
    kept = remembered_code(job)
    if processor is None and batch_processor is None:
        processor, batch_processor = kept.get("processor"), kept.get("batchProcessor")
    return JobCode(processor, kept.get("schema") if schema is None else schema, batch_processor)


def check_worker_options(
    options: Mapping[str, Any], store: PeeweeStateStore, code: JobCode
) -> None:
    """InvalidInputError for an option ``work_job`` does not take or a value that
    ``Worker`` refuses (checked by building one, with stand-ins for the user's code)."""
    if unknown := sorted(set(options) - WORKER_OPTIONS):
        raise InvalidInputError(_unknown_options(unknown))
    for name in RUN_OPTIONS:
        value = options.get(name)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
            raise InvalidValueError(f"{name} must be a positive integer, got {value!r}")
        if value is not None and value < 1:
            raise InvalidValueError(f"{name} must be a positive integer, got {value!r}")
    settings = {k: v for k, v in options.items() if k not in RUN_OPTIONS}
    batch = code.batch_processor is not None
    Worker(
        store,
        None if batch else validate_only,
        batch_processor=_stand_in_batch_processor if batch else None,
        **settings,
    )


def _stand_in_batch_processor(records: list[dict[str, Any]], context: BatchContext) -> None:
    """What ``check_worker_options`` gives ``Worker`` for a batch processor: nothing."""


def _unknown_options(unknown: list[str]) -> str:
    return f"unknown worker option {unknown[0]!r}; known: {', '.join(sorted(WORKER_OPTIONS))}"


def _check_spec(spec: object, what: str) -> None:
    if spec is None:
        return
    module, _, attribute = spec.partition(":") if isinstance(spec, str) else ("", "", "")
    if not module or not attribute:
        raise InvalidInputError(f"{what} must be a 'module:attr' string, got {spec!r}")


def _load_processor(code: JobCode) -> Any:
    if code.batch_processor is not None:
        return None
    return _user_code(load_processor, code.processor)


def _user_code(load: Any, spec: str | None) -> Any:
    """``load(spec)``, the CLI's loader, its error as InvalidInputError."""
    try:
        return load(spec)
    except CliError as exc:
        raise InvalidInputError(str(exc).removeprefix("--")) from None


@contextlib.contextmanager
def _open_store(url: str, table_prefix: str) -> Iterator[PeeweeStateStore]:
    """A store on a connection of its own, closed on exit. A URL that cannot name a
    database is InvalidInputError; one that cannot be reached, StoreUnavailable."""
    if not isinstance(url, str):
        raise InvalidInputError(f"database_url must be a string, got {type(url).__name__}")
    try:
        database = open_database(url, must_exist=True)
    except CliError as exc:
        error = InvalidInputError if exc.exit_code == 2 else StoreUnavailable
        raise error(str(exc).removeprefix("--database ")) from None
    try:
        yield PeeweeStateStore(database, table_prefix=table_prefix)
    finally:
        database.close()


def _find_job(store: PeeweeStateStore, job_id: str, url: str) -> JobState:
    missing = store.missing_tables()
    if missing:
        raise JobNotFoundError(f"no job {job_id} in {redact(url)}: it has no table {missing[0]}")
    job = store.get_job_state(job_id)
    if job is None:
        raise JobNotFoundError(f"no job {job_id} in {redact(url)}")
    return job
