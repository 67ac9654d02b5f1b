"""Instructions per record of prepare and of one worker, counted by callgrind: a figure that
does not move with the machine's load, unlike the CPU seconds of the volume row.

    python benchmarks/instructions.py [--backends sqlite,mysql,postgres] [--records N]
        [--sides limit,no-op,schema]

For each backend and side it runs this file again under ``valgrind --tool=callgrind``
three times, with no records, with N records prepared, and with N records prepared and
worked by one process, and prints (prepared - empty) / N and (worked - prepared) / N: the
instructions of the client process (the servers are not counted) that each record costs
in prepare and in the work. The sides are those of the volume row (rows/volume.py): the
physical limit (raw.RawMinimal), the library with a no-op processor, and with the
validating schema. valgrind is a Debian package (not a dependency of the project); a run
of 5,000 records (the default) takes about 30 s a count.

To measure other code, put its package first on PYTHONPATH (the counts run this file, in
benchmarks/, so the path wins over the checkout's own package).
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import Target, server_url, source_record
from raw import RawMinimal, source_text
from rows.volume import Contact

from batchactions_peewee import PeeweeStateStore, Worker, prepare_job

SIDES = ("limit", "no-op", "schema")
PREFIX = "instr_"


def _target(kind: str) -> Target:
    if kind == "sqlite":
        return Target(kind="sqlite", path=str(Path(tempfile.mkdtemp()) / "instructions.db"))
    return Target.from_url(kind, server_url(kind))


def one_count(kind: str, side: str, n: int, work: bool) -> None:
    """What one counted run does: prepare ``n`` records, then work them if ``work``."""
    target = _target(kind)
    store = PeeweeStateStore(target.peewee(), table_prefix=PREFIX)
    store.create_tables()
    try:
        if side == "limit":
            raw = target.raw()
            pipeline = RawMinimal(raw, PREFIX)
            job_id, _ = pipeline.prepare_texts((source_text(i) for i in range(n)), 500)
            if work and pipeline.work(job_id, "instructions") != n:
                raise SystemExit("the limit processed the wrong number of records")
            raw.close()
            return
        job = prepare_job(store, (source_record(i) for i in range(n)), batch_size=500)
        if work:
            schema = Contact if side == "schema" else None
            summary = Worker(store, lambda record, context: None, schema=schema).run(job.job_id)
            if summary.processed != n:
                raise SystemExit(f"processed {summary.processed} of {n} records")
    finally:
        store.drop_tables()


def counted(kind: str, side: str, n: int, work: bool) -> int:
    """The instructions callgrind counts for one run of ``one_count``."""
    command = [
        "valgrind",
        "--tool=callgrind",
        "--callgrind-out-file=/dev/null",
        sys.executable,
        __file__,
        "--count",
        f"{kind},{side},{n},{int(work)}",
    ]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    found = re.search(r"Collected : (\d+)", done.stderr)
    if done.returncode != 0 or found is None:
        raise SystemExit(f"callgrind failed for {kind} {side}: {done.stderr[-2000:]}")
    return int(found.group(1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backends", default="sqlite,mysql,postgres")
    parser.add_argument("--records", type=int, default=5_000)
    parser.add_argument("--sides", default=",".join(SIDES))
    parser.add_argument("--count", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.count:
        kind, side, n, work = args.count.split(",")
        one_count(kind, side, int(n), work == "1")
        return
    n = args.records
    print("| backend | side | prepare, instructions/record | work, instructions/record |")
    print("|---|---|---|---|")
    for kind in args.backends.split(","):
        for side in args.sides.split(","):
            empty = counted(kind, side, 0, False)
            prepared = counted(kind, side, n, False)
            worked = counted(kind, side, n, True)
            prepare, work = (prepared - empty) / n, (worked - prepared) / n
            print(f"| {kind} | {side} | {prepare:,.0f} | {work:,.0f} |")


if __name__ == "__main__":
    main()
