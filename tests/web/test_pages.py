"""The pages as a browser draws them (headless Chromium's DOM after the scripts ran): the
job's figures, its grid, leases and failed records, with hostile text shown as text."""

from __future__ import annotations

import html
import re
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator

import pytest

from batchactions_peewee import PeeweeStateStore
from batchactions_peewee.web import make_wsgi_app

from ..support.backends import IN_CI
from ..support.stores import make_store
from .support import GONE_WORKER, HOSTILE, running_job, serving

BROWSER = next(
    (
        shutil.which(name)
        for name in ("chromium", "chromium-browser", "google-chrome")
        if shutil.which(name)
    ),
    None,
)


def dom(url: str) -> str:
    """The page's DOM once its scripts have run for a few (virtual) seconds."""
    if BROWSER is None:
        if IN_CI:
            pytest.fail("CI=true but no Chromium to draw the pages with")
        pytest.skip("no Chromium: the pages are not drawn")
    with tempfile.TemporaryDirectory() as profile:
        result = subprocess.run(
            [
                BROWSER,
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                f"--user-data-dir={profile}",
                "--virtual-time-budget=5000",
                "--dump-dom",
                url,
            ],
            capture_output=True,
            text=True,
            timeout=90,
        )
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


@pytest.fixture
def sqlite_store(url_for: Callable[[str], str]) -> Iterator[PeeweeStateStore]:
    """Drawn on SQLite only: the API tests cover every database."""
    store, database = make_store(url_for("sqlite"))
    yield store
    store.drop_tables()
    database.close()


def test_the_job_page_draws_the_job_and_escapes_its_records(sqlite_store: PeeweeStateStore) -> None:
    job_id = running_job(sqlite_store)
    with serving(make_wsgi_app(sqlite_store, allow_actions=True)) as port:
        page = dom(f"http://127.0.0.1:{port}/jobs/{job_id}")
    assert f'<span id="job-id">{job_id}</span>' in page
    assert re.search(r'id="progress"[^>]*aria-valuenow="60"', page)
    cells = re.findall(r'<span class="cell" data-index="(\d)" data-status="([A-Z]+)"', page)
    assert cells == [
        ("0", "COMPLETED"),
        ("1", "COMPLETED"),
        ("2", "COMPLETED"),
        ("3", "PROCESSING"),
        ("4", "PENDING"),
    ]
    assert f'data-worker-id="{GONE_WORKER}"' in page
    rows = re.findall(r'<tr data-record-index="(\d+)" data-status="(\w+)">', page)
    assert rows == [("3", "failed"), ("5", "invalid")]
    # The record's <script> is text in a cell, never an element of the page.
    assert html.escape(HOSTILE, quote=False) in page
    assert HOSTILE not in page and "alert(" not in re.sub(r"&lt;script&gt;alert\('x'\)", "", page)
    assert '<section id="actions">' in page  # shown: actions are allowed
    assert 'id="action-pause" data-action="pause">' in page  # enabled: the job runs


def test_the_jobs_page_lists_the_jobs(sqlite_store: PeeweeStateStore) -> None:
    job_id = running_job(sqlite_store)
    with serving(make_wsgi_app(sqlite_store)) as port:
        page = dom(f"http://127.0.0.1:{port}/")
    assert f'<tr data-job-id="{job_id}" data-status="PROCESSING">' in page
    assert f'href="jobs/{job_id}"' in page
