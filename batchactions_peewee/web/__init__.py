"""The dashboard: a WSGI application over a store, with a jobs page, a live page per job
and the JSON API behind them (``GET /api/jobs``, ``/api/jobs/{id}``, ``.../batches``,
``.../failed``, ``.../grid``, ``.../throughput``; ``POST .../{pause|resume|abort|reclaim|
retry}`` when actions are allowed). Standard library only; the pages ship in ``static/``.

Mount it in any WSGI server or framework, or run ``batchactions-peewee dashboard``.
"""

from __future__ import annotations

from ..store import PeeweeStateStore
from .app import DEFAULT_LEASE_TIMEOUT_MS, Dashboard


def make_wsgi_app(
    store: PeeweeStateStore,
    *,
    allow_actions: bool = False,
    token: str | None = None,
    lease_timeout_ms: int = DEFAULT_LEASE_TIMEOUT_MS,
) -> Dashboard:
    """The dashboard of ``store`` as a WSGI application.

    ``allow_actions`` lets its users pause, resume, abort, reclaim and retry jobs (POST,
    with the page's CSRF token); otherwise those answer 403. ``token``, when given, must
    come with every request, as ``Authorization: Bearer TOKEN`` or through the login
    form's cookie (401 otherwise). Leases older than ``lease_timeout_ms`` show as stale,
    and ``reclaim`` gives them back. ``GET /metrics`` answers ``metrics_text(store)``.
    """
    return Dashboard(
        store, allow_actions=allow_actions, token=token, lease_timeout_ms=lease_timeout_ms
    )


def make_metrics_app(
    store: PeeweeStateStore,
    *,
    token: str | None = None,
    lease_timeout_ms: int = DEFAULT_LEASE_TIMEOUT_MS,
) -> Dashboard:
    """A WSGI application answering only ``GET /metrics`` (``metrics_text(store)``), with
    the dashboard's token rule: when ``token`` is given, ``Authorization: Bearer TOKEN``
    (401 otherwise)."""
    return Dashboard(
        store,
        allow_actions=False,
        token=token,
        lease_timeout_ms=lease_timeout_ms,
        metrics_only=True,
    )


__all__ = ["Dashboard", "make_metrics_app", "make_wsgi_app"]
