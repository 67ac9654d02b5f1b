"""What every row of the benchmark shares: sizes, results, data, databases, measurement.

``Sizes`` (and the full, quick and smoke sizes), ``Row`` (one line of the table) and its
formatting, the records each row writes, ``Target`` (where a backend's database lives) and
``Bench`` (its library store and raw connections), and the measurement: ``timed`` (the one
place the profiler samples), ``compare`` (the sides step by step, ratios of medians) and
``bulk_rows`` (a bulk row's two lines).
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import resource
import secrets
import sqlite3
import statistics
import sys
import tempfile
import time
import urllib.parse
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import peewee as pw
from raw import Raw

from batchactions_peewee import (
    Batch,
    BatchStatus,
    JobConfig,
    JobState,
    JobStatus,
    PeeweeStateStore,
    ProcessedRecord,
    RecordStatus,
)

BUSY_TIMEOUT_MS = 60_000
#: The servers' URL variables (the test suite's) and the URLs used when they are not set.
SERVER_ENV = {"mysql": "BATCHACTIONS_TEST_MYSQL_URL", "postgres": "BATCHACTIONS_TEST_POSTGRES_URL"}
DEFAULT_URL = {
    "mysql": "mysql://root@127.0.0.1:3306/test",
    "postgres": "postgresql://postgres@127.0.0.1:5432/postgres",
}


def server_url(kind: str, given: str | None = None) -> str:
    """The URL of server ``kind``: ``given``, else its variable, else the default."""
    return given or os.environ.get(SERVER_ENV[kind]) or DEFAULT_URL[kind]


# -- sizes ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Sizes:
    """How much work each row does. ``rounds``: rounds of each bulk row (median taken)."""

    rounds: int
    batch_size: int  # records per save_batch_records call / prepare_job batch
    save_batches: int  # save_batch_records calls per round
    prepare_records: int  # records per prepare_job round
    complete_calls: int  # complete_batch calls (of complete_records each) per round
    complete_records: int
    single_calls: int  # save_processed_record calls per round
    cycle_batches: int  # batches of the claim + complete job
    cycle_rounds: int
    threads: tuple[int, ...]
    processes: int
    progress_sizes: tuple[int, ...]
    progress_calls: int
    e2e_records: int
    e2e_processes: int
    e2e_rounds: int  # end-to-end runs of each side, alternating (median taken)
    import_records: int  # CSV rows of the import row (bench.py --records)
    import_rounds: int  # import runs of each side, alternating (median taken)
    concurrency_levels: tuple[int, ...] = (1, 8, 64, 256)  # Worker(concurrency=N) rows
    concurrency_wait_ms: float = 20  # what the processor waits per record
    concurrency_seconds: float = 3.0  # a job's length at the bound N / wait (at least)
    concurrency_batch_size: int = 1000  # records per batch of the concurrency jobs
    concurrency_runs: int = 2  # runs of each row (the better is reported)


FULL = Sizes(
    rounds=9,
    batch_size=500,
    save_batches=20,
    prepare_records=10_000,
    complete_calls=5,
    complete_records=1000,
    single_calls=1000,
    cycle_batches=2000,
    cycle_rounds=1,
    threads=(1, 4, 16),
    processes=4,
    progress_sizes=(10_000, 100_000, 1_000_000),
    progress_calls=7,
    e2e_records=1_000_000,
    e2e_processes=4,
    e2e_rounds=3,
    import_records=1_000_000,
    import_rounds=1,
)
QUICK = replace(
    FULL,
    rounds=3,
    save_batches=10,
    prepare_records=5_000,
    complete_calls=3,
    single_calls=300,
    cycle_batches=500,
    progress_sizes=(10_000, 100_000),
    progress_calls=5,
    e2e_records=100_000,
    e2e_rounds=2,
    concurrency_seconds=1.0,
    concurrency_runs=1,
    import_records=100_000,
)
SMOKE = replace(
    FULL,
    rounds=1,
    batch_size=20,
    save_batches=2,
    prepare_records=40,
    complete_calls=1,
    complete_records=50,
    single_calls=10,
    cycle_batches=40,
    processes=2,
    progress_sizes=(1000, 2000),
    progress_calls=2,
    e2e_records=200,
    e2e_processes=2,
    e2e_rounds=1,
    concurrency_levels=(1, 8),
    concurrency_wait_ms=2,
    concurrency_seconds=0.05,
    concurrency_batch_size=20,
    concurrency_runs=1,
    import_records=200,
)


# -- results ----------------------------------------------------------------------------


@dataclass
class Row:
    """One line of the table. ``ratio`` is library / baseline (None when not a ratio)."""

    backend: str
    what: str
    library: str
    baseline: str
    ratio: float | None
    target: str
    verdict: str


def rate(n: float) -> str:
    return f"{n:,.0f}/s"


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.2f} ms"


def at_least(ratio: float, target: float) -> str:
    return "ok" if ratio >= target else "MISSED"


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# -- data -------------------------------------------------------------------------------


def dumps(value: Any) -> str:
    """JSON as the library's codec writes it (compact, UTF-8)."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def source_record(i: int) -> dict[str, Any]:
    return {"email": f"user{i}@example.com", "name": f"User {i}", "age": i % 90, "tags": ["a", "b"]}


