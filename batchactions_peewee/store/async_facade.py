"""AsyncPeeweeStateStore: the methods of PeeweeStateStore as coroutines, over the
``playhouse.pwasyncio`` databases (aiosqlite, asyncpg, aiomysql).

Not a second implementation: pwasyncio runs synchronous Peewee code inside a greenlet whose
every query yields to the event loop (``await database.run(fn)``), so each coroutine here
runs the very method of a ``PeeweeStateStore`` built on the same database, with its SQL,
fencing, retries and errors. A call runs on the calling task's connection, so each of its
transactions is on one connection; its retry waits yield to the loop instead of sleeping.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any, Concatenate, ParamSpec, TypeVar

import peewee as pw

from ..errors import InvalidInputError
from .dialects import Dialect, check_database
from .facade import PeeweeStateStore, _Parts
from .session import Clock, Waits
from .tables import Tables

try:
    from playhouse.pwasyncio import AsyncDatabaseMixin
    from playhouse.pwasyncio import await_ as await_  # re-exported for the AsyncWorker
except ImportError as exc:  # greenlet is missing: the extra is not installed
    raise ImportError(
        "AsyncPeeweeStateStore needs the asyncio extra: pip install 'batchactions-peewee[asyncio]'"
    ) from exc

P = ParamSpec("P")
R = TypeVar("R")


def _driver_errors() -> tuple[type[Exception], ...]:
    # asyncpg's serialization failures and deadlocks reach us untranslated by Peewee.
    try:
        import asyncpg  # type: ignore[import-untyped]
    except ImportError:
        return ()
    return (asyncpg.PostgresError,)


def _loop_sleep(seconds: float) -> None:
    """A retry's wait inside ``database.run``: the loop runs other tasks meanwhile."""
    await_(asyncio.sleep(seconds))


#: How the bridged store waits: on the loop, never blocking it.
LOOP_WAITS = Waits(sleep=_loop_sleep, driver_errors=_driver_errors())


class _BridgedStore(PeeweeStateStore):
    """The PeeweeStateStore whose methods the async store runs inside ``database.run``."""

    _waits = LOOP_WAITS


def _bridged(
    method: Callable[Concatenate[PeeweeStateStore, P], R],
) -> Callable[Concatenate[AsyncPeeweeStateStore, P], Coroutine[Any, Any, R]]:
    """``method`` of PeeweeStateStore as a coroutine method of AsyncPeeweeStateStore."""

    async def bridged(self: AsyncPeeweeStateStore, /, *args: P.args, **kwargs: P.kwargs) -> R:
        return await self.run(method, *args, **kwargs)

    bridged.__name__ = bridged.__qualname__ = method.__name__
    bridged.__doc__ = method.__doc__
    return bridged


