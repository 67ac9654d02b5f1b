"""The claim + complete rows: claim_batch + complete_batch until no batch is pending, with
1, 4 and 16 threads and with several processes, against the raw loop (``raw.raw_cycles``).

Each side runs once per concurrency on a fresh job, from a barrier; the row then checks
that every batch was completed exactly once and that no worker stopped while work was left.
"""

from __future__ import annotations

import multiprocessing as mp
import statistics
import threading
import time
import traceback
from typing import Any

from common import Bench, Row, Target, new_id, rate, setup_job, timed
from raw import CycleOutcome, raw_cycles

from batchactions_peewee import ClaimFailureReason, PeeweeStateStore


def library_cycles(store: PeeweeStateStore, job_id: str, worker_id: str) -> CycleOutcome:
    """claim_batch + complete_batch until NO_PENDING_BATCHES."""
    out = CycleOutcome()
    try:
        while True:
            claim = store.claim_batch(job_id, worker_id)
            if claim.reservation is None:
                if claim.reason != ClaimFailureReason.NO_PENDING_BATCHES:
                    raise AssertionError(f"claim refused: {claim.reason}")
                return out
            if not store.complete_batch(claim.reservation, processed_count=0, failed_count=0):
                raise AssertionError("complete_batch refused a reservation just claimed")
            out.cycles += 1
    except Exception as exc:
        out.errors += 1
        out.first_error = f"{type(exc).__name__}: {exc}"
        return out
    finally:
        store.database.close()


def run_cycles(
    target: Target,
    side: str,
    prefix: str,
    job_id: str,
    worker_id: str,
    store: PeeweeStateStore | None = None,
) -> CycleOutcome:
    if side == "library":
        own = store or PeeweeStateStore(target.peewee(), table_prefix=prefix)
        return library_cycles(own, job_id, worker_id)
    raw = target.raw()
    try:
        return raw_cycles(raw, f"{prefix}batches", job_id, worker_id)
    finally:
        raw.close()


def cycles_in_threads(
    target: Target, side: str, prefix: str, job_id: str, threads: int, store: PeeweeStateStore
) -> tuple[float, CycleOutcome]:
    results: list[CycleOutcome] = []
    gate = threading.Barrier(threads + 1)
    lock = threading.Lock()

    def work(n: int) -> None:
        raw = target.raw() if side == "raw" else None
        gate.wait()
        if raw is None:
            out = library_cycles(store, job_id, f"t{n}")
        else:
            try:
                out = raw_cycles(raw, f"{prefix}batches", job_id, f"t{n}")
            finally:
                raw.close()
        with lock:
            results.append(out)

    pool = [threading.Thread(target=work, args=(n,)) for n in range(threads)]
    for t in pool:
        t.start()
    gate.wait()
    started = time.perf_counter()
    for t in pool:
        t.join()
    elapsed = time.perf_counter() - started
    total = CycleOutcome()
    for out in results:
        total.add(out)
    return elapsed, total


def _cycle_process(
    target: Target,
    side: str,
    prefix: str,
    job_id: str,
    n: int,
    ready: Any,
    start: Any,
    results: Any,
) -> None:
    try:
        store = PeeweeStateStore(target.peewee(), table_prefix=prefix)
        store.tables  # resolve the dialect before the clock starts  # noqa: B018
        ready.put(n)
        start.wait()
        out = run_cycles(
            target, side, prefix, job_id, f"p{n}", store if side == "library" else None
        )
        results.put((out.cycles, out.errors, out.first_error, time.perf_counter()))
    except BaseException:
        results.put((0, 1, traceback.format_exc(limit=3), time.perf_counter()))


