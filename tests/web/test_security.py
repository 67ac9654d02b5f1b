"""Sign-in with a token, the headers every answer carries, static files, and that no
answer gives away the database's URL, path or password."""

from __future__ import annotations

import re
from importlib import resources

import pytest

from batchactions_peewee import JobStatus, PeeweeStateStore
from batchactions_peewee.web import make_wsgi_app
from batchactions_peewee.web.auth import SESSION_COOKIE
from batchactions_peewee.web.server import loopback_hosts_only

from .conftest import Serve
from .support import Client, serving

TOKEN = "s3cret-token-ü"  # non-ASCII on purpose: compared as bytes


def test_a_token_is_needed_everywhere_but_the_login_form(job_id: str, serve: Serve) -> None:
    client = serve(token=TOKEN)
    for path in (
        "/api/jobs",
        f"/api/jobs/{job_id}",
        f"/api/jobs/{job_id}/failed?format=csv",
        "/api/config",
    ):
        answer = client.get(path)
        assert answer.status == 401, path
        assert answer.headers["www-authenticate"].startswith("Bearer")
        assert answer.json()["error"].startswith("sign in")
        wrong = client.get(path, Authorization="Bearer not-it")
        assert wrong.status == 401
    assert client.get("/api/jobs", Authorization="Basic czNjcmV0").status == 401
    page = client.get(f"/jobs/{job_id}")
    assert (page.status, page.headers["location"]) == (303, "/login")
    assert client.get("/login").status == 200  # the form, and what it needs
    assert client.get("/static/app.css").status == 200


def test_the_bearer_token_opens_the_api(job_id: str, serve: Serve) -> None:
    client = serve(token=TOKEN)
    bearer = {"Authorization": "Bearer " + TOKEN}
    answer = client.request("GET", "/api/jobs", {"Authorization": "Bearer " + TOKEN})
    assert answer.status == 200 and answer.json()[0]["jobId"] == job_id
    assert client.request("GET", f"/jobs/{job_id}", bearer).status == 200


def test_the_login_form_sets_a_cookie_that_is_not_the_token(job_id: str, serve: Serve) -> None:
    client = serve(token=TOKEN)
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    wrong = client.request("POST", "/login", form, b"token=nope")
    assert (wrong.status, wrong.headers["location"]) == (303, "login?failed")
    assert "set-cookie" not in wrong.headers
    body = b"token=s3cret-token-%C3%BC"
    right = client.request("POST", "/login", form, body)
    assert (right.status, right.headers["location"]) == (303, "./")
    cookie = right.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/;" in cookie
    assert "s3cret" not in cookie
    value = re.match(rf"{SESSION_COOKIE}=([0-9a-f]+);", cookie)
    assert value is not None
    signed = Client(client.port, {"Cookie": f"{SESSION_COOKIE}={value.group(1)}"})
    assert signed.ok(f"/api/jobs/{job_id}")["jobId"] == job_id
    forged = Client(client.port, {"Cookie": f"{SESSION_COOKIE}={'0' * 64}"})
    assert forged.get("/api/jobs").status == 401


def test_with_a_token_actions_need_it_and_bearer_needs_no_csrf(
    peewee_store: PeeweeStateStore, job_id: str, serve: Serve
) -> None:
    client = serve(token=TOKEN, allow_actions=True)
    assert client.post(f"/api/jobs/{job_id}/pause").status == 401
    assert client.post(f"/api/jobs/{job_id}/pause", Authorization="Bearer nope").status == 401
    answer = client.request(
        "POST", f"/api/jobs/{job_id}/pause", {"Authorization": "Bearer " + TOKEN}
    )
    assert answer.json()["status"] == "PAUSED"
    job = peewee_store.get_job_head(job_id)
    assert job is not None and job.status == JobStatus.PAUSED


