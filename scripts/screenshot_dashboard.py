"""Draw docs/dashboard-job.png: the dashboard's job page in headless Chromium (Debian's
chromium and chromedriver) for a job part-way through, with invalid and failed records and
two workers holding leases, one of them stale.


    .venv/bin/python scripts/screenshot_dashboard.py [--out docs/dashboard-job.png]

Everything runs here: a SQLite job in a temporary directory, two worker threads that do
about 75% of it (2 ms a record, every 40th record refused, addresses without a dot in the
domain invalid) and are photographed at work past 55%, the dashboard on a free loopback
port, and Selenium.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from batchactions_peewee import PeeweeStateStore, ProcessingContext, Worker, prepare_job
from batchactions_peewee.cli import open_database
from batchactions_peewee.web import make_wsgi_app
from batchactions_peewee.web.server import connected, make_server

RECORDS = 6_000
BATCH_SIZE = 50


class Contact(BaseModel):
    """The job's schema: an address with a dot in its domain, and a name."""

    email: str = Field(pattern=r"^[^@\s]+@[^@\s]+\.[a-z]{2,}$")
    name: str


def deliver(record: dict[str, Any], context: ProcessingContext) -> None:
    """A 2 ms call to another system that refuses every 40th address."""
    time.sleep(0.002)
    if context.record_index % 40 == 7:
        raise ConnectionError(f"mail server refused {record['email']}: 550 mailbox unavailable")


def contacts() -> Any:
    for i in range(RECORDS):
        domain = "example" if i % 97 == 13 else "example.com"
        yield {"email": f"user{i}@{domain}", "name": f"User {i}"}


def make_job(store: PeeweeStateStore) -> str:
    """The job, its first batch held by a worker that went quiet."""
    store.create_tables()
    job_id = prepare_job(store, contacts(), batch_size=BATCH_SIZE, schema=Contact).job_id
    assert store.claim_batch(job_id, "worker-c.internal").claimed
    return job_id


def start_workers(store: PeeweeStateStore, job_id: str) -> list[threading.Thread]:
    """Two workers that do about 75% of the job between them, in the background."""
    batches = int(RECORDS // BATCH_SIZE * 0.375)
    threads = [
        threading.Thread(
            target=Worker(store, deliver, schema=Contact, worker_id=name).run,
            args=(job_id,),
            kwargs={"max_batches": batches},
        )
        for name in ("worker-a.internal", "worker-b.internal")
    ]
    for thread in threads:
        thread.start()
    return threads


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("docs/dashboard-job.png"))
    args = parser.parse_args()
    os.environ["SE_OFFLINE"] = "true"  # Selenium Manager must never download
    with tempfile.TemporaryDirectory() as folder:
        database = open_database(f"sqlite:///{folder}/screenshot.db")
        store = PeeweeStateStore(database)
        job_id = make_job(store)
        workers = start_workers(store, job_id)
        app = connected(make_wsgi_app(store, allow_actions=True, lease_timeout_ms=2_000), database)
        server = make_server("127.0.0.1", 0, app)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        options = webdriver.ChromeOptions()
        options.binary_location = "/usr/bin/chromium"
        for argument in ("--headless=new", "--no-sandbox", "--window-size=1280,1900"):
            options.add_argument(argument)
        driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
        try:
            driver.get(f"http://127.0.0.1:{server.server_address[1]}/jobs/{job_id}")
            WebDriverWait(driver, 30).until(
                lambda d: (
                    d.find_elements(By.CSS_SELECTOR, "#failed-records tr[data-record-index]")
                    and d.find_elements(By.CSS_SELECTOR, "#throughput-chart *")
                )
            )
            time.sleep(1)  # let the last poll's drawing settle
            args.out.parent.mkdir(parents=True, exist_ok=True)
            driver.save_screenshot(str(args.out))
        finally:
            driver.quit()
            for worker in workers:
                worker.join()
            server.shutdown()
            database.close()
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