def cycles_in_processes(
    target: Target, side: str, prefix: str, job_id: str, processes: int
) -> tuple[float, CycleOutcome]:
    ctx = mp.get_context("spawn")
    ready: Any = ctx.Queue()
    results: Any = ctx.Queue()
    start = ctx.Event()
    procs = [
        ctx.Process(
            target=_cycle_process, args=(target, side, prefix, job_id, n, ready, start, results)
        )
        for n in range(processes)
    ]
    for proc in procs:
        proc.start()
    for _ in procs:
        ready.get(timeout=120)
    started = time.perf_counter()
    start.set()
    total = CycleOutcome()
    ends = []
    for _ in procs:
        cycles, errors, first, end = results.get(timeout=900)
        total.add(CycleOutcome(cycles, errors, first))
        ends.append(end)
    for proc in procs:
        proc.join()
    return max(ends) - started, total


def cycles_check(
    b: Bench, side: str, prefix: str, job_id: str, expected: int, out: CycleOutcome
) -> str:
    """No errors, every batch COMPLETED exactly once, nobody stopped while work was left."""
    conn = b.admin if side == "library" else b.raw
    q, p = conn.q, conn.p
    row = conn.fetchone(
        f"SELECT COUNT(*), SUM(CASE WHEN {q('status')} = 'COMPLETED' AND {q('version')} = 2 "
        f"THEN 1 ELSE 0 END) FROM {q(prefix + 'batches')} WHERE {q('jobId')} = {p}",
        (job_id,),
    )
    total, completed = int(row[0]), int(row[1] or 0)
    problems = []
    if out.errors:
        problems.append(f"{out.errors} errors ({out.first_error[:80]})")
    if completed != expected or total != expected:
        problems.append(f"{expected - completed} batches left or double-claimed: spurious stop")
    if out.cycles != expected:
        problems.append(f"{out.cycles} cycles counted, {expected} expected")
    return "FAILED: " + "; ".join(problems) if problems else "ok"


def row_cycles(b: Bench) -> list[Row]:
    """claim + complete cycles/s with threads and processes, against the raw loop."""
    s = b.sizes
    n = s.cycle_batches
    lib_prefix, raw_prefix = "yl_", "yr_"
    lib = b.store(lib_prefix)
    raw_store = b.store(raw_prefix, side="raw")
    modes = [("threads", t) for t in s.threads] + [("processes", s.processes)]
    rows = []
    for mode, count in modes:
        lib_rates: list[float] = []
        raw_rates: list[float] = []
        verdicts: list[str] = []
        for r in range(s.cycle_rounds):
            for side in ("library", "raw") if r % 2 == 0 else ("raw", "library"):
                store = lib if side == "library" else raw_store
                prefix = lib_prefix if side == "library" else raw_prefix
                job_id = new_id("j")
                setup_job(store, job_id, n, 1, with_records=False)
                target = b.target if side == "library" else b.raw_target
                if mode == "threads":
                    elapsed, out = cycles_in_threads(target, side, prefix, job_id, count, lib)
                else:
                    elapsed, out = cycles_in_processes(target, side, prefix, job_id, count)
                (lib_rates if side == "library" else raw_rates).append(out.cycles / elapsed)
                verdicts.append(cycles_check(b, side, prefix, job_id, n, out))
        lib_rate, raw_rate = statistics.median(lib_rates), statistics.median(raw_rates)
        ratios = [a / c for a, c in zip(lib_rates, raw_rates, strict=True)]
        bad = [v for v in verdicts if v != "ok"]
        rows.append(
            Row(
                b.kind,
                f"claim + complete, {count} {mode}, {n} batches (cycles/s)",
                rate(lib_rate),
                rate(raw_rate),
                statistics.median(ratios),
                "report; no errors, no spurious stops",
                bad[0] if bad else "ok",
            )
        )

    def one_thread() -> None:
        job_id = new_id("j")
        setup_job(lib, job_id, n, 1, with_records=False)
        timed(lambda: library_cycles(lib, job_id, "profiled"))

    b.profile("claim_complete_cycles", one_thread)
    b.drop_all()
    return rows
