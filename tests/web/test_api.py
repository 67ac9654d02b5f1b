"""The JSON API over a real server on every database: each route, its paging bounds, its
bad parameters (400), unknown jobs (404) and wrong methods (405)."""

from __future__ import annotations

import csv
import io
import json
from collections import Counter

from batchactions_peewee import PeeweeStateStore
from batchactions_peewee.reports import job_summary, status_report

from .conftest import Serve
from .support import GONE_WORKER, HOSTILE

BAD_JOBS_QUERIES = [
    "status=NOPE",
    "limit=0",
    "limit=1001",
    "limit=-1",
    "limit=1.5",
    "limit=",
    "limit=1&limit=2",
    "stat=PAUSED",
    "limit=%ff",
]

#: Fields of a report that move with the clock between two reads.
MOVING = {"elapsedMs", "estimatedRemainingMs", "recordsPerSecond", "leases"}


def test_jobs_lists_jobs_as_jobs_json_does(
    peewee_store: PeeweeStateStore, job_id: str, serve: Serve
) -> None:
    client = serve()
    listed = client.ok("/api/jobs")
    assert [j["jobId"] for j in listed] == [job_id]
    job = peewee_store.get_job_state(job_id)
    assert job is not None
    expected = job_summary(job, peewee_store.record_counts(job_id), peewee_store.now())
    assert {k: v for k, v in listed[0].items() if k not in MOVING} == {
        k: v for k, v in expected.items() if k not in MOVING
    }
    assert listed[0]["processedRecords"] == 4
    assert (listed[0]["invalidRecords"], listed[0]["failedRecords"]) == (1, 1)
    assert client.ok("/api/jobs?status=PROCESSING&limit=1")[0]["jobId"] == job_id
    assert client.ok("/api/jobs?status=COMPLETED") == []


def test_jobs_refuses_bad_parameters(job_id: str, serve: Serve) -> None:
    client = serve()
    for query in BAD_JOBS_QUERIES:
        answer = client.get(f"/api/jobs?{query}")
        assert answer.status == 400, (query, answer.body)
        assert answer.json()["error"]


def test_job_has_the_fields_of_status_json(
    peewee_store: PeeweeStateStore, job_id: str, serve: Serve
) -> None:
    report = serve(lease_timeout_ms=60_000).ok(f"/api/jobs/{job_id}")
    job = peewee_store.get_job_state(job_id)
    assert job is not None
    expected = status_report(peewee_store, job, 60_000)
    assert report.keys() == expected.keys()
    assert {k: v for k, v in report.items() if k not in MOVING} == {
        k: v for k, v in expected.items() if k not in MOVING
    }
    # The batch counts read in SQL are those of the whole job read the old way.
    assert report["batches"] == dict(Counter(b.status.value for b in job.batches))
    assert report["batches"] == {"COMPLETED": 3, "PROCESSING": 1, "PENDING": 1}
    assert report["records"] == {"processed": 4, "failed": 1, "invalid": 1, "pending": 4}
    [lease] = report["leases"]
    assert (lease["workerId"], lease["batchIndex"], lease["stale"]) == (GONE_WORKER, 3, False)


def test_batches_are_paged_by_index(job_id: str, serve: Serve) -> None:
    client = serve(lease_timeout_ms=60_000)
    page = client.ok(f"/api/jobs/{job_id}/batches")
    assert (page["total"], page["offset"], page["limit"]) == (5, 0, 100)
    assert [b["index"] for b in page["batches"]] == [0, 1, 2, 3, 4]
    assert [b["status"] for b in page["batches"]] == ["COMPLETED"] * 3 + ["PROCESSING", "PENDING"]
    first = page["batches"][0]
    assert (first["records"], first["recordStartIndex"], first["recordEndIndex"]) == (2, 0, 1)
    assert (first["processedCount"], first["failedCount"], first["heldMs"]) == (2, 0, None)
    held = page["batches"][3]
    assert held["workerId"] == GONE_WORKER and held["heldMs"] >= 0 and held["stale"] is False
    assert [
        b["index"] for b in client.ok(f"/api/jobs/{job_id}/batches?offset=3&limit=1")["batches"]
    ] == [3]
    assert [
        b["index"] for b in client.ok(f"/api/jobs/{job_id}/batches?offset=4&limit=1000")["batches"]
    ] == [4]
    assert client.ok(f"/api/jobs/{job_id}/batches?offset=5")["batches"] == []
    only = client.ok(f"/api/jobs/{job_id}/batches?status=PROCESSING")["batches"]
    assert [b["index"] for b in only] == [3]


def test_batches_refuse_bad_parameters(job_id: str, serve: Serve) -> None:
    client = serve()
    for query in ["offset=-1", "offset=x", "limit=0", "limit=1001", "status=DONE", "page=2"]:
        assert client.get(f"/api/jobs/{job_id}/batches?{query}").status == 400, query


