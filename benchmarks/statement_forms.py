"""Rows/s of several PostgreSQL statement forms writing the same 500-row records batches.

    /work/venv/bin/python benchmarks/statement_forms.py [--rounds N]

Compares, with psycopg2 and hand-written SQL, the ways of writing one batch of records into
the library's PostgreSQL ``records`` table:

* ``execute_values insert``: ``psycopg2.extras.execute_values`` with one page, no
  ON CONFLICT (the raw baseline that benchmarks/bench.py uses);
* ``execute_values upsert``: the same plus the library's ON CONFLICT clause;
* ``multi-row VALUES upsert``: one ``INSERT ... VALUES (%s, ...), (...) ...`` with 4000 flat
  parameters plus ON CONFLICT (the library's old form);
* ``unnest upsert``: ``INSERT ... SELECT * FROM unnest(%s::type[], ...)`` with eight lists;
* ``unnest upsert, parsed sent once``: unnest with ``COALESCE(parsed, raw)`` and the parsed
  list holding None wherever parsed == raw (the library's new form).

Each batch is one transaction (the timing covers execute + commit) under a fresh job id, so
every statement inserts 500 new rows. The rows are built before timing. The forms run
interleaved: every round runs each form once, in an order rotated by one each round, after
one untimed warm-up round. The script prints the median rows/s and ms per batch per form.

The server URL comes from BATCHACTIONS_TEST_POSTGRES_URL (default
postgresql://postgres@127.0.0.1:5432/postgres). The script creates a database of its own
(``batchactions_forms_<hex>``) and drops it at the end, from an autocommit connection to the
``postgres`` database.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import secrets
import statistics
import time
import urllib.parse
import uuid
from collections.abc import Callable, Sequence
from typing import Any

DEFAULT_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
ENV_URL = "BATCHACTIONS_TEST_POSTGRES_URL"
BATCH_SIZE = 500
DEFAULT_ROUNDS = 40

COLUMNS = (
    "jobId",
    "batchId",
    "recordIndex",
    "status",
    "raw",
    "parsed",
    "errors",
    "processingError",
)
KEY = ("jobId", "recordIndex")
CREATE_SQL = (
    'CREATE TABLE "records" ("jobId" VARCHAR(36) NOT NULL, "batchId" VARCHAR(36) NOT NULL, '
    '"recordIndex" INTEGER NOT NULL, "status" VARCHAR(20) NOT NULL, "raw" TEXT NOT NULL, '
    '"parsed" TEXT NOT NULL, "errors" TEXT NOT NULL, "processingError" TEXT, '
    'PRIMARY KEY ("jobId", "recordIndex"))',
    'CREATE INDEX "records_job_batch" ON "records" ("jobId", "batchId")',
    'CREATE INDEX "records_job_status" ON "records" ("jobId", "status")',
)

COLUMN_LIST = ", ".join(f'"{c}"' for c in COLUMNS)
INSERT_HEAD = f'INSERT INTO "records" ({COLUMN_LIST})'
KEY_LIST = ", ".join(f'"{c}"' for c in KEY)
UPDATE_LIST = ", ".join(f'"{c}" = EXCLUDED."{c}"' for c in COLUMNS if c not in KEY)
ON_CONFLICT = f"ON CONFLICT ({KEY_LIST}) DO UPDATE SET {UPDATE_LIST}"
UNNEST_ARGS = (
    "%s::character varying[], %s::character varying[], %s::integer[], "
    "%s::character varying[], %s::text[], %s::text[], %s::text[], %s::text[]"
)
UNNEST_SQL = f"{INSERT_HEAD} SELECT * FROM unnest({UNNEST_ARGS}) {ON_CONFLICT}"
UNNEST_ONCE_SQL = (
    f"{INSERT_HEAD} SELECT u.j, u.b, u.i, u.s, u.r, COALESCE(u.p, u.r), u.e, u.x "
    f"FROM unnest({UNNEST_ARGS}) AS u(j, b, i, s, r, p, e, x) {ON_CONFLICT}"
)
ROW_PLACEHOLDERS = "(" + ", ".join(["%s"] * len(COLUMNS)) + ")"

Row = tuple[str, str, int, str, str, str, str, str | None]
Batch = list[Row]


def build_batch(size: int) -> Batch:
    """One batch of rows under a fresh job id and batch id; parsed == raw as in the library."""
    job_id = str(uuid.uuid4())
    batch_id = str(uuid.uuid4())
    rows: Batch = []
    for i in range(size):
        text = json.dumps(
            {
                "email": f"user{i}@example.com",
                "name": f"User {i}",
                "age": i % 90,
                "tags": ["a", "b"],
            },
            separators=(",", ":"),
            ensure_ascii=False,
        )
        rows.append((job_id, batch_id, i, "pending", text, text, "[]", None))
    return rows


def columns_of(rows: Batch) -> list[list[Any]]:
    """The rows transposed into one list per column, for unnest."""
    return [list(col) for col in zip(*rows, strict=True)] if rows else [[] for _ in COLUMNS]


def form_execute_values_insert(extras: Any, cur: Any, rows: Batch) -> None:
    extras.execute_values(cur, f"{INSERT_HEAD} VALUES %s", rows, page_size=len(rows))


def form_execute_values_upsert(extras: Any, cur: Any, rows: Batch) -> None:
    extras.execute_values(cur, f"{INSERT_HEAD} VALUES %s {ON_CONFLICT}", rows, page_size=len(rows))


def form_multi_row_upsert(extras: Any, cur: Any, rows: Batch) -> None:
    values = ", ".join([ROW_PLACEHOLDERS] * len(rows))
    params = [value for row in rows for value in row]
    cur.execute(f"{INSERT_HEAD} VALUES {values} {ON_CONFLICT}", params)


def form_unnest_upsert(extras: Any, cur: Any, rows: Batch) -> None:
    cur.execute(UNNEST_SQL, columns_of(rows))


def form_unnest_parsed_once(extras: Any, cur: Any, rows: Batch) -> None:
    cols = columns_of(rows)
    raw, parsed = cols[4], cols[5]
    cols[5] = [None if p == r else p for r, p in zip(raw, parsed, strict=True)]
    cur.execute(UNNEST_ONCE_SQL, cols)


Form = Callable[[Any, Any, Batch], None]
FORMS: tuple[tuple[str, Form], ...] = (
    ("execute_values insert", form_execute_values_insert),
    ("execute_values upsert", form_execute_values_upsert),
    ("multi-row VALUES upsert", form_multi_row_upsert),
    ("unnest upsert", form_unnest_upsert),
    ("unnest upsert, parsed sent once", form_unnest_parsed_once),
)


def connect(psycopg2: Any, url: str, dbname: str) -> Any:
    u = urllib.parse.urlsplit(url)
    return psycopg2.connect(
        host=u.hostname or "127.0.0.1",
        port=u.port or 5432,
        user=urllib.parse.unquote(u.username or "postgres"),
        password=urllib.parse.unquote(u.password or ""),
        dbname=dbname,
    )


def check_written(conn: Any, rows: Batch) -> None:
    """Every form must have stored the 500 rows with parsed == raw."""
    with conn.cursor() as cur:
        cur.execute(
            'SELECT count(*), count(*) FILTER (WHERE "parsed" = "raw") FROM "records" '
            'WHERE "jobId" = %s',
            (rows[0][0],),
        )
        total, same = cur.fetchone()
    conn.commit()
    if (total, same) != (len(rows), len(rows)):
        raise RuntimeError(f"wrote {total} rows ({same} with parsed == raw), wanted {len(rows)}")


def run(url: str, rounds: int) -> dict[str, list[float]]:
    """Seconds per batch for every form, in a database created and dropped here."""
    psycopg2: Any = importlib.import_module("psycopg2")
    extras: Any = importlib.import_module("psycopg2.extras")
    name = f"batchactions_forms_{secrets.token_hex(6)}"
    admin = connect(psycopg2, url, "postgres")
    admin.autocommit = True
    try:
        with admin.cursor() as cur:
            cur.execute(f'CREATE DATABASE "{name}"')
        conn = connect(psycopg2, url, name)
        try:
            with conn.cursor() as cur:
                for statement in CREATE_SQL:
                    cur.execute(statement)
            conn.commit()
            times: dict[str, list[float]] = {label: [] for label, _ in FORMS}
            for rnd in range(rounds + 1):  # round 0 is the untimed warm-up
                shift = rnd % len(FORMS)
                order = FORMS[shift:] + FORMS[:shift]
                batches = [build_batch(BATCH_SIZE) for _ in order]
                for (label, form), rows in zip(order, batches, strict=True):
                    with conn.cursor() as cur:
                        start = time.perf_counter()
                        form(extras, cur, rows)
                        conn.commit()
                        elapsed = time.perf_counter() - start
                    if rnd == 0:
                        check_written(conn, rows)
                    else:
                        times[label].append(elapsed)
            return times
        finally:
            conn.close()
    finally:
        with admin.cursor() as cur:
            cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


def report(times: dict[str, list[float]], rounds: int) -> str:
    lines = [
        f"# PostgreSQL (psycopg2): {BATCH_SIZE}-row batches into the records table, one "
        f"transaction per batch (execute + commit timed), fresh job id per batch",
        f"# {rounds} rounds, forms interleaved in rotating order; medians over the rounds",
        f"{'form':<34}{'rows/s':>12}{'ms/batch':>12}",
    ]
    for label, _ in FORMS:
        median = statistics.median(times[label])
        lines.append(f"{label:<34}{BATCH_SIZE / median:>12,.0f}{median * 1000:>12.2f}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rounds", type=int, default=DEFAULT_ROUNDS)
    args = parser.parse_args(argv)
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    url = os.environ.get(ENV_URL) or DEFAULT_URL
    rounds: int = args.rounds
    print(report(run(url, rounds), rounds))


if __name__ == "__main__":
    main()
