"""The write-volume row: a whole job measured against the physical limit of the shared
tables (``raw.RawMinimal``: each record inserted once, pending, and its status set by one
set-based UPDATE per batch, from JSON text ready-made).

Three sides, each a job of the same records: prepare in one process, then the workers in
several (spawned: each imports everything and connects before the clock starts, behind a
barrier). ``limit`` is RawMinimal; ``no-op`` is prepare_job then Worker.run with a no-op
processor; ``schema`` the same with a validating schema that coerces nothing. Each side
reports records/s (prepare + work), CPU seconds per 1M records summed over every process
(the figure that holds on a shared machine), the bytes written (on SQLite what the
processes sent to the storage layer, /proc/self/io write_bytes; on the servers their own
counters: MariaDB's Innodb_data_written, PostgreSQL's pg_stat_wal wal_bytes, both
server-wide) and each process's peak RSS; the library's as ratios to the limit's.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import time
import traceback
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pydantic
from common import Bench, Row, Target, peak_rss_mb, rate, source_record
from raw import RawMinimal, noop, source_text

from batchactions_peewee import JobStatus, PeeweeStateStore, Worker, prepare_job

SIDES = ("limit", "no-op", "schema")


class Contact(pydantic.BaseModel):
    """The validating schema: every field of ``source_record``, none coerced."""

    email: str
    name: str
    age: int
    tags: list[str]


def _written_bytes() -> int:
    """What this process sent to the storage layer so far (Linux)."""
    with suppress(OSError):
        for line in Path("/proc/self/io").read_text().splitlines():
            if line.startswith("write_bytes:"):
                return int(line.split()[1])
    return 0


@dataclass(frozen=True)
class Measured:
    """One process's share of a run."""

    result: str  # the job id (prepare) or the records processed (work)
    seconds: float
    cpu_s: float
    written: int
    rss_mb: float
    error: str = ""


def _measure(action: Any) -> Measured:
    cpu, io, started = time.process_time(), _written_bytes(), time.perf_counter()
    try:
        result = str(action())
        error = ""
    except BaseException:
        result, error = "", traceback.format_exc(limit=3)
    return Measured(
        result,
        time.perf_counter() - started,
        time.process_time() - cpu,
        _written_bytes() - io,
        peak_rss_mb(),
        error,
    )


def _prepare(side: str, target: Target, prefix: str, n: int, batch_size: int, out: Any) -> None:
    if side == "limit":
        raw = target.raw()
        pipeline = RawMinimal(raw, prefix)
        texts = (source_text(i) for i in range(n))
        out.put(_measure(lambda: pipeline.prepare_texts(texts, batch_size)[0]))
        raw.close()
        return
    store = PeeweeStateStore(target.peewee(), table_prefix=prefix)
    source = (source_record(i) for i in range(n))
    out.put(_measure(lambda: prepare_job(store, source, batch_size=batch_size).job_id))


def _work(
    side: str, target: Target, prefix: str, job_id: str, ready: Any, start: Any, out: Any
) -> None:
    if side == "limit":
        raw = target.raw()
        pipeline = RawMinimal(raw, prefix)
        ready.put(os.getpid())
        start.wait()
        out.put(_measure(lambda: pipeline.work(job_id, f"limit-{os.getpid()}")))
        raw.close()
        return
    store = PeeweeStateStore(target.peewee(), table_prefix=prefix)
    store.tables  # resolve the dialect before the clock starts  # noqa: B018
    worker = Worker(store, noop, schema=Contact if side == "schema" else None)
    ready.put(os.getpid())
    start.wait()
    out.put(_measure(lambda: worker.run(job_id).processed))


@dataclass(frozen=True)
class Run:
    """One side's job."""

    seconds: float  # prepare + work (to the last worker's return)
    cpu_s: float  # every process's
    prepare_s: float
    prepare_cpu_s: float
    written: int  # bytes: the processes' (SQLite) or the server's counter
    prepare_rss: float
    worker_rss: list[float]
    problems: list[str]


def _server_written(b: Bench) -> int:
    """The server's bytes-written counter (0 on SQLite, where the processes count)."""
    if b.kind == "mysql":
        row = b.admin.fetchone("SHOW GLOBAL STATUS LIKE 'Innodb_data_written'")
        return int(row[1])
    if b.kind == "postgres":
        return int(b.admin.fetchone("SELECT wal_bytes FROM pg_stat_wal")[0])
    return 0


