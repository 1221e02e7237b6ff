"""zqtwisted.zulip.activity_settings: the [user_activity] section."""

from __future__ import annotations

from twisted.trial.unittest import TestCase

from zqtwisted.config import ConfigError, parse_config
from zqtwisted.sections import SECTIONS
from zqtwisted.zulip.activity_settings import UserActivitySettings


class SettingsTests(TestCase):
    def test_defaults_and_parsing(self) -> None:
        """One shard by default (Zulip's USER_ACTIVITY_SHARDS = 1); [user_activity] shards is read from the file."""
        self.assertEqual(UserActivitySettings().shards, 1)
        config = parse_config({"user_activity": {"shards": 4}}, SECTIONS)
        self.assertEqual(config.section("user_activity", UserActivitySettings).shards, 4)

    def test_bad_values_name_the_key(self) -> None:
        """Fewer than one shard, or an unknown key, is a ConfigError naming the key."""
        with self.assertRaisesRegex(ConfigError, r"user_activity\.shards: must be >= 1"):
            parse_config({"user_activity": {"shards": 0}}, SECTIONS)
        with self.assertRaisesRegex(ConfigError, "user_activity"):
            parse_config({"user_activity": {"shard": 2}}, SECTIONS)
