"""The end-to-end row: prepare_job in one process, then Worker.run with a no-op processor
in several, against the raw driver's pipeline doing the same job (``raw.RawPipeline``).

The processes of both sides start here (spawned: each imports everything and connects
before the clock starts, behind a barrier); records/s of each side, and each library
process's peak RSS.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import statistics
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from common import Bench, Row, Target, peak_rss_mb, rate, source_record
from raw import RawPipeline, noop

from batchactions_peewee import JobStatus, PeeweeStateStore, Worker, prepare_job


def _e2e_prepare(target: Target, prefix: str, count: int, batch_size: int, results: Any) -> None:
    try:
        store = PeeweeStateStore(target.peewee(), table_prefix=prefix)
        source = (source_record(i) for i in range(count))
        started = time.perf_counter()
        job = prepare_job(store, source, batch_size=batch_size)
        results.put((job.job_id, time.perf_counter() - started, peak_rss_mb(), ""))
    except BaseException:
        results.put(("", 0.0, peak_rss_mb(), traceback.format_exc(limit=3)))


def _e2e_work(
    target: Target, prefix: str, job_id: str, ready: Any, start: Any, results: Any
) -> None:
    try:
        store = PeeweeStateStore(target.peewee(), table_prefix=prefix)
        store.tables  # resolve the dialect before the clock starts  # noqa: B018
        ready.put(os.getpid())
        start.wait()
        summary = Worker(store, noop).run(job_id)
        results.put((summary.processed, summary.failed, time.perf_counter(), peak_rss_mb(), ""))
    except BaseException:
        results.put((0, 0, time.perf_counter(), peak_rss_mb(), traceback.format_exc(limit=3)))


def _raw_e2e_prepare(
    target: Target, prefix: str, count: int, batch_size: int, results: Any
) -> None:
    raw = target.raw()
    try:
        source = (source_record(i) for i in range(count))
        started = time.perf_counter()
        job_id, _ = RawPipeline(raw, prefix).prepare(source, batch_size)
        results.put((job_id, time.perf_counter() - started, peak_rss_mb(), ""))
    except BaseException:
        results.put(("", 0.0, peak_rss_mb(), traceback.format_exc(limit=3)))
    finally:
        raw.close()


def _raw_e2e_work(
    target: Target, prefix: str, job_id: str, ready: Any, start: Any, results: Any
) -> None:
    raw = target.raw()
    try:
        pipeline = RawPipeline(raw, prefix)
        ready.put(os.getpid())
        start.wait()
        processed = pipeline.work(job_id, f"raw-{os.getpid()}")
        results.put((processed, 0, time.perf_counter(), peak_rss_mb(), ""))
    except BaseException:
        results.put((0, 0, time.perf_counter(), peak_rss_mb(), traceback.format_exc(limit=3)))
    finally:
        raw.close()


@dataclass(frozen=True)
class E2E:
    """One side's end-to-end run."""

    prepare_s: float
    work_s: float
    done_s: float  # from the start of the work to the job's completedAt
    prepare_rss: float
    worker_rss: list[float]
    problems: list[str]

    def overall(self, n: int) -> float:
        return n / (self.prepare_s + self.work_s)


