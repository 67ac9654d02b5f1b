"""``batchactions_peewee.contrib.celery``: dispatch's checks and redaction on an in-memory
broker, the task run eagerly, and a real prefork Celery worker on RabbitMQ whose child is
killed with SIGKILL mid-batch (``test_killed_child``)."""

from __future__ import annotations

import contextlib
import importlib
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import peewee as pw
import pytest

celery = pytest.importorskip("celery")

from batchactions_peewee import PeeweeStateStore, prepare_job  # noqa: E402
from batchactions_peewee.contrib import celery as contrib  # noqa: E402
from batchactions_peewee.errors import (  # noqa: E402
    InvalidIdentifierError,
    InvalidInputError,
    InvalidValueError,
    JobNotFoundError,
    StoreUnavailable,
)
from batchactions_peewee.reports import CODE_KEY  # noqa: E402

from ..support import celery_processor  # noqa: E402
from ..support.backends import BROKER_ENV, BROKER_URL, IN_CI, open_database  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
PROCESSOR = "tests.support.celery_processor:process"
PASSWORD = "s3cret-celery-pw"


# -- fixtures --------------------------------------------------------------------------------


@pytest.fixture
def memory_app() -> Iterator[Any]:
    """A Celery app on kombu's in-memory transport, current for the test."""
    app = celery.Celery("unit", broker="memory://", set_as_current=True)
    app.set_current()
    yield app
    app.close()


@pytest.fixture
def published(memory_app: Any) -> Iterator[list[dict[str, Any]]]:
    """Every task message sent during the test: its headers and body."""
    sent: list[dict[str, Any]] = []

    def record(headers: dict[str, Any], body: Any, **kwargs: Any) -> None:
        sent.append({"headers": headers, "body": body})

    celery.signals.before_task_publish.connect(record, weak=False)
    yield sent
    celery.signals.before_task_publish.disconnect(record)


@pytest.fixture
def sqlite_job(tmp_path: Path) -> tuple[str, str]:
    """A SQLite database URL and the id of a 1,000-record job on it (batches of 100) that
    remembers the test processor."""
    url = f"sqlite:///{tmp_path / 'jobs.db'}"
    database = open_database(url)
    store = PeeweeStateStore(database)
    store.create_tables()
    prepared = prepare_job(
        store,
        ({"n": i} for i in range(1000)),
        batch_size=100,
        config={CODE_KEY: {"processor": PROCESSOR}},
    )
    database.close()
    return url, prepared.job_id


# -- import ----------------------------------------------------------------------------------


def test_import_without_celery_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "celery", None)  # what `import celery` finds uninstalled
    monkeypatch.delitem(sys.modules, "batchactions_peewee.contrib.celery")
    with pytest.raises(ImportError) as raised:
        importlib.import_module("batchactions_peewee.contrib.celery")
    assert 'pip install "batchactions-peewee[celery]"' in str(raised.value)
    assert "batchactions_peewee.contrib.celery needs Celery" in str(raised.value)


def test_the_task_is_late_acked_and_requeued_when_its_worker_is_lost(memory_app: Any) -> None:
    task = memory_app.tasks[contrib.TASK_NAME]
    assert (task.acks_late, task.reject_on_worker_lost) == (True, True)


# -- dispatch: checks before anything is sent ------------------------------------------------


@pytest.mark.parametrize("workers", [0, -1, True, "4", 2.0])
def test_dispatch_refuses_a_bad_worker_count(
    sqlite_job: tuple[str, str], published: list[dict[str, Any]], workers: Any
) -> None:
    url, job_id = sqlite_job
    with pytest.raises(InvalidValueError, match="workers must be a positive integer"):
        contrib.dispatch(job_id, url, workers=workers)
    assert published == []