def records(start: int, count: int, status: RecordStatus) -> list[ProcessedRecord]:
    return [
        ProcessedRecord(index=i, raw=(d := source_record(i)), parsed=d, status=status)
        for i in range(start, start + count)
    ]


def record_tuples(
    job_id: str, batch_id: str, start: int, count: int, status: str
) -> list[tuple[Any, ...]]:
    """Raw rows with their JSON already encoded: the ready side's input (it encodes none)."""
    rows = []
    for i in range(start, start + count):
        text = dumps(source_record(i))
        rows.append((job_id, batch_id, i, status, text, text, "[]", None))
    return rows


def new_id(tag: str) -> str:
    return f"{tag}-{uuid.uuid4().hex[:24]}"


def distributed_job(job_id: str, batch_ids: Sequence[str], batch_size: int) -> JobState:
    batches = [
        Batch(
            id=b,
            index=k,
            status=BatchStatus.PENDING,
            record_start_index=k * batch_size,
            record_end_index=(k + 1) * batch_size - 1,
        )
        for k, b in enumerate(batch_ids)
    ]
    return JobState(
        id=job_id,
        config=JobConfig.model_validate({"batchSize": batch_size}),
        status=JobStatus.PROCESSING,
        batches=batches,
        total_records=len(batch_ids) * batch_size,
        started_at=int(time.time() * 1000),
        distributed=True,
    )


def setup_job(
    store: PeeweeStateStore, job_id: str, batches: int, batch_size: int, with_records: bool
) -> list[str]:
    """A PROCESSING distributed job (through the store's API: setup, never timed)."""
    batch_ids = [new_id("b") for _ in range(batches)]
    if with_records:
        for k, b in enumerate(batch_ids):
            store.save_batch_records(
                job_id, b, records(k * batch_size, batch_size, RecordStatus.PENDING)
            )
    store.save_job_state(distributed_job(job_id, batch_ids, batch_size))
    return batch_ids


# -- databases --------------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    """Where one backend's benchmark database lives: picklable, for worker processes."""

    kind: str
    path: str = ""  # SQLite file
    host: str = ""
    port: int = 0
    user: str = ""
    password: str = ""
    database: str = ""

    @classmethod
    def from_url(cls, kind: str, url: str) -> Target:
        u = urllib.parse.urlsplit(url)
        return cls(
            kind=kind,
            host=u.hostname or "127.0.0.1",
            port=u.port or (3306 if kind == "mysql" else 5432),
            user=urllib.parse.unquote(u.username or ("root" if kind == "mysql" else "postgres")),
            password=urllib.parse.unquote(u.password or ""),
            database=u.path.lstrip("/"),
        )

    def peewee(self) -> pw.Database:
        """The library's connection: same settings as the raw one."""
        if self.kind == "sqlite":
            pragmas = {
                "journal_mode": "wal",
                "synchronous": "normal",
                "busy_timeout": BUSY_TIMEOUT_MS,
            }
            return pw.SqliteDatabase(self.path, pragmas=pragmas, timeout=BUSY_TIMEOUT_MS / 1000)
        if self.kind == "mysql":
            return pw.MySQLDatabase(
                self.database,
                host=self.host,
                port=self.port,
                user=self.user,
                password=self.password,
            )
        return pw.PostgresqlDatabase(
            self.database, host=self.host, port=self.port, user=self.user, password=self.password
        )

    def raw(self) -> Raw:
        """The driver used directly, autocommit like Peewee's connections."""
        if self.kind == "sqlite":
            conn: Any = sqlite3.connect(
                self.path,
                isolation_level=None,
                timeout=BUSY_TIMEOUT_MS / 1000,
                check_same_thread=False,
            )
            conn.execute("PRAGMA journal_mode = wal")
            conn.execute("PRAGMA synchronous = normal")
            conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        elif self.kind == "mysql":
            pymysql: Any = importlib.import_module("pymysql")
            conn = pymysql.connect(
                host=self.host,
                port=self.port,
                user=self.user,
                password=self.password,
                database=self.database,
                charset="utf8mb4",
                autocommit=True,
            )
        else:
            psycopg2: Any = importlib.import_module("psycopg2")
            conn = psycopg2.connect(
                host=self.host,
                port=self.port,
                user=self.user,
                password=self.password,
                dbname=self.database,
            )
            conn.autocommit = True
        return Raw(self.kind, conn)


