"""Stores for the tests: the backends, fresh tables per test, a clock the test moves.

The fixtures in tests/conftest.py are parametrized over ``ALL_BACKENDS`` (``store``) and
``PEEWEE_BACKENDS`` (``peewee_store``). ``make_store`` gives a PeeweeStateStore on fresh
tables (a table prefix no other test of the session uses); ``open_store`` does the same for
any kind, "memory" included, and drops the tables afterwards; ``same_tables`` opens another
store on a store's tables, as another worker machine would.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import peewee as pw

from batchactions_peewee import InMemoryStateStore, PeeweeStateStore

from .backends import open_database
from .factories import START_MS

SERVER_KINDS = ("mysql", "postgres")
PEEWEE_BACKENDS = ("sqlite", *SERVER_KINDS)
ALL_BACKENDS = ("memory", *PEEWEE_BACKENDS)
_prefixes = itertools.count()

Store = InMemoryStateStore | PeeweeStateStore


def new_prefix() -> str:
    """A table prefix no other test of this session uses."""
    return f"t{os.getpid()}_{next(_prefixes)}_"


def make_store(url: str, **kwargs: object) -> tuple[PeeweeStateStore, pw.Database]:
    """A store with fresh tables on ``url``, and its database."""
    database = open_database(url)
    store = PeeweeStateStore(database, table_prefix=new_prefix(), **kwargs)  # type: ignore[arg-type]
    store.create_tables()
    return store, database


class FakeClock:
    """A mutable clock in epoch ms, injected into a store as ``clock=``."""

    def __init__(self, now: int = START_MS) -> None:
        self.now = now

    def __call__(self) -> int:
        return self.now

    def advance(self, ms: int) -> None:
        self.now += ms


@contextmanager
def open_store(
    kind: str, url_for: Callable[[str], str], clock: Callable[[], int] | None = None
) -> Iterator[Store]:
    """A fresh store of ``kind`` ("memory" or a Peewee backend), dropped afterwards."""
    if kind == "memory":
        yield InMemoryStateStore(clock=clock)
        return
    store, database = make_store(url_for(kind), clock=clock)
    try:
        yield store
    finally:
        store.drop_tables()
        database.close()


@contextmanager
def same_tables(
    store: PeeweeStateStore, url: str, clock: Callable[[], int] | None = None
) -> Iterator[PeeweeStateStore]:
    """Another store (its own connection, as another worker machine) on ``store``'s tables."""
    database: pw.Database = open_database(url)
    try:
        yield PeeweeStateStore(database, table_prefix=store.table_prefix, clock=clock)
    finally:
        database.close()
