"""Kill storm: worker processes SIGKILLed at random, again and again, and replaced.

4 worker processes share a 50,000-record job (100 batches of 500, a no-op processor, 2 s
leases) on SQLite and on MariaDB. Every 0.05-0.25 s, if a batch was completed since its
last kills (so that a slow machine still gets on), the test SIGKILLs one or two random
live workers and starts as many replacements, until fewer than 12 batches are PENDING (so no
finalizer is killed between finalizing and printing its summary: a killed worker prints
nothing). Their batches stay PROCESSING until the lease runs out; then a live worker
reclaims and redoes them. The outcome must be as if nothing had happened: every record
processed exactly once, every batch COMPLETED, the job COMPLETED by exactly one worker, and
the SQLite file intact (``PRAGMA integrity_check``). Each run prints its kills and timing
(run with -s to see them).
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from batchactions_peewee import PeeweeStateStore, prepare_job

from ..support.faults import (
    DEADLINE_S,
    WorkerPool,
    assert_done_exactly_once,
    batches_taken_over,
    own_server_database,
    store_on,
    worker_pool,
)

pytestmark = pytest.mark.slow

RECORDS = 50_000
BATCH_SIZE = 500
WORKERS = 4
#: The storm stops while this many batches are still PENDING: no finalizer can be killed.
CALM_BELOW_PENDING = 12


@contextmanager
def database_url(kind: str, url_for: Callable[[str], str]) -> Iterator[str]:
    if kind == "sqlite":
        yield url_for("sqlite")
    else:
        with own_server_database(kind) as url:
            yield url


def storm(pool: WorkerPool, store: PeeweeStateStore, job_id: str, rng: random.Random) -> int:
    """SIGKILL random workers and start replacements until the job nears its end; returns
    how many workers were killed."""
    kills = completed = 0
    deadline = time.monotonic() + DEADLINE_S
    while time.monotonic() < deadline:
        time.sleep(rng.uniform(0.05, 0.25))
        status = store.get_distributed_status(job_id)
        if status.pending_batches < CALM_BELOW_PENDING:
            return kills
        if status.completed_batches == completed:
            continue  # no batch done since the last kills: a slow machine gets to go on
        completed = status.completed_batches
        alive = pool.alive()
        for victim in rng.sample(alive, k=min(len(alive), rng.choice((1, 1, 2)))):
            pool.kill(victim)
            pool.start()
            kills += 1
    raise AssertionError("the job never neared its end")


@pytest.mark.parametrize("kind", ["sqlite", "mysql"])
def test_random_sigkills_of_workers_leave_each_record_done_exactly_once(
    kind: str, url_for: Callable[[str], str], tmp_path: Path
) -> None:
    rng = random.Random(4242)
    with database_url(kind, url_for) as url, store_on(url) as store:
        job = prepare_job(store, ({"n": i} for i in range(RECORDS)), batch_size=BATCH_SIZE)
        started = time.monotonic()
        with worker_pool(url, store, job.job_id, tmp_path) as pool:
            for _ in range(WORKERS):
                pool.start()
            kills = storm(pool, store, job.job_id, rng)
            pool.wait()
            summaries = pool.summaries()
        elapsed = time.monotonic() - started

        print(
            f"\n[kill storm {kind}] {RECORDS} records: {kills} workers SIGKILLed and replaced "
            f"({len(pool.workers)} processes in all), batches taken over from a dead worker: "
            f"{batches_taken_over(store, job.job_id)}, leases lost: "
            f"{sum(s['leases_lost'] for s in summaries)}, {elapsed:.1f} s"
        )
        assert kills >= 3, "the job neared its end before the storm got going"
        assert_done_exactly_once(store, job.job_id, RECORDS)
        assert [s["finalized"] for s in summaries].count(True) == 1
        assert sum(s["batches"] for s in summaries) <= job.total_batches
        if kind == "sqlite":
            cursor: Any = store.database.execute_sql("PRAGMA integrity_check")
            assert [row[0] for row in cursor.fetchall()] == ["ok"]
