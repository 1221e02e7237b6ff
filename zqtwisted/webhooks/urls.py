"""Webhook URLs on the wire: a URL made ready for the Agent, and where a redirect leads (pure).

treq prepares URLs with hyperlink's ``to_uri()``, which hands the host to IDNA even
when it is an IPv6 literal, so ``http://[::1]/`` failed before the SSRF guard could
see it.  :func:`request_target` IDNA-encodes names only; an IP literal is sent as it
is, and the guard checks it like any resolved address when connecting.

Redirects (followed only with ``follow_redirects = true``), RFC 9110 section 15.4:

* 307, 308: the same method and body;
* 303: GET, without a body;
* 301, 302: the POST is repeated with its body, as RFC 9110 defines them (the switch
  to GET is a browser habit the RFC only tolerates); docs/outgoing_webhooks.md says why;
* at most :data:`MAX_REDIRECTS` hops, to http or https only, never from https down to
  http; credentials are not carried to another origin.

Every refusal is a :class:`WebhookURLError`, a PermanentError: the same URL would be
refused on every try, so the event is dead-lettered, never retried.  Messages name the
origin (scheme, host, port), never the path or query, which may carry a token.
"""

from __future__ import annotations

from dataclasses import dataclass

from hyperlink import URL

from zqtwisted.errors import PermanentError
from zqtwisted.runtime.redact import redact_text

MAX_REDIRECTS = 5
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
# Request headers never sent to an origin other than the one they were meant for.
CREDENTIAL_HEADERS = frozenset({"authorization", "proxy-authorization", "cookie"})
SCHEMES = ("http", "https")
DEFAULT_PORTS = {"http": 80, "https": 443}


class WebhookURLError(PermanentError):
    """A URL (or a redirect) that can never be requested: trying again would not help."""


class InvalidURL(WebhookURLError):
    """The URL cannot be parsed or encoded (bad host name, bad IP literal, not http(s))."""


class RedirectRefused(WebhookURLError):
    """A redirect that is not followed: another scheme, a downgrade to http, an unusable Location."""


class TooManyRedirects(WebhookURLError):
    """More than MAX_REDIRECTS redirects in a row."""


@dataclass(frozen=True)
class Hop:
    """Where a redirect leads, and how to ask there."""

    url: str
    method: str
    keep_body: bool
    cross_origin: bool
    status: int
    number: int  # 1 for the first redirect
    source: str  # the origin that redirected

    def describe(self) -> str:
        return f"redirect {self.number} ({self.status} from {self.source})"


def request_target(url: str) -> bytes:
    """``url`` as the Agent takes it: names IDNA-encoded, IP literals kept, no fragment.

    Fails with InvalidURL for a URL that is not http(s) with a host, or whose host
    cannot be encoded.
    """
    parsed = _parse(url)
    host = parsed.host
    try:
        if ":" in host:  # an IPv6 literal (hyperlink checked it): never through IDNA
            encoded = parsed.replace(host="").to_uri().replace(host=host)
        else:
            encoded = parsed.to_uri()
        return str(encoded.replace(fragment="").to_text()).encode("ascii")
    except (UnicodeError, ValueError) as e:
        raise InvalidURL(f"invalid host {redact_text(host)[:100]!r}: {e}") from None


def origin(url: str | URL) -> str:
    """``scheme://host:port`` of ``url`` (IPv6 bracketed): what messages may show of a URL."""
    parsed = url if isinstance(url, URL) else _parse(url)
    scheme = parsed.scheme.lower()
    host = parsed.host.lower()
    port = parsed.port if parsed.port is not None else DEFAULT_PORTS.get(scheme, 0)
    return f"{scheme}://[{host}]:{port}" if ":" in host else f"{scheme}://{host}:{port}"


def follow(url: str, method: str, status: int, location: bytes, hops: int, max_redirects: int = MAX_REDIRECTS) -> Hop:
    """The next request after ``url`` answered ``status`` with ``location``, ``hops`` redirects so far.

    Fails with TooManyRedirects beyond ``max_redirects``, RedirectRefused when the
    redirect must not be followed.
    """
    source = origin(url)
    if hops >= max_redirects:
        raise TooManyRedirects(f"more than {max_redirects} redirects (the last a {status} from {source})")
    where = f"redirect {hops + 1} ({status} from {source})"
    base = URL.from_text(url)
    try:
        reference = location.decode("utf-8").strip()
        if reference.startswith("//"):  # network-path reference: hyperlink's click would keep the old port
            reference = f"{base.scheme}:{reference}"
        target = base.click(reference).replace(fragment="")
    except (UnicodeError, ValueError, NotImplementedError) as e:
        raise RedirectRefused(f"{where}: unusable Location ({type(e).__name__})") from None
    scheme = target.scheme.lower()
    if scheme not in SCHEMES or not target.host:
        raise RedirectRefused(f"{where}: only http and https URLs with a host are followed")
    destination = origin(target)
    if source.startswith("https:") and scheme == "http":
        raise RedirectRefused(f"{where} to {destination}: https is never downgraded to http")
    same_method = status != 303 or method == "HEAD"
    return Hop(
        url=str(target.to_text()),
        method=method if same_method else "GET",
        keep_body=same_method,
        cross_origin=destination != source,
        status=status,
        number=hops + 1,
        source=source,
    )


def _parse(url: str) -> URL:
    """``url`` parsed; InvalidURL unless it is http(s) with a host."""
    try:
        parsed = URL.from_text(url)
    except ValueError as e:  # hyperlink's URLParseError
        raise InvalidURL(f"not a valid URL: {_scrubbed(str(e), url)}") from None
    scheme = parsed.scheme.lower()
    if scheme not in SCHEMES:
        raise InvalidURL(f"not an http or https URL (scheme {scheme[:20]!r})")
    if not parsed.host:
        raise InvalidURL(f"the {scheme} URL has no host")
    return parsed


def _scrubbed(message: str, url: str) -> str:
    """A parser's message without the URL it quotes (its query may hold a token)."""
    return redact_text(message.replace(url, "<url>"))[:200]