def test_every_answer_carries_the_security_headers(job_id: str, serve: Serve) -> None:
    client = serve()
    for path in (
        "/",
        f"/jobs/{job_id}",
        "/static/job.js",
        "/api/jobs",
        "/api/nope",
        f"/api/jobs/{job_id}/failed?format=csv",
    ):
        answer = client.get(path)
        assert "script-src 'self'" in answer.headers["content-security-policy"], path
        assert "default-src 'none'" in answer.headers["content-security-policy"]
        assert answer.headers["x-content-type-options"] == "nosniff"
        assert answer.headers["x-frame-options"] == "DENY"


def test_only_the_shipped_static_files_are_served(serve: Serve) -> None:
    client = serve()
    js = client.get("/static/job.js")
    assert (js.status, js.headers["content-type"]) == (200, "text/javascript; charset=utf-8")
    for path in (
        "/static/../app.py",
        "/static/..%2fapp.py",
        "/static/%2e%2e/api.py",
        "/static/",
        "/static/app.py",
        "/static/static/app.css",
        "/static//etc/passwd",
        "/static/APP.CSS",
    ):
        assert client.get(path).status == 404, path
    assert client.get("/nowhere").status == 404
    assert client.post("/static/app.css").status == 405


def test_pages_build_their_dom_from_text_only() -> None:
    """Every value is set with textContent: no script of the pages parses HTML."""
    static = resources.files("batchactions_peewee.web") / "static"
    scripts = [f for f in static.iterdir() if f.name.endswith(".js")]
    assert {f.name for f in scripts} >= {"common.js", "job.js", "jobs.js", "login.js"}
    for script in scripts:
        text = script.read_text("utf-8")
        for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval("):
            assert sink not in text, (script.name, sink)
    for page in ("index.html", "job.html", "login.html"):
        html = (static / page).read_text("utf-8")
        assert "<script>" not in html and " on" not in re.sub(r"\s+", " ", html).replace(" one", "")
        assert not re.search(r"<script[^>]*src=\"(https?:)?//", html)  # nothing from the internet


def test_no_answer_names_the_database(
    peewee_store: PeeweeStateStore, job_id: str, serve: Serve
) -> None:
    database = peewee_store.database
    secrets = {str(database.database), peewee_store.table_prefix}
    secrets |= {
        str(v) for k, v in database.connect_params.items() if k in ("password", "passwd", "host")
    }
    client = serve(allow_actions=True)
    paths = [
        "/api/jobs",
        f"/api/jobs/{job_id}",
        f"/api/jobs/{job_id}/batches",
        f"/api/jobs/{job_id}/failed",
        f"/api/jobs/{job_id}/failed?format=csv",
        "/api/config",
        "/",
        f"/jobs/{job_id}",
        "/api/jobs/nope",
    ]
    answers = [client.get(p) for p in paths]
    peewee_store.drop_tables()  # now every read fails inside the driver
    failing = [client.get(p) for p in paths[:4]]
    # SQLite's "no such table" is an OperationalError (503: maybe later), the others' a
    # ProgrammingError (500); either way the answer says nothing of the database.
    generic = {
        500: "internal error (the server's log says more)",
        503: "the database is unavailable; try again later",
    }
    for answer in failing:
        assert answer.json() == {"error": generic[answer.status]}
    for answer in answers + failing:
        for secret in secrets:
            assert secret not in answer.text, secret
    peewee_store.create_tables()  # for the fixture's own clean-up


@pytest.mark.parametrize("host", ["evil.example", "evil.example:8080", "10.0.0.1"])
def test_served_without_a_token_it_answers_loopback_names_only(
    peewee_store: PeeweeStateStore, host: str
) -> None:
    with serving(loopback_hosts_only(make_wsgi_app(peewee_store))) as port:
        client = Client(port)
        assert client.get("/api/config", Host=host).status == 403
        for name in (f"127.0.0.1:{port}", "localhost", f"[::1]:{port}"):
            assert client.get("/api/config", Host=name).status == 200, name
