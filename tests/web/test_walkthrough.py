"""The dashboard used as a person uses it, in headless Chromium driven by Selenium (Debian's
chromium and chromedriver, never a browser download), while two real worker processes run
a job: the list shows it, the job page's progress and grid move, the failed records show,
pause and resume work with actions allowed and answer 403 without. A screenshot of the job
page is left as an artifact (``BATCHACTIONS_TEST_ARTIFACTS``, else the test's tmp dir)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from batchactions_peewee import JobStatus, PeeweeStateStore, prepare_job
from batchactions_peewee.cli import open_database
from batchactions_peewee.web import make_wsgi_app

from ..support.backends import IN_CI
from .slow_processor import FAIL_EVERY
from .support import Client, serving

pytestmark = pytest.mark.slow

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
RECORDS = 600
BATCH_SIZE = 20
ROOT = Path(__file__).resolve().parents[2]

try:
    from selenium import webdriver
    from selenium.common.exceptions import NoAlertPresentException
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.remote.webdriver import WebDriver
    from selenium.webdriver.support.ui import WebDriverWait

    HAVE_SELENIUM = True
except ImportError:  # selenium is a dev dependency
    HAVE_SELENIUM = False


def _missing() -> str | None:
    if not HAVE_SELENIUM:
        return "selenium is not installed"
    for path in (CHROMIUM, CHROMEDRIVER):
        if not os.access(path, os.X_OK):
            return f"{path} is missing (Debian packages chromium, chromium-driver)"
    return None


@pytest.fixture
def browser(monkeypatch: pytest.MonkeyPatch) -> Iterator[WebDriver]:
    """Headless Chromium at 1280x900 through Debian's chromedriver."""
    missing = _missing()
    if missing:
        if IN_CI:
            pytest.fail(f"CI=true but {missing}")
        pytest.skip(missing)
    monkeypatch.setenv("SE_OFFLINE", "true")  # Selenium Manager must never download
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1280,900"):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture
def job(tmp_path: Path) -> Iterator[tuple[str, str, PeeweeStateStore]]:
    """A prepared SQLite job of ``RECORDS`` records: (database URL, job id, store)."""
    url = f"sqlite:///{tmp_path / 'walk.db'}"
    database = open_database(url)
    store = PeeweeStateStore(database)
    store.create_tables()
    rows = ({"email": f"user{i}@example.com", "n": i} for i in range(RECORDS))
    job_id = prepare_job(store, rows, batch_size=BATCH_SIZE).job_id
    try:
        yield url, job_id, store
    finally:
        database.close()


def _workers(url: str, job_id: str, count: int) -> list[subprocess.Popen[bytes]]:
    """``count`` ``work`` processes of the CLI on the job, as a user starts them."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    command = [sys.executable, "-m", "batchactions_peewee", "work", job_id, "--database", url]
    command += ["--processor", "tests.web.slow_processor:process"]
    return [
        subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL)
        for _ in range(count)
    ]


def _wait(driver: WebDriver, seconds: float, what: str, test: Callable[[Any], Any]) -> Any:
    return WebDriverWait(driver, seconds, poll_frequency=0.2).until(test, what)


def _progress(driver: WebDriver) -> float:
    return float(driver.find_element(By.ID, "progress").get_attribute("aria-valuenow") or 0)


def _statuses(driver: WebDriver) -> list[str]:
    cells = driver.find_elements(By.CSS_SELECTOR, "#batch-grid .cell[data-status]")
    return [cell.get_attribute("data-status") or "" for cell in cells]


def _job_status(driver: WebDriver) -> str:
    return driver.find_element(By.ID, "job-status").get_attribute("data-status") or ""


def _click_and_confirm(driver: WebDriver, button: str) -> None:
    _wait(driver, 20, f"{button} enabled", lambda d: d.find_element(By.ID, button).is_enabled())
    driver.find_element(By.ID, button).click()
    alert = _wait(driver, 10, "the confirm dialog", _alert)
    alert.accept()


def _alert(driver: WebDriver) -> Any:
    try:
        return driver.switch_to.alert
    except NoAlertPresentException:
        return False


def test_a_job_watched_paused_and_resumed_in_the_browser(
    browser: WebDriver, job: tuple[str, str, PeeweeStateStore], tmp_path: Path
) -> None:
    url, job_id, store = job
    workers = _workers(url, job_id, 2)
    try:
        with serving(make_wsgi_app(store, allow_actions=True)) as port:
            base = f"http://127.0.0.1:{port}/"
            browser.get(base)
            row = f'#jobs tr[data-job-id="{job_id}"]'
            _wait(
                browser, 30, "the job in the list", lambda d: d.find_elements(By.CSS_SELECTOR, row)
            )
            browser.find_element(By.CSS_SELECTOR, f"{row} a").click()
            _wait(browser, 20, "the job page", lambda d: _statuses(d))
            assert len(_statuses(browser)) == RECORDS // BATCH_SIZE

            # Progress and grid move while the workers run.
            first, grid = _progress(browser), _statuses(browser)
            _wait(browser, 30, "progress to move", lambda d: _progress(d) > first)
            _wait(browser, 30, "the grid to change", lambda d: _statuses(d) != grid)
            failed = "#failed-records tr[data-record-index]"
            _wait(browser, 30, "failed records", lambda d: d.find_elements(By.CSS_SELECTOR, failed))
            shown = browser.find_element(By.CSS_SELECTOR, failed)
            index = int(shown.get_attribute("data-record-index") or -1)
            assert index % FAIL_EVERY == 0
            assert f"refused record {index}" in shown.text

            # Pause: the job stops being PROCESSING; its workers wait.
            _click_and_confirm(browser, "action-pause")
            _wait(browser, 20, "PAUSED", lambda d: _job_status(d) == "PAUSED")
            assert store.get_job_state(job_id).status is JobStatus.PAUSED  # type: ignore[union-attr]
            _save_screenshot(browser, tmp_path)

            # Resume: the workers go on and finish the job.
            _click_and_confirm(browser, "action-resume")
            _wait(browser, 20, "PROCESSING again", lambda d: _job_status(d) != "PAUSED")
            _wait(browser, 90, "COMPLETED", lambda d: _job_status(d) == "COMPLETED")
            assert _progress(browser) == 100
            assert set(_statuses(browser)) == {"COMPLETED"}
        for worker in workers:
            assert worker.wait(timeout=60) == 0
        progress = store.get_progress(job_id)
        refused = RECORDS // FAIL_EVERY
        assert (progress.processed_records, progress.failed_records) == (RECORDS - refused, refused)

        # Without actions the buttons are not shown and the API refuses them.
        with serving(make_wsgi_app(store)) as port:
            browser.get(f"http://127.0.0.1:{port}/jobs/{job_id}")
            _wait(browser, 20, "the job page", lambda d: _job_status(d) == "COMPLETED")
            assert not browser.find_element(By.ID, "actions").is_displayed()
            assert Client(port).post(f"/api/jobs/{job_id}/pause").status == 403
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.kill()
                worker.wait()


def _save_screenshot(driver: WebDriver, tmp_path: Path) -> None:
    folder = Path(os.environ.get("BATCHACTIONS_TEST_ARTIFACTS") or tmp_path)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "dashboard-job.png"
    assert driver.save_screenshot(str(path)), "Chromium took no screenshot"
    assert path.stat().st_size > 10_000
    print(f"screenshot: {path}")
