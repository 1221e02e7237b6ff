"""The [missedmessage] configuration section: defaults, parsing, validation, secrets."""

from __future__ import annotations

import os
import tempfile

from twisted.trial import unittest

from zqtwisted.config import ConfigError, parse_config
from zqtwisted.missedmessage.settings import MissedMessageSettings
from zqtwisted.sections import SECTIONS


class SettingsTests(unittest.TestCase):
    def test_defaults(self) -> None:
        """SQLite in var/, 120 s batches, the shipped template, one shard, no unread check."""
        s = parse_config({}, SECTIONS).section("missedmessage", MissedMessageSettings)
        self.assertEqual((s.store, s.sqlite_path), ("sqlite", "var/missedmessage.sqlite3"))
        self.assertEqual((s.default_batching_period, s.shards, s.unread_url), (120.0, 1, ""))
        self.assertEqual(s.template_prefix, "zqtwisted/emails/missed_message")

    def test_parse(self) -> None:
        """A [missedmessage] table is parsed into the section."""
        config = parse_config(
            {
                "missedmessage": {
                    "store": "postgres",
                    "postgres_dsn": "dbname=zulip",
                    "shards": 4,
                    "unread_url": "http://x/",
                }
            },
            SECTIONS,
        )
        s = config.section("missedmessage", MissedMessageSettings)
        self.assertEqual((s.store, s.shards, s.dsn()), ("postgres", 4, "dbname=zulip"))

    def test_invalid_values_name_the_key(self) -> None:
        """Bad values stop start-up with the key's name."""
        cases = {
            "missedmessage.store": {"store": "redis"},
            "missedmessage.postgres_dsn": {"store": "postgres"},
            "missedmessage.shards": {"shards": 0},
            "missedmessage.unread_url": {"unread_url": "ftp://x"},
            "missedmessage.retry_cap": {"retry_base": 10, "retry_cap": 5},
            "missedmessage.default_batching_period": {"default_batching_period": -1},
        }
        for key, table in cases.items():
            with self.assertRaises(ConfigError) as caught:
                parse_config({"missedmessage": table}, SECTIONS)
            self.assertIn(key, str(caught.exception))

    def test_secrets_from_files(self) -> None:
        """The DSN and the unread token can come from files."""
        fd, path = tempfile.mkstemp()
        self.addCleanup(os.remove, path)
        with os.fdopen(fd, "w") as f:
            f.write("host=db dbname=zulip\n")
        s = MissedMessageSettings(store="postgres", postgres_dsn_file=path, unread_token_file=path)
        self.assertEqual(s.dsn(), "host=db dbname=zulip")
        self.assertEqual(s.token(), "host=db dbname=zulip")
