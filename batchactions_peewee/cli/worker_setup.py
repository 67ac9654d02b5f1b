"""The CLI's side of a worker process: ``worker_settings`` builds the pool's
``WorkerSettings`` from the options, out of ``functools.partial`` objects of the
module-level functions here, which the spawned process calls to open its own database
from the URL, import the user's code, configure logging and word its error."""

from __future__ import annotations

import argparse
import contextlib
import functools
import threading
from collections.abc import Iterator

import pydantic

from ..engine.events import EventHandler
from ..engine.pool import WorkerSettings
from ..engine.sources import with_source_errors
from ..engine.supervision import pool_worker_ids
from ..errors import InvalidInputError
from ..store import PeeweeStateStore
from ..web.server import loopback_hosts_only, make_server
from .common import (
    CliError,
    configure_logging,
    database_url,
    first_line,
    load_batch_processor,
    load_processor,
    load_schema,
    no_processor,
    open_database,
    scrub,
    table_prefix,
    usage_error,
)

#: The environment variable that gives ``--worker-id`` (a pod's name, say).
WORKER_ID_ENV = "BATCHACTIONS_WORKER_ID"


@contextlib.contextmanager
def open_worker_store(url: str, prefix: str) -> Iterator[PeeweeStateStore]:
    """A store on a connection of this process's own, closed on exit."""
    database = open_database(url, must_exist=True)
    try:
        yield PeeweeStateStore(database, table_prefix=prefix)
    finally:
        database.close()


def load_worker_schema(spec: str | None) -> type[pydantic.BaseModel]:
    """The ``--schema`` model, which also turns the file's unreadable rows invalid."""
    return with_source_errors(load_schema(spec))


def describe_worker_error(url: str, exc: Exception) -> str:
    """A :class:`CliError` as it is; anything else as its type and first line, without
    the URL's passwords."""
    if isinstance(exc, CliError):
        return str(exc)
    return scrub(f"{type(exc).__name__}: {first_line(exc)}", url)


def check_code(args: argparse.Namespace) -> None:
    # Imported here once, so a bad --processor or --schema is a usage error before a job
    # is prepared or a worker process starts.
    batch_processor = getattr(args, "batch_processor", None)
    if args.processor is not None and batch_processor is not None:
        raise usage_error(
            "--processor and --batch-processor exclude each other: "
            "give one (called per record, or per batch)"
        )
    if getattr(args, "transactional", False) and batch_processor is None:
        raise usage_error("--transactional needs a --batch-processor, whose writes it covers")
    load_processor(args.processor)
    load_batch_processor(batch_processor)
    load_schema(args.schema)


def worker_settings(args: argparse.Namespace, job_id: str) -> WorkerSettings:
    """What the worker processes of ``run`` and ``work`` get, once the code is checked."""
    check_code(args)
    worker_id = getattr(args, "worker_id", None)
    try:
        pool_worker_ids(worker_id, args.workers)
    except InvalidInputError as exc:
        raise usage_error(f"--worker-id: {exc} (with --workers {args.workers})") from None
    metrics_port = getattr(args, "metrics_port", None)
    if metrics_port is not None and args.workers != 1:
        raise usage_error(
            "--metrics-port serves the counters of one process's worker: with --workers "
            f"{args.workers}, run {args.workers} work commands, each with its own port"
        )
    url = database_url(args)
    return WorkerSettings(
        job_id=job_id,
        open_store=functools.partial(open_worker_store, url, table_prefix(args)),
        load_processor=(
            functools.partial(load_processor, args.processor)
            if args.batch_processor is None
            else no_processor
        ),
        load_schema=functools.partial(load_worker_schema, args.schema),
        continue_on_error=not args.stop_on_error,
        max_retries=args.max_retries,
        retry_delay_ms=args.retry_delay,
        lease_timeout_ms=args.lease_timeout,
        setup=functools.partial(configure_logging, args.verbose),
        describe_error=functools.partial(describe_worker_error, url),
        load_batch_processor=functools.partial(load_batch_processor, args.batch_processor),
        transactional=args.transactional,
        max_batches=getattr(args, "max_batches", None),
        max_duration_ms=getattr(args, "max_duration", None),
        concurrency=args.concurrency,
        worker_id=worker_id,
        load_observer=(
            functools.partial(worker_observer, metrics_port)
            if metrics_port is not None
            else _no_observer
        ),
    )


@functools.cache
def serve_worker_metrics(port: int) -> tuple[EventHandler, int]:
    """This process's ``WorkerMetrics`` (in prometheus_client's ``REGISTRY``), served at
    http://127.0.0.1:PORT/metrics on a daemon thread from the first call on, for as long
    as the process lives: its ``observe``, and the port (``port`` 0: a free one)."""
    try:
        from ..contrib.prometheus import WorkerMetrics
    except ImportError as exc:
        raise usage_error(f"--metrics-port: {first_line(exc)}") from None
    from prometheus_client import REGISTRY, make_wsgi_app

    try:
        server = make_server("127.0.0.1", port, loopback_hosts_only(make_wsgi_app(REGISTRY)))
    except OSError as exc:
        raise CliError(
            f"--metrics-port: cannot listen on 127.0.0.1:{port}: {exc.strerror or exc}"
        ) from None
    threading.Thread(target=server.serve_forever, name="worker-metrics", daemon=True).start()
    return WorkerMetrics().observe, server.server_address[1]


def worker_observer(port: int) -> EventHandler:
    """The worker's ``on_event`` for ``--metrics-port``: see ``serve_worker_metrics``."""
    return serve_worker_metrics(port)[0]


def _no_observer() -> None:
    return None
