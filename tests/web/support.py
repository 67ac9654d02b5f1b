"""The dashboard as a browser or a script meets it: a real threaded server on a free
port, plain HTTP requests, and a small running job with hostile text in its records."""

from __future__ import annotations

import http.client
import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, Field

from batchactions_peewee import PeeweeStateStore, ProcessingContext, Worker, prepare_job
from batchactions_peewee.cli import URL_ENV
from batchactions_peewee.web.server import WsgiApp, make_server

#: Text that would run if a page parsed it as HTML.
HOSTILE = "<script>alert('x')</script>"
#: The worker that claims a batch and goes away, leaving its lease to go stale.
GONE_WORKER = "gone-worker"


@dataclass
class Answer:
    """An HTTP response, read whole."""

    status: int
    headers: dict[str, str]
    body: bytes

    @property
    def text(self) -> str:
        return self.body.decode("utf-8")

    def json(self) -> Any:
        assert self.headers["content-type"].startswith("application/json"), self.headers
        return json.loads(self.body)


@dataclass
class Client:
    """Requests to a dashboard served on ``port``; ``headers`` go with every request."""

    port: int
    headers: dict[str, str] = field(default_factory=dict)

    def request(
        self, method: str, path: str, headers: dict[str, str] | None = None, body: bytes = b""
    ) -> Answer:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            conn.request(
                method, path, body=body or None, headers={**self.headers, **(headers or {})}
            )
            response = conn.getresponse()
            found = {k.lower(): v for k, v in response.getheaders()}
            return Answer(response.status, found, response.read())
        finally:
            conn.close()

    def get(self, path: str, **headers: str) -> Answer:
        return self.request("GET", path, headers)

    def post(self, path: str, **headers: str) -> Answer:
        return self.request("POST", path, headers)

    def ok(self, path: str) -> Any:
        """The JSON of a GET that must answer 200."""
        answer = self.get(path)
        assert answer.status == 200, (path, answer.status, answer.body)
        return answer.json()


@contextmanager
def serving(app: WsgiApp) -> Iterator[int]:
    """``app`` on a threaded wsgiref server on a free loopback port, in the background."""
    server = make_server("127.0.0.1", 0, app)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


class Contact(BaseModel):
    email: str = Field(pattern=r"^[^@\s]+@[^@\s]+\.[a-z]{2,}$")
    name: str


def _refuse(record: dict[str, Any], context: ProcessingContext) -> None:
    if record["email"].startswith("fail"):
        raise ValueError(f"refused {record['name']}")


def running_job(store: PeeweeStateStore) -> str:
    """A PROCESSING job of 10 records in 5 batches: batches 0-2 done (record 3 failed,
    its name and error hold ``HOSTILE``; record 5 invalid), batch 3 held by
    ``GONE_WORKER``, batch 4 pending."""
    rows = [{"email": f"user{i}@example.com", "name": f"User {i}"} for i in range(10)]
    rows[3] = {"email": "fail3@example.com", "name": HOSTILE, "note": '"quoted", comma'}
    rows[5] = {"email": "not-an-email", "name": HOSTILE}
    job_id = prepare_job(store, rows, batch_size=2, schema=Contact).job_id
    Worker(store, _refuse, schema=Contact).run(job_id, max_batches=3)
    assert store.claim_batch(job_id, GONE_WORKER).claimed
    return job_id


def start_server(cwd: Any, *arguments: str) -> tuple[subprocess.Popen[str], dict[str, Any]]:
    """``batchactions-peewee ARGUMENTS --json`` (a serving command) started in ``cwd``
    without the database URL variable, and the JSON line it announces itself with."""
    environment = {k: v for k, v in os.environ.items() if k != URL_ENV}
    server = subprocess.Popen(
        [sys.executable, "-m", "batchactions_peewee", *arguments, "--json"],
        cwd=cwd,
        env=environment,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert server.stdout is not None
    return server, json.loads(server.stdout.readline())
