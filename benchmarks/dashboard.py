"""How fast the dashboard answers for a large running job: 1M records in 20,000 batches on
SQLite, 60% done, with failed and invalid records and workers holding leases.

    python benchmarks/dashboard.py [--db /tmp/batchactions-dashboard.db] [--rounds 15]

The job is made once (``prepare_job``, then its progress set by SQL: setup, not timed) and
kept in ``--db`` for the next run (``--rebuild`` makes it again). The dashboard is served
by the CLI's threaded wsgiref server on a free loopback port and asked over HTTP as a
browser would: each endpoint ``--rounds`` times, then the page load (the HTML, its script
and style, and the first calls of its script) and one refresh (the calls of each poll).
The table gives the median in ms against the 300 ms target.
"""

from __future__ import annotations

import argparse
import http.client
import os
import statistics
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from batchactions_peewee import PeeweeStateStore, prepare_job
from batchactions_peewee.cli import open_database
from batchactions_peewee.web import make_wsgi_app
from batchactions_peewee.web.server import connected, make_server

RECORDS = 1_000_000
BATCH_SIZE = 50
DONE = 0.6
WORKERS = 8
JOB_ID = "dashboard-bench-1m"
TARGET_MS = 300.0


def build(store: PeeweeStateStore) -> None:
    """The job: prepared as a CLI ``prepare`` would, then 60% of it done by SQL."""
    store.create_tables()
    if store.get_job_state(JOB_ID) is not None:
        store.delete_job(JOB_ID)

    def rows() -> Iterator[dict[str, Any]]:
        for i in range(RECORDS):
            yield {"email": f"user{i}@example.com", "name": f"User {i}", "note": "<b>hi</b>"}

    started = time.perf_counter()
    prepare_job(store, rows(), batch_size=BATCH_SIZE, job_id=JOB_ID, config={"source": "bench"})
    print(f"prepared {RECORDS:,} records in {time.perf_counter() - started:.0f} s")
    _progress(store)


