"""``dashboard`` and ``metrics``: serve the web dashboard of the database's jobs, or only
their Prometheus metrics, with a small threaded server of the standard library, on
127.0.0.1 unless told otherwise (and then only with a token)."""

from __future__ import annotations

import argparse
import json
import os
import sys

from ..store import PeeweeStateStore
from ..web import make_metrics_app, make_wsgi_app
from ..web.app import Dashboard
from ..web.server import connected, is_loopback, loopback_hosts_only, make_server
from .common import (
    DEFAULT_LEASE_TIMEOUT_MS,
    CliError,
    database_url,
    open_store,
    redact,
    usage_error,
)

TOKEN_ENV = "BATCHACTIONS_DASHBOARD_TOKEN"
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8080
METRICS_PORT = 9464


def parse_port(text: str) -> int:
    """A port option's value: 0 (any free port) to 65535."""
    if not text.isdigit() or not 0 <= int(text) <= 65535:
        raise argparse.ArgumentTypeError(
            f"expected a port from 0 (any free one) to 65535, got {text!r}"
        )
    return int(text)


def add_dashboard_options(parser: argparse.ArgumentParser) -> None:
    """The options of ``dashboard``."""
    _server_options(parser, DEFAULT_PORT, "as Authorization: Bearer T or through the login form")
    parser.add_argument(
        "--allow-actions",
        action="store_true",
        help="let the page pause, resume, abort, reclaim and retry jobs",
    )
    _common_options(parser)


def add_metrics_options(parser: argparse.ArgumentParser) -> None:
    """The options of ``metrics``."""
    _server_options(parser, METRICS_PORT, "as Authorization: Bearer T")
    _common_options(parser)


def _server_options(parser: argparse.ArgumentParser, port: int, how: str) -> None:
    parser.add_argument(
        "--host",
        default=DEFAULT_HOST,
        help=f"address to listen on (default {DEFAULT_HOST}); any address that is not "
        "a loopback one needs --token",
    )
    parser.add_argument(
        "--port",
        type=parse_port,
        default=port,
        help=f"port (default {port}; 0: any free one)",
    )
    parser.add_argument(
        "--token",
        metavar="T",
        default=os.environ.get(TOKEN_ENV) or None,
        help=f"every request must carry it, {how} (default ${TOKEN_ENV})",
    )


def _common_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--lease-timeout",
        metavar="MS",
        type=int,
        default=DEFAULT_LEASE_TIMEOUT_MS,
        help="leases older than this show as stale, and reclaim takes them "
        f"(default {DEFAULT_LEASE_TIMEOUT_MS})",
    )
    parser.add_argument(
        "--json", action="store_true", help="say what is served as one JSON line on stdout"
    )


def cmd_dashboard(args: argparse.Namespace) -> int:
    """Serve the dashboard until Ctrl-C."""
    store = _checked_store(args)
    app = make_wsgi_app(
        store,
        allow_actions=args.allow_actions,
        token=args.token,
        lease_timeout_ms=args.lease_timeout,
    )
    return _serve(args, store, app, "dashboard", "")


def cmd_metrics(args: argparse.Namespace) -> int:
    """Serve the jobs' Prometheus metrics at /metrics until Ctrl-C."""
    store = _checked_store(args)
    app = make_metrics_app(store, token=args.token, lease_timeout_ms=args.lease_timeout)
    return _serve(args, store, app, "metrics", "metrics")


def _checked_store(args: argparse.Namespace) -> PeeweeStateStore:
    """The store, once the options are known to be safe to serve with."""
    if args.token is not None and not args.token.strip():
        raise usage_error("--token must not be empty")
    if args.token is None and not is_loopback(args.host):
        raise usage_error(
            f"--host {args.host} is not a loopback address: give --token T (or ${TOKEN_ENV}) "
            "so that only its holders can read the dashboard"
        )
    if args.lease_timeout < 1:
        raise usage_error(f"--lease-timeout must be at least 1, got {args.lease_timeout}")
    return open_store(args)


def _serve(
    args: argparse.Namespace, store: PeeweeStateStore, app: Dashboard, what: str, path: str
) -> int:
    served = connected(app, store.database)
    try:
        server = make_server(
            args.host, args.port, served if args.token else loopback_hosts_only(served)
        )
    except OSError as exc:
        raise CliError(f"cannot listen on {args.host}:{args.port}: {exc.strerror or exc}") from None
    _announce(args, server.server_address[1], what, path)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        print("stopped", file=sys.stderr)
    finally:
        server.server_close()
    return 0


def _announce(args: argparse.Namespace, port: int, what: str, path: str) -> None:
    """The URL served (the database's password redacted), and how."""
    host = f"[{args.host.strip('[]')}]" if ":" in args.host else args.host
    url = f"http://{host}:{port}/{path}"
    database = redact(database_url(args))
    allow_actions = bool(getattr(args, "allow_actions", False))
    if args.json:
        told = {"url": url, "database": database, "allowActions": allow_actions}
        print(json.dumps({**told, "tokenRequired": args.token is not None}), flush=True)
    else:
        print(f"{what} of {database} at {url}", flush=True)
    actions = "actions allowed" if allow_actions else "read-only"
    if what == "dashboard" and not allow_actions:
        actions += " (--allow-actions: act on jobs)"
    sign_in = "token required" if args.token else "no token: loopback only"
    print(f"{actions}; {sign_in}; Ctrl-C stops it", file=sys.stderr, flush=True)
