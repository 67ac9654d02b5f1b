"""The import row: a CSV file loaded into a user table, by the library (a job, and a
transactional batch processor calling ``insert_many``) against the raw driver.

Three sides, each with a user table of the same DDL (Peewee's, no unique key):

- **library**: ``prepare_job`` of the CSV (``csv.DictReader``) in one process, then
  ``Worker.run`` in several with ``batch_processor=import_batch, transactional=True``: each
  batch's rows go into the user table by Peewee's ``insert_many``, in the transaction of
  the batch's fenced completion.
- **raw load** (the target's baseline): the same rows (the CSV split beforehand, untimed,
  into one file per process, batch by batch) read with ``csv.reader`` and loaded by as many
  processes, one ``executemany`` (psycopg2: ``execute_values``) per batch of rows in a
  transaction of its own: what loading the file takes at least, with no job at all.
- **raw job** (reported): ``raw.RawPipeline`` doing the library's job bookkeeping by hand
  (the job's records written at prepare, each batch taken, read and decoded, its records
  written again with the fenced completion) with the rows inserted by ``executemany`` in
  the completion's transaction: what an exactly-once import through a job table takes at
  least, so the gap between its line and the library's is the library's own (and
  ``insert_many``'s) share.
"""

from __future__ import annotations

import csv
import functools
import multiprocessing as mp
import os
import statistics
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import peewee as pw
from common import Bench, Row, Target, at_least, peak_rss_mb, rate
from raw import Raw, RawPipeline

from batchactions_peewee import BatchContext, JobStatus, PeeweeStateStore, Worker, prepare_job

COLUMNS = ("email", "name", "age")
TARGET = 0.6


def csv_row(i: int) -> tuple[str, str, str]:
    return (f"user{i}@example.com", f"User {i}", str(i % 90))


@functools.cache
def contact_model(table: str) -> type[pw.Model]:
    """The user table: the same DDL on both sides (Peewee's), no unique key."""

    class Contact(pw.Model):
        email = pw.TextField()
        name = pw.TextField()
        age = pw.TextField()

        class Meta:
            table_name = table

    return Contact


def import_batch(table: str, records: list[dict[str, Any]], context: BatchContext) -> None:
    """The library side's batch processor: the batch's rows by ``insert_many``."""
    model = contact_model(table)
    with context.database.bind_ctx([model]):
        model.insert_many(records).execute()


