"""The library against the raw database driver doing the same work, side by side in one run.

    /work/venv/bin/python benchmarks/bench.py [--backends sqlite,mysql,postgres] [--quick]
        [--smoke] [--rounds N] [--records N] [--profile [DIR]]
        [--rows save,prepare,complete,single,cycles,progress,e2e,concurrency,import,volume]

Every row runs the library and the raw driver (sqlite3, pymysql, psycopg2 with hand-written
SQL) on identically shaped tables of their own (on SQLite each side in its own file),
interleaved and repeated, and prints the ratio library / raw. Absolute numbers move
between runs on a shared machine; ratios measured in the same run barely do. See
benchmarks/README.md for what each row measures and how long each mode takes, and
benchmarks/RESULTS.md for the numbers of this machine.

Server URLs come from --mysql-url / --postgres-url, else BATCHACTIONS_TEST_MYSQL_URL /
BATCHACTIONS_TEST_POSTGRES_URL, else the local defaults; the benchmark creates a database of
its own beside the one named and drops it at the end.

This file is the runner (arguments, the backend loop, the table); the rows are in rows/,
what they share in common.py, the raw driver's side in raw.py.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
import traceback
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from common import FULL, QUICK, SMOKE, Bench, Row, Sizes, fresh_target, log, server_url
from rows import ROW_FUNCTIONS

KINDS = ("sqlite", "mysql", "postgres")
ROWS = tuple(ROW_FUNCTIONS)
#: Where ``--profile`` without a directory writes (ignored by git: profiles are regenerated).
PROFILE_DIR = Path(__file__).resolve().parent / "profiles"


def server_urls(args: argparse.Namespace) -> dict[str, str]:
    return {
        "mysql": server_url("mysql", args.mysql_url),
        "postgres": server_url("postgres", args.postgres_url),
    }


def print_table(rows: Sequence[Row], out: Any = sys.stdout) -> None:
    head = ("backend", "what", "library", "raw / baseline", "ratio", "target", "verdict")
    cells = [
        (
            r.backend,
            r.what,
            r.library,
            r.baseline,
            "" if r.ratio is None else f"{r.ratio:.2f}x",
            r.target,
            r.verdict,
        )
        for r in rows
    ]
    widths = [max(len(h), *(len(c[i]) for c in cells)) for i, h in enumerate(head)]

    def line(values: Sequence[str]) -> str:
        return "| " + " | ".join(v.ljust(w) for v, w in zip(values, widths, strict=True)) + " |"

    print(line(head), file=out)
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|", file=out)
    for c in cells:
        print(line(c), file=out)


def run_backend(
    kind: str,
    urls: dict[str, str],
    sizes: Sizes,
    selected: Sequence[str],
    profile_dir: Path | None = None,
) -> list[Row]:
    """Every selected row on one backend. A row that raises becomes a FAILED row (with the
    error) and the others still run, each on fresh tables."""
    rows: list[Row] = []
    with contextlib.ExitStack() as stack:
        try:
            target = stack.enter_context(fresh_target(kind, urls))
        except Exception as exc:
            reason = f"skipped: {type(exc).__name__}: {exc}"
            return [Row(kind, "(all rows)", "-", "-", None, "-", reason)]
        bench = Bench(target, sizes, profile_dir)
        stack.callback(bench.close)
        for name in selected:
            started = time.perf_counter()
            try:
                rows.extend(ROW_FUNCTIONS[name](bench))
            except Exception as exc:
                traceback.print_exc()
                error = f"FAILED: {type(exc).__name__}: {exc}".splitlines()[0][:120]
                rows.append(Row(kind, f"({name})", "-", "-", None, "-", error))
                bench.drop_all()
            log(f"{kind}: {name} done in {time.perf_counter() - started:.1f} s")
    return rows


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--backends", default="sqlite,mysql,postgres")
    parser.add_argument("--rows", default=",".join(ROWS), help=f"subset of {','.join(ROWS)}")
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="smaller sizes, 3 rounds")
    size.add_argument("--smoke", action="store_true", help="tiny sizes: checks that it runs")
    parser.add_argument("--rounds", type=int, help="rounds of each bulk row (median)")
    parser.add_argument(
        "--records", type=int, help="CSV rows of the import row (default 1,000,000; quick 100,000)"
    )
    parser.add_argument(
        "--profile",
        nargs="?",
        const=PROFILE_DIR,
        metavar="DIR",
        type=Path,
        help="also profile the library side of each row with pyinstrument (a dev tool, "
        "not a dependency) and write one report per row and backend into DIR (default "
        "benchmarks/profiles/); off unless given",
    )
    parser.add_argument("--mysql-url")
    parser.add_argument("--postgres-url")
    args = parser.parse_args(argv)
    for name, allowed in (("backends", KINDS), ("rows", ROWS)):
        unknown = set(getattr(args, name).split(",")) - set(allowed)
        if unknown:
            parser.error(f"--{name}: unknown {', '.join(sorted(unknown))}")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    sizes = SMOKE if args.smoke else QUICK if args.quick else FULL
    if args.rounds:
        sizes = replace(sizes, rounds=args.rounds)
    if args.records:
        sizes = replace(sizes, import_records=args.records)
    urls = server_urls(args)
    selected = [r for r in ROWS if r in args.rows.split(",")]
    started = time.perf_counter()
    rows: list[Row] = []
    for kind in [k for k in KINDS if k in args.backends.split(",")]:
        rows.extend(run_backend(kind, urls, sizes, selected, args.profile))
    mode = "smoke" if args.smoke else "quick" if args.quick else "full"
    print(f"batchactions-peewee benchmark ({mode}; ratio = library / raw driver, higher is better)")
    print()
    print_table(rows)
    print()
    print(f"total time {time.perf_counter() - started:.0f} s")
    return 1 if any(r.verdict.startswith("FAILED") for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
