"""The deployment files under ``deploy/``: they parse, name only commands, options and
environment variables that exist, map exit codes the CLI gives, and KEDA's query counts
the PENDING batches of a job on a real database."""

from __future__ import annotations

import argparse
import contextlib
import io
import re
import uuid
from pathlib import Path
from typing import Any

import peewee as pw
import pytest
import yaml

from batchactions_peewee import prepare_job
from batchactions_peewee.cli import build_parser
from batchactions_peewee.cli.job_commands import EXIT_ABORTED, EXIT_NOT_DONE

from ..support import REPO
from ..support.cli import Target

KUBERNETES = REPO / "deploy" / "kubernetes"
MANIFESTS = sorted(KUBERNETES.glob("*.yaml"))
#: What the CLI reads from the environment (each is named in its --help).
CLI_ENVIRONMENT = {
    "BATCHACTIONS_DATABASE_URL",
    "BATCHACTIONS_WORKER_ID",
    "BATCHACTIONS_DASHBOARD_TOKEN",
}
JOB_ID = "REPLACE-WITH-JOB-ID"


def documents(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text("utf-8")) if d is not None]


def pod_specs(document: dict[str, Any]) -> list[dict[str, Any]]:
    """The pod specs of a Job, a Deployment or a KEDA ScaledJob."""
    spec = document["spec"]
    if document["kind"] == "ScaledJob":
        spec = spec["jobTargetRef"]
    return [spec["template"]["spec"]] if "template" in spec else []


def containers() -> list[tuple[str, dict[str, Any], dict[str, Any]]]:
    found = []
    for path in MANIFESTS:
        for document in documents(path):
            for pod in pod_specs(document):
                found += [(path.name, pod, c) for c in pod["containers"]]
    return found


def expand(arg: str, defined: set[str]) -> str:
    """``arg`` with each ``$(VAR)`` of a variable the container defines given a value."""
    return re.sub(r"\$\((\w+)\)", lambda m: "1" if m[1] in defined else m[0], arg)


def parse(argv: list[str]) -> argparse.Namespace:
    """``argv`` as the CLI's parser reads it; a bad command or option fails the test."""
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err):
            return build_parser().parse_args(argv)
    except SystemExit:
        pytest.fail(f"{argv}: {err.getvalue()}")


def test_the_manifests_are_the_four_promised_and_each_parses() -> None:
    kinds = {(p.name, d["kind"]) for p in MANIFESTS for d in documents(p)}
    assert kinds == {
        ("job.yaml", "Job"),
        ("indexed-job.yaml", "Job"),
        ("keda-scaledjob.yaml", "ScaledJob"),
        ("metrics.yaml", "Deployment"),
        ("metrics.yaml", "Service"),
    }
    (indexed,) = documents(KUBERNETES / "indexed-job.yaml")
    assert indexed["spec"]["completionMode"] == "Indexed"
    (job,) = documents(KUBERNETES / "job.yaml")
    assert job["spec"]["parallelism"] > 1 and "completions" not in job["spec"]


def test_every_container_runs_a_command_and_options_that_exist() -> None:
    commands = []
    for name, pod, container in containers():
        assert container["command"] == ["batchactions-peewee"], name
        env_names = {e["name"] for e in container.get("env", [])}
        assert env_names - {"JOB_INDEX"} <= CLI_ENVIRONMENT, name
        assert "BATCHACTIONS_DATABASE_URL" in env_names, f"{name}: no database"
        # $(VAR) is Kubernetes' expansion of the container's own variables.
        argv = [expand(arg, env_names) for arg in container["args"]]
        assert not any("$(" in arg for arg in argv), f"{name}: an undefined $(VAR)"
        argv = [str(uuid.uuid4()) if arg == JOB_ID else arg for arg in argv]
        args = parse(argv)
        commands.append((name, argv[0]))
        if argv[0] == "work":
            assert pod["restartPolicy"] == "Never", name  # podFailurePolicy needs it
            assert pod["terminationGracePeriodSeconds"] >= 30, name
            assert args.until_done == (name != "keda-scaledjob.yaml"), name
    assert sorted(commands) == [
        ("indexed-job.yaml", "work"),
        ("job.yaml", "work"),
        ("keda-scaledjob.yaml", "work"),
        ("metrics.yaml", "metrics"),
    ]


