"""Who may act on the dashboard: the bearer token, and no cross-site request."""

from __future__ import annotations

from twisted.trial.unittest import TestCase

from zqtwisted.ops.web.auth import CROSS_SITE, MISSING, NO_TOKEN, WRONG, bearer, refusal, same_origin

TOKEN = "a-long-dashboard-token"


class AuthTests(TestCase):
    def test_right_token_may_act(self) -> None:
        """The configured token in an Authorization: Bearer header is accepted (the scheme in any case)."""
        self.assertIsNone(refusal(TOKEN, f"Bearer {TOKEN}"))
        self.assertIsNone(refusal(TOKEN, f"bearer  {TOKEN} "))

    def test_without_a_configured_token_nothing_may_act(self) -> None:
        """No token configured: every action is refused with 403, the right-looking header or not."""
        self.assertEqual(refusal(None, f"Bearer {TOKEN}"), NO_TOKEN)
        self.assertEqual(NO_TOKEN.code, 403)
        self.assertFalse(NO_TOKEN.challenge)

    def test_missing_or_wrong_token_is_401(self) -> None:
        """No header, another scheme, or a wrong token: 401 with a challenge."""
        self.assertEqual(refusal(TOKEN, None), MISSING)
        self.assertEqual(refusal(TOKEN, f"Basic {TOKEN}"), MISSING)
        self.assertEqual(refusal(TOKEN, "Bearer "), MISSING)
        self.assertEqual(refusal(TOKEN, "Bearer nope"), WRONG)
        self.assertEqual(refusal(TOKEN, f"Bearer {TOKEN}x"), WRONG)
        self.assertTrue(WRONG.challenge and MISSING.challenge)

    def test_cross_site_requests_are_refused_even_with_the_token(self) -> None:
        """A browser's cross-site marks (Sec-Fetch-Site, a foreign Origin, Origin null) refuse the request."""
        ok = f"Bearer {TOKEN}"
        self.assertEqual(refusal(TOKEN, ok, fetch_site="cross-site"), CROSS_SITE)
        self.assertEqual(refusal(TOKEN, ok, fetch_site="same-site"), CROSS_SITE)
        self.assertEqual(refusal(TOKEN, ok, origin="http://evil.example", host="127.0.0.1:9191"), CROSS_SITE)
        self.assertEqual(refusal(TOKEN, ok, origin="null", host="127.0.0.1:9191"), CROSS_SITE)
        self.assertEqual(refusal(TOKEN, ok, origin="http://127.0.0.1:9191"), CROSS_SITE)  # no Host to compare
        self.assertIsNone(
            refusal(TOKEN, ok, origin="http://127.0.0.1:9191", fetch_site="same-origin", host="127.0.0.1:9191")
        )
        self.assertIsNone(refusal(TOKEN, ok, fetch_site="none"))

    def test_helpers(self) -> None:
        """bearer() takes the token out of the header; same_origin() allows requests without marks (curl)."""
        self.assertEqual(bearer("Bearer abc"), "abc")
        self.assertIsNone(bearer(None))
        self.assertTrue(same_origin(None, None, None))
        self.assertTrue(same_origin("http://Host:1", None, "host:1"))