def write_files(directory: Path, n: int, batch_size: int, parts: int) -> tuple[Path, list[Path]]:
    """The CSV (with its header) and the raw side's parts: batch k in part k % parts."""
    whole = directory / "contacts.csv"
    split = [directory / f"part{k}.csv" for k in range(parts)]
    with whole.open("w", newline="") as out:
        files = [p.open("w", newline="") for p in split]
        try:
            writer, writers = csv.writer(out), [csv.writer(f) for f in files]
            writer.writerow(COLUMNS)
            for i in range(n):
                row = csv_row(i)
                writer.writerow(row)
                writers[(i // batch_size) % parts].writerow(row)
        finally:
            for f in files:
                f.close()
    return whole, split


def _prepare(target: Target, prefix: str, path: str, batch_size: int, results: Any) -> None:
    try:
        store = PeeweeStateStore(target.peewee(), table_prefix=prefix)
        started = time.perf_counter()
        with open(path, newline="") as source:
            job = prepare_job(store, csv.DictReader(source), batch_size=batch_size)
        results.put((job.job_id, time.perf_counter() - started, ""))
    except BaseException:
        results.put(("", 0.0, traceback.format_exc(limit=3)))


def _work(
    target: Target, prefix: str, job_id: str, table: str, ready: Any, start: Any, results: Any
) -> None:
    try:
        store = PeeweeStateStore(target.peewee(), table_prefix=prefix)
        store.tables  # resolve the dialect before the clock starts  # noqa: B018
        processor = functools.partial(import_batch, table)
        worker = Worker(store, batch_processor=processor, transactional=True)
        ready.put(os.getpid())
        start.wait()
        summary = worker.run(job_id)
        results.put((summary.processed, time.perf_counter(), peak_rss_mb(), ""))
    except BaseException:
        results.put((0, time.perf_counter(), peak_rss_mb(), traceback.format_exc(limit=3)))


def _raw_prepare(target: Target, prefix: str, path: str, batch_size: int, results: Any) -> None:
    raw = target.raw()
    try:
        started = time.perf_counter()
        with open(path, newline="") as source:
            job_id, _ = RawPipeline(raw, prefix).prepare(csv.DictReader(source), batch_size)
        results.put((job_id, time.perf_counter() - started, ""))
    except BaseException:
        results.put(("", 0.0, traceback.format_exc(limit=3)))
    finally:
        raw.close()


def _raw_insert(table: str, raw: Raw, records: list[dict[str, Any]]) -> None:
    """The raw job's batch processor, inside the completion's transaction."""
    raw.insert_many(table, COLUMNS, [(r["email"], r["name"], r["age"]) for r in records])


def _raw_work(
    target: Target, prefix: str, job_id: str, table: str, ready: Any, start: Any, results: Any
) -> None:
    raw = target.raw()
    try:
        pipeline = RawPipeline(raw, prefix)
        ready.put(os.getpid())
        start.wait()
        insert = functools.partial(_raw_insert, table)
        processed = pipeline.work(job_id, f"raw-{os.getpid()}", insert)
        results.put((processed, time.perf_counter(), peak_rss_mb(), ""))
    except BaseException:
        results.put((0, time.perf_counter(), peak_rss_mb(), traceback.format_exc(limit=3)))
    finally:
        raw.close()


def _raw_load(
    target: Target, table: str, path: str, batch_size: int, ready: Any, start: Any, results: Any
) -> None:
    raw = target.raw()
    try:
        ready.put(os.getpid())
        start.wait()
        loaded = 0
        with open(path, newline="") as source:
            rows = csv.reader(source)
            while chunk := [row for _, row in zip(range(batch_size), rows, strict=False)]:
                with raw.transaction():
                    raw.insert_many(table, COLUMNS, chunk)
                loaded += len(chunk)
        results.put((loaded, time.perf_counter(), peak_rss_mb(), ""))
    except BaseException:
        results.put((0, time.perf_counter(), peak_rss_mb(), traceback.format_exc(limit=3)))
    finally:
        raw.close()


@dataclass(frozen=True)
class Run:
    """One side's run: seconds of prepare (0 for raw) and of the load by the processes."""

    prepare_s: float
    work_s: float
    problems: list[str]

    def total(self) -> float:
        return self.prepare_s + self.work_s

    def overall(self, n: int) -> float:
        return n / self.total()


def _together(ctx: Any, target: Any, argses: list[tuple[Any, ...]]) -> tuple[float, int, list[str]]:
    """Run ``target(*args, ready, start, results)`` in one process per ``args``, from a
    barrier (each imports and connects first); (seconds until the last one ended, rows it
    reported in all, problems)."""
    ready, start, results = ctx.Queue(), ctx.Event(), ctx.Queue()
    procs = [ctx.Process(target=target, args=(*args, ready, start, results)) for args in argses]
    for p in procs:
        p.start()
    for _ in procs:
        ready.get(timeout=120)
    started = time.perf_counter()
    start.set()
    outcomes = [results.get(timeout=3600) for _ in procs]
    for p in procs:
        p.join()
    problems = [o[3].strip().splitlines()[-1] for o in outcomes if o[3]]
    return max(o[1] for o in outcomes) - started, sum(o[0] for o in outcomes), problems


def run_job(b: Bench, whole: Path, side: str) -> Run:
    """A job of the CSV, by the library or the raw pipeline: prepare in one process, then
    the workers; checks that every row was imported once and the job completed."""
    s = b.sizes
    n = s.import_records
    prefix, target, database = (
        ("il_", b.target, b.db) if side == "library" else ("ij_", b.raw_target, b.raw_db)
    )
    prepare, work = (_prepare, _work) if side == "library" else (_raw_prepare, _raw_work)
    store = b.store(prefix, side="library" if side == "library" else "raw")
    table = f"{prefix}contacts"
    model = contact_model(table)
    with database.bind_ctx([model]):
        model.create_table()
    try:
        ctx = mp.get_context("spawn")
        results: Any = ctx.Queue()
        prep = ctx.Process(target=prepare, args=(target, prefix, str(whole), s.batch_size, results))
        prep.start()
        job_id, prepare_s, error = results.get(timeout=3600)
        prep.join()
        if error:
            return Run(prepare_s, 0.0, [f"{side}: {error.strip().splitlines()[-1]}"])
        args = (target, prefix, job_id, table)
        work_s, processed, problems = _together(ctx, work, [args] * s.e2e_processes)
        if processed != n:
            problems.append(f"{processed:,} of {n:,} records processed")
        job = store.get_job_state(job_id)
        if job is None or job.status != JobStatus.COMPLETED:
            problems.append(f"job ended {job.status.value if job else 'missing'}")
        with database.bind_ctx([model]):
            imported = model.select().count()
        if imported != n:
            problems.append(f"{imported:,} of {n:,} rows imported")
        return Run(prepare_s, work_s, [f"{side}: {p}" for p in problems])
    finally:
        with database.bind_ctx([model]):
            model.drop_table()


def run_load(b: Bench, parts: list[Path]) -> Run:
    """The raw load: one process per part, from a barrier."""
    n = b.sizes.import_records
    table = "ir_contacts"
    model = contact_model(table)
    with b.raw_db.bind_ctx([model]):
        model.create_table()
    try:
        ctx = mp.get_context("spawn")
        args = [(b.raw_target, table, str(p), b.sizes.batch_size) for p in parts]
        load_s, _, problems = _together(ctx, _raw_load, args)
        with b.raw_db.bind_ctx([model]):
            loaded = model.select().count()
        if loaded != n:
            problems.append(f"{loaded:,} of {n:,} rows loaded")
        return Run(0.0, load_s, [f"raw load: {p}" for p in problems])
    finally:
        with b.raw_db.bind_ctx([model]):
            model.drop_table()


def row_import(b: Bench) -> list[Row]:
    """The CSV imported through a transactional batch processor (prepare + work) against
    the raw driver loading the same rows in as many processes, and against the raw
    pipeline doing the job's bookkeeping too; rounds rotate the sides' order."""
    s = b.sizes
    n, procs_n = s.import_records, s.e2e_processes
    what = f"import {n:,} CSV rows, transactional insert_many, {procs_n} processes"
    runs: dict[str, list[Run]] = {"library": [], "load": [], "job": []}
    with tempfile.TemporaryDirectory(prefix="batchactions-import-") as tmp:
        whole, parts = write_files(Path(tmp), n, s.batch_size, procs_n)
        sides: list[tuple[str, Callable[[], Run]]] = [
            ("library", functools.partial(run_job, b, whole, "library")),
            ("load", functools.partial(run_load, b, parts)),
            ("job", functools.partial(run_job, b, whole, "raw")),
        ]
        for round_ in range(s.import_rounds):
            for name, run in sides[round_ % 3 :] + sides[: round_ % 3]:
                runs[name].append(run())
                b.drop_all()
    problems = [p for side in runs.values() for r in side for p in r.problems]
    target = f">= {TARGET}x"
    if problems:
        return [Row(b.kind, what, "-", "-", None, target, "FAILED: " + "; ".join(problems))]
    libs, loads, jobs = runs["library"], runs["load"], runs["job"]
    rounds = f", median of {s.import_rounds} runs" if s.import_rounds > 1 else ""

    def overall(side: list[Run]) -> str:
        return rate(statistics.median(r.overall(n) for r in side))

    def ratio(other: list[Run], seconds: Callable[[Run], float] = Run.total) -> float:
        return statistics.median(
            seconds(them) / seconds(lib) for lib, them in zip(libs, other, strict=True)
        )

    def phases(side: list[Run]) -> str:
        prepare = statistics.median(n / r.prepare_s for r in side)
        work = statistics.median(n / r.work_s for r in side)
        return f"prepare {rate(prepare)}, work {rate(work)}"

    against_load = ratio(loads)
    return [
        Row(
            b.kind,
            what + f" (prepare + work{rounds})",
            overall(libs),
            f"{overall(loads)} (raw load)",
            against_load,
            target,
            at_least(against_load, TARGET),
        ),
        Row(
            b.kind,
            "  same, against the raw driver doing the job's bookkeeping too (raw job)",
            overall(libs),
            f"{overall(jobs)} (raw job)",
            ratio(jobs),
            "report",
            "ok",
        ),
        Row(
            b.kind,
            "  phases: prepare (1 process), work; ratio: work, against the raw job's",
            phases(libs),
            phases(jobs),
            ratio(jobs, lambda r: r.work_s),
            "report",
            "ok",
        ),
    ]
