"""Workers and prepare_job in separate processes, killed with SIGKILL at a known point.

Each backend (SQLite file, MariaDB/MySQL, PostgreSQL) gets a few hundred records, so a test
takes a few seconds: mostly process start-up and one lease timeout (1.5 s).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from batchactions_peewee import (
    BatchStatus,
    ClaimFailureReason,
    JobStatus,
    PeeweeStateStore,
    Worker,
    prepare_job,
)
from batchactions_peewee.errors import JobExistsError

from ..support import REPO, child
from ..support.stores import PEEWEE_BACKENDS, make_store

pytestmark = pytest.mark.slow

LEASE_MS = 1500
TIMEOUT_S = 60


@contextmanager
def peewee_store(url: str) -> Iterator[PeeweeStateStore]:
    store, database = make_store(url)
    try:
        yield store
    finally:
        store.drop_tables()
        database.close()


class Helpers:
    """Starts child processes (support/child.py) and kills whatever is left at the end."""

    def __init__(self, url: str, store: PeeweeStateStore, tmp: Path) -> None:
        self.url, self.store, self.tmp = url, store, tmp
        self.procs: list[subprocess.Popen[str]] = []

    def start(self, command: str, job_id: str, *args: str) -> subprocess.Popen[str]:
        argv = child.argv(command, "--url", self.url)
        argv += ["--prefix", self.store.table_prefix, "--job-id", job_id, *args]
        proc = subprocess.Popen(
            argv, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        self.procs.append(proc)
        return proc

    def kill_all(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
            proc.communicate()


@pytest.fixture
def helpers_for(tmp_path: Path) -> Iterator[Callable[[str, PeeweeStateStore], Helpers]]:
    made: list[Helpers] = []

    def make(url: str, store: PeeweeStateStore) -> Helpers:
        made.append(Helpers(url, store, tmp_path))
        return made[-1]

    yield make
    for helpers in made:
        helpers.kill_all()


def wait_for(path: Path, proc: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + TIMEOUT_S
    while not path.exists():
        if proc.poll() is not None:
            raise AssertionError(f"helper exited early: {proc.communicate()}")
        if time.monotonic() > deadline:
            raise AssertionError(f"{path.name} never appeared")
        time.sleep(0.02)


def finish(proc: subprocess.Popen[str]) -> dict[str, Any]:
    out, err = proc.communicate(timeout=TIMEOUT_S)
    assert proc.returncode == 0, err
    result: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    return result


def invoked(log: Path) -> list[int]:
    return [int(line) for line in log.read_text().split()] if log.exists() else []


@pytest.mark.parametrize("kind", PEEWEE_BACKENDS)
def test_killed_workers_batch_is_reclaimed_and_the_job_completes_once(
    kind: str,
    url_for: Callable[[str], str],
    helpers_for: Callable[[str, PeeweeStateStore], Helpers],
    tmp_path: Path,
) -> None:
    url = url_for(kind)
    with peewee_store(url) as store:
        job = prepare_job(store, ({"n": i} for i in range(300)), batch_size=20)
        helpers = helpers_for(url, store)
        marker = tmp_path / "victim-blocked"
        victim_log = tmp_path / "victim.log"
        common = ["--lease-ms", str(LEASE_MS)]
        victim = helpers.start(
            "work",
            job.job_id,
            *common,
            *("--worker-id", "victim", "--log", str(victim_log)),
            *("--block-at", "5", "--marker", str(marker)),
        )
        wait_for(marker, victim)  # alone, the victim took batch 0 and blocks at record 5
        held = store.get_job_state(job.job_id)
        assert held is not None
        assert (held.batches[0].status, held.batches[0].worker_id) == (
            BatchStatus.PROCESSING,
            "victim",
        )

        logs = [tmp_path / f"survivor-{i}.log" for i in range(3)]
        survivors = [
            helpers.start(
                "work", job.job_id, *common, "--worker-id", f"survivor-{i}", "--log", str(log)
            )
            for i, log in enumerate(logs)
        ]
        os.kill(victim.pid, signal.SIGKILL)  # mid-batch: records 0-5 seen, none written
        victim.communicate(timeout=TIMEOUT_S)
        summaries = [finish(p) for p in survivors]

        state = store.get_job_state(job.job_id)
        assert state is not None and state.status == JobStatus.COMPLETED
        assert [s["finalized"] for s in summaries].count(True) == 1
        assert sum(s["processed"] for s in summaries) == 300
        assert sum(s["batches"] for s in summaries) == 15
        assert state.batches[0].worker_id in {f"survivor-{i}" for i in range(3)}
        assert all(b.status == BatchStatus.COMPLETED for b in state.batches)
        # Exactly one final result per record: all processed, none failed or pending.
        assert [r.index for r in store.get_processed_records(job.job_id)] == list(range(300))
        assert store.get_failed_records(job.job_id) == []
        assert store.get_pending_records(job.job_id) == []
        # At least once: the victim's records were processed again by a survivor.
        assert invoked(victim_log) == [0, 1, 2, 3, 4, 5]
        by_survivors = [i for log in logs for i in invoked(log)]
        assert set(by_survivors) == set(range(300))


@pytest.mark.parametrize("kind", PEEWEE_BACKENDS)
def test_prepare_killed_mid_stream_leaves_a_job_no_worker_claims(
    kind: str,
    url_for: Callable[[str], str],
    helpers_for: Callable[[str, PeeweeStateStore], Helpers],
    tmp_path: Path,
) -> None:
    url = url_for(kind)
    with peewee_store(url) as store:
        helpers = helpers_for(url, store)
        marker = tmp_path / "prepare-blocked"
        preparing = helpers.start(
            "prepare",
            "half-done",
            *("--records", "300", "--batch-size", "20"),
            *("--block-at", "150", "--marker", str(marker)),
        )
        wait_for(marker, preparing)
        os.kill(preparing.pid, signal.SIGKILL)
        preparing.communicate(timeout=TIMEOUT_S)

        job = store.get_job_state("half-done")
        assert job is not None
        assert (job.status, job.batches, job.distributed) == (JobStatus.CREATED, [], False)
        assert len(store.get_pending_records("half-done")) == 140  # 7 whole batches
        assert store.claim_batch("half-done", "w").reason == ClaimFailureReason.JOB_NOT_PROCESSING
        summary = Worker(store, lambda r, c: None).run("half-done")
        assert (summary.batches, summary.processed, summary.finalized) == (0, 0, False)
        assert store.try_finalize_job("half-done") is False
        # The orphan keeps its id until deleted.
        with pytest.raises(JobExistsError):
            prepare_job(store, [{"n": 1}], job_id="half-done")
