"""Tests for zqtwisted.webhooks.settings: the [outgoing_webhooks] section."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from twisted.trial.unittest import TestCase

from zqtwisted.config import Config, ConfigError, parse_config
from zqtwisted.sections import SECTIONS
from zqtwisted.webhooks.settings import OutgoingWebhookSettings


def section(**values: object) -> OutgoingWebhookSettings:
    return parse_config({"outgoing_webhooks": values}, SECTIONS).section("outgoing_webhooks", OutgoingWebhookSettings)


class SettingsTests(TestCase):
    def temp_path(self) -> str:
        """A fresh path in a directory removed after the test (mktemp writes under the cwd with pytest)."""
        directory = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, directory, True)
        return f"{directory}/file"

    def test_defaults(self) -> None:
        """Defaults: 10 s, 1 MiB, 25 per host, nothing allowed, no redirects, queue sink."""
        settings = Config().section("outgoing_webhooks", OutgoingWebhookSettings)
        self.assertEqual(
            (settings.timeout, settings.max_response_bytes, settings.per_host_concurrency),
            (10.0, 1024 * 1024, 25),
        )
        self.assertEqual((settings.allow_networks, settings.follow_redirects), ((), False))
        self.assertEqual((settings.reply_sink, settings.reply_queue), ("queue", "outgoing_webhook_responses"))

    def test_parses_a_toml_section(self) -> None:
        """Values of the TOML table are typed and kept."""
        settings = section(
            timeout=0.5,
            allow_networks=["127.0.0.1/32", "10.0.0.0/8"],
            reply_sink="rest",
            rest_site="https://chat.example.com/",
            rest_bot_api_keys={"bot@example.com": "k"},
        )
        self.assertEqual(settings.allow_networks, ("127.0.0.1/32", "10.0.0.0/8"))
        self.assertEqual(settings.site, "https://chat.example.com")
        self.assertEqual(dict(settings.api_keys()), {"bot@example.com": "k"})

    def test_rejects_bad_values_naming_the_key(self) -> None:
        """Invalid values stop start-up with the key's name."""
        for values, key in (
            ({"timeout": 0}, "timeout"),
            ({"per_host_concurrency": 0}, "per_host_concurrency"),
            ({"allow_networks": ["not-a-cidr"]}, "allow_networks"),
            ({"reply_sink": "email"}, "reply_sink"),
            ({"reply_sink": "rest"}, "rest_site"),
            ({"rest_site": "chat.example.com"}, "rest_site"),
            ({"rest_bot_api_keys": {"bot@example.com": ""}}, "rest_bot_api_keys"),
        ):
            with self.assertRaises(ConfigError) as raised:
                section(**values)
            self.assertIn(key, str(raised.exception))

    def test_reads_api_keys_from_a_file(self) -> None:
        """API keys may live in a TOML or JSON file, merged over the inline table."""
        toml = Path(self.temp_path())
        toml.write_text('"bot@example.com" = "from-file"\n')
        settings = section(
            rest_bot_api_keys={"bot@example.com": "inline", "b2@example.com": "x"}, rest_bot_api_keys_file=str(toml)
        )
        self.assertEqual(dict(settings.api_keys()), {"bot@example.com": "from-file", "b2@example.com": "x"})
        js = Path(self.temp_path())
        js.write_text('{"bot@example.com": "json"}')
        self.assertEqual(dict(section(rest_bot_api_keys_file=str(js)).api_keys()), {"bot@example.com": "json"})

    def test_bad_keys_file_does_not_leak_its_content(self) -> None:
        """A broken keys file is an error that names the file, not its content."""
        path = Path(self.temp_path())
        path.write_text("secret-key-material without structure")
        with self.assertRaises(ConfigError) as raised:
            section(rest_bot_api_keys_file=str(path))
        self.assertNotIn("secret", str(raised.exception).replace(str(path), ""))
        with self.assertRaises(ConfigError):
            section(rest_bot_api_keys_file=str(path) + ".missing")
