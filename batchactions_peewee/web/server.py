"""A small server for the dashboard from the standard library: wsgiref answering on a
fixed pool of threads (so a slow download does not hold up the page's polls, and each
thread keeps its database connection from one request to the next), quiet unless asked."""

from __future__ import annotations

import ipaddress
import logging
import socket
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer

from .http import HttpError, StartResponse, error_response

log = logging.getLogger(__name__)

WsgiApp = Any  # a WSGI callable: (environ, start_response) -> iterable of bytes


#: Requests answered at once; more wait for a thread.
THREADS = 16


class ThreadingWSGIServer(WSGIServer):
    """wsgiref's server, answering on a pool of ``THREADS`` threads."""

    allow_reuse_address = True

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        # First: a failed bind calls server_close from the base __init__.
        self._pool = ThreadPoolExecutor(THREADS, thread_name_prefix="dashboard")
        super().__init__(*args, **kwargs)

    def process_request(self, request: Any, client_address: Any) -> None:
        self._pool.submit(self._answer, request, client_address)

    def _answer(self, request: Any, client_address: Any) -> None:
        try:
            self.finish_request(request, client_address)
        except Exception:
            self.handle_error(request, client_address)
        finally:
            self.shutdown_request(request)

    def server_close(self) -> None:
        super().server_close()
        self._pool.shutdown(wait=False, cancel_futures=True)


class _IPv6Server(ThreadingWSGIServer):
    address_family = socket.AF_INET6


class _Handler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        log.info("%s %s", self.address_string(), format % args)


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and loopback addresses (127.0.0.0/8, ::1)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def make_server(host: str, port: int, app: WsgiApp) -> ThreadingWSGIServer:
    """A threaded wsgiref server of ``app`` bound to ``host``:``port`` (0: a free port)."""
    server_class = _IPv6Server if ":" in host else ThreadingWSGIServer
    server = server_class((host.strip("[]"), port), _Handler)
    server.set_app(app)
    return server


def loopback_hosts_only(app: WsgiApp) -> WsgiApp:
    """``app``, answering 403 to a request whose ``Host`` is not a loopback name: served
    without a token, a page of another site whose name was made to point at 127.0.0.1
    (DNS rebinding) must not read the dashboard."""

    def guarded(environ: Mapping[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        host = _host_name(str(environ.get("HTTP_HOST", "")))
        if host and not is_loopback(host):
            error = HttpError(403, "this dashboard answers to localhost and 127.0.0.1 only")
            return error_response(error).send(start_response)
        return app(environ, start_response)  # type: ignore[no-any-return]

    return guarded


def _host_name(header: str) -> str:
    """The name of a ``Host`` header, without its port (``[::1]:8080`` -> ``::1``)."""
    if header.startswith("["):
        return header[1 : header.find("]")]
    return header.partition(":")[0]


def connected(app: WsgiApp, database: Any) -> WsgiApp:
    """``app`` with the serving thread's connection to ``database`` opened first and kept
    open: on a pool of threads the next request reuses it (a new SQLite connection starts
    with an empty page cache). The dashboard closes only connections it opened itself."""

    def keeping(environ: Mapping[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        database.connect(reuse_if_open=True)
        return app(environ, start_response)  # type: ignore[no-any-return]

    return keeping
