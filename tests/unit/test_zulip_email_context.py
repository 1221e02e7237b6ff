"""Tests for zqtwisted.zulip.email_context: Zulip's FromAddress, STATIC_URL and the context build_email adds."""

from __future__ import annotations

import dataclasses

from twisted.trial.unittest import TestCase

from tests.zulip_fakes import SETTINGS
from zqtwisted.zulip.email_context import (
    FromAddress,
    build_email_context,
    common_context,
    email_images_base_url,
    external_host_without_port,
    generate_key,
    installation_name,
    list_id,
    static_url,
)


class FromAddressTests(TestCase):
    def test_defaults_follow_external_host(self) -> None:
        """Without settings: noreply@ and noreply-{token}@ the host without its port; support is the noreply."""
        settings = dataclasses.replace(SETTINGS, external_host="chat.example.com:8443")
        addresses = FromAddress.from_settings(settings)
        self.assertEqual(addresses.noreply, "noreply@chat.example.com")
        self.assertEqual(addresses.support, "noreply@chat.example.com")
        self.assertEqual(addresses.tokenized_no_reply_address(lambda: "k1"), "noreply-k1@chat.example.com")

    def test_placeholders(self) -> None:
        """NO_REPLY, TOKENIZED_NO_REPLY and SUPPORT resolve as Zulip's build_email resolves them; others stay."""
        settings = dataclasses.replace(
            SETTINGS,
            noreply_email_address="Zulip <noreply@example.org>",
            zulip_administrator="Admins <admin@example.org>",
            tokenized_noreply_email_address="bounce-{token}@example.org",
        )
        addresses = FromAddress.from_settings(settings)
        self.assertEqual(addresses.resolve(None), "noreply@example.org")
        self.assertEqual(addresses.resolve("NO_REPLY"), "noreply@example.org")
        self.assertEqual(addresses.resolve("SUPPORT"), "admin@example.org")
        self.assertEqual(addresses.resolve("TOKENIZED_NO_REPLY", lambda: "t0k"), "bounce-t0k@example.org")
        self.assertEqual(addresses.resolve("me@example.org"), "me@example.org")
        untokened = FromAddress.from_settings(dataclasses.replace(settings, add_tokens_to_noreply_address=False))
        self.assertEqual(untokened.resolve("TOKENIZED_NO_REPLY"), "noreply@example.org")

    def test_hosts(self) -> None:
        """EXTERNAL_HOST_WITHOUT_PORT keeps IPv6 literals and plain hosts."""
        for host, expected in (("a.example.com", "a.example.com"), ("a.example.com:80", "a.example.com"),
                               ("[::1]:9991", "[::1]")):  # fmt: skip
            self.assertEqual(external_host_without_port(dataclasses.replace(SETTINGS, external_host=host)), expected)

    def test_keys(self) -> None:
        """Confirmation keys are 24 lower-case base32 characters, all different."""
        keys = {generate_key() for _ in range(20)}
        self.assertEqual(len(keys), 20)
        self.assertTrue(all(len(k) == 24 and k == k.lower() for k in keys))


class ContextTests(TestCase):
    def test_static_url(self) -> None:
        """STATIC_URL is derived from the external host unless set; email images live under images/emails."""
        self.assertEqual(static_url(SETTINGS), "https://zulip.example.com/static/")
        self.assertEqual(email_images_base_url(SETTINGS), "https://zulip.example.com/static/images/emails")
        cdn = dataclasses.replace(SETTINGS, static_url="https://cdn.example.net/zulip")
        self.assertEqual(email_images_base_url(cdn), "https://cdn.example.net/zulip/images/emails")

    def test_build_email_context_overrides_the_event(self) -> None:
        """support_email, email_images_base_url and physical_address win over the event's context."""
        settings = dataclasses.replace(SETTINGS, physical_address="1 Main St", zulip_administrator="s@example.org")
        context = build_email_context(
            {"support_email": "evil@example.org", "name": "x"}, settings, FromAddress.from_settings(settings)
        )
        self.assertEqual(
            context,
            {
                "support_email": "s@example.org",
                "name": "x",
                "email_images_base_url": "https://zulip.example.com/static/images/emails",
                "physical_address": "1 Main St",
            },
        )

    def test_list_id_and_names(self) -> None:
        """List-Id is formataddr((realm name, realm host)); INSTALLATION_NAME defaults to EXTERNAL_HOST."""
        self.assertEqual(list_id("Zulip Dev", "zulip.example.com"), "Zulip Dev <zulip.example.com>")
        self.assertEqual(list_id("Dev, Inc.", "dev.example.com"), '"Dev, Inc." <dev.example.com>')
        self.assertEqual(installation_name(SETTINGS), "zulip.example.com")
        self.assertEqual(installation_name(dataclasses.replace(SETTINGS, installation_name="Chat")), "Chat")
        context = common_context("https://a.zulip.example.com", "A", "Hamlet", SETTINGS)
        self.assertEqual(context["root_domain_url"], "https://zulip.example.com")
        self.assertEqual((context["realm_url"], context["user_name"]), ("https://a.zulip.example.com", "Hamlet"))