@pytest.mark.parametrize(
    ("options", "error", "message"),
    [
        ({"lease_timeout": 3000}, InvalidInputError, "unknown worker option 'lease_timeout'"),
        ({"on_event": "print"}, InvalidInputError, "unknown worker option 'on_event'"),
        ({"lease_timeout_ms": 0}, InvalidValueError, "lease_timeout_ms must be positive"),
        ({"max_retries": -1}, InvalidInputError, "max_retries"),
        ({"max_batches": 0}, InvalidValueError, "max_batches must be a positive integer"),
        ({"max_duration_ms": "1s"}, InvalidValueError, "max_duration_ms must be a positive"),
        ({"concurrency": 0}, InvalidInputError, "concurrency"),
        ({"worker_id": "w" * 127}, InvalidIdentifierError, "128"),
        ({"transactional": True}, InvalidInputError, "transactional=True is for a batch"),
        ({"processor": "no_colon"}, InvalidInputError, "processor must be a 'module:attr'"),
        ({"schema": 3}, InvalidInputError, "schema must be a 'module:attr' string"),
        (
            {"processor": PROCESSOR, "batch_processor": "m:f"},
            InvalidInputError,
            "processor and batch_processor exclude each other",
        ),
    ],
)
def test_dispatch_refuses_bad_options_before_sending(
    sqlite_job: tuple[str, str],
    published: list[dict[str, Any]],
    options: dict[str, Any],
    error: type[Exception],
    message: str,
) -> None:
    url, job_id = sqlite_job
    with pytest.raises(error, match=message):
        contrib.dispatch(job_id, url, workers=2, **options)
    assert published == []


def test_dispatch_refuses_an_unknown_job(
    sqlite_job: tuple[str, str], published: list[dict[str, Any]]
) -> None:
    url, _ = sqlite_job
    with pytest.raises(JobNotFoundError, match="no job nope in sqlite:///"):
        contrib.dispatch("nope", url, workers=1)
    with pytest.raises(JobNotFoundError, match="has no table other_jobs"):
        contrib.dispatch("nope", url, workers=1, table_prefix="other_")
    assert published == []


def test_dispatch_refuses_a_bad_or_unreachable_database(
    published: list[dict[str, Any]], tmp_path: Path
) -> None:
    with pytest.raises(InvalidInputError, match="database_url must be a string, got bytes"):
        contrib.dispatch("job", b"sqlite:///x.db", workers=1)  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match="unknown scheme 'nosql'"):
        contrib.dispatch("job", "nosql://host/db", workers=1)
    unreachable = f"postgresql://u:{PASSWORD}@127.0.0.1:9/db"
    with pytest.raises(StoreUnavailable, match="cannot connect to") as raised:
        contrib.dispatch("job", unreachable, workers=1)
    assert PASSWORD not in str(raised.value)
    with pytest.raises(StoreUnavailable, match="no database at"):
        contrib.dispatch("job", f"sqlite:///{tmp_path / 'missing.db'}", workers=1)
    assert published == []


# -- dispatch: what is sent ------------------------------------------------------------------


def test_dispatch_sends_one_group_with_the_password_redacted(
    url_for: Callable[[str], str], published: list[dict[str, Any]]
) -> None:
    secret_url = _with_password(url_for("postgres"))  # trust auth: the password goes unused
    prefix = f"celery_{secrets.token_hex(3)}_"
    database = open_database(secret_url)
    store = PeeweeStateStore(database, table_prefix=prefix)
    store.create_tables()
    try:
        job_id = prepare_job(store, [{"n": 1}], batch_size=10).job_id
        _check_sent(published, job_id, secret_url, prefix)
    finally:
        store.drop_tables()
        database.close()


def _check_sent(published: list[dict[str, Any]], job_id: str, secret_url: str, prefix: str) -> None:
    result = contrib.dispatch(
        job_id,
        secret_url,
        workers=3,
        queue="q1",
        table_prefix=prefix,
        worker_id="import",
        lease_timeout_ms=5000,
    )
    assert isinstance(result, celery.result.GroupResult)
    assert len(result.results) == 3
    assert len(published) == 3
    ids = []
    for message in published:
        headers, (args, kwargs, _) = message["headers"], message["body"]
        assert headers["task"] == "batchactions_peewee.work_job"
        assert headers["group"] == result.id
        assert list(args) == [job_id, secret_url]  # the task gets the real URL ...
        assert PASSWORD not in headers["argsrepr"] + headers["kwargsrepr"]  # ... logs do not
        assert "postgres:***@" in headers["argsrepr"]
        assert kwargs["lease_timeout_ms"] == 5000
        ids.append(kwargs["worker_id"])
    assert ids == ["import-1", "import-2", "import-3"]


def test_signatures_redact_the_user_password() -> None:
    url = f"postgresql://batch:{PASSWORD}@db.internal/batch"
    (task,) = contrib.work_signatures("job-1", url, [None], {"table_prefix": "x_"}, queue="q")
    assert task.args == ("job-1", url)
    assert task.options["argsrepr"] == "('job-1', 'postgresql://batch:***@db.internal/batch')"
    assert task.options["kwargsrepr"] == "{'table_prefix': 'x_'}"
    assert task.options["queue"] == "q"


