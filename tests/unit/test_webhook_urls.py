"""Tests for zqtwisted.webhooks.urls: bot URLs made ready for the wire, and where a redirect leads."""

from __future__ import annotations

from twisted.trial.unittest import TestCase

from zqtwisted.errors import PermanentError
from zqtwisted.webhooks.urls import (
    MAX_REDIRECTS,
    REDIRECT_STATUSES,
    Hop,
    InvalidURL,
    RedirectRefused,
    TooManyRedirects,
    WebhookURLError,
    follow,
    origin,
    request_target,
)

BASE = "http://bots.example.com:8080/a/hook?token=s3cret"


class RequestTargetTests(TestCase):
    def test_ipv6_literals_are_kept(self) -> None:
        """An IPv6 literal host goes to the wire bracketed, never through IDNA."""
        self.assertEqual(request_target("http://[::1]:8080/hook"), b"http://[::1]:8080/hook")
        self.assertEqual(request_target("https://[2001:DB8::1]/x?a=1"), b"https://[2001:DB8::1]/x?a=1")
        self.assertEqual(request_target("http://[::ffff:127.0.0.1]/"), b"http://[::ffff:127.0.0.1]/")

    def test_names_are_idna_encoded_and_paths_percent_encoded(self) -> None:
        """A non-ASCII name becomes its A-label; non-ASCII path and query characters are percent-encoded."""
        self.assertEqual(request_target("http://bücher.example/ä?q=ü"), b"http://xn--bcher-kva.example/%C3%A4?q=%C3%BC")

    def test_ipv4_literals_and_plain_urls_are_unchanged(self) -> None:
        """An ordinary URL is sent as it is, minus its fragment."""
        self.assertEqual(request_target("http://127.0.0.1:9/hook?x=1#frag"), b"http://127.0.0.1:9/hook?x=1")

    def test_invalid_hosts_are_invalid_urls(self) -> None:
        """Hosts IDNA refuses, bad literals and zone ids fail with InvalidURL, a permanent error."""
        for url in (
            "http://a..b/hook",
            "http://-bad-.example/hook",
            "http://exa mple.com/hook",
            "http://[fe80::1%25eth0]/hook",
            "http://[::1/hook",
            "http://h:abc/hook",
        ):
            with self.assertRaises(InvalidURL, msg=url) as raised:
                request_target(url)
            self.assertIsInstance(raised.exception, PermanentError)

    def test_other_schemes_and_missing_hosts_are_invalid(self) -> None:
        """Only http and https URLs with a host can be requested."""
        for url in ("ftp://example.com/", "mailto:a@example.com", "http:///hook", "/relative"):
            with self.assertRaises(InvalidURL, msg=url):
                request_target(url)

    def test_errors_do_not_repeat_the_query(self) -> None:
        """A refused URL's message names the host, never the path or a token in the query."""
        for url in ("http://a..b/hook?token=s3cret", "http://[::1/hook?token=s3cret", "ftp://x/?token=s3cret"):
            with self.assertRaises(InvalidURL) as raised:
                request_target(url)
            self.assertNotIn("s3cret", str(raised.exception))

    def test_origin_is_scheme_host_and_port(self) -> None:
        """origin() gives scheme://host:port (IPv6 bracketed), without userinfo, path or query."""
        self.assertEqual(origin(BASE), "http://bots.example.com:8080")
        self.assertEqual(origin("https://u:pw@[::1]/x"), "https://[::1]:443")
        self.assertEqual(origin("HTTP://Bots.Example.com/"), "http://bots.example.com:80")


