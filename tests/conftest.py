"""Fixtures: every contract test runs against each backend (memory, SQLite, MySQL, PostgreSQL)."""

from __future__ import annotations

import os
import signal
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import ExitStack

import pytest
from hypothesis import HealthCheck, settings

from batchactions_peewee import PeeweeStateStore

from .support.async_stores import ASYNC_BACKENDS, ASYNC_PREFIX, sync_kind
from .support.backends import (
    BROKER_ENV,
    BROKER_EXAMPLE,
    ENV,
    EXAMPLE_URL,
    IN_CI,
    fresh_server_database,
    server_url,
)
from .support.interop import FIXTURES_DIR
from .support.stores import (
    ALL_BACKENDS,
    PEEWEE_BACKENDS,
    SERVER_KINDS,
    Store,
    open_store,
)

settings.register_profile(
    "ci",
    max_examples=30,
    derandomize=True,
    deadline=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
settings.register_profile(
    "dev",
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci" if IN_CI else "dev"))


def pytest_configure(config: pytest.Config) -> None:
    # A suite started in the background (`cmd &` in a script) inherits SIGINT ignored, and
    # so would every command it starts: the Ctrl-C tests would wait forever. A handler of
    # ours is reset to the default in each child, so the commands see Ctrl-C as a user's do.
    if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    missing = [ENV[k] for k in SERVER_KINDS if not server_url(k)]
    if IN_CI and missing:
        raise pytest.UsageError(f"CI=true but {', '.join(missing)} not set: refusing to skip")


def _skip_reason(report: pytest.TestReport | pytest.CollectReport) -> str:
    longrepr = report.longrepr
    reason = longrepr[2] if isinstance(longrepr, tuple) else str(longrepr)
    return reason.removeprefix("Skipped: ")


def _skip_group(reason: str) -> str:
    """What a skip comes down to: a server not configured or not answering (RabbitMQ),
    the Node fixtures missing, or else the reason as the test gave it."""
    for kind in SERVER_KINDS:
        if ENV[kind] in reason:
            return f"tests: {kind} (set {ENV[kind]}, e.g. {EXAMPLE_URL[kind]})"
    if BROKER_ENV in reason:
        return f"celery tests: no RabbitMQ (set {BROKER_ENV}, e.g. {BROKER_EXAMPLE})"
    if str(FIXTURES_DIR) in reason:
        return (
            f"interop tests: no Node fixtures in {FIXTURES_DIR} (a shared/ folder beside the clone)"
        )
    return f"tests: {reason}"


# Outermost wrapper (tryfirst), so the grouped skips print after pytest's short test summary.
@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> Iterator[None]:
    """End the run with one line per reason tests were skipped, instead of one per test."""
    yield
    reasons = Counter(
        _skip_group(_skip_reason(r)) for r in terminalreporter.stats.get("skipped", [])
    )
    if reasons:
        terminalreporter.write_sep("=", "skipped, by reason", yellow=True)
    for group, count in reasons.most_common():
        terminalreporter.write_line(f"skipped {count} {group}", yellow=True)


@pytest.fixture(scope="session")
def server_urls() -> Iterator[dict[str, str]]:
    """URL of a fresh database per configured server, dropped at the end of the session."""
    with ExitStack() as stack:
        yield {
            kind: stack.enter_context(fresh_server_database(kind))
            for kind in SERVER_KINDS
            if server_url(kind)
        }


@pytest.fixture
def url_for(
    tmp_path_factory: pytest.TempPathFactory, server_urls: dict[str, str]
) -> Callable[[str], str]:
    """``url_for(kind)``: a database URL for a Peewee backend (skips a server not configured)."""

    def url(kind: str) -> str:
        if kind in ASYNC_BACKENDS:
            return ASYNC_PREFIX + url(sync_kind(kind))
        if kind == "sqlite":
            return f"sqlite:///{tmp_path_factory.mktemp('db') / 'test.db'}"
        if kind not in server_urls:
            pytest.skip(f"{kind}: set {ENV[kind]} to run this backend")
        return server_urls[kind]

    return url


def _store(kind: str, url_for: Callable[[str], str]) -> Iterator[Store]:
    with open_store(kind, url_for) as store:
        yield store


@pytest.fixture(params=ALL_BACKENDS)
def store(request: pytest.FixtureRequest, url_for: Callable[[str], str]) -> Iterator[Store]:
    """A fresh, empty store on each backend, InMemoryStateStore included."""
    yield from _store(request.param, url_for)


@pytest.fixture(params=PEEWEE_BACKENDS)
def peewee_store(
    request: pytest.FixtureRequest, url_for: Callable[[str], str]
) -> Iterator[PeeweeStateStore]:
    """A fresh PeeweeStateStore on each database backend."""
    for s in _store(request.param, url_for):
        assert isinstance(s, PeeweeStateStore)
        yield s
