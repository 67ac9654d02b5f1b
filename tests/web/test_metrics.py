"""``metrics_text`` on every database, parsed by prometheus_client's own parser, and
``/metrics`` as the dashboard and the ``metrics`` command serve it."""

from __future__ import annotations

import signal
from collections.abc import Callable
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from batchactions_peewee import JobStatus, PeeweeStateStore, Worker, metrics_text, prepare_job
from batchactions_peewee.errors import InvalidInputError

from ..support.cli import cli, ok
from ..support.stores import new_prefix
from .conftest import Serve
from .support import GONE_WORKER, Client, start_server

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def samples(text: str) -> Samples:
    """Every sample of the exposition by (name, sorted labels), through the reference
    parser (which refuses malformed text)."""
    found: Samples = {}
    for family in text_string_to_metric_families(text):
        assert family.type == "gauge", family.name
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def _age_lease(store: PeeweeStateStore, worker_id: str, by_ms: int) -> None:
    """Move ``worker_id``'s claim time back, as if it had gone quiet ``by_ms`` ago."""
    B = store.tables.batches
    B.update(claimed_at=B.claimed_at - by_ms).where(B.worker_id == worker_id).execute()


def test_metrics_of_a_running_and_a_finished_job(
    peewee_store: PeeweeStateStore, job_id: str
) -> None:
    done = prepare_job(peewee_store, [{"n": 1}, {"n": 2}], batch_size=1).job_id
    Worker(peewee_store, lambda record, context: None).run(done)
    _age_lease(peewee_store, GONE_WORKER, 3_600_000)

    text = metrics_text(peewee_store)
    found = samples(text)
    for status in JobStatus:
        expected = {JobStatus.PROCESSING: 1, JobStatus.COMPLETED: 1}.get(status, 0)
        assert found[("batchactions_jobs", (("status", status.value),))] == expected

    def of(name: str, **labels: str) -> float:
        return found[(name, tuple(sorted({"job_id": job_id, **labels}.items())))]

    # running_job: 10 records, batches 0-2 done (record 3 failed, 5 invalid), batch 3 held.
    records = {
        s: of("batchactions_job_records", status=s)
        for s in ("pending", "processed", "invalid", "failed")
    }
    assert records == {"pending": 4, "processed": 4, "invalid": 1, "failed": 1}
    batches = {
        s: of("batchactions_job_batches", status=s)
        for s in ("PENDING", "PROCESSING", "COMPLETED", "FAILED")
    }
    assert batches == {"PENDING": 1, "PROCESSING": 1, "COMPLETED": 3, "FAILED": 0}
    assert of("batchactions_leases_held") == 1
    assert of("batchactions_leases_stale") == 1
    assert 3600 <= of("batchactions_oldest_lease_age_seconds") < 3600 + 120
    assert of("batchactions_job_records_per_second") >= 0
    # A finished job is counted, not described.
    assert not [key for key in found if ("job_id", done) in key[1]]
    assert peewee_store.database.database not in text  # no database name, URL or password

    # With a lease timeout longer than the lease's age, it is held but not stale.
    longer = samples(metrics_text(peewee_store, lease_timeout_ms=10 * 3_600_000))
    assert longer[("batchactions_leases_stale", (("job_id", job_id),))] == 0


def test_label_values_are_escaped(peewee_store: PeeweeStateStore) -> None:
    odd = 'a"b\\c'
    prepare_job(peewee_store, [{"n": 1}], batch_size=1, job_id=odd)
    found = samples(metrics_text(peewee_store))
    assert found[("batchactions_leases_held", (("job_id", odd),))] == 0


@pytest.mark.parametrize("timeout", [0, -1, 1.5, "5"])
def test_a_bad_lease_timeout_is_refused(peewee_store: PeeweeStateStore, timeout: object) -> None:
    with pytest.raises(InvalidInputError, match="lease_timeout_ms"):
        metrics_text(peewee_store, lease_timeout_ms=timeout)  # type: ignore[arg-type]


def test_the_dashboard_serves_metrics_behind_its_token(job_id: str, serve: Serve) -> None:
    open_client = serve()
    answer = open_client.get("/metrics")
    assert answer.status == 200
    assert answer.headers["content-type"].startswith("text/plain; version=0.0.4")
    assert samples(answer.text)[("batchactions_leases_held", (("job_id", job_id),))] == 1
    assert open_client.get("/metrics?x=1").status == 400
    assert open_client.post("/metrics").status == 405

    guarded = serve(token="s3cret")
    assert guarded.get("/metrics").status == 401
    assert guarded.get("/metrics", Authorization="Bearer wrong").status == 401
    assert guarded.get("/metrics", Authorization="Bearer s3cret").status == 200


def test_the_metrics_command_serves_only_metrics(
    tmp_path: Path, url_for: Callable[[str], str]
) -> None:
    target = ["--database", url_for("sqlite"), "--table-prefix", new_prefix()]
    ok(cli(*target, "init", cwd=tmp_path))
    command = [*target, "metrics", "--port", "0", "--token", "t0ken"]
    server, told = start_server(tmp_path, *command)
    try:
        assert told["url"].startswith("http://127.0.0.1:") and told["url"].endswith("/metrics")
        assert told["tokenRequired"] is True
        port = int(told["url"].removesuffix("/metrics").rpartition(":")[2])
        client = Client(port, {"Authorization": "Bearer t0ken"})
        found = samples(client.get("/metrics").text)
        assert found[("batchactions_jobs", (("status", "PROCESSING"),))] == 0
        assert client.get("/").status == 404
        assert client.get("/api/jobs").status == 404
        assert Client(port).get("/metrics").status == 401
    finally:
        server.send_signal(signal.SIGINT)
        server.wait(timeout=30)
    assert server.returncode == 0


def test_the_metrics_command_refuses_a_public_address_without_a_token(tmp_path: Path) -> None:
    database = f"sqlite:///{tmp_path / 'x.db'}"
    result = cli("--database", database, "metrics", "--host", "0.0.0.0", cwd=tmp_path)
    assert result.returncode == 2
    assert "give --token T" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "x.db").exists()
