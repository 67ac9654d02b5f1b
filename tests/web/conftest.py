"""Fixtures of the dashboard's tests: a running job and the dashboard serving its store."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import ExitStack
from typing import Any

import pytest

from batchactions_peewee import PeeweeStateStore
from batchactions_peewee.web import make_wsgi_app

from .support import Client, running_job, serving

Serve = Callable[..., Client]


@pytest.fixture
def job_id(peewee_store: PeeweeStateStore) -> str:
    """The id of ``running_job`` in ``peewee_store``."""
    return running_job(peewee_store)


@pytest.fixture
def serve(peewee_store: PeeweeStateStore) -> Iterator[Serve]:
    """``serve(**options)``: a client of ``make_wsgi_app(peewee_store, **options)``,
    served on a free port until the test ends."""
    with ExitStack() as stack:

        def start(**options: Any) -> Client:
            port = stack.enter_context(serving(make_wsgi_app(peewee_store, **options)))
            return Client(port)

        yield start