def test_pod_failure_policies_use_the_exit_codes_the_cli_gives() -> None:
    for path in MANIFESTS:
        for document in documents(path):
            spec = document["spec"]
            if document["kind"] == "ScaledJob":
                spec = spec["jobTargetRef"]
            if document["kind"] not in ("Job", "ScaledJob"):
                continue
            rules = spec["podFailurePolicy"]["rules"]
            ignored = {
                code
                for r in rules
                if r["action"] == "Ignore" and "onExitCodes" in r
                for code in r["onExitCodes"]["values"]
            }
            assert ignored == {EXIT_NOT_DONE}, path.name
            failing = {
                code
                for r in rules
                if r["action"] == "FailJob"
                for code in r["onExitCodes"]["values"]
            }
            assert failing <= {2, EXIT_ABORTED}, path.name
            for rule in rules:
                if "onExitCodes" in rule:
                    names = {c["name"] for c in pod_specs(document)[0]["containers"]}
                    assert rule["onExitCodes"]["containerName"] in names, path.name


def keda_query(table_prefix: str, job_id: str, kind: str) -> str:
    (scaled,) = documents(KUBERNETES / "keda-scaledjob.yaml")
    (trigger,) = scaled["spec"]["triggers"]
    assert trigger["type"] == "postgresql"
    assert trigger["metadata"]["connectionFromEnv"] == "BATCHACTIONS_DATABASE_URL"
    query = str(trigger["metadata"]["query"])
    assert query in " ".join(KUBERNETES.joinpath("keda-scaledjob.yaml").read_text().split())
    query = query.replace("batchactions_batches", f"{table_prefix}batches")
    if kind == "mysql":  # as the manifest's comment says
        query = query.replace('"jobId"', "`jobId`")
    return query.replace(JOB_ID, job_id)


def count_of(database: pw.Database, query: str) -> int:
    (count,) = database.execute_sql(query).fetchone()  # type: ignore[no-untyped-call]
    return int(count)


def test_the_keda_query_counts_the_pending_batches_of_the_job(
    target: Target, tmp_path: Path
) -> None:
    store, database = target.store()
    try:
        store.create_tables()
        job_id = prepare_job(store, ({"n": n} for n in range(50)), batch_size=5).job_id
        other = prepare_job(store, ({"n": n} for n in range(20)), batch_size=5).job_id
        held = [store.claim_batch(job_id, "w1").reservation for _ in range(3)]
        assert held[-1] is not None
        store.complete_batch(held[-1], processed_count=5, failed_count=0)
        kind = target.url.split(":", 1)[0]
        kind = "postgres" if kind.startswith("postgres") else kind
        assert count_of(database, keda_query(target.prefix, job_id, kind)) == 7
        assert store.get_distributed_status(job_id).pending_batches == 7
        assert count_of(database, keda_query(target.prefix, other, kind)) == 4
    finally:
        database.close()


def test_the_dockerfile_installs_an_extra_that_exists() -> None:
    dockerfile = (REPO / "deploy" / "Dockerfile").read_text("utf-8")
    pyproject = (REPO / "pyproject.toml").read_text("utf-8")
    extras = re.findall(r"batchactions-peewee\[(\w+)\]", dockerfile)
    assert extras, "the Dockerfile installs the library with a driver"
    for extra in extras:
        assert re.search(rf"^{extra} = \[", pyproject, flags=re.MULTILINE), extra
    assert 'CMD ["batchactions-peewee"' in dockerfile
