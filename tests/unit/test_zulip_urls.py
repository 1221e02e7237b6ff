"""Tests for zqtwisted.zulip.urls: realm hosts and URLs, the REST API address, fake emails."""

from __future__ import annotations

from twisted.trial.unittest import TestCase

from zqtwisted.zulip.settings import ZulipSettings
from zqtwisted.zulip.urls import ApiEndpoint, api_endpoint, fake_email, realm_host, realm_url

SETTINGS = ZulipSettings(external_host="chat.example.com", realm_hosts={"lear": "lear.example.org"})


class UrlTests(TestCase):
    def test_realm_hosts(self) -> None:
        """The root-domain realm is EXTERNAL_HOST; others are subdomains, unless REALM_HOSTS names them."""
        self.assertEqual(realm_host("", SETTINGS), "chat.example.com")
        self.assertEqual(realm_host("zulip", SETTINGS), "zulip.chat.example.com")
        self.assertEqual(realm_host("lear", SETTINGS), "lear.example.org")
        self.assertEqual(realm_url("zulip", SETTINGS), "https://zulip.chat.example.com")

    def test_api_endpoint(self) -> None:
        """The API is at the realm's URL, or at api_url with the realm's host in Host."""
        self.assertEqual(
            api_endpoint("zulip", "messages", SETTINGS), ApiEndpoint("https://zulip.chat.example.com/api/v1/messages")
        )
        local = ZulipSettings(external_host="chat.example.com", api_url="http://127.0.0.1:9991/")
        self.assertEqual(
            api_endpoint("", "/messages/flags", local),
            ApiEndpoint("http://127.0.0.1:9991/api/v1/messages/flags", "chat.example.com"),
        )

    def test_fake_email(self) -> None:
        """user{id}@ the realm's host, or FAKE_EMAIL_DOMAIN when the host makes no valid address."""
        self.assertEqual(fake_email(5, "zulip.chat.example.com", SETTINGS), "user5@zulip.chat.example.com")
        odd = ZulipSettings(external_host="127.0.0.1:9991", fake_email_domain="fake.example.com")
        self.assertEqual(fake_email(5, "127.0.0.1:9991", odd), "user5@fake.example.com")
