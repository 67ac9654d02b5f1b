"""The concurrency rows: one worker process whose processor waits 20 ms a record
(``time.sleep`` in a plain function, ``asyncio.sleep`` in an ``async def``), at
``Worker(concurrency=N)`` for N = 1, 8, 64 and 256: records/s against the bound N / 20 ms,
and the CPU time of the worker process per 10,000 records against concurrency 1's.

Each job has at least one full batch (``concurrency_batch_size`` records) and enough full
batches to last ``concurrency_seconds`` at the bound, so that the per-batch costs weigh the
same on every row (concurrency 1 therefore runs a whole batch: 20 s). The job is prepared
here, untimed; the worker process is spawned, imports everything and connects before the
clock starts (behind an event), and measures its own ``Worker.run``: wall time and
``time.process_time()`` (every thread of the process: the pool's, the loop's and the lease
thread's). Every row runs ``concurrency_runs`` times, sync and async alternating, and
reports its better run: the highest rate, the lowest CPU.
"""

from __future__ import annotations

import asyncio
import functools
import math
import multiprocessing as mp
import os
import time
import traceback
from dataclasses import dataclass
from typing import Any

from common import Bench, Row, Target, at_least, rate, source_record

from batchactions_peewee import JobStatus, PeeweeStateStore, ProcessingContext, Worker, prepare_job

KINDS = ("sync", "async")
#: The issue's targets: >= 0.8x of the bound up to this many in flight, >= ASYNC_RATE records/s
#: for an async processor at ASYNC_AT in flight, CPU per record <= CPU_RATIO x concurrency 1's.
BOUND_UP_TO = 64
ASYNC_AT, ASYNC_RATE = 256, 5000
CPU_RATIO = 1.5


def wait_sync(record: dict[str, Any], context: ProcessingContext, *, seconds: float) -> None:
    time.sleep(seconds)


async def wait_async(record: dict[str, Any], context: ProcessingContext, *, seconds: float) -> None:
    await asyncio.sleep(seconds)


def _work(
    target: Target,
    prefix: str,
    job_id: str,
    kind: str,
    concurrency: int,
    seconds: float,
    ready: Any,
    start: Any,
    results: Any,
) -> None:
    try:
        store = PeeweeStateStore(target.peewee(), table_prefix=prefix)
        store.tables  # resolve the dialect before the clock starts  # noqa: B018
        wait = wait_sync if kind == "sync" else wait_async
        worker = Worker(store, functools.partial(wait, seconds=seconds), concurrency=concurrency)
        ready.put(os.getpid())
        start.wait()
        cpu, started = time.process_time(), time.perf_counter()
        summary = worker.run(job_id)
        wall, cpu = time.perf_counter() - started, time.process_time() - cpu
        results.put((summary.processed, wall, cpu, ""))
    except BaseException:
        results.put((0, 0.0, 0.0, traceback.format_exc(limit=3)))


@dataclass(frozen=True)
class Run:
    records: int
    wall_s: float
    cpu_s: float

    @property
    def rate(self) -> float:
        return self.records / self.wall_s

    @property
    def cpu_per_10k(self) -> float:
        return self.cpu_s / self.records * 10_000


def records_for(b: Bench, concurrency: int) -> int:
    """Full batches enough to last ``concurrency_seconds`` at the bound; one at least."""
    s = b.sizes
    bound = concurrency * 1000 / s.concurrency_wait_ms
    batches = max(1, math.ceil(bound * s.concurrency_seconds / s.concurrency_batch_size))
    return batches * s.concurrency_batch_size


def run_once(b: Bench, kind: str, concurrency: int) -> Run:
    """Prepare a job and run one worker process over it."""
    s = b.sizes
    n = records_for(b, concurrency)
    prefix = "cc_"
    store = b.store(prefix)
    source = (source_record(i) for i in range(n))
    job_id = prepare_job(store, source, batch_size=s.concurrency_batch_size).job_id
    ctx = mp.get_context("spawn")
    ready: Any = ctx.Queue()
    results: Any = ctx.Queue()
    start = ctx.Event()
    seconds = s.concurrency_wait_ms / 1000
    args = (b.target, prefix, job_id, kind, concurrency, seconds, ready, start, results)
    process = ctx.Process(target=_work, args=args)
    process.start()
    try:
        ready.get(timeout=120)
        start.set()
        processed, wall, cpu, error = results.get(timeout=1800)
    finally:
        process.join()
    if error:
        raise RuntimeError(error.strip().splitlines()[-1])
    if processed != n:
        raise RuntimeError(f"{processed:,} of {n:,} records processed")
    job = store.get_job_state(job_id)
    if job is None or job.status != JobStatus.COMPLETED:
        raise RuntimeError(f"job ended {job.status.value if job else 'missing'}")
    b.drop_all()
    return Run(n, wall, cpu)


def row_concurrency(b: Bench) -> list[Row]:
    """Each level and kind, its better run, against the bound and concurrency 1's CPU."""
    s = b.sizes
    runs: dict[tuple[str, int], list[Run]] = {}
    for level in s.concurrency_levels:
        for r in range(s.concurrency_runs):
            for kind in KINDS if r % 2 == 0 else reversed(KINDS):
                runs.setdefault((kind, level), []).append(run_once(b, kind, level))
    first = s.concurrency_levels[0]
    rows: list[Row] = []
    for level in s.concurrency_levels:
        for kind in KINDS:
            rows += _rows(b, kind, level, runs[kind, level], runs[kind, first], first)
    return rows


def _rows(
    b: Bench, kind: str, level: int, runs: list[Run], base: list[Run], first: int
) -> list[Row]:
    s = b.sizes
    wait = f"{s.concurrency_wait_ms:g} ms"
    better = f", better of {len(runs)} runs" if len(runs) > 1 else ""
    best_rate = max(r.rate for r in runs)
    cpu, base_cpu = min(r.cpu_per_10k for r in runs), min(r.cpu_per_10k for r in base)
    bound = level * 1000 / s.concurrency_wait_ms
    ratio = best_rate / bound
    if level <= BOUND_UP_TO:
        target, verdict = ">= 0.8x", at_least(ratio, 0.8)
    elif kind == "async" and level == ASYNC_AT:
        target = f">= {ASYNC_RATE:,}/s"
        verdict = "ok" if best_rate >= ASYNC_RATE else "MISSED"
    else:
        target, verdict = "report", "ok"
    cpu_ratio = cpu / base_cpu
    if level == first:
        cpu_target, cpu_verdict = "report", "ok"
    else:
        cpu_target, cpu_verdict = f"<= {CPU_RATIO}x", "ok" if cpu_ratio <= CPU_RATIO else "MISSED"
    records = runs[0].records
    return [
        Row(
            b.kind,
            f"concurrency {level}, {kind}, {wait}/record, {records:,} records in batches of "
            f"{s.concurrency_batch_size:,} (records/s{better})",
            rate(best_rate),
            f"{rate(bound)} (bound: {level} / {wait})",
            ratio,
            target,
            verdict,
        ),
        Row(
            b.kind,
            f"  CPU s per 10k records, worker process (against concurrency {first}, {kind})",
            f"{cpu:.2f} s",
            f"{base_cpu:.2f} s",
            cpu_ratio,
            cpu_target,
            cpu_verdict,
        ),
    ]
