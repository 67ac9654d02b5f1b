"""A small server for the dashboard from the standard library: wsgiref with a thread per
request (so a slow download does not hold up the page's polls), quiet unless asked."""

from __future__ import annotations

import ipaddress
import logging
import socket
import socketserver
from collections.abc import Iterable, Mapping
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer

from .http import HttpError, StartResponse, error_response

log = logging.getLogger(__name__)

WsgiApp = Any  # a WSGI callable: (environ, start_response) -> iterable of bytes


class ThreadingWSGIServer(socketserver.ThreadingMixIn, WSGIServer):
    """wsgiref's server, one thread per request; the threads die with the process."""

    daemon_threads = True
    allow_reuse_address = True


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
