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
from typing import TypeVar

import peewee as pw

from batchactions_peewee import InMemoryStateStore, PeeweeStateStore

from .async_stores import ASYNC_BACKENDS, LoopStore, make_loop_store
from .backends import open_database
from .factories import START_MS

SERVER_KINDS = ("mysql", "postgres")
PEEWEE_BACKENDS = ("sqlite", *SERVER_KINDS)
ALL_BACKENDS = ("memory", *PEEWEE_BACKENDS)
#: The contract suite's backends: the async store's too, through ``LoopStore``.
CONTRACT_BACKENDS = (*ALL_BACKENDS, *ASYNC_BACKENDS)
_prefixes = itertools.count()
T = TypeVar("T")

Store = InMemoryStateStore | PeeweeStateStore
AnyStore = Store | LoopStore


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
def open_any_store(
    kind: str, url_for: Callable[[str], str], clock: Callable[[], int] | None = None
) -> Iterator[AnyStore]:
    """``open_store``, and for an async backend a LoopStore, dropped afterwards."""
    if kind not in ASYNC_BACKENDS:
        with open_store(kind, url_for, clock) as store:
            yield store
        return
    loop_store = make_loop_store(url_for(kind), table_prefix=new_prefix(), clock=clock)
    try:
        loop_store.create_tables()
        yield loop_store
    finally:
        try:
            loop_store.drop_tables()
        finally:
            loop_store.close()


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


def with_clock(store: AnyStore, clock: Callable[[], int]) -> AnyStore:
    """A store of ``store``'s kind on its tables (a fresh one for memory) reading ``clock``."""
    if isinstance(store, PeeweeStateStore):
        return PeeweeStateStore(store.database, table_prefix=store.table_prefix, clock=clock)
    if isinstance(store, LoopStore):
        return store.with_clock(clock)
    return InMemoryStateStore(clock=clock)


def on_tables(store: PeeweeStateStore | LoopStore, fn: Callable[[], T]) -> T:
    """``fn()``, Peewee code over the store's tables, where the store's database runs it."""
    if isinstance(store, LoopStore):
        return store.in_loop(fn)
    return fn()


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
