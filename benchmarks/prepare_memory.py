"""Peak memory of prepare_job streaming a large generator into SQLite.

    /work/venv/bin/python benchmarks/prepare_memory.py [--records 1000000] [--batch-size 500]

prepare_job holds one batch at a time, so peak RSS must not grow with the source: the
contract is under 150 MB for 1,000,000 records. Prints the RSS after imports and table
creation, the peak RSS (getrusage; Linux reports KiB), the time taken and records/s, and
exits 1 over the limit.

Measured (2-core machine shared with other test runs, Python 3.11, SQLite in WAL mode,
batch size 500): 1,000,000 records in 54 s (18,400 records/s), RSS 43.7 MB after
start-up, peak 56.5 MB. 100,000 records: peak 46.6 MB.
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from playhouse.db_url import connect

from batchactions_peewee import PeeweeStateStore, prepare_job

LIMIT_MB = 150


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def current_rss_mb() -> float:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * resource.getpagesize() / 2**20


def source(count: int) -> Iterator[dict[str, Any]]:
    for i in range(count):
        yield {
            "email": f"user{i}@example.com",
            "name": f"User {i}",
            "age": i % 90,
            "tags": ["a", "b"],
        }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--batch-size", type=int, default=500)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "prepare.db"
        database = connect(f"sqlite:///{path}", pragmas={"journal_mode": "wal"}, timeout=10)
        store = PeeweeStateStore(database)
        store.create_tables()
        baseline = current_rss_mb()
        started = time.monotonic()
        result = prepare_job(store, source(args.records), batch_size=args.batch_size)
        elapsed = time.monotonic() - started
        peak = peak_rss_mb()
        database.close()
    print(
        f"prepared {result.total_records:,} records in {result.total_batches:,} batches: "
        f"{elapsed:.1f} s ({result.total_records / elapsed:,.0f} records/s)"
    )
    print(f"RSS baseline {baseline:.1f} MB, peak {peak:.1f} MB (limit {LIMIT_MB} MB)")
    return 0 if peak < LIMIT_MB else 1


if __name__ == "__main__":
    sys.exit(main())
