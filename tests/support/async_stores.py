"""The async store under the synchronous contract suite.

``LoopStore`` is a thin synchronous facade over an ``AsyncPeeweeStateStore``: each call of a
store method becomes a coroutine run on an event loop in a thread of its own
(``asyncio.run_coroutine_threadsafe``), each call a task of its own, so every contract test
exercises the async path unchanged: pwasyncio's connections per task, its greenlet bridge,
the loop-aware retry waits. The backends are "async-sqlite", "async-mysql" and
"async-postgres"; their URLs are those of the sync backends with an ``async+`` prefix.
"""

from __future__ import annotations

import asyncio
import inspect
import threading
import urllib.parse
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

import peewee as pw
from playhouse.pwasyncio import AsyncMySQLDatabase, AsyncPostgresqlDatabase, AsyncSqliteDatabase

from batchactions_peewee import AsyncPeeweeStateStore, PeeweeStateStore

T = TypeVar("T")

ASYNC_PREFIX = "async+"
ASYNC_BACKENDS = ("async-sqlite", "async-mysql", "async-postgres")


def sync_kind(kind: str) -> str:
    """The sync backend whose server an async backend uses: "async-mysql" -> "mysql"."""
    return kind.removeprefix("async-")


def open_async_database(url: str) -> pw.Database:
    """The pwasyncio database for an ``async+`` URL (SQLite files get WAL and a busy
    timeout, as the sync backend's do)."""
    parts = urllib.parse.urlsplit(url.removeprefix(ASYNC_PREFIX))
    name = parts.path.lstrip("/")
    if parts.scheme == "sqlite":
        pragmas = {"journal_mode": "wal", "busy_timeout": 10000}
        sqlite: pw.Database = AsyncSqliteDatabase("/" + name, pragmas=pragmas, timeout=10)
        return sqlite
    server: dict[str, Any] = {"host": parts.hostname, "user": parts.username}
    if parts.port:
        server["port"] = parts.port
    if parts.password:
        server["password"] = parts.password
    database: pw.Database
    if parts.scheme == "mysql":
        database = AsyncMySQLDatabase(name, charset="utf8mb4", **server)
    else:
        database = AsyncPostgresqlDatabase(name, **server)
    return database


class LoopThread:
    """An event loop running in a daemon thread; ``call`` runs a coroutine there."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()

    def call(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result()

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=10)
        self.loop.close()


class LoopStore:
    """The methods of an ``AsyncPeeweeStateStore``, called synchronously from any thread."""

    def __init__(self, store: AsyncPeeweeStateStore, loop: LoopThread, *, owns_loop: bool) -> None:
        self.async_store = store
        self.loop = loop
        self._owns_loop = owns_loop

    @property
    def table_prefix(self) -> str:
        return self.async_store.table_prefix

    @property
    def tables(self) -> Any:
        return self.in_loop(lambda: self.async_store.sync_store.tables)

    @property
    def dialect(self) -> Any:
        return self.in_loop(lambda: self.async_store.sync_store.dialect)

    @property
    def force_cas_claim(self) -> bool:
        return self.async_store.sync_store.force_cas_claim

    @force_cas_claim.setter
    def force_cas_claim(self, value: bool) -> None:
        self.async_store.sync_store.force_cas_claim = value

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self.async_store, name)
        if not inspect.iscoroutinefunction(attribute):
            return attribute

        def call(*args: Any, **kwargs: Any) -> Any:
            return self.loop.call(attribute(*args, **kwargs))

        return call

    def _worker_io(self) -> LoopStore:
        return self  # the async store has every bulk form of the sync one

    def in_loop(self, fn: Callable[[], T]) -> T:
        """``fn()`` (synchronous Peewee code over the store's tables) on the loop, its
        queries bridged as the store's are."""

        def on_sync(_: PeeweeStateStore) -> T:
            return fn()

        return self.loop.call(self.async_store.run(on_sync))

    def with_clock(self, clock: Callable[[], int]) -> LoopStore:
        """Another async store on these tables and this loop, reading ``clock``."""
        other = AsyncPeeweeStateStore(
            self.async_store.database, table_prefix=self.table_prefix, clock=clock
        )
        return LoopStore(other, self.loop, owns_loop=False)

    def close(self) -> None:
        """Close the database's pool and, if this store started it, the loop."""
        if not self._owns_loop:
            return
        database: Any = self.async_store.database
        self.loop.call(database.close_pool())
        self.loop.stop()


def make_loop_store(url: str, **kwargs: Any) -> LoopStore:
    """A LoopStore on a new loop thread over the database of an ``async+`` URL."""
    store = AsyncPeeweeStateStore(open_async_database(url), **kwargs)
    return LoopStore(store, LoopThread(), owns_loop=True)
