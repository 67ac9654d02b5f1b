"""The dashboard as one WSGI application: routing, sign-in, the pages and their static
files (shipped in ``static/``, served from a fixed list read at start), and the boundary
where the store's errors become JSON answers."""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from importlib import resources
from typing import Any

from ..checks import check_id
from ..errors import InvalidInputError, JobNotFoundError, StoreUnavailable
from ..metrics import metrics_text
from ..store import PeeweeStateStore
from .api import ACTIONS, Api
from .auth import SESSION_COOKIE, Guard
from .http import (
    HttpError,
    Request,
    Response,
    StartResponse,
    error_response,
    json_response,
    redirect,
)

log = logging.getLogger(__name__)

#: A batch is stale once its lease is older than this (the workers' default), in ms.
DEFAULT_LEASE_TIMEOUT_MS = 300_000
_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
}
_STATIC_NAME = re.compile(r"[a-z0-9_-]+\.(html|js|css|svg)\Z")
_JOB_VIEWS = ("batches", "failed", "grid", "throughput")
_PAGES = {"": "index.html"}


def _static_files() -> dict[str, tuple[bytes, str]]:
    """Every file of ``static/`` by name, with its content type: the only files served."""
    found = {}
    for entry in resources.files(__package__).joinpath("static").iterdir():
        match = _STATIC_NAME.match(entry.name)
        if match and entry.is_file():
            found[entry.name] = (entry.read_bytes(), _TYPES["." + match.group(1)])
    return found


class Dashboard:
    """The WSGI application of ``make_wsgi_app``."""

    def __init__(
        self,
        store: PeeweeStateStore,
        *,
        allow_actions: bool,
        token: str | None,
        lease_timeout_ms: int,
        metrics_only: bool = False,
    ) -> None:
        self.store = store
        self.metrics_only = metrics_only
        self.allow_actions = allow_actions
        self.lease_timeout_ms = lease_timeout_ms
        self.guard = Guard(token)
        self.api = Api(store, lease_timeout_ms=lease_timeout_ms)
        self.static = _static_files()

    def __call__(
        self, environ: Mapping[str, Any], start_response: StartResponse
    ) -> Iterable[bytes]:
        # Each request thread opens its own connection and closes it once answered; a
        # connection the host application opened itself is left to it.
        database = self.store.database
        opened_here = database.is_closed()
        try:
            response = self._respond(environ)
        except HttpError as exc:
            response = error_response(exc)
        body = response.send(start_response)
        return _Closing(body, database.close) if opened_here else body

    def _respond(self, environ: Mapping[str, Any]) -> Response:
        request = Request(environ)
        if request.path == "":
            return redirect(_root(request) + "/")
        try:
            return self._route(request)
        except HttpError:
            raise
        except JobNotFoundError as exc:
            raise HttpError(404, str(exc)) from None
        except InvalidInputError as exc:
            raise HttpError(400, str(exc)) from None
        except StoreUnavailable:
            log.warning("dashboard: the database is unavailable", exc_info=True)
            raise HttpError(503, "the database is unavailable; try again later") from None
        except Exception:
            # Driver messages may name hosts or users: the log has them, the answer not.
            log.exception("dashboard: %s %s failed", request.method, request.path)
            raise HttpError(500, "internal error (the server's log says more)") from None

    def _route(self, request: Request) -> Response:
        path = request.path
        if self.metrics_only and path != "/metrics":
            raise HttpError(404, f"no route {path}: this server answers /metrics only")
        if path.startswith("/static/"):
            return self._static(request, path.removeprefix("/static/"))
        if path == "/login":
            return self._login(request)
        if not self.guard.signed_in(request):
            if path.startswith("/api/") or path == "/metrics":
                raise HttpError(
                    401,
                    "sign in: send Authorization: Bearer TOKEN",
                    [("WWW-Authenticate", 'Bearer realm="batchactions"')],
                )
            return redirect(_root(request) + "/login")
        if path.startswith("/api/"):
            return self._api(request, path.removeprefix("/api/"))
        if path == "/metrics":
            _method(request, "GET")
            request.only()
            return _metrics_response(
                metrics_text(self.store, lease_timeout_ms=self.lease_timeout_ms)
            )
        if path.startswith("/jobs/") and len(path) > len("/jobs/"):
            return self._page(request, "job.html")
        page = _PAGES.get(path.removeprefix("/"))
        if page is None:
            raise HttpError(404, f"no page {path}")
        return self._page(request, page)

    def _api(self, request: Request, route: str) -> Response:
        if route == "config":
            _method(request, "GET")
            request.only()
            return json_response(self._config())
        if route == "jobs":
            _method(request, "GET")
            return self.api.jobs(request)
        if not route.startswith("jobs/"):
            raise HttpError(404, f"no route /api/{route}")
        job_id, view = _job_route(route.removeprefix("jobs/"))
        if not job_id:
            raise HttpError(404, f"no route /api/{route}")
        try:
            check_id(job_id, "job id")
        except InvalidInputError as exc:
            raise HttpError(400, str(exc)) from None
        if view in ACTIONS:
            _method(request, "POST")
            self.guard.check_action(request, self.allow_actions)
            return self.api.act(request, self.api.find(job_id), view)
        _method(request, "GET")
        job = self.api.find(job_id)
        if view is None:
            return self.api.job(request, job)
        return getattr(self.api, view)(request, job)  # type: ignore[no-any-return]

    def _config(self) -> dict[str, Any]:
        return {
            "allowActions": self.allow_actions,
            "csrfToken": self.guard.csrf_token if self.allow_actions else None,
            "leaseTimeoutMs": self.lease_timeout_ms,
            "signIn": self.guard.token is not None,
        }

    def _static(self, request: Request, name: str) -> Response:
        _method(request, "GET")
        found = self.static.get(name)
        if found is None:
            raise HttpError(404, "no such file")
        body, content_type = found
        return Response(200, [body], content_type, [("Cache-Control", "no-cache")])

    def _page(self, request: Request, name: str) -> Response:
        _method(request, "GET")
        body, content_type = self.static[name]
        return Response(200, [body], content_type, [("Cache-Control", "no-store")])

    def _login(self, request: Request) -> Response:
        if self.guard.token is None:
            return redirect("./")
        if request.method == "GET":
            return self._page(request, "login.html")
        _method(request, "POST")
        try:
            session = self.guard.check_login(request.form().get("token", ""))
        except HttpError:
            return redirect("login?failed")
        secure = "; Secure" if request.environ.get("wsgi.url_scheme") == "https" else ""
        path = _root(request) + "/"
        cookie = f"{SESSION_COOKIE}={session}; Path={path}; HttpOnly; SameSite=Strict{secure}"
        return redirect("./", [("Set-Cookie", cookie)])


