"""Shared by the coordination tests: a fake clock, job builders and stores on one database."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import peewee as pw

from batchactions_peewee import (
    Batch,
    BatchStatus,
    InMemoryStateStore,
    JobConfig,
    JobState,
    JobStatus,
    PeeweeStateStore,
)

from .backends import open_database
from .conftest import make_store

START_MS = 1_700_000_000_000
Store = InMemoryStateStore | PeeweeStateStore


class FakeClock:
    """A mutable clock in epoch ms, injected into a store as ``clock=``."""

    def __init__(self, now: int = START_MS) -> None:
        self.now = now

    def __call__(self) -> int:
        return self.now

    def advance(self, ms: int) -> None:
        self.now += ms


def distributed_job(
    batches: int, records_per_batch: int = 1, started_at: int = START_MS
) -> JobState:
    """A PROCESSING distributed job whose batches are all PENDING, with fresh unique ids."""
    return JobState(
        id=uuid.uuid4().hex,
        config=JobConfig(batch_size=records_per_batch),
        status=JobStatus.PROCESSING,
        batches=[
            Batch(
                id=uuid.uuid4().hex,
                index=i,
                status=BatchStatus.PENDING,
                record_start_index=i * records_per_batch,
                record_end_index=(i + 1) * records_per_batch - 1,  # inclusive
            )
            for i in range(batches)
        ],
        total_records=batches * records_per_batch,
        started_at=started_at,
        distributed=True,
    )


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