def run_side(b: Bench, side: str, prefix: str) -> Run:
    """The side's job: prepare in one process, then the workers."""
    s = b.sizes
    n, procs_n = s.e2e_records, s.e2e_processes
    target = b.target if side != "limit" else b.raw_target
    store = b.store(prefix, side="library" if side != "limit" else "raw")
    ctx = mp.get_context("spawn")
    out: Any = ctx.Queue()
    before = _server_written(b)
    prep = ctx.Process(target=_prepare, args=(side, target, prefix, n, s.batch_size, out))
    prep.start()
    prepared: Measured = out.get(timeout=3600)
    prep.join()
    if prepared.error:
        return Run(0, 0, 0, 0, 0, prepared.rss_mb, [], [prepared.error.strip().splitlines()[-1]])
    job_id = prepared.result
    ready: Any = ctx.Queue()
    start = ctx.Event()
    workers = [
        ctx.Process(target=_work, args=(side, target, prefix, job_id, ready, start, out))
        for _ in range(procs_n)
    ]
    for w in workers:
        w.start()
    for _ in workers:
        ready.get(timeout=120)
    started = time.perf_counter()
    start.set()
    done: list[Measured] = [out.get(timeout=3600) for _ in workers]
    work_s = time.perf_counter() - started
    for w in workers:
        w.join()
    written = _server_written(b) - before
    everyone = [prepared, *done]
    if b.kind == "sqlite":
        written = sum(m.written for m in everyone)
    problems = [m.error.strip().splitlines()[-1] for m in done if m.error]
    processed = sum(int(m.result or 0) for m in done)
    if processed != n:
        problems.append(f"{processed:,} of {n:,} records processed")
    job = store.get_job_state(job_id)
    if job is None or job.status != JobStatus.COMPLETED:
        problems.append(f"job ended {job.status.value if job else 'missing'}")
    return Run(
        prepared.seconds + work_s,
        sum(m.cpu_s for m in everyone),
        prepared.seconds,
        prepared.cpu_s,
        written,
        prepared.rss_mb,
        [m.rss_mb for m in done],
        problems,
    )


def row_volume(b: Bench) -> list[Row]:
    """The job of each side once (the limit first), then its lines: records/s, CPU s per
    1M records, bytes written, peak RSS; the library's as ratios to the limit's."""
    s = b.sizes
    n, procs_n = s.e2e_records, s.e2e_processes
    runs: dict[str, Run] = {}
    for side in SIDES:
        runs[side] = run_side(b, side, f"v{side[0]}_")
        b.drop_all()
    what = f"volume, {n:,} records, {procs_n} processes"
    problems = [f"{side}: {p}" for side, r in runs.items() for p in r.problems]
    if problems:
        return [Row(b.kind, what, "-", "-", None, "report", "FAILED: " + "; ".join(problems))]
    limit = runs["limit"]
    per_m = 1_000_000 / n
    rows = [
        Row(
            b.kind,
            f"{what}: physical limit (records/s; CPU s/1M; written; RSS)",
            rate(n / limit.seconds),
            f"{limit.cpu_s * per_m:.1f} CPU s/1M; {limit.written / 2**20:,.1f} MiB; "
            f"{max(limit.worker_rss):.0f} MB",
            None,
            "the baseline",
            "ok",
        )
    ]
    for side in SIDES[1:]:
        r = runs[side]
        speed = (n / r.seconds) / (n / limit.seconds)
        fast_enough = b.kind != "sqlite" or (n / r.seconds >= 60_000 and speed >= 0.6)
        rows += [
            Row(
                b.kind,
                f"  {side}: records/s (prepare + work)",
                rate(n / r.seconds),
                rate(n / limit.seconds),
                speed,
                ">= 60k/s on SQLite; >= 0.6x",
                "ok" if fast_enough and speed >= 0.6 else "MISSED",
            ),
            Row(
                b.kind,
                f"  {side}: CPU s per 1M records, every process",
                f"{r.cpu_s * per_m:.1f} s",
                f"{limit.cpu_s * per_m:.1f} s",
                r.cpu_s / limit.cpu_s,
                "<= 2x",
                "ok" if r.cpu_s <= 2 * limit.cpu_s else "MISSED",
            ),
            Row(
                b.kind,
                f"  {side}: phases, prepare (1 process) / work: seconds, CPU s",
                f"{r.prepare_s:.1f} / {r.seconds - r.prepare_s:.1f} s, "
                f"{r.prepare_cpu_s * per_m:.1f} / {(r.cpu_s - r.prepare_cpu_s) * per_m:.1f} s",
                f"{limit.prepare_s:.1f} / {limit.seconds - limit.prepare_s:.1f} s, "
                f"{limit.prepare_cpu_s * per_m:.1f} / "
                f"{(limit.cpu_s - limit.prepare_cpu_s) * per_m:.1f} s",
                None,
                "report",
                "ok",
            ),
            Row(
                b.kind,
                f"  {side}: bytes written",
                f"{r.written / 2**20:,.1f} MiB",
                f"{limit.written / 2**20:,.1f} MiB",
                r.written / limit.written if limit.written else None,
                "report",
                "ok",
            ),
            Row(
                b.kind,
                f"  {side}: peak RSS per process, MB (prepare; workers)",
                f"{r.prepare_rss:.0f}; " + "/".join(f"{m:.0f}" for m in r.worker_rss),
                f"{limit.prepare_rss:.0f}; " + "/".join(f"{m:.0f}" for m in limit.worker_rss),
                max(r.worker_rss) / max(limit.worker_rss),
                "flat in records",
                "ok",
            ),
        ]
    return rows
