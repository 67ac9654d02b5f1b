"""SIGTERM-to-exit time of ``batchactions-peewee work``: how long a worker that is sent
SIGTERM mid-batch takes to finish the record in hand, give its batch back and exit 0.

    python benchmarks/sigterm.py                  # SQLite, --workers 1 and 2, 5 runs each
    python benchmarks/sigterm.py --runs 3 --record-ms 200 --database postgresql://...

Each run prepares a job whose processor takes ``--record-ms`` per record, starts ``work``,
waits until every worker has a record in hand, sends SIGTERM and times the exit. The time
includes up to one record (``--record-ms``); the rest is the release and the shutdown.
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CASE = """
import os, pathlib, time

def slow(record, context):
    pathlib.Path(os.environ["MARKS"], f"{os.getpid()}-{record['n']}").touch()
    time.sleep(float(os.environ["RECORD_MS"]) / 1000)
"""


def _cli(*args: str, cwd: Path, env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "batchactions_peewee", *args],
        cwd=cwd,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def one_run(directory: Path, url: str, workers: int, record_ms: int, run: int) -> float:
    """Seconds from SIGTERM to the exit of one ``work`` (which must exit 0)."""
    marks = directory / f"marks-{workers}-{run}"
    marks.mkdir()
    env = {**os.environ, "MARKS": str(marks), "RECORD_MS": str(record_ms)}
    job = f"sigterm-{workers}-{run}"
    prepare = _cli(
        "prepare", "n.jsonl", "--processor", "sig_case:slow", "--batch-size", "50",
        "--job-id", job, "--database", url, cwd=directory, env=env,
    )  # fmt: skip
    if prepare.wait() != 0:
        raise SystemExit(f"prepare failed: {prepare.stderr.read() if prepare.stderr else ''}")
    work = _cli("work", job, "--workers", str(workers), "--database", url, cwd=directory, env=env)
    deadline = time.monotonic() + 120
    while len({p.name.split("-")[0] for p in marks.iterdir()}) < workers:
        if time.monotonic() > deadline:
            raise SystemExit("the workers did not start")
        time.sleep(0.01)
    sent = time.monotonic()
    work.send_signal(signal.SIGTERM)
    code = work.wait(timeout=120)
    took = time.monotonic() - sent
    if code != 0:
        raise SystemExit(f"work exited {code}: {work.stderr.read() if work.stderr else ''}")
    return took


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--record-ms", type=int, default=100)
    parser.add_argument("--workers", default="1,2", help="comma-separated counts")
    parser.add_argument("--database", help="a database URL (default: a fresh SQLite file)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        (directory / "sig_case.py").write_text(CASE)
        (directory / "n.jsonl").write_text("".join(f'{{"n": {n}}}\n' for n in range(500)))
        url = args.database or f"sqlite:///{directory / 'bench.db'}"
        print(f"record {args.record_ms} ms; SIGTERM to exit 0, seconds")
        for workers in (int(w) for w in args.workers.split(",")):
            times = [one_run(directory, url, workers, args.record_ms, r) for r in range(args.runs)]
            print(
                f"--workers {workers}: median {statistics.median(times):.2f}, "
                f"max {max(times):.2f}, runs {' '.join(f'{t:.2f}' for t in times)}"
            )


if __name__ == "__main__":
    main()
