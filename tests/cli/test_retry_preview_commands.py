"""``retry`` and ``preview`` from the command line."""

from __future__ import annotations

from pathlib import Path

from ..support import REPO
from ..support.cli import Target, as_json, cli, ok, pasted

SCHEMA = "examples.schema:Contact"
PROCESSOR = "examples.processor:register_contact"
CONTACTS = REPO / "examples" / "contacts.csv"


def test_preview_validates_the_first_records_and_writes_nothing(tmp_path: Path) -> None:
    result = as_json(
        cli("preview", str(CONTACTS), "--schema", SCHEMA, "--limit", "200", "--json", cwd=REPO)
    )
    assert result["total"] == 200
    assert result["valid"] + result["invalid"] == 200 and result["invalid"] > 0
    first = result["errors"][0]
    assert set(first) == {"index", "field", "code", "message"}
    assert not (REPO / "batchactions.db").exists(), "preview opens no database"
    table = ok(cli("preview", str(CONTACTS), "--schema", SCHEMA, "--limit", "200", cwd=REPO))
    assert table.stdout.splitlines()[0].split() == ["records", "200"]


def test_preview_without_a_schema_is_a_usage_error(tmp_path: Path) -> None:
    refused = cli("preview", str(CONTACTS), cwd=tmp_path)
    assert refused.returncode == 2
    assert (
        refused.stderr.strip() == "batchactions-peewee: error: preview needs --schema MODULE:MODEL"
    )


def test_retry_prepares_the_failed_records_as_a_new_job(sqlite_target: Target) -> None:
    target = sqlite_target
    run = as_json(
        cli(
            "run", str(CONTACTS), "--schema", SCHEMA, "--processor", PROCESSOR,
            "--workers", "1", "--json", *target.args, cwd=REPO,
        )
    )  # fmt: skip
    job_id, failed, invalid = run["jobId"], run["failedRecords"], run["invalidRecords"]
    retried = ok(cli("retry", job_id, *target.args, cwd=REPO))
    new_id = retried.stdout.strip()
    work = pasted(retried.stderr, "work them with")
    assert work[:2] == ["work", new_id]
    store, database = target.store()
    try:
        original = store.get_failed_records(job_id)
        wanted = [r.raw for r in original if r.status.value == "failed"]
        assert [r.raw for r in store.get_pending_records(new_id)] == wanted
        assert len(wanted) == failed > 0, "invalid records are retried only with --invalid"
    finally:
        database.close()
    # The retry job keeps the original's schema and processor: they refuse the same records.
    again = as_json(cli(*work, "--json", cwd=REPO))
    assert (again["jobId"], again["failedRecords"]) == (new_id, failed)
    both = as_json(cli("retry", job_id, "--invalid", "--json", *target.args, cwd=REPO))
    assert both["totalRecords"] == failed + invalid
    assert both["statuses"] == ["failed", "invalid"]
