"""Actions: pause, resume, abort, reclaim and retry act on the store, only when the
dashboard allows them and, from a browser, with the CSRF token."""

from __future__ import annotations

import time

from batchactions_peewee import BatchStatus, JobStatus, PeeweeStateStore

from .conftest import Serve
from .support import Client


def _csrf(client: Client) -> dict[str, str]:
    token = client.ok("/api/config")["csrfToken"]
    assert isinstance(token, str) and len(token) >= 32
    return {"X-CSRF-Token": token}


def _status(store: PeeweeStateStore, job_id: str) -> JobStatus:
    job = store.get_job_head(job_id)
    assert job is not None
    return JobStatus(job.status)


def test_pause_resume_abort_move_the_job(
    peewee_store: PeeweeStateStore, job_id: str, serve: Serve
) -> None:
    client = serve(allow_actions=True)
    csrf = _csrf(client)
    answer = client.post(f"/api/jobs/{job_id}/pause", **csrf)
    assert answer.json() == {"jobId": job_id, "changed": True, "status": "PAUSED"}
    assert _status(peewee_store, job_id) == JobStatus.PAUSED
    again = client.post(f"/api/jobs/{job_id}/pause", **csrf)
    assert (again.status, again.json()["changed"]) == (200, False)
    assert client.post(f"/api/jobs/{job_id}/resume", **csrf).json()["status"] == "PROCESSING"
    assert _status(peewee_store, job_id) == JobStatus.PROCESSING
    assert client.post(f"/api/jobs/{job_id}/abort", **csrf).json()["changed"] is True
    assert _status(peewee_store, job_id) == JobStatus.ABORTED
    refused = client.post(f"/api/jobs/{job_id}/resume", **csrf)
    assert refused.status == 409
    assert refused.json() == {"error": f"job {job_id} is ABORTED: only a PAUSED job can resume"}
    assert client.post(f"/api/jobs/{job_id}/pause?now=1", **csrf).status == 400
    assert client.post("/api/jobs/no-such-job/pause", **csrf).status == 404


def test_reclaim_gives_stale_batches_back(
    peewee_store: PeeweeStateStore, job_id: str, serve: Serve
) -> None:
    client = serve(allow_actions=True, lease_timeout_ms=60_000)
    csrf = _csrf(client)
    fresh = client.post(f"/api/jobs/{job_id}/reclaim", **csrf).json()
    assert fresh == {"jobId": job_id, "timeoutMs": 60_000, "reclaimed": 0}
    time.sleep(0.01)
    stale = client.post(f"/api/jobs/{job_id}/reclaim?timeout=1", **csrf).json()
    assert (stale["timeoutMs"], stale["reclaimed"]) == (1, 1)
    [batch] = peewee_store.get_batches_page(job_id, offset=3, limit=1)
    assert (batch.status, batch.worker_id) == (BatchStatus.PENDING, None)
    assert client.post(f"/api/jobs/{job_id}/reclaim?timeout=x", **csrf).status == 400


def test_retry_makes_a_job_of_the_failed_records(
    peewee_store: PeeweeStateStore, job_id: str, serve: Serve
) -> None:
    client = serve(allow_actions=True)
    csrf = _csrf(client)
    answer = client.post(f"/api/jobs/{job_id}/retry", **csrf)
    assert answer.status == 201
    made = answer.json()
    assert (made["retryOf"], made["statuses"], made["totalRecords"]) == (job_id, ["failed"], 1)
    assert [r.raw["email"] for r in peewee_store.get_pending_records(made["jobId"])] == [
        "fail3@example.com"
    ]
    both = client.post(f"/api/jobs/{job_id}/retry?invalid=true", **csrf).json()
    assert (both["statuses"], both["totalRecords"]) == (["failed", "invalid"], 2)
    assert client.post(f"/api/jobs/{job_id}/retry?invalid=maybe", **csrf).status == 400


def test_actions_are_off_unless_allowed(
    peewee_store: PeeweeStateStore, job_id: str, serve: Serve
) -> None:
    client = serve()
    config = client.ok("/api/config")
    assert (config["allowActions"], config["csrfToken"]) == (False, None)
    for action in ("pause", "resume", "abort", "reclaim", "retry"):
        answer = client.post(f"/api/jobs/{job_id}/{action}")
        assert answer.status == 403, action
        assert "--allow-actions" in answer.json()["error"]
    assert _status(peewee_store, job_id) == JobStatus.PROCESSING
    assert [j.id for j in peewee_store.list_job_heads()] == [job_id]  # no retry job


def test_actions_need_the_csrf_token(
    peewee_store: PeeweeStateStore, job_id: str, serve: Serve
) -> None:
    client = serve(allow_actions=True)
    token = _csrf(client)["X-CSRF-Token"]
    for headers in ({}, {"X-CSRF-Token": ""}, {"X-CSRF-Token": token[:-1] + "?"}):
        answer = client.post(f"/api/jobs/{job_id}/abort", **headers)
        assert answer.status == 403, headers
        assert answer.json() == {"error": "missing or wrong X-CSRF-Token header"}
    assert _status(peewee_store, job_id) == JobStatus.PROCESSING
    other = serve(allow_actions=True)  # another app: another CSRF token
    assert other.post(f"/api/jobs/{job_id}/abort", **{"X-CSRF-Token": token}).status == 403
    assert _status(peewee_store, job_id) == JobStatus.PROCESSING