def _metrics_response(text: str) -> Response:
    body = text.encode("utf-8")
    headers = [("Cache-Control", "no-store"), ("Content-Length", str(len(body)))]
    return Response(200, [body], "text/plain; version=0.0.4; charset=utf-8", headers)


def _method(request: Request, allowed: str) -> None:
    if request.method != allowed and not (allowed == "GET" and request.method == "HEAD"):
        raise HttpError(
            405, f"{request.method} is not allowed here; use {allowed}", [("Allow", allowed)]
        )


def _job_route(rest: str) -> tuple[str, str | None]:
    """``{id}`` or ``{id}/{view}`` of a job's route; a view name wins over an id holding
    a slash."""
    head, _, last = rest.rpartition("/")
    if head and last in (*_JOB_VIEWS, *ACTIONS):
        return head, last
    return rest, None


def _root(request: Request) -> str:
    """The path the app is mounted at (empty at the server's root)."""
    return str(request.environ.get("SCRIPT_NAME", "")).rstrip("/")


class _Closing:
    """``body``, whose ``close`` (which every WSGI server calls once the answer is sent, or
    given up) also runs ``close``: the request's own connection is closed then."""

    def __init__(self, body: Iterable[bytes], close: Callable[[], object]) -> None:
        self.body = body
        self._close = close

    def __iter__(self) -> Iterator[bytes]:
        return iter(self.body)

    def close(self) -> None:
        try:
            getattr(self.body, "close", lambda: None)()
        finally:
            self._close()
