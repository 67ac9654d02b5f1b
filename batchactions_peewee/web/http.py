"""The dashboard's HTTP plumbing on plain WSGI: the request as parsed once, responses with
the security headers every answer carries, errors as JSON, and checked query parameters."""

from __future__ import annotations

import json
import urllib.parse
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from http import HTTPStatus
from http.cookies import CookieError, SimpleCookie
from typing import Any

from ..checks import MAX_INT

StartResponse = Callable[..., Any]

#: Sent with every response: scripts and styles from the app itself only, no framing, and
#: no guessing of content types.
SECURITY_HEADERS = [
    (
        "Content-Security-Policy",
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
        "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    ),
    ("X-Content-Type-Options", "nosniff"),
    ("X-Frame-Options", "DENY"),
    ("Referrer-Policy", "no-referrer"),
]

#: Query parameters a request may carry at most (more is refused, not parsed).
MAX_PARAMS = 20
#: The largest request body read (the login form).
MAX_BODY = 16 * 1024


class HttpError(Exception):
    """An answer other than success: ``{"error": message}`` with ``status``."""

    def __init__(self, status: int, message: str, headers: Iterable[tuple[str, str]] = ()) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = list(headers)


@dataclass
class Response:
    """A status, headers and a body of bytes (or an iterator of them, for downloads)."""

    status: int
    body: Iterable[bytes]
    content_type: str
    headers: list[tuple[str, str]] = field(default_factory=list)

    def send(self, start_response: StartResponse) -> Iterable[bytes]:
        phrase = HTTPStatus(self.status).phrase
        headers = [("Content-Type", self.content_type), *SECURITY_HEADERS, *self.headers]
        start_response(f"{self.status} {phrase}", headers)
        return self.body


def json_response(value: Any, status: int = 200) -> Response:
    body = json.dumps(value, ensure_ascii=False, allow_nan=False).encode("utf-8")
    headers = [("Cache-Control", "no-store"), ("Content-Length", str(len(body)))]
    return Response(status, [body], "application/json; charset=utf-8", headers)


def error_response(error: HttpError) -> Response:
    response = json_response({"error": error.message}, error.status)
    response.headers += error.headers
    return response


def redirect(location: str, headers: Iterable[tuple[str, str]] = ()) -> Response:
    """303 See Other to ``location`` (relative to the request's URL)."""
    return Response(303, [b""], "text/plain", [("Location", location), *headers])


def text_stream(lines: Iterator[str], content_type: str, filename: str) -> Response:
    """A download of ``lines``, sent in chunks as they are produced."""

    def chunks() -> Iterator[bytes]:
        buffered: list[str] = []
        size = 0
        for line in lines:
            buffered.append(line)
            size += len(line)
            if size >= 64 * 1024:
                yield "".join(buffered).encode("utf-8")
                buffered, size = [], 0
        yield "".join(buffered).encode("utf-8")

    disposition = f'attachment; filename="{filename}"'
    headers = [("Content-Disposition", disposition), ("Cache-Control", "no-store")]
    return Response(200, chunks(), f"{content_type}; charset=utf-8", headers)


class Request:
    """What the dashboard reads of a WSGI environ."""

    def __init__(self, environ: Mapping[str, Any]) -> None:
        self.environ = environ
        self.method = str(environ.get("REQUEST_METHOD", "GET")).upper()
        raw_path = str(environ.get("PATH_INFO", ""))
        try:
            # WSGI hands the path over as bytes decoded as Latin-1; ids are UTF-8.
            self.path = raw_path.encode("latin-1").decode("utf-8")
        except UnicodeError:
            raise HttpError(400, "the path is not UTF-8") from None
        self.query = _query(str(environ.get("QUERY_STRING", "")))

    def header(self, name: str) -> str | None:
        """A request header by its name (``Authorization``), or None."""
        value = self.environ.get("HTTP_" + name.upper().replace("-", "_"))
        return None if value is None else str(value)

    def cookie(self, name: str) -> str | None:
        cookies: SimpleCookie = SimpleCookie()
        try:
            cookies.load(self.header("Cookie") or "")
        except CookieError:
            return None
        morsel = cookies.get(name)
        return None if morsel is None else morsel.value

    def form(self) -> dict[str, str]:
        """The fields of an ``application/x-www-form-urlencoded`` body."""
        try:
            length = int(self.environ.get("CONTENT_LENGTH") or 0)
        except ValueError:
            raise HttpError(400, "bad Content-Length") from None
        if length > MAX_BODY:
            raise HttpError(413, "the request body is too large")
        body = self.environ["wsgi.input"].read(length) if length > 0 else b""
        try:
            return _query(body.decode("utf-8"))
        except UnicodeError:
            raise HttpError(400, "the form is not UTF-8") from None

    def only(self, *names: str) -> None:
        """400 for a query parameter other than ``names``."""
        unknown = sorted(set(self.query) - set(names))
        if unknown:
            known = ", ".join(names) or "none"
            raise HttpError(400, f"unknown parameter {unknown[0]!r} (this route takes: {known})")

    def integer(self, name: str, default: int, *, minimum: int = 0, maximum: int = MAX_INT) -> int:
        """A whole-number parameter from ``minimum`` to ``maximum``, ``default`` if absent."""
        text = self.query.get(name)
        if text is None:
            return default
        if not text.isascii() or not text.isdigit() or len(text) > 12:
            raise HttpError(400, f"{name} must be a whole number, got {text!r}")
        value = int(text)
        if not minimum <= value <= maximum:
            raise HttpError(400, f"{name} must be from {minimum} to {maximum}, got {value}")
        return value

    def choice(self, name: str, choices: Iterable[str]) -> str | None:
        """A parameter that must be one of ``choices``, or None if absent."""
        text = self.query.get(name)
        allowed = list(choices)
        if text is not None and text not in allowed:
            raise HttpError(400, f"{name} must be one of {', '.join(allowed)}, got {text!r}")
        return text


def _query(text: str) -> dict[str, str]:
    try:
        pairs = urllib.parse.parse_qsl(
            text, keep_blank_values=True, max_num_fields=MAX_PARAMS, errors="strict"
        )
    except ValueError:
        raise HttpError(400, "too many parameters, or parameters that are not UTF-8") from None
    found: dict[str, str] = {}
    for name, value in pairs:
        if name in found:
            raise HttpError(400, f"parameter {name!r} is given twice")
        found[name] = value
    return found