class AsyncPeeweeStateStore:
    """Persists batch jobs in a ``playhouse.pwasyncio`` database and coordinates workers
    through it: every method of ``PeeweeStateStore``, as a coroutine.

    ``database`` is an ``AsyncSqliteDatabase``, ``AsyncPostgresqlDatabase`` or
    ``AsyncMySQLDatabase`` (or a ``DatabaseProxy`` of one); ``table_prefix`` and ``clock``
    are those of ``PeeweeStateStore``, and so are the tables, statements, fencing, retries
    and errors. The store never alters the caller's database or models.
    """

    def __init__(
        self,
        database: pw.Database | pw.DatabaseProxy,
        *,
        table_prefix: str = "batchactions_",
        clock: Clock | None = None,
    ) -> None:
        database = check_database(database)
        if not isinstance(database, (AsyncDatabaseMixin, pw.DatabaseProxy)):
            kind = type(database).__name__
            raise InvalidInputError(
                f"database must be a playhouse.pwasyncio database (AsyncSqliteDatabase, "
                f"AsyncPostgresqlDatabase, AsyncMySQLDatabase): {kind}"
            )
        self.sync_store: PeeweeStateStore = _BridgedStore(
            database, table_prefix=table_prefix, clock=clock
        )
        self.database = database
        self.table_prefix = self.sync_store.table_prefix
        self._ready = asyncio.Lock()

    async def run(
        self, fn: Callable[Concatenate[PeeweeStateStore, P], R], *args: P.args, **kwargs: P.kwargs
    ) -> R:
        """``fn(sync_store, *args, **kwargs)`` on this task's connection, its queries
        yielding to the loop: synchronous code over the store (``prepare_job``,
        ``prepare_retry_job``, reports) run from async code without a thread."""
        database = self._async_database()
        if self.sync_store._built is None:
            async with self._ready:  # the parts are built once, by one task
                if self.sync_store._built is None:
                    await database.run(lambda: self.sync_store._parts)
        result: R = await database.run(fn, self.sync_store, *args, **kwargs)
        return result

    def _async_database(self) -> Any:
        database: Any = self.database
        while isinstance(database, pw.DatabaseProxy):
            database = database.obj
        if not isinstance(database, AsyncDatabaseMixin):
            raise pw.InterfaceError("the DatabaseProxy is not initialized with an async database")
        return database

    @property
    def tables(self) -> Tables:
        """This store's three Peewee models (known once a first call has been awaited)."""
        return self._built().tables

    @property
    def dialect(self) -> Dialect:
        """What this store knows about its kind of database (after a first call)."""
        return self._built().dialect

    def _built(self) -> _Parts:
        if self.sync_store._built is None:
            raise pw.InterfaceError("await a method of the store first (it builds its tables)")
        return self.sync_store._built

    def table_names(self) -> list[str]:
        """The names of the three tables: jobs, records, batches."""
        prefix = self.table_prefix
        return [f"{prefix}jobs", f"{prefix}records", f"{prefix}batches"]

    async def close(self) -> None:
        """Give this task's connection back to the database's pool."""
        database = self._async_database()
        if not database.is_closed():
            await database.aclose()

    now = _bridged(PeeweeStateStore.now)
    # schema
    create_tables = _bridged(PeeweeStateStore.create_tables)
    missing_tables = _bridged(PeeweeStateStore.missing_tables)
    drop_tables = _bridged(PeeweeStateStore.drop_tables)
    # StateStore port
    save_job_state = _bridged(PeeweeStateStore.save_job_state)
    get_job_state = _bridged(PeeweeStateStore.get_job_state)
    update_batch_state = _bridged(PeeweeStateStore.update_batch_state)
    save_processed_record = _bridged(PeeweeStateStore.save_processed_record)
    get_failed_records = _bridged(PeeweeStateStore.get_failed_records)
    get_pending_records = _bridged(PeeweeStateStore.get_pending_records)
    get_processed_records = _bridged(PeeweeStateStore.get_processed_records)
    get_progress = _bridged(PeeweeStateStore.get_progress)
    # DistributedStateStore port
    claim_batch = _bridged(PeeweeStateStore.claim_batch)
    release_batch = _bridged(PeeweeStateStore.release_batch)
    reclaim_stale_batches = _bridged(PeeweeStateStore.reclaim_stale_batches)
    save_batch_records = _bridged(PeeweeStateStore.save_batch_records)
    get_batch_records = _bridged(PeeweeStateStore.get_batch_records)
    get_distributed_status = _bridged(PeeweeStateStore.get_distributed_status)
    try_finalize_job = _bridged(PeeweeStateStore.try_finalize_job)
    # the job's lifecycle
    pause_job = _bridged(PeeweeStateStore.pause_job)
    resume_job = _bridged(PeeweeStateStore.resume_job)
    abort_job = _bridged(PeeweeStateStore.abort_job)
    purge_jobs = _bridged(PeeweeStateStore.purge_jobs)
    purge_candidates = _bridged(PeeweeStateStore.purge_candidates)
    # beyond the ports
    heartbeat = _bridged(PeeweeStateStore.heartbeat)
    complete_batch = _bridged(PeeweeStateStore.complete_batch)
    save_processed_records = _bridged(PeeweeStateStore.save_processed_records)
    delete_job = _bridged(PeeweeStateStore.delete_job)
    list_jobs = _bridged(PeeweeStateStore.list_jobs)
    record_counts = _bridged(PeeweeStateStore.record_counts)
    get_failed_records_page = _bridged(PeeweeStateStore.get_failed_records_page)
    # reads of a job with many batches
    get_job_head = _bridged(PeeweeStateStore.get_job_head)
    list_job_heads = _bridged(PeeweeStateStore.list_job_heads)
    job_counts = _bridged(PeeweeStateStore.job_counts)
    batch_counts = _bridged(PeeweeStateStore.batch_counts)
    get_batches_page = _bridged(PeeweeStateStore.get_batches_page)
    batch_statuses = _bridged(PeeweeStateStore.batch_statuses)
    batch_timeline = _bridged(PeeweeStateStore.batch_timeline)
    # the engine's bulk forms (ports.WorkerIO)
    _save_pending_records = _bridged(PeeweeStateStore._save_pending_records)
    _get_batch_raw = _bridged(PeeweeStateStore._get_batch_raw)
    _complete_batch_processed = _bridged(PeeweeStateStore._complete_batch_processed)
    _complete_batch_in_transaction = _bridged(PeeweeStateStore._complete_batch_in_transaction)
    _release_reservation = _bridged(PeeweeStateStore._release_reservation)
    _activate_job = _bridged(PeeweeStateStore._activate_job)
    _job_status = _bridged(PeeweeStateStore._job_status)
