"""One Worker in its own process, for the fault tests (kill storms, session kills).

Run from the repository root as ``python -m tests.faults_worker --url URL --prefix P
--job-id J --worker-id W [--lease-ms N]``. The processor does nothing, so the run measures
coordination, not work. On a normal exit the process prints its WorkerSummary as one JSON
line on stdout; a process killed with SIGKILL prints nothing, so the test knows which
summaries are complete.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from typing import Any

from batchactions_peewee import PeeweeStateStore, ProcessingContext, Worker
from tests.backends import open_database


def noop(record: dict[str, Any], context: ProcessingContext) -> None:
    return None


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", required=True)
    parser.add_argument("--prefix", required=True)
    parser.add_argument("--job-id", required=True)
    parser.add_argument("--worker-id", required=True)
    parser.add_argument("--lease-ms", type=int, default=2000)
    args = parser.parse_args()
    database = open_database(args.url)
    store = PeeweeStateStore(database, table_prefix=args.prefix)
    worker = Worker(store, noop, worker_id=args.worker_id, lease_timeout_ms=args.lease_ms)
    summary = worker.run(args.job_id)
    database.close()
    print(json.dumps(dataclasses.asdict(summary)), flush=True)


if __name__ == "__main__":
    main()
