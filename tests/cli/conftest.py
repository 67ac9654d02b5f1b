"""Fixtures of the command-line tests: a database URL and a table prefix of their own."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from ..support.cli import Target
from ..support.stores import PEEWEE_BACKENDS, new_prefix


@pytest.fixture(params=PEEWEE_BACKENDS)
def target(request: pytest.FixtureRequest, url_for: Callable[[str], str]) -> Target:
    """A target on each database backend."""
    return Target(url_for(request.param), new_prefix())


@pytest.fixture
def sqlite_target(url_for: Callable[[str], str]) -> Target:
    """A target on SQLite."""
    return Target(url_for("sqlite"), new_prefix())
