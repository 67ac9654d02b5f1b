"""``work --metrics-port``: the worker's own counters (``WorkerMetrics``) served on
loopback while it works, read as Prometheus reads them."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from ..support.cli import TIMEOUT_S, Target, as_json, cli

#: Record 3 is refused; record 8 (the last batch's first) waits until ``GATE`` exists.
CASE = """
import os, pathlib, time

def work(record, context):
    if record["n"] == 3:
        raise ValueError("refused")
    if record["n"] == 8:
        here = pathlib.Path(os.environ["MARKS"])
        (here / "held").touch()
        while not (here / "go").exists():
            time.sleep(0.02)
"""


def _prepare(tmp_path: Path, target: Target) -> str:
    (tmp_path / "metrics_case.py").write_text(CASE)
    (tmp_path / "n.jsonl").write_text("".join(f'{{"n": {n}}}\n' for n in range(10)))
    (tmp_path / "marks").mkdir()
    prepared = as_json(
        cli(
            "prepare",
            "n.jsonl",
            "--processor",
            "metrics_case:work",
            "--batch-size",
            "2",
            "--json",
            *target.args,
            cwd=tmp_path,
        )
    )
    return str(prepared["jobId"])


def _scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as answer:
        text = answer.read().decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_work_serves_its_workers_counters_while_it_works(
    tmp_path: Path, sqlite_target: Target
) -> None:
    job_id = _prepare(tmp_path, sqlite_target)
    marks = tmp_path / "marks"
    work = subprocess.Popen(
        [
            *(sys.executable, "-m", "batchactions_peewee", "work", job_id),
            *("--metrics-port", "0", "--no-progress", "--json", *sqlite_target.args),
        ],
        cwd=tmp_path,
        env={**os.environ, "MARKS": str(marks)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert work.stderr is not None
        told = work.stderr.readline()
        found = re.fullmatch(r"batchactions-peewee: worker metrics at (\S+)\n", told)
        assert found, told
        port = int(found[1].removesuffix("/metrics").rpartition(":")[2])
        deadline = time.monotonic() + TIMEOUT_S
        while not (marks / "held").exists():
            assert work.poll() is None and time.monotonic() < deadline, "record 8 never started"
            time.sleep(0.02)

        # Batches 0-3 are written (one worker writes a batch before it claims the next).
        samples = _scrape(port)

        def of(name: str, **labels: str) -> float:
            return samples[(name, tuple(sorted({"job_id": job_id, **labels}.items())))]

        records = {
            outcome: of("batchactions_records_total", outcome=outcome)
            for outcome in ("processed", "invalid", "failed")
        }
        assert records == {"processed": 7, "invalid": 0, "failed": 1}
        assert of("batchactions_batches_total", outcome="completed") == 4
        assert of("batchactions_batch_duration_seconds_count") == 4
        assert of("batchactions_leases_lost_total") == 0
        (marks / "go").touch()
        out, err = work.communicate(timeout=TIMEOUT_S)
    finally:
        if work.poll() is None:
            work.kill()
            work.communicate()
    assert work.returncode == 0, err
    report = json.loads(out)
    assert (report["processedRecords"], report["failedRecords"]) == (9, 1)


def test_metrics_port_is_for_one_worker_process(tmp_path: Path, sqlite_target: Target) -> None:
    job_id = _prepare(tmp_path, sqlite_target)
    refused = cli(
        "work", job_id, "--metrics-port", "0", "--workers", "2", *sqlite_target.args, cwd=tmp_path
    )
    assert refused.returncode == 2
    assert "--metrics-port serves the counters of one process's worker" in refused.stderr
    assert "run 2 work commands, each with its own port" in refused.stderr


def test_a_metrics_port_in_use_is_a_one_line_error_before_any_batch(
    tmp_path: Path, sqlite_target: Target
) -> None:
    job_id = _prepare(tmp_path, sqlite_target)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        failed = cli("work", job_id, "--metrics-port", str(port), *sqlite_target.args, cwd=tmp_path)
    assert failed.returncode == 1
    assert failed.stderr.strip().splitlines() == [
        f"batchactions-peewee: error: --metrics-port: cannot listen on 127.0.0.1:{port}: "
        "Address already in use"
    ]
    status = as_json(cli("status", job_id, "--json", *sqlite_target.args, cwd=tmp_path))
    assert status["processedRecords"] == 0