class FollowTests(TestCase):
    def test_307_and_308_keep_the_method_and_body(self) -> None:
        """RFC 9110: a 307 or 308 is followed with the same method and body."""
        for status in (307, 308):
            hop = follow(BASE, "POST", status, b"/b", 0)
            self.assertEqual(
                hop,
                Hop("http://bots.example.com:8080/b", "POST", True, False, status, 1, "http://bots.example.com:8080"),
            )

    def test_303_becomes_get_without_body(self) -> None:
        """A 303 is followed with GET and no body."""
        hop = follow(BASE, "POST", 303, b"https://other.example/done", 0)
        self.assertEqual(
            (hop.url, hop.method, hop.keep_body, hop.cross_origin), ("https://other.example/done", "GET", False, True)
        )

    def test_301_and_302_repeat_the_post(self) -> None:
        """zqtwisted's choice (docs/outgoing_webhooks.md): a 301 or 302 repeats the POST with its body."""
        for status in (301, 302):
            hop = follow(BASE, "POST", status, b"https://bots.example.com:8080/v2", 0)
            self.assertEqual((hop.method, hop.keep_body), ("POST", True))

    def test_relative_locations_are_resolved(self) -> None:
        """Relative references resolve against the URL that answered (RFC 3986)."""
        self.assertEqual(follow(BASE, "POST", 307, b"other", 0).url, "http://bots.example.com:8080/a/other")
        self.assertEqual(follow(BASE, "POST", 307, b"//cdn.example/x", 0).url, "http://cdn.example/x")
        self.assertEqual(follow(BASE, "POST", 307, b"/x#frag", 0).url, "http://bots.example.com:8080/x")

    def test_cross_origin_is_detected(self) -> None:
        """A hop to another scheme, host or port is cross-origin; the same origin is not."""
        self.assertFalse(follow(BASE, "POST", 307, b"http://BOTS.example.com:8080/z", 0).cross_origin)
        self.assertTrue(follow(BASE, "POST", 307, b"http://bots.example.com:8081/z", 0).cross_origin)
        self.assertTrue(follow(BASE, "POST", 307, b"https://bots.example.com:8080/z", 0).cross_origin)

    def test_hop_limit(self) -> None:
        """At most MAX_REDIRECTS hops are followed; one more is TooManyRedirects."""
        self.assertEqual(MAX_REDIRECTS, 5)
        self.assertEqual(follow(BASE, "POST", 307, b"/x", MAX_REDIRECTS - 1).number, MAX_REDIRECTS)
        with self.assertRaises(TooManyRedirects) as raised:
            follow(BASE, "POST", 307, b"/x", MAX_REDIRECTS)
        self.assertIn("more than 5 redirects", str(raised.exception))
        self.assertNotIn("s3cret", str(raised.exception))

    def test_only_http_and_https_are_followed(self) -> None:
        """A redirect to another scheme, or an unusable Location, is refused."""
        for location in (b"ftp://example.com/", b"file:///etc/passwd", b"mailto:a@example.com", b"http://", b"\xff"):
            with self.assertRaises(RedirectRefused, msg=location):
                follow(BASE, "POST", 302, location, 0)

    def test_https_is_never_downgraded(self) -> None:
        """An https URL redirecting to http is refused (the body carries the bot's token)."""
        with self.assertRaises(RedirectRefused) as raised:
            follow("https://bots.example.com/hook?token=s3cret", "POST", 301, b"http://bots.example.com/hook", 0)
        self.assertIn("https://bots.example.com:443", str(raised.exception))
        self.assertNotIn("s3cret", str(raised.exception))

    def test_refusals_are_permanent(self) -> None:
        """Every URL refusal is a WebhookURLError, a PermanentError (dead-lettered, never retried)."""
        for error in (InvalidURL("x"), RedirectRefused("x"), TooManyRedirects("x")):
            self.assertIsInstance(error, WebhookURLError)
            self.assertIsInstance(error, PermanentError)

    def test_redirect_statuses(self) -> None:
        """Only 301, 302, 303, 307 and 308 are redirects to follow (not 300, 304, 305, 306)."""
        self.assertEqual(REDIRECT_STATUSES, {301, 302, 303, 307, 308})

    def test_hop_describes_itself(self) -> None:
        """A hop says which redirect it was and where from, without path or query."""
        hop = follow(BASE, "POST", 308, b"/y", 1)
        self.assertEqual(hop.describe(), "redirect 2 (308 from http://bots.example.com:8080)")
