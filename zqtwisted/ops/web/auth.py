"""Who may change state through the dashboard: a bearer token, and no cross-site request.

Every action (replay, purge) needs ``Authorization: Bearer TOKEN`` with the token of
``[workers] http_token`` / ``http_token_file``; without a configured token the
dashboard is read-only and every action is refused.

Why a header and not a cookie: a browser attaches cookies to any request to the
site, a forged one from another site included (cross-site request forgery), but
it never adds an ``Authorization`` header by itself.  A page on another site that
wants to send one must use ``fetch`` with a custom header, which the browser
first asks this server about (a CORS preflight) and this server never allows.
So a request that carries the token was made by someone who has it.  The page
keeps the token in the tab's ``sessionStorage`` (gone when the tab closes).

As a second layer, a request that the browser marks as coming from another site
(``Sec-Fetch-Site: cross-site`` / ``same-site``, or an ``Origin`` whose host is not the
request's ``Host``) is refused whatever it carries; ``curl`` sends neither header.
Plain functions, no I/O.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from urllib.parse import urlsplit


@dataclass(frozen=True)
class Refusal:
    """Why an action is refused: the HTTP status and a message for the operator."""

    code: int
    message: str

    @property
    def challenge(self) -> bool:
        """Whether the answer asks for credentials (``WWW-Authenticate``)."""
        return self.code == 401


NO_TOKEN = Refusal(403, "actions are disabled: no [workers] http_token is configured, the dashboard is read-only")
CROSS_SITE = Refusal(403, "cross-site request refused")
MISSING = Refusal(401, "this action needs the dashboard token (Authorization: Bearer TOKEN)")
WRONG = Refusal(401, "wrong token")


def same_origin(origin: str | None, fetch_site: str | None, host: str | None) -> bool:
    """Whether the browser's own marks (``Origin``, ``Sec-Fetch-Site``) allow the request; absent marks do."""
    if fetch_site is not None and fetch_site.lower() not in ("same-origin", "none"):
        return False
    if origin is None:
        return True
    if origin == "null" or host is None:
        return False
    return urlsplit(origin).netloc.lower() == host.lower()


def bearer(authorization: str | None) -> str | None:
    """The token of an ``Authorization: Bearer TOKEN`` header."""
    if authorization is None:
        return None
    scheme, _, value = authorization.strip().partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        return None
    return value.strip()


def refusal(
    token: str | None,
    authorization: str | None,
    origin: str | None = None,
    fetch_site: str | None = None,
    host: str | None = None,
) -> Refusal | None:
    """Why a request may not act, or None when it may."""
    if token is None:
        return NO_TOKEN
    if not same_origin(origin, fetch_site, host):
        return CROSS_SITE
    given = bearer(authorization)
    if given is None:
        return MISSING
    if not hmac.compare_digest(given.encode("utf-8"), token.encode("utf-8")):
        return WRONG
    return None
