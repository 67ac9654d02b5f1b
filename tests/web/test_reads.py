"""The reads the dashboard makes of a job with many batches, against what
``get_job_state`` gives whole; the records-per-second figures; the app when mounted."""

from __future__ import annotations

import io
from collections import Counter
from typing import Any

from batchactions_peewee import BatchStatus, InMemoryStateStore, JobStatus, PeeweeStateStore
from batchactions_peewee.reports import throughput
from batchactions_peewee.web import make_wsgi_app

from ..support.factories import job, record
from .support import running_job


def test_heads_and_pages_are_the_job_read_whole(peewee_store: PeeweeStateStore) -> None:
    job_id = running_job(peewee_store)
    whole = peewee_store.get_job_state(job_id)
    head = peewee_store.get_job_head(job_id)
    assert whole is not None and head is not None
    assert head.batches == [] and head == whole.model_copy(update={"batches": []})
    assert peewee_store.list_job_heads() == [head]
    assert peewee_store.list_job_heads(status=JobStatus.COMPLETED) == []
    assert peewee_store.batch_counts(job_id) == dict(Counter(b.status.value for b in whole.batches))
    assert peewee_store.batch_statuses(job_id) == [b.status.value for b in whole.batches]
    assert peewee_store.get_batches_page(job_id, limit=100) == whole.batches
    assert peewee_store.get_batches_page(job_id, offset=1, limit=2) == whole.batches[1:3]
    held = peewee_store.get_batches_page(job_id, status=BatchStatus.PROCESSING)
    assert [b.index for b in held] == [3]
    timeline = peewee_store.batch_timeline(job_id)
    finished = [b for b in whole.batches if b.status == BatchStatus.COMPLETED]
    assert sorted(timeline) == sorted((b.claimed_at, 2) for b in finished if b.claimed_at)
    assert peewee_store.get_job_head("no-such-job") is None
    assert peewee_store.batch_counts("no-such-job") == {}
    assert peewee_store.get_batches_page("no-such-job") == []


def test_a_job_whose_batches_are_its_json_list(peewee_store: PeeweeStateStore) -> None:
    listed = job(batches=4, distributed=False)
    done = listed.batches[1].model_copy(
        update={"status": BatchStatus.COMPLETED, "processed_count": 2, "claimed_at": 5_000}
    )
    listed = listed.model_copy(update={"batches": [listed.batches[0], done, *listed.batches[2:]]})
    peewee_store.save_job_state(listed)
    assert peewee_store.batch_statuses(listed.id) == ["PENDING", "COMPLETED", "PENDING", "PENDING"]
    assert peewee_store.batch_counts(listed.id) == {"PENDING": 3, "COMPLETED": 1}
    assert [b.index for b in peewee_store.get_batches_page(listed.id, offset=1, limit=2)] == [1, 2]
    assert peewee_store.get_batches_page(listed.id, status="COMPLETED")[0].processed_count == 2
    assert peewee_store.batch_timeline(listed.id) == [(5_000, 2)]


def test_both_stores_skip_an_offset_of_failed_records(peewee_store: PeeweeStateStore) -> None:
    for store in (peewee_store, InMemoryStateStore()):
        made = job(batches=1, per_batch=6)
        store.save_job_state(made)
        failed = [record(i, "failed" if i % 2 else "invalid") for i in range(6)]
        store.save_batch_records(made.id, made.batches[0].id, failed)
        page = store.get_failed_records_page(made.id, offset=2, limit=3)
        assert [r.index for r in page] == [2, 3, 4]
        after = store.get_failed_records_page(made.id, after_index=3, offset=1)
        assert [r.index for r in after] == [5]


def test_throughput_counts_each_batch_in_the_second_of_its_last_lease() -> None:
    running = job(started_at=10_000)
    timeline = [(10_100, 50), (10_900, 50), (12_500, 100), (9_000, 10)]  # the last: clock skew
    chart = throughput(running, timeline, now=13_000)
    assert (chart["startedAt"], chart["bucketMs"]) == (10_000, 1000)
    assert [p["at"] for p in chart["points"]] == [10_000, 11_000, 12_000]
    assert [p["recordsPerSecond"] for p in chart["points"]] == [110.0, 0.0, 100.0]
    long = throughput(job(started_at=0), [(3_599_999, 7)], now=3_600_000)
    assert long["bucketMs"] == 30_000 and len(long["points"]) == 120
    assert throughput(job(started_at=None), [], now=1) == {
        "startedAt": None,
        "bucketMs": None,
        "points": [],
    }


def _call(
    app: Any,
    path: str,
    method: str = "GET",
    body: bytes = b"",
    extra: dict[str, str] | None = None,
) -> tuple[str, dict[str, str]]:
    """``app``'s status and headers for a request, mounted at ``/dash`` over HTTPS."""
    seen: dict[str, Any] = {}

    def start_response(status: str, headers: list[tuple[str, str]]) -> None:
        seen.update(status=status, headers=dict(headers))

    environ = {
        "REQUEST_METHOD": method,
        "SCRIPT_NAME": "/dash",
        "PATH_INFO": path,
        "QUERY_STRING": "",
        "wsgi.input": io.BytesIO(body),
        "wsgi.url_scheme": "https",
        **(extra or {}),
    }
    answer = app(environ, start_response)
    b"".join(answer)
    getattr(answer, "close", lambda: None)()
    return seen["status"], seen["headers"]


def test_mounted_under_a_prefix(peewee_store: PeeweeStateStore) -> None:
    app = make_wsgi_app(peewee_store, token="t0ken")
    status, headers = _call(app, "")
    assert (status, headers["Location"]) == ("303 See Other", "/dash/")
    status, headers = _call(app, "/jobs/x")
    assert (status, headers["Location"]) == ("303 See Other", "/dash/login")
    status, headers = _call(app, "/login")
    assert status == "200 OK"
    form = {"CONTENT_TYPE": "application/x-www-form-urlencoded", "CONTENT_LENGTH": "11"}
    status, headers = _call(app, "/login", method="POST", body=b"token=t0ken", extra=form)
    assert (status, headers["Location"]) == ("303 See Other", "./")
    assert "; Path=/dash/; HttpOnly; SameSite=Strict; Secure" in headers["Set-Cookie"]
    # The host application's own connection stays open; one the app opened is closed.
    open_app = make_wsgi_app(peewee_store)
    peewee_store.database.connect(reuse_if_open=True)
    assert _call(open_app, "/api/jobs")[0] == "200 OK"
    assert not peewee_store.database.is_closed()
    peewee_store.database.close()
    assert _call(open_app, "/api/jobs")[0] == "200 OK"
    assert peewee_store.database.is_closed()