# -- the task, run eagerly -------------------------------------------------------------------


def test_eager_tasks_use_the_remembered_processor_and_finalize_once(
    memory_app: Any,
    sqlite_job: tuple[str, str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    memory_app.conf.task_always_eager = True
    monkeypatch.setenv(celery_processor.LOG_ENV, str(tmp_path))
    url, job_id = sqlite_job
    summaries = contrib.dispatch(job_id, url, workers=2).get()
    assert [s["finalized"] for s in summaries] == [True, False]
    assert sum(s["processed"] for s in summaries) == 999
    assert sum(s["failed"] for s in summaries) == 1  # record 999
    assert summaries[0]["batches"] == 10
    assert summaries[1]["batches"] == 0
    for summary in summaries:
        assert summary["worker_id"].startswith(f"celery-{socket.gethostname()[:80]}-{os.getpid()}-")
        assert summary["stopped"] == "done"
    calls = Counter(int(line) for f in tmp_path.glob("calls-*.log") for line in f.open())
    assert sorted(calls) == list(range(1000))
    assert set(calls.values()) == {1}


def test_run_job_refuses_an_unknown_option_and_reports_a_bad_processor(
    sqlite_job: tuple[str, str],
) -> None:
    url, job_id = sqlite_job
    with pytest.raises(InvalidInputError, match="unknown worker option 'hooks'"):
        contrib.run_job(job_id, url, hooks=None)
    with pytest.raises(InvalidInputError, match=r"processor tests\.nope:f: cannot import"):
        contrib.run_job(job_id, url, processor="tests.nope:f")
    with pytest.raises(JobNotFoundError):
        contrib.run_job("missing", url)


# -- a real worker, a killed child ------------------------------------------------------------

RECORDS = 50_000
BATCH_SIZE = 500
WORKERS = 4
BLOCK_AT = 20_250  # mid-batch 40
LEASE_MS = 3000
CELERY = [
    *(sys.executable, "-m", "celery", "-A", "tests.support.celery_app", "worker"),
    *("--pool", "prefork", "-l", "info", "--without-gossip", "--without-mingle"),
]


@pytest.fixture(scope="module")
def broker() -> str:
    """The broker URL, once it answers: unreachable, the test fails under CI, else skips."""
    from ..support.celery_app import app

    try:
        with app.connection_for_write() as connection:
            connection.ensure_connection(max_retries=1)
    except Exception as exc:
        reason = f"no RabbitMQ at {BROKER_URL} (set {BROKER_ENV}): {exc}"
        if IN_CI:
            pytest.fail(f"CI=true: {reason}")
        pytest.skip(reason)
    return BROKER_URL


def _with_password(url: str) -> str:
    """``url`` with a password its server does not ask for (trust auth)."""
    parts = urllib.parse.urlsplit(url)
    user, _, host = parts.netloc.rpartition("@")
    return urllib.parse.urlunsplit(parts._replace(netloc=f"{user}:{PASSWORD}@{host}"))


def _batches(database: pw.Database, prefix: str) -> list[dict[str, Any]]:
    table = pw.Table(
        f"{prefix}batches",
        ("id", "batchIndex", "status", "workerId", "version", "recordStartIndex", "recordEndIndex"),
    ).bind(database)
    return list(table.select().dicts())


def _children(pid: int) -> list[int]:
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        with contextlib.suppress(OSError):  # a thread or process may end while we read it
            found += [int(p) for p in (task / "children").read_text().split()]
    return found


def _wait(what: str, check: Callable[[], Any], timeout_s: float) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")


def _stop(worker: subprocess.Popen[bytes], children: list[int]) -> None:
    if worker.poll() is None:
        worker.send_signal(signal.SIGTERM)
        try:
            worker.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(worker.pid, signal.SIGKILL)
            worker.wait()
    for child in children:  # a child the warm shutdown left behind
        if Path(f"/proc/{child}").exists():
            os.kill(child, signal.SIGKILL)


@pytest.mark.slow
@pytest.mark.timeout(300)
@pytest.mark.parametrize("kind", ["postgres", "mysql"])
def test_killed_child(
    kind: str, broker: str, url_for: Callable[[str], str], tmp_path: Path
) -> None:
    from ..support.celery_app import app

    url = url_for(kind)
    if kind == "postgres":
        url = _with_password(url)  # trust auth: a password only the logs could leak
    prefix = f"celery_{secrets.token_hex(3)}_"
    queue = f"batchactions-test-{secrets.token_hex(4)}"
    database = open_database(url)
    store = PeeweeStateStore(database, table_prefix=prefix)
    store.create_tables()
    calls, marker, log = tmp_path / "calls", tmp_path / "blocked", tmp_path / "worker.log"
    calls.mkdir()
    env = {
        **os.environ,
        celery_processor.LOG_ENV: str(calls),
        celery_processor.RECORD_MS_ENV: "1",
        celery_processor.BLOCK_AT_ENV: str(BLOCK_AT),
        celery_processor.MARKER_ENV: str(marker),
    }
    worker: subprocess.Popen[bytes] | None = None
    children: list[int] = []
    try:
        job_id = prepare_job(
            store,
            ({"n": i} for i in range(RECORDS)),
            batch_size=BATCH_SIZE,
            config={CODE_KEY: {"processor": PROCESSOR}},
        ).job_id
        with log.open("wb") as out:
            worker = subprocess.Popen(
                [*CELERY, "--concurrency", str(WORKERS), "-Q", queue, "-n", f"{queue}@%h"],
                cwd=REPO,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        children = _wait(
            "4 prefork children",
            lambda: len(_children(worker.pid)) >= 4 and _children(worker.pid),
            60,
        )
        app.set_current()
        started = time.monotonic()
        result = contrib.dispatch(
            job_id,
            url,
            workers=WORKERS,
            queue=queue,
            table_prefix=prefix,
            lease_timeout_ms=LEASE_MS,
        )
        _wait(
            "4 workers holding leases at once",
            lambda: (
                len(
                    {
                        b["workerId"]
                        for b in _batches(database, prefix)
                        if b["status"] == "PROCESSING"
                    }
                )
                == WORKERS
            ),
            60,
        )
        victim = int(
            _wait("the blocked record", lambda: marker.exists() and marker.read_text(), 120)
        )
        assert victim in _children(worker.pid)
        (held,) = [
            b
            for b in _batches(database, prefix)
            if b["status"] == "PROCESSING" and f"-{victim}-" in b["workerId"]
        ]
        assert held["recordStartIndex"] <= BLOCK_AT < held["recordEndIndex"]
        os.kill(victim, signal.SIGKILL)
        summaries = result.get(timeout=240)
        wall_s = time.monotonic() - started
        children += _children(worker.pid)

        job = store.get_job_state(job_id)
        assert job is not None and job.status.value == "COMPLETED"
        counts = store.record_counts(job_id)
        assert counts == {"processed": RECORDS - RECORDS // 1000, "failed": RECORDS // 1000}
        assert sum(s["finalized"] for s in summaries) == 1
        assert len(summaries) == WORKERS
        assert all(s["stopped"] == "done" for s in summaries)
        # The killed task was put back on the queue and ran again in another child: its
        # summary (same task, so the same last 8 characters) names another process.
        task_suffix = held["workerId"].rsplit("-", 1)[1]
        (rerun,) = [s for s in summaries if s["worker_id"].endswith(f"-{task_suffix}")]
        assert rerun["worker_id"] != held["workerId"]

        batches = {b["id"]: b for b in _batches(database, prefix)}
        assert {b["status"] for b in batches.values()} == {"COMPLETED"}
        after = batches[held["id"]]
        assert after["workerId"] != held["workerId"]  # reclaimed and done by another worker
        assert after["version"] > held["version"]
        # Claim then finish is version 2; more means the batch changed hands.
        handed_over = [b for b in batches.values() if b["version"] > 2]
        assert held["id"] in {b["id"] for b in handed_over}

        seen = Counter(int(line) for f in calls.glob("calls-*.log") for line in f.open())
        assert sorted(seen) == list(range(RECORDS))  # every record given to a processor
        twice = {i for i, n in seen.items() if n > 1}
        redone = {i for b in handed_over for i in range(b["recordStartIndex"], b["recordEndIndex"])}
        assert twice <= redone  # only a batch that changed hands ran any record again
        assert BLOCK_AT in twice
        assert PASSWORD not in log.read_text()
        print(
            f"\n{kind}: processed {counts['processed']}, failed {counts['failed']}, "
            f"finalizers {sum(s['finalized'] for s in summaries)}, batches handed over "
            f"{len(handed_over)}, records run twice {len(twice)}, wall {wall_s:.1f} s"
        )
    finally:
        if worker is not None:
            _stop(worker, children)
        with app.connection_for_write() as connection:
            connection.default_channel.queue_delete(queue)
        store.drop_tables()
        database.close()
