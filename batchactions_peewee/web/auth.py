"""Who may use the dashboard: the token (``Authorization: Bearer T``, or the cookie the
login form sets) and the CSRF token every action of a browser must carry."""

from __future__ import annotations

import hashlib
import hmac
import secrets

from .http import HttpError, Request

#: The cookie the login form sets; it holds a digest of the token, never the token.
SESSION_COOKIE = "batchactions_session"
#: The header an action must carry, with the value ``GET /api/config`` gives.
CSRF_HEADER = "X-CSRF-Token"


class Guard:
    """Checks requests against ``token`` (None: no token asked) and this app's CSRF token."""

    def __init__(self, token: str | None) -> None:
        if token is not None and not token:
            raise ValueError("token must be a non-empty string, or None")
        self.token = token
        # A new CSRF token per app: a page of another site can neither read it (no CORS)
        # nor send a custom header without it.
        self.csrf_token = secrets.token_urlsafe(32)
        self._session = (
            hmac.new(token.encode("utf-8"), b"batchactions-dashboard", hashlib.sha256).hexdigest()
            if token is not None
            else None
        )

    def bearer(self, request: Request) -> bool:
        """True when the request carries the token as ``Authorization: Bearer T``."""
        if self.token is None:
            return False
        scheme, _, given = (request.header("Authorization") or "").partition(" ")
        return scheme.lower() == "bearer" and _same(given.strip(), self.token)

    def signed_in(self, request: Request) -> bool:
        """True when no token is asked, or the request carries it (header or cookie)."""
        if self.token is None or self.bearer(request):
            return True
        cookie = request.cookie(SESSION_COOKIE)
        return cookie is not None and self._session is not None and _same(cookie, self._session)

    def check_login(self, given: str) -> str:
        """The session cookie's value for the right token; 401 otherwise."""
        if self.token is None or self._session is None or not _same(given, self.token):
            raise HttpError(401, "wrong token")
        return self._session

    def check_action(self, request: Request, allow_actions: bool) -> None:
        """An action needs actions allowed (403) and, from a browser, the CSRF token (403);
        a request signed with the bearer token needs none, as no other site can send one."""
        if not allow_actions:
            raise HttpError(403, "actions are off: start the dashboard with --allow-actions")
        if self.bearer(request):
            return
        given = request.header(CSRF_HEADER)
        if given is None or not _same(given, self.csrf_token):
            raise HttpError(403, f"missing or wrong {CSRF_HEADER} header")


def _same(given: str, expected: str) -> bool:
    # Compared as bytes: compare_digest refuses str holding non-ASCII characters.
    return hmac.compare_digest(given.encode("utf-8"), expected.encode("utf-8"))
