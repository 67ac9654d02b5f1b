"""``WorkerMetrics``: real workers on SQLite feed it their events, and each counter holds
exactly what the workers wrote (read back through ``registry.get_sample_value``)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import peewee as pw
import pydantic
import pytest
from prometheus_client import REGISTRY, CollectorRegistry

from batchactions_peewee import (
    BatchCompleted,
    BatchFailed,
    ClaimBatchResult,
    PeeweeStateStore,
    ProcessingContext,
    Worker,
    WorkerEvent,
    prepare_job,
)
from batchactions_peewee.contrib.prometheus import WorkerMetrics
from batchactions_peewee.errors import InvalidInputError, StoreUnavailable

from ..support.backends import open_database
from ..support.stores import new_prefix


class Numbered(pydantic.BaseModel):
    n: int


@pytest.fixture
def database(tmp_path: Path) -> Iterator[pw.Database]:
    db = open_database(f"sqlite:///{tmp_path / 'metrics.db'}")
    yield db
    db.close()


@pytest.fixture
def store(database: pw.Database) -> PeeweeStateStore:
    s = PeeweeStateStore(database, table_prefix=new_prefix())
    s.create_tables()
    return s


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


def value(registry: CollectorRegistry, name: str, **labels: str) -> float | None:
    return registry.get_sample_value(name, labels)


def records_of(registry: CollectorRegistry, job_id: str) -> dict[str, float | None]:
    return {
        outcome: value(registry, "batchactions_records_total", job_id=job_id, outcome=outcome)
        for outcome in ("processed", "invalid", "failed")
    }


def both(*handlers: Callable[[WorkerEvent], object]) -> Callable[[WorkerEvent], None]:
    def handle(event: WorkerEvent) -> None:
        for handler in handlers:
            handler(event)

    return handle


def rows() -> list[dict[str, Any]]:
    """12 records in 3 batches of 4: record 5 invalid; 2 and 9 always fail, 7 once."""
    return [{"n": "five"} if i == 5 else {"n": i} for i in range(12)]


def flaky_processor() -> Callable[[dict[str, Any], ProcessingContext], None]:
    tried: set[int] = set()

    def processor(record: dict[str, Any], context: ProcessingContext) -> None:
        n = record["n"]
        if n in (2, 9) or (n == 7 and n not in tried):
            tried.add(n)
            raise ValueError(f"record {n} failed")

    return processor


@pytest.mark.parametrize("concurrency", [1, 3])
def test_a_run_counts_records_batches_retries_and_durations_exactly(
    store: PeeweeStateStore, registry: CollectorRegistry, concurrency: int
) -> None:
    job_id = prepare_job(store, rows(), batch_size=4).job_id
    metrics = WorkerMetrics(registry)
    events: list[WorkerEvent] = []
    worker = Worker(
        store,
        flaky_processor(),
        schema=Numbered,
        max_retries=1,
        sleep=lambda s: None,
        concurrency=concurrency,  # 3: batches written behind, events held meanwhile
        on_event=both(events.append, metrics.observe),
    )
    summary = worker.run(job_id)
    assert (summary.processed, summary.failed, summary.retries) == (9, 3, 3)

    assert records_of(registry, job_id) == {"processed": 9, "invalid": 1, "failed": 2}
    batches = "batchactions_batches_total"
    assert value(registry, batches, job_id=job_id, outcome="completed") == 3
    assert value(registry, batches, job_id=job_id, outcome="failed") == 0
    assert value(registry, "batchactions_record_retries_total", job_id=job_id) == 3
    done = [e for e in events if isinstance(e, BatchCompleted)]
    duration = "batchactions_batch_duration_seconds"
    assert value(registry, f"{duration}_count", job_id=job_id) == 3
    assert value(registry, f"{duration}_sum", job_id=job_id) == pytest.approx(
        sum(e.elapsed_ms for e in done) / 1000
    )
    assert value(registry, f"{duration}_bucket", job_id=job_id, le="+Inf") == 3
    # Every series of the job exists from its first event, at 0 until counted.
    assert value(registry, "batchactions_leases_lost_total", job_id=job_id) == 0
    assert value(registry, "batchactions_store_errors_total", job_id=job_id) == 0


def test_a_failed_batch_counts_as_failed_with_its_records(
    store: PeeweeStateStore, registry: CollectorRegistry
) -> None:
    job_id = prepare_job(store, [{"n": i} for i in range(6)], batch_size=3).job_id
    metrics = WorkerMetrics(registry)
    events: list[WorkerEvent] = []

    def processor(record: dict[str, Any], context: ProcessingContext) -> None:
        if record["n"] == 1:
            raise ValueError("stop here")

    worker = Worker(
        store, processor, continue_on_error=False, on_event=both(events.append, metrics.observe)
    )
    summary = worker.run(job_id)
    assert (summary.batches, summary.processed, summary.failed) == (2, 4, 1)
    (failed,) = [e for e in events if isinstance(e, BatchFailed)]
    assert failed.record_index == 1
    # Record 2 stays pending: neither processed nor failed.
    assert records_of(registry, job_id) == {"processed": 4, "invalid": 0, "failed": 1}
    batches = "batchactions_batches_total"
    assert value(registry, batches, job_id=job_id, outcome="completed") == 1
    assert value(registry, batches, job_id=job_id, outcome="failed") == 1
    assert value(registry, "batchactions_batch_duration_seconds_count", job_id=job_id) == 2


def test_a_lost_lease_is_counted_and_its_records_are_not(
    store: PeeweeStateStore, registry: CollectorRegistry
) -> None:
    job_id = prepare_job(store, [{"n": "bad"}, *({"n": i} for i in range(1, 10))]).job_id
    metrics = WorkerMetrics(registry)
    worker: Worker

    def processor(record: dict[str, Any], context: ProcessingContext) -> None:
        if record["n"] == 2:
            store.release_batch(job_id, context.batch_id, worker.worker_id)
            assert context.lease_lost.wait(10)  # the next renewal is refused

    worker = Worker(
        store, processor, schema=Numbered, lease_timeout_ms=150, on_event=metrics.observe
    )
    result = worker.process_next(job_id)
    assert result.claimed and result.lease_lost
    assert value(registry, "batchactions_leases_lost_total", job_id=job_id) == 1
    assert records_of(registry, job_id) == {"processed": 0, "invalid": 0, "failed": 0}
    assert value(registry, "batchactions_batch_duration_seconds_count", job_id=job_id) == 0

    # The invalid record seen before the loss is not carried into the batch's next run.
    summary = Worker(store, lambda r, c: None, schema=Numbered, on_event=metrics.observe).run(
        job_id
    )
    assert (summary.processed, summary.failed) == (9, 1)
    assert records_of(registry, job_id) == {"processed": 9, "invalid": 1, "failed": 0}
    assert value(registry, "batchactions_leases_lost_total", job_id=job_id) == 1


class FirstClaimsFail(PeeweeStateStore):
    """A store whose first ``fails`` claims fail as a database gone away would."""

    fails = 2

    def claim_batch(self, job_id: str, worker_id: str) -> ClaimBatchResult:
        if self.fails:
            self.fails -= 1
            raise StoreUnavailable("the database went away (injected)")
        return super().claim_batch(job_id, worker_id)


def test_store_errors_outlived_are_counted(
    database: pw.Database, registry: CollectorRegistry
) -> None:
    store = FirstClaimsFail(database, table_prefix=new_prefix())
    store.create_tables()
    job_id = prepare_job(store, [{"n": i} for i in range(4)], batch_size=2).job_id
    metrics = WorkerMetrics(registry)
    summary = Worker(store, lambda r, c: None, sleep=lambda s: None, on_event=metrics.observe).run(
        job_id
    )
    assert (summary.store_errors, summary.processed, summary.finalized) == (2, 4, True)
    assert value(registry, "batchactions_store_errors_total", job_id=job_id) == 2
    assert records_of(registry, job_id)["processed"] == 4


def test_one_instance_serves_several_workers_and_jobs(
    store: PeeweeStateStore, registry: CollectorRegistry
) -> None:
    first = prepare_job(store, rows(), batch_size=4).job_id
    second = prepare_job(store, [{"n": i} for i in range(5)], batch_size=2).job_id
    metrics = WorkerMetrics(registry)
    for job_id in (first, first, second):  # the second worker of `first` finds nothing
        Worker(  # record 2 of `second` fails too
            store,
            flaky_processor(),
            schema=Numbered,
            max_retries=1,
            sleep=lambda s: None,
            on_event=metrics.observe,
        ).run(job_id)
    assert records_of(registry, first) == {"processed": 9, "invalid": 1, "failed": 2}
    assert records_of(registry, second) == {"processed": 4, "invalid": 0, "failed": 1}
    batches = "batchactions_batches_total"
    assert value(registry, batches, job_id=second, outcome="completed") == 3


def test_the_default_registry_is_prometheus_clients_and_a_namespace_renames() -> None:
    metrics = WorkerMetrics()
    try:
        assert metrics.registry is REGISTRY
        with pytest.raises(ValueError, match="Duplicated timeseries"):
            WorkerMetrics()
    finally:
        for collector in (
            metrics.records,
            metrics.batches,
            metrics.batch_duration,
            metrics.retries,
            metrics.leases_lost,
            metrics.store_errors,
        ):
            REGISTRY.unregister(collector)
    registry = CollectorRegistry()
    WorkerMetrics(registry, namespace="imports")
    names = {family.name for family in registry.collect()}
    assert names == {
        "imports_records",
        "imports_batches",
        "imports_batch_duration_seconds",
        "imports_record_retries",
        "imports_leases_lost",
        "imports_store_errors",
    }


@pytest.mark.parametrize("namespace", ["", "has space", "9lives", "dash-ed", 3])
def test_a_namespace_that_is_no_metric_name_is_refused(namespace: Any) -> None:
    registry = CollectorRegistry()
    with pytest.raises(InvalidInputError, match="namespace"):
        WorkerMetrics(registry, namespace=namespace)
    assert list(registry.collect()) == []


def test_without_prometheus_client_the_import_names_the_extra() -> None:
    code = (
        "import sys; sys.modules['prometheus_client'] = None\n"
        "import batchactions_peewee.contrib.prometheus\n"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert run.returncode == 1
    assert "ImportError" in run.stderr
    assert "pip install 'batchactions-peewee[prometheus]'" in run.stderr
