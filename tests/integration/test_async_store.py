"""What the async store adds to the sync one: it takes pwasyncio databases only, its row
counts mean what the dialect assumes on each async driver, and its retry waits let the
event loop run other tasks (the contract suite covers the rest, through LoopStore)."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from collections.abc import Callable
from typing import Any

import peewee as pw
import pytest

from batchactions_peewee import AsyncPeeweeStateStore
from batchactions_peewee.errors import InvalidInputError

from ..support.async_stores import ASYNC_BACKENDS, open_async_database
from ..support.factories import job
from ..support.stores import new_prefix


def test_a_sync_database_is_refused() -> None:
    with pytest.raises(InvalidInputError, match="pwasyncio"):
        AsyncPeeweeStateStore(pw.SqliteDatabase(":memory:"))


def test_the_tables_are_known_after_a_first_call(url_for: Callable[[str], str]) -> None:
    store = AsyncPeeweeStateStore(open_async_database(url_for("async-sqlite")))
    with pytest.raises(pw.InterfaceError, match="await"):
        store.tables  # noqa: B018

    async def main() -> str:
        await store.create_tables()
        name = store.tables.jobs._meta.table_name
        await store.drop_tables()
        await store.close()
        await store.database.close_pool()
        return str(name)

    assert asyncio.run(main()) == "batchactions_jobs"


@pytest.mark.parametrize("kind", ASYNC_BACKENDS)
def test_an_updates_row_count_means_what_the_dialect_assumes(
    kind: str, url_for: Callable[[str], str]
) -> None:
    """Every "only one wins" rests on a row count: an UPDATE that matches a row but changes
    nothing reports 0 where the dialect says counts are of changed rows (aiomysql, as
    PyMySQL), else 1 (aiosqlite, asyncpg)."""

    async def main() -> tuple[int, bool]:
        database: Any = open_async_database(url_for(kind))
        store = AsyncPeeweeStateStore(database, table_prefix=new_prefix())
        await store.create_tables()
        try:
            j = job(batches=1)
            await store.save_job_state(j)
            J = store.tables.jobs
            same = J.update(status=j.status.value).where(J.id == j.id)
            return int(await database.aexecute(same)), store.dialect.counts_changed_rows
        finally:
            await store.drop_tables()
            await database.close_pool()

    count, counts_changed = asyncio.run(main())
    assert count == (0 if counts_changed else 1)


def test_a_retry_wait_lets_other_tasks_run(
    url_for: Callable[[str], str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A write that finds SQLite locked is retried after a wait; during that wait another
    task's call completes (a blocking sleep would hold it until the wait ended)."""
    monkeypatch.setattr("batchactions_peewee.store.session.backoff_delay", lambda attempt: 0.3)
    url = url_for("async-sqlite")
    path = url.split("sqlite:///", 1)[1]

    async def main() -> tuple[float, float]:
        database: Any = open_async_database(url)
        database.init(database.database, timeout=0.05, pragmas={"journal_mode": "wal"})
        store = AsyncPeeweeStateStore(database)
        await store.create_tables()
        j = job(batches=1)
        await store.save_job_state(j)
        holder = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        holder.execute("BEGIN IMMEDIATE")  # another process's write lock
        threading.Timer(0.1, holder.rollback).start()
        started = time.monotonic()
        write = asyncio.create_task(store.pause_job(j.id))
        await asyncio.sleep(0.12)  # the write's first attempt failed busy at 0.05 s
        assert (await store.get_job_state(j.id)) is not None  # a read, during its wait
        read_done = time.monotonic() - started
        assert await write
        write_done = time.monotonic() - started
        holder.close()
        await store.drop_tables()
        await store.close()
        await database.close_pool()
        return read_done, write_done

    read_done, write_done = asyncio.run(main())
    assert write_done >= 0.3, "the write waited out a retry"
    assert read_done < 0.3, f"the read waited for the retry's sleep: {read_done:.3f} s"
