"""The contract suite's ``store``: every backend of the top-level fixture, and the async
store on SQLite, MySQL/MariaDB and PostgreSQL through ``LoopStore`` (a synchronous facade
driving it on an event loop of its own), so each contract test exercises the async path."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from ..support.stores import CONTRACT_BACKENDS, AnyStore, open_any_store


@pytest.fixture(params=CONTRACT_BACKENDS)
def store(request: pytest.FixtureRequest, url_for: Callable[[str], str]) -> Iterator[AnyStore]:
    """A fresh, empty store on each backend, InMemoryStateStore and the async store included."""
    with open_any_store(request.param, url_for) as opened:
        yield opened
