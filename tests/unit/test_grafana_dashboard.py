"""deploy/grafana/batchactions.json uses only metrics that exist: every name in a panel's
or a variable's query is a sample that ``metrics_text`` emits for a running job on SQLite,
or one that ``WorkerMetrics`` registers, and every label it matches on is one of that
metric's labels."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from batchactions_peewee import (
    BatchClaimed,
    BatchCompleted,
    BatchFailed,
    LeaseLost,
    PeeweeStateStore,
    RecordFailed,
    RecordStatus,
    StoreErrorOutlived,
    Worker,
    metrics_text,
    prepare_job,
)
from batchactions_peewee.contrib.prometheus import WorkerMetrics

from ..support.backends import open_database
from ..support.stores import new_prefix

DASHBOARD = Path(__file__).resolve().parents[2] / "deploy" / "grafana" / "batchactions.json"
METRIC = re.compile(r"\bbatchactions_[a-zA-Z0-9_]+")
SELECTOR = re.compile(r"\b(batchactions_[a-zA-Z0-9_]+)\{([^}]*)\}")
MATCHER = re.compile(r"([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)")
BY = re.compile(r"\bby\s*\(([^)]*)\)")

Labels = dict[str, set[str]]


def dashboard() -> dict[str, Any]:
    with DASHBOARD.open(encoding="utf-8") as f:
        loaded: dict[str, Any] = json.load(f)
    return loaded


def panels(board: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for panel in board["panels"]:
        yield panel
        yield from panel.get("panels", [])  # a collapsed row's own


def queries(board: dict[str, Any]) -> Iterator[str]:
    """Every PromQL text of the dashboard: its panels' targets and its variables'."""
    for panel in panels(board):
        for target in panel.get("targets", []):
            yield target["expr"]
    for variable in board["templating"]["list"]:
        if variable["type"] == "query":
            query = variable["query"]
            yield query["query"] if isinstance(query, dict) else query


def server_side(tmp_path: Path) -> Labels:
    """The samples (and their labels) that metrics_text emits for a running job: one
    batch written, one held, one pending."""
    database = open_database(f"sqlite:///{tmp_path / 'dashboard.db'}")
    try:
        store = PeeweeStateStore(database, table_prefix=new_prefix())
        store.create_tables()
        job_id = prepare_job(store, [{"n": i} for i in range(6)], batch_size=2).job_id
        Worker(store, lambda record, context: None).run(job_id, max_batches=1)
        assert store.claim_batch(job_id, "another-worker").claimed
        text = metrics_text(store)
    finally:
        database.close()
    found: Labels = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found.setdefault(sample.name, set()).update(sample.labels)
    assert "batchactions_job_records_per_second" in found  # the job is described
    return found


def worker_side() -> Labels:
    """The samples (and their labels) that WorkerMetrics exposes once it has seen one
    event of each kind it counts."""
    registry = CollectorRegistry()
    metrics = WorkerMetrics(registry)
    job, worker = "job-1", "worker-1"
    for event in (
        BatchClaimed(job, worker, "b0", 0, 0, 1),
        RecordFailed(job, worker, "b0", 0, 1, RecordStatus.INVALID, "n: not a number", 0),
        BatchCompleted(job, worker, "b0", 0, 1, 1, 2, 30),
        BatchFailed(job, worker, "b1", 1, 0, 1, 0, 20, 2, "failed"),
        LeaseLost(job, worker, "b2", 2),
        StoreErrorOutlived(job, worker, "the database went away", 1),
    ):
        metrics.observe(event)
    found: Labels = {}
    for family in registry.collect():
        assert family.samples, f"{family.name} has no sample: an event kind is missing here"
        for sample in family.samples:
            found.setdefault(sample.name, set()).update(sample.labels)
    return found


@pytest.fixture(scope="module")
def known(tmp_path_factory: pytest.TempPathFactory) -> Labels:
    server = server_side(tmp_path_factory.mktemp("dashboard"))
    worker = worker_side()
    assert not set(server) & set(worker), "the two sides share no name"
    return {**server, **worker}


def test_every_metric_the_dashboard_queries_exists(known: Labels) -> None:
    used = {name for query in queries(dashboard()) for name in METRIC.findall(query)}
    assert used, "the dashboard queries no metric"
    assert sorted(used - set(known)) == []
    # Both sides are shown: the database's view and the workers'.
    assert "batchactions_job_records" in used and "batchactions_records_total" in used


def test_every_label_the_dashboard_matches_or_groups_by_exists(known: Labels) -> None:
    for query in queries(dashboard()):
        for name, inner in SELECTOR.findall(query):
            assert set(MATCHER.findall(inner)) <= known[name], query
        grouped = {label.strip() for group in BY.findall(query) for label in group.split(",")}
        names = set(METRIC.findall(query))
        labels = set().union(*(known[n] for n in names)) | {"instance", "job"}
        assert grouped - {""} <= labels, query


def test_the_dashboard_is_importable_grafana_json() -> None:
    board = dashboard()
    assert board["schemaVersion"] == 39 and board["uid"] and board["title"]
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert variables["DS_PROMETHEUS"]["type"] == "datasource"
    assert variables["DS_PROMETHEUS"]["query"] == "prometheus"
    assert variables["job_id"]["type"] == "query"
    ids = [p["id"] for p in panels(board)]
    assert len(ids) == len(set(ids)), "panel ids are unique"
    for panel in panels(board):
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == {"type": "prometheus", "uid": "${DS_PROMETHEUS}"}
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == "${DS_PROMETHEUS}"
            assert 'job_id=~"$job_id"' in target["expr"] or "status=" in target["expr"]