def test_grid_and_throughput(peewee_store: PeeweeStateStore, job_id: str, serve: Serve) -> None:
    client = serve()
    grid = client.ok(f"/api/jobs/{job_id}/grid")
    assert (grid["total"], grid["statuses"]) == (5, "CCCRP")
    assert grid["codes"]["R"] == "PROCESSING"
    chart = client.ok(f"/api/jobs/{job_id}/throughput")
    job = peewee_store.get_job_head(job_id)
    assert job is not None and chart["startedAt"] == job.started_at
    assert chart["bucketMs"] >= 1000 and chart["points"]
    assert chart["points"][0]["at"] == job.started_at
    # Every record of the finished batches is counted once, in some second of the job.
    done = sum(p["recordsPerSecond"] * chart["bucketMs"] / 1000 for p in chart["points"][:-1])
    last = chart["points"][-1]
    assert done <= 6 and last["recordsPerSecond"] is not None


def test_failed_records_page(job_id: str, serve: Serve) -> None:
    client = serve()
    page = client.ok(f"/api/jobs/{job_id}/failed")
    assert [(r["recordIndex"], r["status"]) for r in page["records"]] == [
        (3, "failed"),
        (5, "invalid"),
    ]
    assert page["more"] is False and page["nextAfter"] is None
    failed, invalid = page["records"]
    assert failed["error"] == f"refused {HOSTILE}" and failed["raw"]["name"] == HOSTILE
    assert invalid["errors"][0]["field"] == "email" and invalid["processingError"] is None
    first = client.ok(f"/api/jobs/{job_id}/failed?limit=1")
    assert [r["recordIndex"] for r in first["records"]] == [3]
    assert (first["more"], first["nextAfter"]) == (True, 3)
    after = client.ok(f"/api/jobs/{job_id}/failed?after=3")["records"]
    assert [r["recordIndex"] for r in after] == [5]
    skipped = client.ok(f"/api/jobs/{job_id}/failed?offset=1&limit=1")["records"]
    assert [r["recordIndex"] for r in skipped] == [5]
    assert client.ok(f"/api/jobs/{job_id}/failed?offset=2")["records"] == []


def test_failed_refuses_bad_parameters(job_id: str, serve: Serve) -> None:
    client = serve()
    for query in ["format=xml", "limit=0", "limit=1001", "offset=-3", "after=-2", "formats=csv"]:
        assert client.get(f"/api/jobs/{job_id}/failed?{query}").status == 400, query


def test_failed_downloads_keep_hostile_text_as_data(job_id: str, serve: Serve) -> None:
    client = serve()
    answer = client.get(f"/api/jobs/{job_id}/failed?format=csv")
    assert answer.status == 200
    assert answer.headers["content-type"] == "text/csv; charset=utf-8"
    assert answer.headers["content-disposition"] == f'attachment; filename="failed-{job_id}.csv"'
    assert answer.headers["x-content-type-options"] == "nosniff"
    rows = list(csv.reader(io.StringIO(answer.text)))
    assert rows[0] == ["recordIndex", "status", "error", "email", "name", "note"]
    assert rows[1] == [
        "3",
        "failed",
        f"refused {HOSTILE}",
        "fail3@example.com",
        HOSTILE,
        '"quoted", comma',
    ]
    assert rows[2][:5] == ["5", "invalid", rows[2][2], "not-an-email", HOSTILE]
    assert len(rows) == 3
    lines = client.get(f"/api/jobs/{job_id}/failed?format=jsonl").text.splitlines()
    assert [json.loads(line)["raw"]["name"] for line in lines] == [HOSTILE, HOSTILE]
    one = client.get(f"/api/jobs/{job_id}/failed?format=jsonl&offset=1&limit=1")
    assert one.headers["content-type"] == "application/x-ndjson; charset=utf-8"
    assert [json.loads(line)["recordIndex"] for line in one.text.splitlines()] == [5]


def test_unknown_job_is_404(job_id: str, serve: Serve) -> None:
    client = serve()
    for route in ["", "/batches", "/failed", "/grid", "/throughput", "/failed?format=csv"]:
        answer = client.get(f"/api/jobs/no-such-job{route}")
        assert answer.status == 404, route
        assert answer.json() == {"error": "no job no-such-job"}


def test_ids_and_routes_are_checked(job_id: str, serve: Serve) -> None:
    client = serve(allow_actions=True)
    assert client.get(f"/api/jobs/{'x' * 37}").status == 400  # longer than any id
    assert client.get("/api/jobs/%00").status == 400
    assert client.get("/api/jobs/%ff").status == 400  # not UTF-8
    assert client.get("/api/nothing").status == 404
    assert client.get("/api/jobs/").status == 404
    assert client.get("/api/jobs/x/batches/extra").json() == {"error": "no job x/batches/extra"}
    answer = client.post("/api/jobs")
    assert (answer.status, answer.headers["allow"]) == (405, "GET")
    answer = client.get(f"/api/jobs/{job_id}/pause")
    assert (answer.status, answer.headers["allow"]) == (405, "POST")
    assert answer.json()["error"] == "GET is not allowed here; use POST"
    assert client.request("DELETE", f"/api/jobs/{job_id}").status == 405