@contextlib.contextmanager
def fresh_target(kind: str, urls: dict[str, str]) -> Iterator[Target]:
    """A database of the benchmark's own: a temp SQLite file, or a new server database."""
    if kind == "sqlite":
        with tempfile.TemporaryDirectory(prefix="batchactions-bench-") as tmp:
            yield Target(kind="sqlite", path=str(Path(tmp) / "bench.db"))
        return
    admin = Target.from_url(kind, urls[kind])
    name = f"batchactions_bench_{os.getpid()}_{secrets.token_hex(4)}"
    raw = admin.raw()
    if kind == "mysql":
        raw.execute(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4 COLLATE utf8mb4_general_ci")
    else:
        raw.execute(f'CREATE DATABASE "{name}"')
    try:
        yield replace(admin, database=name)
    finally:
        if kind == "mysql":
            raw.execute(f"DROP DATABASE IF EXISTS `{name}`")
        else:
            raw.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        raw.close()


class Bench:
    """One backend's benchmark database(s), with a library store and raw tables per row.

    Each side has tables of its own (created by the library: the same DDL). On SQLite each
    side also has a file of its own (same pragmas: ``raw.db`` and ``ready.db`` beside the
    library's), so that each pays for its own WAL checkpoints rather than for whichever
    side's commit happens to trigger one. On a server the sides share the benchmark's
    database.
    """

    def __init__(self, target: Target, sizes: Sizes, profile_dir: Path | None = None) -> None:
        self.target = target
        self.kind = target.kind
        self.sizes = sizes
        self.profile_dir = profile_dir
        self.db = target.peewee()
        self.admin = target.raw()  # setup and checks of the library's tables (never timed)
        self.raw_target = self._beside(target, "raw.db")
        self.ready_target = self._beside(target, "ready.db")
        self.raw_db = self.raw_target.peewee() if target.kind == "sqlite" else self.db
        self.ready_db = self.ready_target.peewee() if target.kind == "sqlite" else self.db
        self.raw = self.raw_target.raw()  # the raw side's connection
        self.ready = self.ready_target.raw()  # the ready side's connection
        self.stores: list[PeeweeStateStore] = []

    @staticmethod
    def _beside(target: Target, name: str) -> Target:
        if target.kind != "sqlite":
            return target
        return replace(target, path=str(Path(target.path).with_name(name)))

    def store(self, prefix: str, *, side: str = "library") -> PeeweeStateStore:
        """A store with fresh tables in ``side``'s database ("library", "raw" or "ready");
        the raw sides write theirs with hand-written SQL."""
        database = {"library": self.db, "raw": self.raw_db, "ready": self.ready_db}[side]
        store = PeeweeStateStore(database, table_prefix=prefix)
        store.drop_tables()
        store.create_tables()
        self.stores.append(store)
        return store

    def profile(self, name: str, action: Callable[[], object]) -> None:
        """With --profile: run ``action`` once more under pyinstrument, save the report."""
        if self.profile_dir is None:
            return
        global _profiler
        pyinstrument: Any = importlib.import_module("pyinstrument")
        profiler = _profiler = pyinstrument.Profiler(interval=0.0005)
        try:
            action()
        finally:
            _profiler = None
        tree = profiler.output_text(time="percent_of_total")
        full = profiler.output_text(time="percent_of_total", show_all=True)
        flat = profiler.output_text(flat=True)
        self.profile_dir.mkdir(parents=True, exist_ok=True)
        path = self.profile_dir / f"{self.kind}-{name}.txt"
        path.write_text(
            f"# {self.kind} {name}: pyinstrument, library side, timed sections only\n\n"
            f"## Call tree (library frames)\n{tree}\n"
            f"## Self time by function (top of the list)\n"
            + "\n".join(flat.splitlines()[:60])
            + f"\n\n## Call tree (all frames)\n{full}"
        )
        log(f"  profile written to {path}")

    def drop_all(self) -> None:
        for store in self.stores:
            store.drop_tables()
        self.stores.clear()

    def close(self) -> None:
        self.drop_all()
        for conn in (self.raw, self.ready, self.admin):
            conn.close()
        for db in {id(d): d for d in (self.db, self.raw_db, self.ready_db)}.values():
            db.close()


# -- measurement ------------------------------------------------------------------------

_profiler: Any = None  # set by Bench.profile: samples only the timed sections


def timed(action: Callable[[], object]) -> float:
    """Seconds ``action`` takes (the only code the profiler samples under --profile)."""
    if _profiler is not None:
        _profiler.start()
    started = time.perf_counter()
    try:
        action()
    finally:
        elapsed = time.perf_counter() - started
        if _profiler is not None:
            _profiler.stop()
    return elapsed


def peak_rss_mb() -> float:
    """This process's peak RSS in MB: VmHWM, which starts afresh at exec. (ru_maxrss would
    not: a spawned process inherits the high-water mark of the parent it was forked from.)"""
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024  # kB
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


Step = Callable[[], float]  # prepares untimed, runs its timed part, returns its seconds


@dataclass
class Round:
    """One round of a row: the same work cut into steps, for each side.

    ``raw`` is the raw driver given the library's input (records, dicts) and encoding their
    JSON itself, inside the timed part, with the fastest encoder at hand and no checks: the
    same work. ``ready`` is the raw driver given rows whose JSON is encoded already: the
    database's and driver's share alone.
    """

    units: int  # rows, records or calls the round's steps do on each side
    library: list[Step]
    raw: list[Step]
    ready: list[Step]


@dataclass(frozen=True)
class Compared:
    """Median rates (units/s) of each side and median per-round ratios library / side."""

    library: float
    raw: float
    ready: float
    ratio: float  # library / raw
    ready_ratio: float  # library / ready


#: prepare_job and save_processed_record run three times the rounds of the other bulk rows,
#: because their ratios move most from run to run: prepare makes one step per side and
#: round, so a burst of the machine's other load falls on one side; a call of
#: save_processed_record is short enough for one side's WAL checkpoint to weigh.
NOISY_ROW_ROUNDS = 3


def compare(
    b: Bench, name: str, make_round: Callable[[], Round], rounds: int | None = None
) -> Compared:
    """Run each round's steps side by side, step by step, the order of the sides rotating
    from step to step and round to round, so that whatever else the machine does falls on
    every side alike."""
    rates: list[list[float]] = [[], [], []]
    ratios: list[list[float]] = [[], []]
    for r in range(rounds or b.sizes.rounds):
        work = make_round()
        seconds = [0.0, 0.0, 0.0]
        sides = list(zip(work.library, work.raw, work.ready, strict=True))
        for i, steps in enumerate(sides):
            first = (i + r) % 3
            for k in (first, (first + 1) % 3, (first + 2) % 3):
                seconds[k] += steps[k]()
        for k in range(3):
            rates[k].append(work.units / seconds[k])
        ratios[0].append(seconds[1] / seconds[0])
        ratios[1].append(seconds[2] / seconds[0])
    b.profile(name, lambda: [step() for step in make_round().library])
    lib, raw, ready = (statistics.median(x) for x in rates)
    return Compared(lib, raw, ready, statistics.median(ratios[0]), statistics.median(ratios[1]))


def bulk_rows(
    b: Bench, what: str, c: Compared, target: float, *, raw_does: str = "encoding its JSON"
) -> list[Row]:
    """A bulk row's two lines: against the raw driver doing the same work (the target), and,
    to show the encoding's share, against raw rows whose JSON is ready-made (reported)."""
    return [
        Row(
            b.kind,
            what,
            rate(c.library),
            f"{rate(c.raw)} ({raw_does})",
            c.ratio,
            f">= {target}x",
            at_least(c.ratio, target),
        ),
        Row(
            b.kind,
            "  same, against raw rows with their JSON ready-made",
            rate(c.library),
            rate(c.ready),
            c.ready_ratio,
            "report",
            "ok",
        ),
    ]
