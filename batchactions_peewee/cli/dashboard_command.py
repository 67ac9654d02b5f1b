"""``dashboard``: serve the web dashboard of the database's jobs with a small threaded
server of the standard library, on 127.0.0.1 unless told otherwise (and then only with a
token)."""

from __future__ import annotations

import argparse
import json
import os
import sys

from ..web import make_wsgi_app
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


def _port(text: str) -> int:
    if not text.isdigit() or not 0 <= int(text) <= 65535:
        raise argparse.ArgumentTypeError(
            f"expected a port from 0 (any free one) to 65535, got {text!r}"
        )
    return int(text)


def add_dashboard_options(parser: argparse.ArgumentParser) -> None:
    """The options of ``dashboard``."""
    parser.add_argument(
        "--host",
        default=DEFAULT_HOST,
        help=f"address to listen on (default {DEFAULT_HOST}); any address that is not "
        "a loopback one needs --token",
    )
    parser.add_argument(
        "--port",
        type=_port,
        default=DEFAULT_PORT,
        help=f"port (default {DEFAULT_PORT}; 0: any free one)",
    )
    parser.add_argument(
        "--allow-actions",
        action="store_true",
        help="let the page pause, resume, abort, reclaim and retry jobs",
    )
    parser.add_argument(
        "--token",
        metavar="T",
        default=os.environ.get(TOKEN_ENV) or None,
        help="every request must carry it, as Authorization: Bearer T or through the "
        f"login form (default ${TOKEN_ENV})",
    )
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
    if args.token is not None and not args.token.strip():
        raise usage_error("--token must not be empty")
    if args.token is None and not is_loopback(args.host):
        raise usage_error(
            f"--host {args.host} is not a loopback address: give --token T (or ${TOKEN_ENV}) "
            "so that only its holders can read the dashboard"
        )
    if args.lease_timeout < 1:
        raise usage_error(f"--lease-timeout must be at least 1, got {args.lease_timeout}")
    store = open_store(args)
    app = make_wsgi_app(
        store,
        allow_actions=args.allow_actions,
        token=args.token,
        lease_timeout_ms=args.lease_timeout,
    )
    served = connected(app, store.database)
    try:
        server = make_server(
            args.host, args.port, served if args.token else loopback_hosts_only(served)
        )
    except OSError as exc:
        raise CliError(f"cannot listen on {args.host}:{args.port}: {exc.strerror or exc}") from None
    _announce(args, server.server_address[1])
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        print("stopped", file=sys.stderr)
    finally:
        server.server_close()
    return 0


def _announce(args: argparse.Namespace, port: int) -> None:
    """The URL served (the database's password redacted), and how."""
    host = f"[{args.host.strip('[]')}]" if ":" in args.host else args.host
    url = f"http://{host}:{port}/"
    database = redact(database_url(args))
    if args.json:
        told = {"url": url, "database": database, "allowActions": args.allow_actions}
        print(json.dumps({**told, "tokenRequired": args.token is not None}), flush=True)
    else:
        print(f"dashboard of {database} at {url}", flush=True)
    actions = (
        "actions allowed" if args.allow_actions else "read-only (--allow-actions: act on jobs)"
    )
    sign_in = "token required" if args.token else "no token: loopback only"
    print(f"{actions}; {sign_in}; Ctrl-C stops it", file=sys.stderr, flush=True)