def _progress(store: PeeweeStateStore) -> None:
    t, db = store.tables, store.database
    done_batches = int(RECORDS / BATCH_SIZE * DONE)
    last_done = done_batches * BATCH_SIZE
    now = store.now()
    start = now - 600_000  # ten minutes ago
    R, B, J = t.records, t.batches, t.jobs
    with db.atomic():
        J.update(started_at=start).where(J.id == JOB_ID).execute()
        R.update(status="processed", parsed=R.raw, errors="[]", processing_error=None).where(
            R.job_id == JOB_ID, R.record_index < last_done
        ).execute()
        # Every 97th record failed and every 101st invalid (Peewee's % is LIKE: raw SQL).
        table, index = R._meta.table_name, R.record_index.column_name
        db.execute_sql(
            f'UPDATE "{table}" SET "status" = ?, "processingError" = ? '
            f'WHERE "jobId" = ? AND "{index}" < ? AND "{index}" % 97 = 0',
            ("failed", "refused: <script>alert(1)</script>", JOB_ID, last_done),
        )
        invalid = '[{"field":"email","message":"not an e-mail","code":"PATTERN_MISMATCH"}]'
        db.execute_sql(
            f'UPDATE "{table}" SET "status" = ?, "errors" = ? '
            f'WHERE "jobId" = ? AND "{index}" < ? AND "{index}" % 101 = 1',
            ("invalid", invalid, JOB_ID, last_done),
        )
        span = now - start
        for k in range(0, done_batches, 1000):
            # Each batch's last lease time spread over the ten minutes, as workers left them.
            B.update(
                status="COMPLETED",
                worker_id=f"bench-worker-{k // 1000 % WORKERS}",
                claimed_at=start + B.batch_index * (span // done_batches),
                processed_count=BATCH_SIZE - 1,
                failed_count=1,
            ).where(
                B.job_id == JOB_ID, B.batch_index >= k, B.batch_index < min(k + 1000, done_batches)
            ).execute()
        for w in range(WORKERS):
            held = 400_000 if w == 0 else 2_000  # the first worker's lease is stale
            B.update(
                status="PROCESSING", worker_id=f"bench-worker-{w}", claimed_at=now - held
            ).where(B.job_id == JOB_ID, B.batch_index == done_batches + w).execute()


def get(port: int, path: str) -> float:
    """ms to fetch ``path`` whole on a new connection (status 200 required)."""
    started = time.perf_counter()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.request("GET", path)
    response = conn.getresponse()
    body = response.read()
    conn.close()
    elapsed = (time.perf_counter() - started) * 1000
    assert response.status == 200, (path, response.status, body[:200])
    return elapsed


def stages(port: int, pool: ThreadPoolExecutor, steps: list[list[str]]) -> float:
    """ms for ``steps`` one after the other, the requests of each step at once (as a
    browser sends them)."""
    started = time.perf_counter()
    for step in steps:
        list(pool.map(lambda path: get(port, path), step))
    return (time.perf_counter() - started) * 1000


def measure(port: int, rounds: int) -> list[tuple[str, float]]:
    job = f"/api/jobs/{JOB_ID}"
    endpoints = {
        "GET /": "/",
        "GET /jobs/{id} (the page)": f"/jobs/{JOB_ID}",
        "GET /static/job.js": "/static/job.js",
        "GET /api/jobs": "/api/jobs",
        "GET /api/jobs/{id}": job,
        "GET /api/jobs/{id}/grid": f"{job}/grid",
        "GET /api/jobs/{id}/throughput": f"{job}/throughput",
        "GET /api/jobs/{id}/batches?offset=10000": f"{job}/batches?offset=10000",
        "GET /api/jobs/{id}/failed (first page)": f"{job}/failed",
        "GET /api/jobs/{id}/failed?after=500000": f"{job}/failed?after=500000",
        "GET /api/jobs/{id}/failed?offset=10000": f"{job}/failed?offset=10000",
    }
    # What the job page asks for to draw itself (job.js), step by step.
    page_load = [
        [f"/jobs/{JOB_ID}"],
        ["/static/app.css", "/static/common.js", "/static/job.js"],
        ["/api/config"],
        [job, f"{job}/grid", f"{job}/throughput"],
        [f"{job}/failed?limit=50"],
    ]
    results = []
    with ThreadPoolExecutor(max_workers=4) as pool:
        for name, path in endpoints.items():
            get(port, path)  # warm
            results.append((name, statistics.median(get(port, path) for _ in range(rounds))))
        for name, steps in (
            ("job page load (all its requests, as job.js sends them)", page_load),
            ("refresh: report + grid at once (each poll)", [[job, f"{job}/grid"]]),
            (
                "refresh: report + grid + throughput at once",
                [[job, f"{job}/grid", f"{job}/throughput"]],
            ),
            (
                "refresh, one request after the other",
                [[job], [f"{job}/grid"], [f"{job}/throughput"]],
            ),
        ):
            results.append(
                (name, statistics.median(stages(port, pool, steps) for _ in range(rounds)))
            )
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", type=Path, default=Path("/tmp/batchactions-dashboard.db"))
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--rebuild", action="store_true")
    args = parser.parse_args()
    url = f"sqlite:///{args.db}"
    fresh = not args.db.exists()  # connecting makes the file
    store = PeeweeStateStore(open_database(url))
    if args.rebuild or fresh or store.get_job_state(JOB_ID) is None:
        build(store)
    # As the dashboard command serves it.
    server = make_server("127.0.0.1", 0, connected(make_wsgi_app(store), store.database))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        results = measure(server.server_address[1], args.rounds)
    finally:
        server.shutdown()
        server.server_close()
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(
        f"\n{RECORDS:,} records, {RECORDS // BATCH_SIZE:,} batches, SQLite, {args.rounds} rounds; "
        f"{os.cpu_count()} CPUs, load average {load}"
    )
    width = max(len(name) for name, _ in results)
    print(f"{'endpoint'.ljust(width)}  median ms  target ms")
    for name, value in results:
        flag = "" if value <= TARGET_MS else "  MISSED"
        print(f"{name.ljust(width)}  {value:9.1f}  {TARGET_MS:9.0f}{flag}")
    return 0 if all(value <= TARGET_MS for _, value in results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