def run_e2e(b: Bench, side: str, prefix: str) -> E2E:
    """prepare_job (or the raw prepare) in one process, then the workers in several."""
    s = b.sizes
    n, procs_n = s.e2e_records, s.e2e_processes
    target = b.target if side == "library" else b.raw_target
    store = b.store(prefix, side=side)
    prepare, work = (
        (_e2e_prepare, _e2e_work) if side == "library" else (_raw_e2e_prepare, _raw_e2e_work)
    )
    ctx = mp.get_context("spawn")
    results: Any = ctx.Queue()
    prep = ctx.Process(target=prepare, args=(target, prefix, n, s.batch_size, results))
    prep.start()
    job_id, prepare_s, prepare_rss, error = results.get(timeout=1800)
    prep.join()
    if error:
        return E2E(prepare_s, 0.0, 0.0, prepare_rss, [], [error.strip().splitlines()[-1]])
    ready: Any = ctx.Queue()
    start = ctx.Event()
    workers = [
        ctx.Process(target=work, args=(target, prefix, job_id, ready, start, results))
        for _ in range(procs_n)
    ]
    for w in workers:
        w.start()
    for _ in workers:
        ready.get(timeout=120)
    started, started_ms = time.perf_counter(), store.now()
    start.set()
    outcomes = [results.get(timeout=1800) for _ in workers]
    for w in workers:
        w.join()
    work_s = max(o[2] for o in outcomes) - started
    processed = sum(o[0] for o in outcomes)
    problems = [o[4].strip().splitlines()[-1] for o in outcomes if o[4]]
    if processed != n:
        problems.append(f"{processed:,} of {n:,} records processed")
    job = store.get_job_state(job_id)
    if job is None or job.status != JobStatus.COMPLETED:
        problems.append(f"job ended {job.status.value if job else 'missing'}")
    # The job is complete before the last worker returns (a worker that found no batch left
    # polls for the others' batches): report both. completed_at is on the store's clock.
    done_s = max(0.001, ((job.completed_at or 0) - started_ms) / 1000) if job else work_s
    return E2E(prepare_s, work_s, done_s, prepare_rss, [o[3] for o in outcomes], problems)


def row_e2e(b: Bench) -> list[Row]:
    """prepare_job of the records in one process, then Worker.run in several processes with
    a no-op processor, against the raw driver's pipeline doing the same (RawPipeline);
    records/s and each process's peak RSS."""
    s = b.sizes
    n, procs_n = s.e2e_records, s.e2e_processes
    what = f"end to end, {n:,} records, {procs_n} processes"
    target_text = ">= 50k records/s on SQLite" if b.kind == "sqlite" else "report"
    # Whole runs, the sides alternating and who goes first rotating (as the bulk rows do
    # step by step): runs are long, and the machine's load changes from one to the next.
    libs: list[E2E] = []
    raws: list[E2E] = []
    for round_ in range(s.e2e_rounds):
        sides = [("library", "el_", libs), ("raw", "er_", raws)]
        for side, prefix, runs in sides if round_ % 2 == 0 else reversed(sides):
            runs.append(run_e2e(b, side, prefix))
            b.drop_all()
    problems = [p for e in libs for p in e.problems] + [
        f"raw: {p}" for e in raws for p in e.problems
    ]
    if problems:
        return [Row(b.kind, what, "-", "-", None, target_text, "FAILED: " + "; ".join(problems))]
    overall = statistics.median(e.overall(n) for e in libs)
    verdict = "ok" if b.kind != "sqlite" or overall >= 50_000 else "MISSED"
    rounds = f", median of {s.e2e_rounds} runs" if s.e2e_rounds > 1 else ""

    def median_rate(runs: list[E2E], seconds: Callable[[E2E], float]) -> str:
        return rate(statistics.median(n / seconds(e) for e in runs))

    def phases(runs: list[E2E]) -> str:
        return (
            f"prepare {median_rate(runs, lambda e: e.prepare_s)}, "
            f"work {median_rate(runs, lambda e: e.work_s)} "
            f"({median_rate(runs, lambda e: e.done_s)})"
        )

    return [
        Row(
            b.kind,
            what + f" (prepare + work{rounds})",
            rate(overall),
            f"{rate(statistics.median(e.overall(n) for e in raws))} (raw pipeline)",
            statistics.median(
                lib.overall(n) / raw.overall(n) for lib, raw in zip(libs, raws, strict=True)
            ),
            target_text,
            verdict,
        ),
        Row(
            b.kind,
            "  phases: prepare (1 process), work (to job completion); ratio: work",
            phases(libs),
            phases(raws),
            statistics.median(raw.work_s / lib.work_s for lib, raw in zip(libs, raws, strict=True)),
            "report",
            "ok",
        ),
        Row(
            b.kind,
            "end to end: peak RSS per process (largest run)",
            "workers "
            + "/".join(f"{r:.0f}" for r in max((e.worker_rss for e in libs), key=max))
            + " MB",
            f"prepare {max(e.prepare_rss for e in libs):.0f} MB",
            None,
            "report",
            "ok",
        ),
    ]
